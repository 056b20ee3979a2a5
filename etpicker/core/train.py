"""Training: patches -> augmented batches -> soft Dice, validated by real picking F1.

The model folder gets `config.json` at the start, `weights.pt` whenever validation
improves, and `checkpoint.pt` plus `history.csv` after every epoch, so a run stopped by its
time budget (or killed) leaves a usable model and can be resumed.
"""

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .augment import default_augmentation
from .device import autocast, autocast_dtype, dtype_name, resolve_device
from .io import (Coords, InputError, Tomogram, check_inside, check_voxel_size, open_tomogram, read_config,
                 read_coords, sorted_names, voxel_sizes_agree, write_config)
from .labels import LABEL_TYPES, check_diameters
from .losses import dice_ce_loss, soft_target
from .metrics import evaluate, matched, scores
from .model import DEFAULT_WIDTHS, check_widths
from .negatives import hard_negatives
from .normalise import robust_stats
from .pick import WEIGHTS_NAME, build_model, load_model, pick_tomogram
from .postprocess import DEFAULT_RELATIVE_MIN_SCORE, ideal_score
from .prefetch import prefetch
from .sampling import PatchSampler, PatchSource, patch_origin
from .shape_check import (CANDIDATE_RELATIVE_MIN_SCORE, HARMONIC_DEGREES, MIN_EXAMPLES, THRESHOLD_CHOICES,
                          fit_shape_check, probabilities, profile_radius, shape_features)

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.csv"
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_precision", "val_recall", "val_f1", "seconds",
                   "val_min_scores")
DEFAULT_DIAMETER = 9
BACKGROUND_FRACTION = 0.15
# Hard-negative patches per particle patch. Off by default: 0.35 lowered validation F1 in
# 15-minute CPU runs on crowded realistic tomograms (issue 2's notes); untested on longer runs.
DEFAULT_HARD_NEGATIVE_FRACTION = 0.0
HARD_NEGATIVES_PER_PARTICLE = 3  # candidates kept per tomogram, per annotated particle
MAX_VAL_PATCHES = 64
# Relative score thresholds (x a fully segmented ball's score) tried on validation picks;
# each class's best becomes the model's default for picking. Well-segmented particles
# score above 1 (the network paints more than the weak label's ball): up to 1/ideal_score,
# 3.2 for a 7-voxel label, where the best threshold of a small class can lie above 1.5.
MIN_SCORE_CHOICES = np.round(np.arange(CANDIDATE_RELATIVE_MIN_SCORE, 3.001, 0.05), 2)
# Fewer validation particles of a class than this draw a warning: the kept epoch and the
# class's score threshold are chosen on them. With 7 per class both were noisy, and
# thresholds tuned on 35 per class picked test tomograms better (bench/README.md).
MIN_VAL_PARTICLES = 20
MAX_CLASSES = 255  # class ids live in uint8 label volumes and class maps
DIVERGED_STEPS = 3  # consecutive non-finite training losses that stop a run
# Settings a resumed run must share with the run that wrote the checkpoint.
RESUME_KEYS = ("classes", "diameters", "label_type", "voxel_size", "patch", "pad", "widths", "epochs", "batch",
               "lr", "val_fraction", "ce_weight", "hard_negative_fraction")


def default_pad(patch):
    """Tile margin for validation picking, stored for picking: the reference's training 12
    voxels for a 72-voxel patch. Picking with the margin that validation tuned the score
    thresholds at was as accurate as the reference's picking 18 (patch/4), or more, and
    about twice as fast (bench/README.md)."""
    return round(patch / 6)


def class_order(coords_list, classes=None):
    """`classes` when given (every annotated class must be among them), else the unique
    class names of the annotations in `sorted_names` order."""
    found = sorted_names({str(name) for coords in coords_list for name in coords.names})
    if not classes:
        if not found:
            raise InputError("the coordinate files hold no particles")
        classes = found
    classes = [str(name) for name in classes]
    if len(classes) > MAX_CLASSES:
        raise InputError(f"{len(classes)} classes; at most {MAX_CLASSES} (label volumes are uint8)")
    if len(set(classes)) != len(classes):
        raise InputError(f"--classes lists a class twice: {','.join(classes)}")
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise InputError(f"annotations use class(es) {', '.join(unknown)} missing from --classes {','.join(classes)}")
    return classes


