"""Drawing functions for etpicker's figures.

Pure matplotlib and numpy: every function draws into a given ``matplotlib.figure.Figure``
from arrays or files, so the figures can be tested and produced without a Scipion project.
Nothing here imports torch (viewers run in Scipion's environment).
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from matplotlib.ticker import MaxNLocator

from ..core.metrics import ALL  # torch-free, like core.model_folder
from ..core.model_folder import kept_epoch
# Slices averaged on each side of the chosen one: cryo-ET slices are very noisy.
DEFAULT_SLAB_HALF_WIDTH = 2
# Reference circles are drawn a little larger, dashed, so both stay visible on a match.
REFERENCE_RADIUS_FACTOR = 1.35


def class_colours(class_names):
    """One distinct colour per class name, stable for a given class list."""
    palette = colormaps['tab10'].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(class_names)}


def slab_mean(volume, axis, index, half_width=DEFAULT_SLAB_HALF_WIDTH):
    """Mean of the slices index-half_width..index+half_width along axis (0=z, 1=y).

    Reads only those slices, so a memory-mapped tomogram stays on disk.
    """
    size = volume.shape[axis]
    if not 0 <= index < size:
        raise ValueError(f'slice {index} is outside the tomogram (0..{size - 1} along '
                         f'{"zyx"[axis]})')
    lo, hi = max(0, index - half_width), min(size, index + half_width + 1)
    slab = volume[lo:hi] if axis == 0 else volume[:, lo:hi]
    return np.asarray(slab, dtype=np.float32).mean(axis=axis)


def contrast_limits(image, low=1.0, high=99.0):
    """Grey-level limits that ignore outliers such as gold beads."""
    vmin, vmax = np.percentile(image, [low, high])
    if vmax <= vmin:
        vmax = vmin + 1.0
    return float(vmin), float(vmax)


# ---------------------------------------------------------------- figures
def draw_training_history(figure, rows, config=None, title='Training'):
    """Loss and validation precision/recall/F1 per epoch from history rows
    (model_folder.read_history), marking the epoch whose weights the model kept (from its
    config, else by the rule training keeps them by)."""
    if not rows:
        raise ValueError('the training history is empty: no epoch finished yet')
    history = {key: np.array([row[key] for row in rows], dtype=float) for key in rows[0] if key != 'val_min_scores'}
    epochs = history['epoch']
    figure.set_layout_engine('constrained')
    loss_axes, score_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, history['train_loss'], 'o-', label='training loss', ms=3)
    if np.isfinite(history['val_loss']).any():
        loss_axes.plot(epochs, history['val_loss'], 's-', label='validation loss', ms=3)
    loss_axes.set(title='Loss (soft Dice)', xlabel='epoch', ylabel='loss')
    loss_axes.grid(alpha=0.3)
    loss_axes.legend()

    for key, label in (('val_precision', 'precision'), ('val_recall', 'recall'),
                       ('val_f1', 'F1')):
        score_axes.plot(epochs, history[key], 'o-', label=label, ms=3,
                        lw=2.5 if key == 'val_f1' else 1.2)
    f1 = history['val_f1']
    kept = kept_epoch(config or {}, rows)
    if kept in epochs:
        index = int(np.flatnonzero(epochs == kept)[0])
        score_axes.axvline(kept, color='grey', ls=':', lw=1)
        label = f'kept: epoch {kept}' + (f'\nF1 {f1[index]:.3f}' if np.isfinite(f1[index]) else '')
        score_axes.annotate(label, (kept, f1[index] if np.isfinite(f1[index]) else 0.5), xytext=(-8, -34),
                            ha='right', textcoords='offset points', fontsize=9)
    score_axes.set(title='Validation picking', xlabel='epoch', ylabel='score', ylim=(0, 1.05))
    score_axes.grid(alpha=0.3)
    score_axes.legend(loc='lower right')
    for axes in (loss_axes, score_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    total_minutes = np.nansum(history['seconds']) / 60
    figure.suptitle(f'{title} ({int(epochs[-1])} epochs, {total_minutes:.1f} min)')


def _draw_sections(axes, centres, plane_axis, plane_index, radius, colour, linestyle,
                   linewidth, enlarge=1.0):
    """Circles where the particles (spheres) cut the plane, drawn enlarge times larger;
    returns how many were drawn."""
    drawn = 0
    offsets = np.abs(centres[:, plane_axis] - plane_index)
    in_plane = [a for a in (0, 1, 2) if a != plane_axis]  # (x, y) or (x, z)
    for centre, offset in zip(centres, offsets):
        if offset >= radius:
            continue
        section = np.sqrt(radius ** 2 - offset ** 2) * enlarge
        axes.add_patch(Circle((centre[in_plane[0]], centre[in_plane[1]]), section,
                              fill=False, edgecolor=colour, linestyle=linestyle,
                              linewidth=linewidth))
        drawn += 1
    return drawn


def draw_picks(figure, volume, picks, z, diameters, y=None, reference=None,
               classes=None, voxel_size=None, title='Picks'):
    """XY slice at z and XZ slice at y with the picked particles drawn as circles.

    volume: [z, y, x] array (memmap is fine); picks/reference: Coords (x, y, z in voxels);
    diameters: {class name: particle diameter in voxels}; classes: names to show
    (default all). A particle is drawn where its sphere cuts the slice; reference
    particles as larger dashed circles of the same colour.
    """
    depth, height, width = volume.shape
    y = height // 2 if y is None else y
    names = list(diameters) if classes is None else [str(c) for c in classes]
    unknown = [n for n in names if n not in diameters]
    if unknown:
        raise ValueError(f'unknown class(es) {unknown}; known: {sorted(diameters)}')
    colours = class_colours(list(diameters))
    xy_image = slab_mean(volume, 0, z)
    xz_image = slab_mean(volume, 1, y)
    vmin, vmax = contrast_limits(xy_image)

    figure.set_layout_engine('constrained')
    xy_axes, xz_axes = figure.subplots(2, 1, sharex=True,
                                       height_ratios=[height, max(depth, height / 6)])
    for axes, image in ((xy_axes, xy_image), (xz_axes, xz_image)):
        axes.imshow(image, cmap='gray', vmin=vmin, vmax=vmax, origin='lower',
                    interpolation='nearest')

    legend = []
    for name in names:
        for coords, is_reference in ((picks, False), (reference, True)):
            if coords is None:
                continue
            mask = np.asarray([str(n) for n in coords.names]) == name
            centres = coords.xyz[mask]
            enlarge = REFERENCE_RADIUS_FACTOR if is_reference else 1.0
            style, line_width = ('--', 1.0) if is_reference else ('-', 1.8)
            drawing = dict(radius=diameters[name] / 2, colour=colours[name], linestyle=style,
                           linewidth=line_width, enlarge=enlarge)
            count = _draw_sections(xy_axes, centres, 2, z, **drawing)
            _draw_sections(xz_axes, centres, 1, y, **drawing)
            label = f'{name} reference' if is_reference else f'{name} picks'
            legend.append(Line2D([], [], color=colours[name], ls=style, lw=line_width,
                                 label=f'{label}: {count} in this slice, {int(mask.sum())} total'))
    xy_axes.axhline(y, color='yellow', lw=0.6, alpha=0.6)
    xz_axes.axhline(z, color='yellow', lw=0.6, alpha=0.6)
    unit = 'voxels' if voxel_size is None else f'voxels of {voxel_size:g} Å'
    slab = 2 * DEFAULT_SLAB_HALF_WIDTH + 1
    xy_axes.set(title=f'XY at z = {z} (mean of {slab} slices)', ylabel=f'y ({unit})',
                xlim=(-0.5, width - 0.5), ylim=(-0.5, height - 0.5))
    xz_axes.set(title=f'XZ at y = {y} (yellow lines: where the other slice cuts)',
                xlabel=f'x ({unit})', ylabel=f'z ({unit})', ylim=(-0.5, depth - 0.5))
    if legend:
        figure.legend(handles=legend, loc='outside lower center', ncols=2 if reference else 1,
                      fontsize=8, frameon=False)
    figure.suptitle(title)


def draw_labels(figure, volume, labels, z, class_names, voxel_size=None,
                title='Weak labels'):
    """The tomogram slice at z beside the same slice with the label volume overlaid."""
    if volume.shape != labels.shape:
        raise ValueError(f'label volume {labels.shape} and tomogram {volume.shape} differ in shape')
    image = slab_mean(volume, 0, z)
    vmin, vmax = contrast_limits(image)
    label_slice = np.asarray(labels[z]).astype(np.int16)  # int8/uint8/uint16 files alike
    colours = class_colours(class_names)
    overlay_map = ListedColormap([colours[n] for n in class_names])
    overlay = np.ma.masked_equal(label_slice, 0)

    figure.set_layout_engine('constrained')
    raw_axes, label_axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for axes in (raw_axes, label_axes):
        axes.imshow(image, cmap='gray', vmin=vmin, vmax=vmax, origin='lower',
                    interpolation='nearest')
    label_axes.imshow(overlay - 1, cmap=overlay_map, vmin=-0.5, vmax=len(class_names) - 0.5,
                      alpha=0.55, origin='lower', interpolation='nearest')
    unit = 'voxels' if voxel_size is None else f'voxels of {voxel_size:g} Å'
    raw_axes.set(title=f'tomogram at z = {z}', xlabel=f'x ({unit})', ylabel=f'y ({unit})')
    label_axes.set(title='with the labels the network learns', xlabel=f'x ({unit})')
    counts = [int((label_slice == i + 1).sum()) for i in range(len(class_names))]
    figure.legend(handles=[Patch(color=colours[n], alpha=0.6,
                                 label=f'{n}: {c} labelled voxels in this slice')
                           for n, c in zip(class_names, counts)],
                  loc='outside lower center', ncols=min(len(class_names), 3), fontsize=8,
                  frameon=False)
    figure.suptitle(title)


def draw_score_histograms(figure, picks, title='Pick scores'):
    """Histogram of the picks' scores, one per class."""
    if picks.score is None or len(picks) == 0:
        raise ValueError('the picks have no scores to draw')
    names = sorted({str(n) for n in picks.names})
    colours = class_colours(names)
    axes = figure.add_subplot(1, 1, 1)
    figure.set_layout_engine('constrained')
    bins = np.histogram_bin_edges(picks.score, bins=30)
    labels = np.asarray([str(n) for n in picks.names])
    for name in names:
        scores = picks.score[labels == name]
        axes.hist(scores, bins=bins, histtype='stepfilled', alpha=0.45, color=colours[name],
                  edgecolor=colours[name], label=f'{name} ({scores.size} picks)')
    axes.set(title=title, xlabel='score (MP-NMS pooled mask value)', ylabel='picks')
    axes.grid(alpha=0.3)
    axes.legend()


