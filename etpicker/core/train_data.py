"""Training material: tomograms paired with their annotations, the class order, and the
validation split (a held-out block, or validation tomograms) as patch sources."""
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import Coords, Tomogram, check_inside, open_tomogram, read_coords, sorted_names
from .labels import check_diameters
from .normalise import robust_stats
from .sampling import PatchSource
from .settings import DEFAULT_DIAMETER, MIN_VAL_PARTICLES, voxel_sizes_agree

MAX_CLASSES = 255  # class ids live in uint8 label volumes and class maps


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


def per_class(values, n_classes, what="diameter"):
    """One value per class from one value (for every class) or one per class."""
    values = list(values)
    if len(values) == 1:
        values = values * n_classes
    if len(values) != n_classes:
        raise InputError(f"give one {what} or one per class ({n_classes}), got {len(values)}")
    return values


def expand_diameters(diameters, n_classes, default=DEFAULT_DIAMETER):
    """One weak-label diameter per class: none given -> default, one -> for every class."""
    return check_diameters(per_class(diameters or [default], n_classes))


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


def sparse_validation_classes(names, classes, minimum=MIN_VAL_PARTICLES):
    """{class: count} for each class with fewer than `minimum` scored validation particles."""
    counts = {name: int(np.sum(names == name)) for name in classes}
    return {name: count for name, count in counts.items() if count < minimum}


def _material(tomogram, coords, index, patch):
    """(centres zyx, class ids, (centre, scale)) of an annotated tomogram at least a patch large."""
    if min(tomogram.data.shape) < patch:
        raise InputError(f"{tomogram.path}: shape {tomogram.data.shape} is smaller than the {patch}-voxel "
                         f"training patch; give a smaller --patch")
    unknown = sorted(set(coords.names) - set(index))
    if unknown:
        raise InputError(f"{tomogram.path}: coordinates use class(es) {', '.join(unknown)} not in the training "
                         f"classes")
    zyx = coords.xyz[:, ::-1].copy()
    class_ids = np.array([index[name] for name in coords.names], dtype=np.int64)
    return zyx, class_ids, robust_stats(tomogram.data, name=str(tomogram.path))


def prepare_data(pairs, val_pairs, classes, val_fraction, patch, face_margin):
    """Training sources, validation sources (for the Dice loss) and validation sets."""
    index = {name: i + 1 for i, name in enumerate(classes)}
    sources, val_sources, val_sets = [], [], []
    for tomogram, coords in pairs:
        shape = tomogram.data.shape
        zyx, class_ids, (centre, scale) = _material(tomogram, coords, index, patch)
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
        sources.append(PatchSource(tomogram.data, centre, scale, zyx, class_ids, trainable, limit))
    for tomogram, coords in val_pairs:
        zyx, class_ids, (centre, scale) = _material(tomogram, coords, index, patch)
        val_sources.append(PatchSource(tomogram.data, centre, scale, zyx, class_ids,
                                       np.ones(len(zyx), dtype=bool), tomogram.data.shape))
        val_sets.append(ValidationSet(tomogram, np.zeros(3), coords.xyz, coords.names, stats=(centre, scale)))
    return sources, val_sources, val_sets


def common_voxel_size(tomograms):
    """The one voxel size (Å) of the tomograms' headers; InputError when one gives none or
    they disagree."""
    unknown = [t.stem for t in tomograms if t.voxel_size is None]
    if unknown:
        raise InputError(f"the headers of {', '.join(unknown)} give no voxel size; give --voxel-size (Å)")
    voxel_sizes = [t.voxel_size for t in tomograms]
    if not voxel_sizes_agree(voxel_sizes):
        raise InputError(f"all tomograms must share one voxel size; found {sorted(set(voxel_sizes))} Å "
                         "in their headers (give --voxel-size when the headers are wrong)")
    return voxel_sizes[0]