def expand_diameters(diameters, n_classes, default=DEFAULT_DIAMETER):
    """One diameter per class: none given -> default, one -> for every class."""
    diameters = [default] if not diameters else list(diameters)
    if len(diameters) == 1:
        diameters = diameters * n_classes
    if len(diameters) != n_classes:
        raise InputError(f"give one diameter or one per class ({n_classes}), got {len(diameters)}")
    return check_diameters(diameters)


def pair_by_stem(tomo_paths, coord_paths, what="--coords", voxel_size=None):
    """(Tomogram, Coords) per tomogram, its coordinates being the file with the same stem;
    `voxel_size` (Å), when given, replaces the headers'."""
    by_stem = {}
    for path in coord_paths:
        if Path(path).stem in by_stem:
            raise InputError(f"two coordinate files for tomogram {Path(path).stem}")
        by_stem[Path(path).stem] = path
    pairs, seen = [], set()
    for path in tomo_paths:
        tomogram = open_tomogram(path, voxel_size)
        if tomogram.stem in seen:
            raise InputError(f"two tomograms are named {tomogram.stem} ({path} is the second)")
        seen.add(tomogram.stem)
        if tomogram.stem not in by_stem:
            raise InputError(f"no {what} file named {tomogram.stem}.csv for tomogram {path}")
        coords_path = by_stem.pop(tomogram.stem)
        coords = read_coords(coords_path)
        check_inside(coords.xyz, tomogram.data.shape, coords_path)
        pairs.append((tomogram, coords))
    if by_stem:
        raise InputError(f"{what} file(s) without a tomogram: {', '.join(str(p) for p in by_stem.values())}")
    return pairs


def validation_block(shape, zyx, fraction, patch):
    """(axis, start): the particles with zyx[:, axis] >= start are held out.

    When only training tomograms are given, validation uses a block at the high end of the
    longest in-plane axis. A random particle split would not do: held-out particles would
    sit unlabelled inside training patches, teaching the network that they are background,
    and validation would score particles whose surroundings were trained on. Training
    patches therefore stay below `start`."""
    axis = 1 if shape[1] > shape[2] else 2
    n_val = max(1, round(fraction * len(zyx)))
    values = np.sort(zyx[:, axis])
    if n_val >= len(values):
        raise InputError(f"{len(values)} particles are too few to hold out {fraction:g} of them for validation; "
                         f"annotate more or give --val-tomos/--val-coords")
    start = int(math.floor((values[-n_val - 1] + values[-n_val]) / 2)) + 1
    if start < patch:
        raise InputError(f"the validation block (the last {shape[axis] - start} voxels along "
                         f"{'zyx'[axis]}) leaves less than one {patch}-voxel patch for training; "
                         f"give --val-tomos/--val-coords, a smaller --val-fraction or a smaller --patch")
    return axis, start


@dataclass
class ValidationSet:
    """A region picked during validation and the annotations scored there. Only
    predictions and annotations with coordinate `axis` >= `keep_from` count, so particles
    cut by a block face are not scored (both None: the whole tomogram counts)."""
    tomogram: Tomogram
    offset_zyx: np.ndarray
    truth_xyz: np.ndarray
    truth_names: np.ndarray
    axis: int = None
    keep_from: float = None
    # (centre, scale), read once, not at every epoch; a held-out block gets its whole
    # tomogram's, with which training and picking standardise it
    stats: tuple = None
    scored_truth: Coords = field(init=False)  # the annotations that count, found once

    def __post_init__(self):
        if self.stats is None:
            self.stats = robust_stats(self.tomogram.data, name=str(self.tomogram.path))
        kept = self.kept(self.truth_xyz)
        self.scored_truth = Coords(self.truth_names[kept], self.truth_xyz[kept], None)

    def kept(self, xyz):
        if self.axis is None:
            return np.ones(len(xyz), dtype=bool)
        return xyz[:, 2 - self.axis] >= self.keep_from


