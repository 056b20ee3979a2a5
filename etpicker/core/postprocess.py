"""MP-NMS: turn a segmentation class map into particle centres with scores.

Per class: binarise, mean-pool (k³, stride 1, zero padding) n = round(d / (k - 1)) + 1
times so a voxel's value grows with its depth inside the mask, keep voxels equal to the
max-pool of their (2·max(1, floor(d/4)) + 1)³ neighbourhood and above `floor`, drop those scoring
below `min_score`, then keep the higher score of any two closer than `min_distance`.
Pooling is separable (three 1-D window passes per 3-D pooling, the same result), runs on
any torch device, and works in z-slabs with a halo, cropped to where the class occurs, so
memory stays bounded and the result equals the whole-volume computation. Centres are
refined to sub-voxel precision by parabolic interpolation of the pooled values.
"""
import numpy as np
import torch
from scipy.spatial import cKDTree

from .labels import paint_labels
from .settings import DEFAULT_RELATIVE_MIN_SCORE
# Maxima of touching particles are pulled ~1-2 voxels towards each other by the pooling,
# so de-duplicating at a full diameter would merge them; half a diameter does not.
DEFAULT_MIN_DISTANCE_FACTOR = 0.5
SLAB_VOXELS = 48_000_000  # voxels per slab buffer (float32: 192 MB; ~4 such buffers live at once)


def pooling_passes(diameter, k):
    return int(round(diameter / (k - 1))) + 1


