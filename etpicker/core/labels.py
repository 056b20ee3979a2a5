"""Weak labels: a small mask of the class index painted around each annotated centre.

For a centre rounded to voxel p and a diameter d, the mask lives in the cube
p - d//2 .. p - d//2 + d - 1 on each axis (d voxels, so even diameters work too), and
distances are measured from the cube's geometric centre; r = (d - 1) / 2.
"""
import numpy as np

from .errors import InputError

LABEL_TYPES = ("tball", "ball", "cubic", "gaussian")
# Below 3 voxels a ball paints nothing (d = 2: every voxel lies 0.87 from the centre, r = 0.5).
MIN_DIAMETER = 3


def _support(rho2, radius2, kind):
    """Which voxels of a cube (squared distances rho2) the mask covers."""
    if kind == "cubic":
        return np.ones(rho2.shape, dtype=bool)
    if kind == "ball":
        return rho2 <= radius2
    return rho2 <= 2 * radius2  # tball and gaussian: the ball of radius sqrt(2) r cut by the cube


def check_diameters(diameters):
    """Diameters as a list of ints >= MIN_DIAMETER; InputError otherwise."""
    checked = []
    for diameter in diameters:
        if float(diameter) != int(diameter) or int(diameter) < MIN_DIAMETER:
            raise InputError(f"label diameters must be whole numbers of voxels >= {MIN_DIAMETER}, got {diameter}")
        checked.append(int(diameter))
    return checked


def paint_labels(shape, centres_zyx, class_ids, diameters, kind="tball", origin=(0, 0, 0)):
    """Paint the box [origin, origin + shape) of a volume.

    Returns (uint8 class ids, float32 weight): 0 is background, class_ids are 1-based and
    diameters[i] belongs to class i + 1. The weight is 1 except inside Gaussian masks.
    Where masks overlap, each voxel goes to the nearest centre (ties to the lower index)."""
    if kind not in LABEL_TYPES:
        raise InputError(f"unknown label type {kind!r}; choose one of {', '.join(LABEL_TYPES)}")
    diameters = check_diameters(diameters)
    shape = np.asarray(shape, dtype=np.int64)
    origin = np.asarray(origin, dtype=np.int64)
    centres = np.asarray(centres_zyx, dtype=np.float64).reshape(-1, 3)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if len(class_ids) != len(centres):
        raise ValueError("paint_labels: one class id per centre is needed")
    if len(class_ids) and (class_ids.min() < 1 or class_ids.max() > len(diameters)):
        raise InputError(f"class ids must lie in 1..{len(diameters)} (one diameter per class)")

    ids = np.zeros(tuple(shape), dtype=np.uint8)
    weight = np.ones(tuple(shape), dtype=np.float32)
    nearest = np.full(tuple(shape), np.inf, dtype=np.float32)
    voxels = np.floor(centres + 0.5).astype(np.int64)  # -0.5 and size-0.5 stay in the edge voxels
    for voxel, class_id in zip(voxels, class_ids):
        diameter = diameters[class_id - 1]
        start = voxel - diameter // 2
        lo = np.maximum(start, origin)
        hi = np.minimum(start + diameter, origin + shape)
        if np.any(hi <= lo):
            continue
        geometric_centre = start + (diameter - 1) / 2
        axes = [np.arange(lo[a], hi[a]) - geometric_centre[a] for a in range(3)]
        rho2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        radius2 = ((diameter - 1) / 2) ** 2
        box = tuple(slice(lo[a] - origin[a], hi[a] - origin[a]) for a in range(3))
        wins = _support(rho2, radius2, kind) & (rho2 < nearest[box])
        nearest[box][wins] = rho2[wins]
        ids[box][wins] = class_id
        if kind == "gaussian":
            sigma2 = (diameter / 4) ** 2
            weight[box][wins] = np.exp(-rho2[wins] / (2 * sigma2))
    return ids, weight