def _rng_state(rng, generator):
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "augment": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state, rng, generator):
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_history(path, history):
    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(HISTORY_COLUMNS)
            for row in history:
                writer.writerow([row["epoch"]] + [f"{row[key]:.6g}" for key in HISTORY_COLUMNS[1:-1]]
                                + ["/".join(f"{value:g}" for value in row.get("val_min_scores", {}).values())])
    _replace_whole(path, write)


def _save_atomically(obj, path):
    _replace_whole(path, lambda temporary: torch.save(obj, temporary))


def _replace_whole(path, write):
    """`write(temporary path)`, then rename it over `path`: neither a kill mid-write nor a
    reader (a viewer plotting a running training) ever sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def _one_cycle(total_steps, budget, clock, warmup=0.3, start=1 / 25, end=1e-4):
    """Learning-rate factor per step: cosine warm-up from `start` to 1, then cosine
    annealing to `end`, over whichever runs out first, the planned steps or the time
    budget. A run cut short by --max-minutes then still anneals instead of stopping near
    its peak rate (what a step-sized one-cycle schedule would do)."""
    def factor(step):
        progress = step / total_steps
        if budget is not None:
            spent = clock["before"] + time.monotonic() - clock["started"]
            progress = max(progress, spent / budget)
        progress = min(progress, 1.0)
        if progress < warmup:
            return start + (1 - start) * (1 - math.cos(math.pi * progress / warmup)) / 2
        return end + (1 - end) * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))) / 2
    return factor


def _train_epoch(model, sampler, plan, batch, augmentation, generator, optimizer, scheduler, scaler,
                 device, amp_dtype, n_channels, ce_weight, deadline=None):
    """One pass over the plan, or until `deadline` (time.monotonic()): on a slow CPU a
    single epoch can outlast the whole time budget."""
    model.train()
    total, count, diverged = 0.0, 0, 0
    for image, label in prefetch(sampler.batches(plan, batch)):
        if deadline is not None and count and time.monotonic() > deadline:
            break
        image, label = augmentation(image.to(device), label.to(device), generator)
        target = soft_target(label[:, 0].round().long(), label[:, 1], n_channels)
        with autocast(device, amp_dtype):
            logits = model(image)
        loss = dice_ce_loss(logits, target, ce_weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        value = loss.item()
        # A lone non-finite step can happen in float16 (the scaler skips it); a run of them
        # means the weights are lost.
        diverged = 0 if math.isfinite(value) else diverged + 1
        if diverged >= DIVERGED_STEPS:
            raise InputError(f"the training loss was NaN or infinite for {DIVERGED_STEPS} steps in a row: "
                             "the run diverged; lower --lr")
        if diverged == 0:
            total += value * len(image)
            count += len(image)
    return total / max(count, 1)


def _validation_loss(model, sampler, plan, batch, device, amp_dtype, n_channels):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for image, label in prefetch(sampler.batches(plan, batch)):
            image, label = image.to(device), label.to(device)
            with autocast(device, amp_dtype):
                logits = model(image)
            target = soft_target(label[:, 0].round().long(), label[:, 1], n_channels)
            total += dice_ce_loss(logits, target).item() * len(image)
            count += len(image)
    return total / count


def _tolerances(config):
    """Validation's matching distance per class: a quarter of its label diameter."""
    return {name: diameter / 4 for name, diameter in zip(config["classes"], config["diameters"])}


def _candidates(model, config, tomogram, stats, pad, batch, device, amp):
    """Picks down to the lowest score threshold that validation tries, unchecked."""
    return pick_tomogram(model, config, tomogram, pad=pad, batch=batch, device=device,
                         relative_min_score=CANDIDATE_RELATIVE_MIN_SCORE, amp=amp, stats=stats, shape_check=False)


def _relative_scores(picks, config):
    ideal = {name: ideal_score(diameter) for name, diameter in zip(config["classes"], config["diameters"])}
    return picks.score / np.array([ideal[name] for name in picks.names])