def nms_radius(diameter):
    return max(1, int(diameter) // 4)  # radius 0 would keep every voxel of a small blob


def _window(x, axis, kernel, reduce):
    """Sliding-window reduction of width `kernel` (odd) along `axis` of a 3-D tensor, 'same'
    size, ignoring what lies outside. Shifted in-place slice arithmetic: far faster than
    torch's 3-D pooling on CPU, no padded copy, and each voxel's terms are combined in the
    same order whatever the block size (so slabs reproduce the whole-volume result)."""
    result = x.clone()
    size = x.shape[axis]
    for shift in range(1, min(kernel // 2, size - 1) + 1):
        later, earlier = result.narrow(axis, shift, size - shift), result.narrow(axis, 0, size - shift)
        reduce(later, x.narrow(axis, 0, size - shift), out=later)
        reduce(earlier, x.narrow(axis, shift, size - shift), out=earlier)
    return result


def _box_mean(x, kernel):
    for axis in range(3):
        x = _window(x, axis, kernel, torch.add)  # zeros outside: background
    return x / kernel ** 3


def _box_max(x, kernel):
    for axis in range(3):
        x = _window(x, axis, kernel, torch.maximum)
    return x


def _soft_mask(binary, passes, k):
    value = binary
    for _ in range(passes):
        value = _box_mean(value, k)
    return value


def _spread(mask, axis, lo, hi):
    """result[i] = any(mask[i + s] for s in lo..hi) along `axis` (False outside)."""
    result = mask.clone() if lo <= 0 <= hi else torch.zeros_like(mask)
    size = mask.shape[axis]
    for shift in range(lo, hi + 1):
        if shift == 0 or abs(shift) >= size:
            continue
        n = size - abs(shift)
        target = result.narrow(axis, max(0, -shift), n)
        torch.logical_or(target, mask.narrow(axis, max(0, shift), n), out=target)
    return result


def _thin_plateaus(candidates, radius):
    """Keep a candidate only if no other candidate follows it (in z, y, x order) within its
    window. Candidates within one window are tied (each is the other's window maximum), so
    this keeps one voxel per small plateau and a handful for a large flat region (an
    over-segmented blob), instead of every voxel of it."""
    if radius == 0:
        return candidates
    r = radius
    ahead_z = _spread(_spread(_spread(candidates, 0, 1, r), 1, -r, r), 2, -r, r)
    ahead_y = _spread(_spread(candidates, 1, 1, r), 2, -r, r)
    ahead_x = _spread(candidates, 2, 1, r)
    return candidates & ~(ahead_z | ahead_y | ahead_x)


def _subvoxel_offsets(value, where):
    """Parabolic peak interpolation per axis, so plateaus of tied voxels give their middle."""
    upper = torch.tensor(value.shape, device=value.device) - 1
    centre = value[tuple(where.T)]
    offsets = []
    for axis in range(3):
        step = torch.zeros(3, dtype=where.dtype, device=where.device)
        step[axis] = 1
        before = value[tuple(torch.minimum(torch.clamp(where - step, min=0), upper).T)]
        after = value[tuple(torch.minimum(where + step, upper).T)]
        curvature = before - 2 * centre + after
        offset = torch.where(curvature < 0, (before - after) / (2 * curvature), torch.zeros_like(centre))
        offsets.append(offset.clamp(-0.5, 0.5))
    return torch.stack(offsets, dim=1)


def _local_maxima(binary, diameter, k, floor):
    """(voxel indices, sub-voxel zyx positions, values) of the pooled maxima of one binary
    block (a torch tensor)."""
    value = _soft_mask(binary, pooling_passes(diameter, k), k)
    radius = nms_radius(diameter)
    peak = _box_max(value, 2 * radius + 1)
    where = torch.nonzero(_thin_plateaus((value == peak) & (value > floor), radius))
    positions = where.double() + _subvoxel_offsets(value, where).double()
    return where.cpu().numpy(), positions.cpu().numpy(), value[tuple(where.T)].float().cpu().numpy()


def ideal_score(diameter, k=5):
    """The score of a fully segmented ball of `diameter` voxels."""
    margin = pooling_passes(diameter, k) * (k // 2) + 2 * nms_radius(diameter) + 1
    size = int(diameter) + 2 * margin
    ball, _ = paint_labels((size, size, size), [[size // 2] * 3], [1], [diameter], "ball")
    _, _, values = _local_maxima(torch.from_numpy(ball).float(), diameter, k, floor=0.0)
    return float(values.max())


def _bounding_box(mask):
    """(lo, hi) per axis of the True voxels of a 3-D boolean array, or None when empty."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def _class_candidates(class_map, class_id, diameter, k, floor, device, slab):
    # pooled values need passes·(k//2) voxels of context, maxima nms_radius more, and
    # plateau thinning another nms_radius
    halo = pooling_passes(diameter, k) * (k // 2) + 2 * nms_radius(diameter)
    depth = class_map.shape[0]
    if slab is None:
        slab = max(halo, SLAB_VOXELS // int(np.prod(class_map.shape[1:])) - 2 * halo)
    found_zyx, found_score = [], []
    for z0 in range(0, depth, slab):
        z1 = min(z0 + slab, depth)
        lo_z, hi_z = max(0, z0 - halo), min(depth, z1 + halo)
        mask = np.asarray(class_map[lo_z:hi_z]) == class_id
        box = _bounding_box(mask)
        if box is None:
            continue
        # Outside the class's bounding box everything is background, so a crop with a halo
        # margin gives the same values as the full slab.
        crop = [(lo_z, hi_z)] + [(max(0, lo - halo), min(n, hi + halo))
                                 for (lo, hi), n in zip(box[1:], class_map.shape[1:])]
        block = mask[:, crop[1][0]:crop[1][1], crop[2][0]:crop[2][1]]
        binary = torch.from_numpy(block).to(device=device, dtype=torch.float32)
        voxels, zyx, score = _local_maxima(binary, diameter, k, floor)
        shift = np.array([c[0] for c in crop])
        core = (voxels[:, 0] + shift[0] >= z0) & (voxels[:, 0] + shift[0] < z1)
        found_zyx.append(zyx[core] + shift)
        found_score.append(score[core])
    if not found_zyx:
        return np.zeros((0, 3)), np.zeros(0, np.float32)
    return np.concatenate(found_zyx), np.concatenate(found_score)


def deduplicate(zyx, score, min_distance):
    """Indices kept when, of any two points closer than min_distance, the higher score wins
    (greedy by decreasing score; ties broken by z, y, x so results are repeatable)."""
    order = np.lexsort((zyx[:, 2], zyx[:, 1], zyx[:, 0], -score))
    if min_distance <= 0 or len(order) < 2:
        return order
    tree = cKDTree(zyx)
    radius = min_distance * (1 - 1e-9)  # the tree includes distance == r; only "closer than" suppresses
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for index in order:
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed[tree.query_ball_point(zyx[index], radius)] = True
    return np.array(kept, dtype=np.int64)


def mp_nms(class_map, diameters, k=5, floor=0.1, min_score=None, min_distance=None, device="cpu", slab=None,
           relative_min_score=DEFAULT_RELATIVE_MIN_SCORE):
    """Particle centres of a uint8 class map (0 = background, c = class c, diameters[c-1]).

    Returns (class_ids int64 n, zyx float64 n×3, score float64 n), sorted by class then
    decreasing score; positions are refined to sub-voxel precision. Defaults: min_score is
    relative_min_score (one value, or one per class) x ideal_score(d) per class, min_distance
    is half the class diameter. `slab` is the
    number of z slices processed at once (chosen from a memory budget when None)."""
    device = torch.device(device)
    relative = np.broadcast_to(np.asarray(relative_min_score, dtype=np.float64), (len(diameters),))
    ids, centres, scores = [], [], []
    for class_id, diameter in enumerate(diameters, start=1):
        ideal = ideal_score(diameter, k)
        # The floor rejects specks; for small diameters (under 5 voxels) it would reject a
        # fully segmented ball too, so it never exceeds half of that ball's score.
        class_floor = min(floor, 0.5 * ideal)
        zyx, score = _class_candidates(class_map, class_id, diameter, k, class_floor, device, slab)
        threshold = relative[class_id - 1] * ideal if min_score is None else min_score
        strong = score >= threshold
        zyx, score = zyx[strong], score[strong]
        distance = DEFAULT_MIN_DISTANCE_FACTOR * diameter if min_distance is None else min_distance
        kept = deduplicate(zyx, score, distance)
        ids.append(np.full(len(kept), class_id, dtype=np.int64))
        centres.append(zyx[kept])
        scores.append(score[kept].astype(np.float64))
    ids, centres, scores = np.concatenate(ids), np.concatenate(centres).reshape(-1, 3), np.concatenate(scores)
    # One particle whose voxels the network shared between two classes gives a maximum in
    # each: the class owning more of it (the higher pooled score) keeps the pick.
    distance = DEFAULT_MIN_DISTANCE_FACTOR * min(diameters) if min_distance is None else min_distance
    kept = np.sort(deduplicate(centres, scores, distance))
    return ids[kept], centres[kept], scores[kept]