def draw_threshold_curve(figure, curve, title='Precision / recall against the score threshold'):
    """P/R/F1 against the minimum score (left) and the precision-recall curve (right)."""
    overall = curve[ALL]
    if overall['threshold'].size == 0:
        raise ValueError('the threshold curve is empty')
    figure.set_layout_engine('constrained')
    threshold_axes, pr_axes = figure.subplots(1, 2)
    for key, label in (('precision', 'precision'), ('recall', 'recall'), ('f1', 'F1')):
        threshold_axes.plot(overall['threshold'], overall[key], label=label,
                            lw=2.5 if key == 'f1' else 1.2)
    best = int(np.argmax(overall['f1']))
    threshold_axes.axvline(overall['threshold'][best], color='grey', ls=':', lw=1)
    threshold_axes.annotate(f"best F1 {overall['f1'][best]:.3f}\n"
                            f"at score ≥ {overall['threshold'][best]:.3g}",
                            (overall['threshold'][best], overall['f1'][best]),
                            xytext=(8, -34), textcoords='offset points', fontsize=9)
    threshold_axes.set(title='all classes (localisation)', xlabel='minimum score kept',
                       ylabel='value', ylim=(0, 1.05))
    threshold_axes.grid(alpha=0.3)
    threshold_axes.legend(loc='lower left')

    class_names = [n for n in curve if n != ALL]
    colours = class_colours(class_names)
    for name in class_names:
        pr_axes.plot(curve[name]['recall'], curve[name]['precision'], '.-',
                     color=colours[name], label=name, ms=4)
    pr_axes.plot(overall['recall'], overall['precision'], 'k.-', lw=2, ms=4,
                 label='all (localisation)')
    pr_axes.set(title='precision-recall', xlabel='recall', ylabel='precision',
                xlim=(0, 1.02), ylim=(0, 1.05))
    pr_axes.grid(alpha=0.3)
    pr_axes.legend(loc='lower left')
    figure.suptitle(title)