def _validation_candidates(model, config, val_sets, pad, batch, device, amp):
    """(candidate picks in the tomogram's frame, only those in the scored part; ValidationSet)
    per validation region."""
    picked = []
    for val in val_sets:
        predicted = _candidates(model, config, val.tomogram, val.stats, pad, batch, device, amp)
        predicted.xyz += val.offset_zyx[::-1]
        picked.append((predicted.subset(val.kept(predicted.xyz)), val))
    return picked


def _validation_scores(model, config, val_sets, pad, batch, device, amp):
    """Class-aware precision, recall, F1 of picking the validation regions, micro-averaged,
    at each class's relative score threshold (also returned) that is best there."""
    picks = [(predicted, _relative_scores(predicted, config), val.scored_truth)
             for predicted, val in _validation_candidates(model, config, val_sets, pad, batch, device, amp)]
    return best_min_scores(picks, config["classes"], _tolerances(config))


def fit_shape_checks(model, config, training_regions, val_sets, pad, batch, device, amp, log=print):
    """{class: ShapeCheck} for the classes whose check raised validation F1, with its
    probability threshold chosen there, and {class: (F1 without, F1 with the check)}.

    `training_regions`: (Tomogram, its annotations, (centre, scale), limit_zyx) per training
    tomogram; picks there within [0, limit) near an annotation of their class are the true
    examples, the others the false ones."""
    classes, tolerance = config["classes"], _tolerances(config)
    radius = {name: profile_radius(diameter) for name, diameter in zip(classes, config["diameters"])}
    examples = {name: [] for name in classes}
    for tomogram, coords, stats, limit in training_regions:
        picks = _candidates(model, config, tomogram, stats, pad, batch, device, amp)
        picks = picks.subset(np.all(picks.xyz[:, ::-1] < np.asarray(limit), axis=1))
        for name in classes:
            mine = picks.subset(picks.names == name)
            is_true, _ = matched(mine.xyz, coords.xyz[coords.names == name], tolerance[name])
            features = shape_features(tomogram.data, stats, mine.xyz, radius[name], HARMONIC_DEGREES)
            examples[name].append((features, mine.score, is_true))
    checks = {}
    for name in classes:
        features, network_scores, is_true = (np.concatenate(part) for part in zip(*examples[name]))
        check = fit_shape_check(features, network_scores, is_true, radius[name], HARMONIC_DEGREES)
        if check is None:
            log(f"shape check {name}: not fitted ({int(is_true.sum())} true and {int((~is_true).sum())} false "
                f"training picks; it needs {MIN_EXAMPLES} of each)")
        else:
            checks[name] = check
    relative, probability = [], []
    for predicted, val in _validation_candidates(model, config, val_sets, pad, batch, device, amp):
        in_region = Coords(predicted.names, predicted.xyz - val.offset_zyx[::-1], predicted.score)
        chance = probabilities(in_region, val.tomogram.data, val.stats, checks)
        relative.append((predicted, _relative_scores(predicted, config), val.scored_truth))
        probability.append((predicted, chance, val.scored_truth))
    kept_checks, f1s = {}, {}
    for name, check in checks.items():
        without = best_min_scores(relative, [name], tolerance)[2]
        _, _, with_check, threshold = best_min_scores(probability, [name], tolerance, THRESHOLD_CHOICES)
        f1s[name] = (without, with_check)
        if with_check > without:
            check.threshold = threshold[name]
            kept_checks[name] = check
        log(f"shape check {name}: validation F1 {without:.3f} without, {with_check:.3f} with"
            + (f" (probability >= {check.threshold:g}): kept" if name in kept_checks else ": not kept"))
    return kept_checks, f1s


def sparse_validation_classes(names, classes, minimum=MIN_VAL_PARTICLES):
    """{class: count} for each class with fewer than `minimum` scored validation particles."""
    counts = {name: int(np.sum(names == name)) for name in classes}
    return {name: count for name, count in counts.items() if count < minimum}


def best_min_scores(picks, classes, tolerance, choices=MIN_SCORE_CHOICES):
    """(precision, recall, F1, {class: threshold}): for each class the threshold of `choices`
    giving its best F1 over all `picks` ((predicted Coords, their relative scores, true
    Coords) per region), and the micro-averaged scores at those thresholds.

    Per class, because how fully the network segments a particle, hence its score relative
    to a whole ball, differs between classes."""
    tp = fp = fn = 0
    thresholds = {}
    for name in classes:
        results = []
        for choice in choices:
            counts = np.zeros(3, dtype=int)
            for predicted, relative, truth in picks:
                mine = predicted.subset((predicted.names == name) & (relative >= choice))
                result = evaluate(mine, truth.subset(truth.names == name), tolerance)["all"]
                counts += (result["tp"], result["fp"], result["fn"])
            results.append(counts)
        f1 = [2 * t / max(1, 2 * t + p + n) for t, p, n in results]
        if max(f1) == 0:  # nothing to choose on (no validation particles, or none found yet)
            best = int(np.argmin(np.abs(np.asarray(choices) - DEFAULT_RELATIVE_MIN_SCORE)))
        else:  # of equally good thresholds the middle one: the F1 plateau is noisy at its ends
            tied = [i for i, value in enumerate(f1) if value == max(f1)]
            best = tied[len(tied) // 2]
        thresholds[name] = float(choices[best])
        tp, fp, fn = tp + results[best][0], fp + results[best][1], fn + results[best][2]
    micro = scores(tp, fp, fn)
    return micro["precision"], micro["recall"], micro["f1"], thresholds


def _prepare_data(pairs, val_pairs, classes, val_fraction, patch, face_margin, diameters, hard_negatives_wanted):
    """Training sources, validation sources (for the Dice loss) and validation sets."""
    index = {name: i + 1 for i, name in enumerate(classes)}
    sources, val_sources, val_sets = [], [], []
    for tomogram, coords in pairs:
        shape = tomogram.data.shape
        if min(shape) < patch:
            raise InputError(f"{tomogram.path}: shape {shape} is smaller than the {patch}-voxel training patch; "
                             f"give a smaller --patch")
        zyx = coords.xyz[:, ::-1].copy()
        class_ids = np.array([index[name] for name in coords.names], dtype=np.int64)
        centre, scale = robust_stats(tomogram.data, name=str(tomogram.path))
        if val_pairs:
            trainable, limit = np.ones(len(zyx), dtype=bool), shape
        else:
            try:
                axis, start = validation_block(shape, zyx, val_fraction, patch)
            except InputError as error:
                raise InputError(f"{tomogram.path}: {error}") from None
            trainable = zyx[:, axis] < start
            limit = tuple(start if a == axis else shape[a] for a in range(3))
            # Pick with some real context before the block face, but score only beyond it.
            view_start = max(0, start - patch // 2)
            view = tuple(slice(view_start, None) if a == axis else slice(None) for a in range(3))
            offset = np.array([view_start if a == axis else 0 for a in range(3)])
            val_sets.append(ValidationSet(
                Tomogram(tomogram.path, tomogram.stem, tomogram.data[view], tomogram.voxel_size),
                offset, coords.xyz, coords.names, axis, start + face_margin, (centre, scale)))
            val_sources.append(PatchSource(tomogram.data, centre, scale, zyx, class_ids, ~trainable, shape))
        negatives = None
        if hard_negatives_wanted:
            negatives = hard_negatives(tomogram.data, zyx, diameters, limit,
                                       HARD_NEGATIVES_PER_PARTICLE * int(trainable.sum()))
        sources.append(PatchSource(tomogram.data, centre, scale, zyx, class_ids, trainable, limit, negatives))
    for tomogram, coords in val_pairs:
        if min(tomogram.data.shape) < patch:
            raise InputError(f"{tomogram.path}: shape {tomogram.data.shape} is smaller than the "
                             f"{patch}-voxel patch; give a smaller --patch")
        unknown = sorted(set(coords.names) - set(classes))
        if unknown:
            raise InputError(f"validation coordinates use class(es) {', '.join(unknown)} not in the training classes")
        zyx = coords.xyz[:, ::-1].copy()
        class_ids = np.array([index[name] for name in coords.names], dtype=np.int64)
        centre, scale = robust_stats(tomogram.data, name=str(tomogram.path))
        val_sources.append(PatchSource(tomogram.data, centre, scale, zyx, class_ids,
                                       np.ones(len(zyx), dtype=bool), tomogram.data.shape))
        val_sets.append(ValidationSet(tomogram, np.zeros(3), coords.xyz, coords.names))
    return sources, val_sources, val_sets


def train(tomos, coords, out, *, val_tomos=(), val_coords=(), val_fraction=0.2, diameters=None,
          label_type="tball", classes=None, epochs=60, max_minutes=None, patch=72, pad=None, batch=8,
          lr=1e-3, seed=0, device="auto", resume=False, init_model=None, widths=DEFAULT_WIDTHS,
          ce_weight=0.0, hard_negative_fraction=DEFAULT_HARD_NEGATIVE_FRACTION, amp="auto", voxel_size=None,
          shape_check=True, log=print):
    """Train a picking model into the folder `out`; returns a summary dict."""
    started = time.monotonic()
    out = Path(out)
    if label_type not in LABEL_TYPES:
        raise InputError(f"unknown label type {label_type!r}; choose one of {', '.join(LABEL_TYPES)}")
    if patch < 16 or patch % 8:
        raise InputError(f"the patch size must be a multiple of 8 and at least 16, got {patch}")
    pad = default_pad(patch) if pad is None else pad
    if not 0 <= 2 * pad < patch:
        raise InputError(f"pad must satisfy 0 <= 2*pad < patch; got pad {pad} with patch {patch}")
    if not ce_weight >= 0:
        raise InputError(f"--ce-weight must be at least 0, got {ce_weight}")
    if not 0 <= hard_negative_fraction <= 10:
        raise InputError(f"--hard-negatives must lie between 0 and 10 patches per particle patch, got {hard_negative_fraction}")
    if epochs < 1 or batch < 1 or not lr > 0:
        raise InputError("--epochs and --batch must be at least 1 and --lr positive")
    if not 0 < val_fraction < 1:
        raise InputError(f"--val-fraction must lie between 0 and 1, got {val_fraction}")
    if max_minutes is not None and not max_minutes > 0:
        raise InputError(f"--max-minutes must be positive, got {max_minutes}")
    check_voxel_size(voxel_size)
    if bool(val_tomos) != bool(val_coords):
        raise InputError("give both --val-tomos and --val-coords, or neither")
    widths = check_widths(widths)
    device = resolve_device(device)

    pairs = pair_by_stem(tomos, coords, voxel_size=voxel_size)
    val_pairs = pair_by_stem(val_tomos, val_coords, "--val-coords", voxel_size) if val_tomos else []
    classes = class_order([c for _, c in pairs], classes)
    diameters = expand_diameters(diameters, len(classes))
    if voxel_size is None:  # else the caller knows it better than the headers (Scipion's sampling rate)
        unknown = [t.stem for t, _ in pairs + val_pairs if t.voxel_size is None]
        if unknown:
            raise InputError(f"the headers of {', '.join(unknown)} give no voxel size; give --voxel-size (Å)")
        voxel_sizes = [t.voxel_size for t, _ in pairs + val_pairs]
        if not voxel_sizes_agree(voxel_sizes):
            raise InputError(f"all tomograms must share one voxel size; found {sorted(set(voxel_sizes))} Å "
                             "in their headers (give --voxel-size when the headers are wrong)")
        voxel_size = voxel_sizes[0]

    torch.manual_seed(seed)
    if init_model:
        model, init_config = load_model(init_model, device)
        if list(init_config["classes"]) != classes:
            raise InputError(f"--init-model {init_model} was trained for classes {','.join(init_config['classes'])}, "
                             f"these annotations have {','.join(classes)}")
        widths = init_config["widths"]
    config = {
        "format": 1, "classes": classes, "diameters": diameters, "label_type": label_type,
        "voxel_size": voxel_size, "patch": patch, "pad": pad,
        "widths": [int(w) for w in widths], "coordconv": True, "pyramid": True,
        "normalisation": "robust-standardise", "version": __version__,
        "training": {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "pad": pad,
                     "val_fraction": None if val_pairs else val_fraction, "ce_weight": ce_weight,
                     "hard_negative_fraction": hard_negative_fraction, "amp": amp, "shape_check": shape_check,
                     "tomograms": [str(t.path) for t, _ in pairs], "init_model": str(init_model or "")},
    }
    if not init_model:
        model = build_model(config).to(device)

    sources, val_sources, val_sets = _prepare_data(pairs, val_pairs, classes, val_fraction, patch,
                                                   max(diameters) / 4, diameters, hard_negative_fraction > 0)
    sampler = PatchSampler(sources, diameters, label_type, patch, BACKGROUND_FRACTION, hard_negative_fraction,
                           max_offset=patch // 2 - pad)
    if sampler.n_patches == 0:
        raise InputError("no particle is left for training")
    val_sampler = PatchSampler(val_sources, diameters, label_type, patch, 0.0)
    val_plan = [(i, patch_origin(c, patch, s.limit_zyx)) for i, s in enumerate(val_sources)
                for c in s.centres_zyx[s.trainable]][:MAX_VAL_PATCHES]
    if not val_plan:
        raise InputError("the validation coordinates hold no particles")
    scored = np.concatenate([val.scored_truth.names for val in val_sets])
    scores_particles = len(scored) > 0
    if not scores_particles:  # F1 on nothing means nothing: choose by the validation loss
        log("warning: validation scores no particle (all lie at the held-out block's face); the epoch kept is the "
            "one with the lowest validation loss and picking keeps the default score thresholds: give "
            "--val-tomos/--val-coords or a larger --val-fraction")
    for name, count in sparse_validation_classes(scored, classes).items():
        log(f"warning: validation scores only {count} particle(s) of {name}; the epoch kept and {name}'s score "
            f"threshold are chosen on them and will be noisy: give {MIN_VAL_PARTICLES} or more per class")

    steps_per_epoch = math.ceil(sampler.n_patches / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    clock = {"started": started, "before": 0.0}  # "before": seconds spent by the runs a resume continues
    budget = None if max_minutes is None else 60.0 * max_minutes
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _one_cycle(epochs * steps_per_epoch, budget, clock))
    amp_dtype = autocast_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    augmentation = default_augmentation()
    history, best, first_epoch = [], None, 0

    checkpoint_path = out / CHECKPOINT_NAME
    if resume:
        if not checkpoint_path.is_file():
            raise InputError(f"--resume: no {CHECKPOINT_NAME} in {out}")
        try:
            checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
            saved = {**checkpoint["config"], **checkpoint["config"]["training"]}
        except Exception as error:  # torch raises many kinds for a damaged file
            raise InputError(f"--resume: {checkpoint_path} is not a readable checkpoint "
                             f"({type(error).__name__}); train afresh without --resume") from None
        current = {**config, **config["training"]}
        changed = [key for key in RESUME_KEYS if saved.get(key) != current.get(key)]
        if changed:
            raise InputError(f"--resume: {', '.join(changed)} differ from the checkpointed run in {out}")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"], rng, generator)
        history, best, first_epoch = checkpoint["history"], checkpoint["best"], checkpoint["epoch"]
        if "relative_min_score" in checkpoint["config"]:  # the best epoch's, until a better one
            config["relative_min_score"] = checkpoint["config"]["relative_min_score"]
        clock["before"] = sum(row["seconds"] for row in history)
        log(f"resuming {out} after epoch {first_epoch}/{epochs}")
    else:
        # A fresh run replaces a model already there: never leave its weights next to this config.
        stale = [out / name for name in (WEIGHTS_NAME, CHECKPOINT_NAME, HISTORY_NAME) if (out / name).exists()]
        for path in stale:
            path.unlink()
        if stale:
            log(f"replacing the model in {out} (give --resume to continue it instead)")
    write_config(out, config)

    stopped_by_budget = False
    n_particles = sum(int(s.trainable.sum()) for s in sources)
    fits_checks = shape_check and scores_particles
    # Seconds the shape checks will take at the end, kept out of the network's share of the
    # budget: mostly picking every training tomogram once, estimated from validation's picking.
    reserve = 0.0
    val_voxels = sum(val.tomogram.data.size for val in val_sets)
    train_voxels = sum(int(np.prod(source.limit_zyx)) for source in sources)
    if not resume:
        log(f"training on {n_particles} particles ({', '.join(classes)}) + {sampler.n_background} background "
            f"+ {sampler.n_hard} hard-negative patches per epoch, validating on {len(val_sets)} region(s), device {device} "
            f"({dtype_name(amp_dtype)} network)")
    for epoch in range(first_epoch, epochs):
        epoch_started = time.monotonic()
        plan = sampler.epoch_plan(rng)
        # The budget covers the whole run, resumed parts included (raise it to go on).
        deadline = None if budget is None else started + budget - clock["before"] - reserve
        train_loss = _train_epoch(model, sampler, plan, batch, augmentation, generator, optimizer, scheduler,
                                  scaler, device, amp_dtype, len(classes) + 1, ce_weight, deadline)
        val_loss = _validation_loss(model, val_sampler, val_plan, batch, device, amp_dtype, len(classes) + 1)
        if scores_particles:
            picking_started = time.monotonic()
            precision, recall, f1, min_scores = _validation_scores(model, config, val_sets, pad, batch, device, amp)
            if fits_checks:
                reserve = (time.monotonic() - picking_started) * (1 + train_voxels / val_voxels)
        else:  # nothing to pick for: no F1, default thresholds
            precision = recall = f1 = math.nan
            min_scores = {name: DEFAULT_RELATIVE_MIN_SCORE for name in classes}
        seconds = time.monotonic() - epoch_started
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                        "val_precision": precision, "val_recall": recall, "val_f1": f1, "seconds": seconds,
                        "val_min_scores": min_scores})
        score = (f1 if scores_particles else 0.0, -val_loss)
        if best is None or score > tuple(best):
            best = score
            _save_atomically(model.state_dict(), out / WEIGHTS_NAME)
            config["relative_min_score"] = min_scores
            write_config(out, config)
        _save_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                          "epoch": epoch + 1, "best": best, "history": history, "config": config,
                          "rng": _rng_state(rng, generator)}, checkpoint_path)
        _write_history(out / HISTORY_NAME, history)
        log(f"epoch {epoch + 1}/{epochs} loss {train_loss:.3f} val_f1 {f1:.3f} min_scores "
            f"{'/'.join(f'{value:.2f}' for value in min_scores.values())} ({seconds:.1f} s)")
        elapsed = clock["before"] + time.monotonic() - started
        # Epochs are cut at the deadline, so the budget is spent on training, not guessed.
        if budget is not None and epoch + 1 < epochs and elapsed + reserve >= budget:
            stopped_by_budget = True
            log(f"time budget of {max_minutes:g} min reached after epoch {epoch + 1}; stopping")
            break
    best_row = max(history, key=lambda row: (row["val_f1"], -row["val_loss"])) if history else None
    if best_row:
        log(f"best val_f1 {best_row['val_f1']:.3f} at epoch {best_row['epoch']}; model in {out}")
    check_f1s = {}
    if fits_checks and best_row:
        model.load_state_dict(torch.load(out / WEIGHTS_NAME, map_location=device, weights_only=True))
        model.eval()
        regions = [(tomogram, coords, (source.centre, source.scale), source.limit_zyx)
                   for (tomogram, coords), source in zip(pairs, sources)]
        checks, check_f1s = fit_shape_checks(model, config, regions, val_sets, pad, batch, device, amp, log)
        config["shape_check"] = {name: check.to_json() for name, check in checks.items()}
        write_config(out, config)
    return {"epochs_done": len(history), "stopped_by_budget": stopped_by_budget,
            "best_epoch": best_row and best_row["epoch"], "best_f1": best_row and best_row["val_f1"],
            "shape_check_f1": check_f1s}