PRETRAIN_PARTS = {'grey': 'grey level (within / total variance)', 'semantic': 'semantic (region InfoNCE)',
                  'restoration': 'restoration (error / variance)'}


def draw_pretraining_history(figure, rows, config=None, title='Pre-training'):
    """The self-supervised loss per epoch, and its parts, from model_folder.read_pretrain_history rows."""
    if not rows:
        raise ValueError('the pre-training history is empty: no epoch finished yet')
    history = {key: np.array([row[key] for row in rows], dtype=float) for key in rows[0]}
    epochs = history['epoch']
    figure.set_layout_engine('constrained')
    axes = figure.subplots(1, 1)
    axes.plot(epochs, history['loss'], 'o-', label='loss', ms=3, lw=2.5)
    for key, label in PRETRAIN_PARTS.items():
        part = history[key]  # a part that is the whole loss (the masked objective's) is not drawn twice
        if np.isfinite(part).any() and not np.allclose(part, history['loss'], equal_nan=True):
            axes.plot(epochs, part, 's-', label=label, ms=2, lw=1.2)
    axes.set(title=f"Objective: {(config or {}).get('objective', '?')}", xlabel='epoch', ylabel='loss')
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.suptitle(f'{title} ({int(epochs[-1])} epochs, {np.nansum(history["seconds"]) / 60:.1f} min)')


def draw_adaptation(figure, curves, rows, title='Adaptation'):
    """An adaptation's curves: its term's values per training step (model_folder.read_adaptation:
    discriminator losses and domain accuracies, or the loss on pseudo-labelled or restyled
    patches), and the source's validation F1 per epoch (history rows), which adapting must keep."""
    figure.set_layout_engine('constrained')
    term_axes, score_axes = figure.subplots(1, 2)
    steps = np.array(curves.get('step', []), dtype=float)
    for name, values in curves.items():
        if name != 'step':
            term_axes.plot(steps, values, lw=1, label=name.replace('_', ' '))
    term_axes.set(title='Adaptation term per step', xlabel='training step', ylabel='value')
    term_axes.grid(alpha=0.3)
    if len(curves) > 1:
        term_axes.legend(fontsize=8)
    if rows:
        epochs = [row['epoch'] for row in rows]
        score_axes.plot(epochs, [row['val_f1'] for row in rows], 'o-', ms=3, lw=2, label='source validation F1')
        score_axes.legend(loc='lower right')
        score_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    score_axes.set(title='Source data kept', xlabel='epoch', ylabel='F1', ylim=(0, 1.05))
    score_axes.grid(alpha=0.3)
    figure.suptitle(title)
