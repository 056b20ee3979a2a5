"""Overlapped tiling: segment a whole tomogram tile-batch by tile-batch, keeping tile centres."""
import math
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from .device import autocast, freed_memory_kept
from .errors import InputError
from .io import release_pages
from .prefetch import prefetch
from .profile import Profile
from .progress import tracked
from .settings import PATCH_MULTIPLE, check_pad, check_probability_threshold

# Peak memory of the network's forward pass, per voxel of its input and per channel of its
# first level: about 860 bytes per voxel with 16 channels, normalised over patch-sized cells
# and freed memory kept for reuse (device.freed_memory_kept): a pick of a 128×256×256
# tomogram in 128×64×256 tiles peaked at 2.26 GB.
ACTIVATION_BYTES = 54
CPU_NETWORK_MEMORY = 1.5 * 1024 ** 3  # what one network call may hold on a CPU
GPU_MEMORY_SHARE = 0.4  # of the GPU's free memory


@dataclass(frozen=True)
class Tile:
    origin: tuple  # z, y, x of the tile's first voxel in volume coordinates (may be negative)
    keep_start: tuple  # the kept region [keep_start, keep_stop) in volume coordinates
    keep_stop: tuple


def _axis_tiles(size, tile, pad):
    """(origin, keep_start, keep_stop) along one axis; the kept ranges partition [0, size)."""
    stride = tile - 2 * pad
    if size < tile:
        # Only a volume smaller than a tile is reflect-padded, with `pad` voxels of context.
        return [(max(min(start - pad, size + pad - tile), -pad), start, min(start + stride, size))
                for start in range(0, size, stride)]
    # Tiles stay inside the volume: the network was trained on real data only, and mirrored
    # context made it pick ghosts near the faces. A face needs no margin, so the first tile
    # keeps all but its far margin.
    starts = [0] + list(range(tile - pad, size, stride)) if size > tile else [0]
    stops = starts[1:] + [size]
    return [(min(max(start - pad, 0), size - tile), start, stop) for start, stop in zip(starts, stops)]


def _per_axis(tile):
    return tuple(int(t) for t in tile) if np.ndim(tile) else (int(tile),) * 3


def tile_origins(shape, tile, pad):
    """All tiles (`tile` voxels along each axis, one number or z, y, x) covering a volume of
    `shape` (z, y, x): tile edges of `pad` voxels are discarded, so the stride is tile - 2 * pad;
    kept regions cover every voxel once."""
    tile = _per_axis(tile)
    for size in tile:
        check_pad(pad, size)
    per_axis = [_axis_tiles(int(n), t, pad) for n, t in zip(shape, tile)]
    return [Tile(tuple(t[0] for t in combo), tuple(t[1] for t in combo), tuple(t[2] for t in combo))
            for combo in product(*per_axis)]


def max_tile_voxels(first_width, device):
    """The most voxels one network call may take: from the free GPU memory, or a fixed share
    of a CPU's memory (the forward pass needs ACTIVATION_BYTES per voxel and first-level channel)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        memory = GPU_MEMORY_SHARE * free
    else:
        memory = CPU_NETWORK_MEMORY
    return int(memory // (ACTIVATION_BYTES * first_width))


def _axis_choices(size, patch, pad):
    """{number of tiles: the smallest tile (a multiple of 8, at least `patch`, inside the
    volume) that covers an axis of `size` voxels with that many}."""
    if size <= patch:
        return {len(_axis_tiles(size, patch, pad)): patch}
    choices = {}
    for tile in range(patch, size + 1, PATCH_MULTIPLE):
        choices.setdefault(len(_axis_tiles(size, tile, pad)), tile)
    return choices


def choose_tile(shape, patch, pad, max_voxels=None):
    """The tile (z, y, x voxels) to segment a volume of `shape` with: the training `patch`
    along every axis when `max_voxels` is None (a network whose inputs are relative to the
    patch, CoordConv's), else the tile of at most `max_voxels` voxels that computes the fewest
    voxels in all (the overlap of tiles is computed twice), fewer tiles breaking ties."""
    cube = (patch,) * 3
    if max_voxels is None or math.prod(cube) >= max_voxels:
        return cube
    best = None
    for combo in product(*(_axis_choices(int(n), patch, pad).items() for n in shape)):
        tile = tuple(t for _, t in combo)
        if math.prod(tile) > max_voxels:
            continue
        count = math.prod(c for c, _ in combo)
        key = (count * math.prod(tile), count)
        if best is None or key < best[0]:
            best = (key, tile)
    return best[1]


def batch_for(tile, batch, max_voxels=None):
    """Tiles per network call: `batch`, fewer where they would hold more than `max_voxels`."""
    if max_voxels is None:
        return batch
    return max(1, min(batch, max_voxels // math.prod(_per_axis(tile))))


def model_tiling(config, shape, pad, batch, device, tile=None):
    """(tile, tiles per call) for a model (its config) to segment a volume of `shape`: `tile`
    (an edge, voxels) when given, else choose_tile's. A network without CoordConv has no
    input that depends on a voxel's place in its tile, and normalises a large tile over
    patch-sized cells (model.PatchNorm), so it segments tiles larger than its training patch,
    within the device's memory: less overlap is computed twice."""
    max_voxels = None if config.get("coordconv", True) else max_tile_voxels(config["widths"][0], device)
    tile = choose_tile(shape, config["patch"], pad, max_voxels) if tile is None else _per_axis(tile)
    return tile, batch_for(tile, batch, max_voxels)


def _reflect(indices, size):
    """Mirror indices into 0..size-1 the way np.pad(mode='reflect') does, at any distance."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    indices = np.mod(indices, period)
    return np.where(indices >= size, period - indices, indices)


def read_tile(volume, origin, tile):
    """The region of `tile` voxels (one number or z, y, x) at `origin`, reflect-padded where it
    leaves the volume, as float32."""
    tile = _per_axis(tile)
    if all(0 <= o and o + t <= n for o, t, n in zip(origin, tile, volume.shape)):
        return np.asarray(volume[tuple(slice(o, o + t) for o, t in zip(origin, tile))], dtype=np.float32)
    indices = [_reflect(np.arange(o, o + t), n) for o, t, n in zip(origin, tile, volume.shape)]
    lo = [int(i.min()) for i in indices]
    hi = [int(i.max()) + 1 for i in indices]
    region = np.asarray(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    return region[np.ix_(*(i - l for i, l in zip(indices, lo)))]


def tile_batches(volume, tiles, tile, batch, centre, scale):
    """(tiles, standardised float32 inputs batch x tile) per batch of `tiles`."""
    for first in range(0, len(tiles), batch):
        chunk = tiles[first:first + batch]
        inputs = np.stack([read_tile(volume, t.origin, tile) for t in chunk])
        if not np.isfinite(inputs).all():
            raise InputError("the tomogram contains NaN or infinite values")
        yield chunk, (inputs - centre) / scale


def classify(logits, threshold):
    """(uint8 class labels, foreground probability) of tiles' logits (tiles x classes x voxels).

    A voxel is foreground when 1 - p_background >= threshold, and then gets the most
    probable foreground class: thresholding each class alone loses voxels whose
    probability is shared between similar classes early in training."""
    probabilities = torch.softmax(logits.float(), dim=1)
    foreground = 1 - probabilities[:, 0]
    best_class = probabilities[:, 1:].max(dim=1).indices  # argmax over a strided dim is 40x slower
    return torch.where(foreground >= threshold, best_class + 1, 0).to(torch.uint8), foreground


def segment(model, volume, centre, scale, tile, pad, batch=4, device="cpu", threshold=0.5,
            probability_out=None, amp_dtype=None, description="segmenting", profile=None):
    """Segment `volume` (a [z, y, x] array or memory map) into a uint8 class map (classify).

    Tiles are read lazily, on a background thread while the network runs, and only a few
    batches of them are in memory at a time. `probability_out`, when given (an array of the
    volume's shape, e.g. a writable memory map), receives the foreground probability
    1 - p_background (float32).
    The network runs in `amp_dtype` (device.autocast_dtype; None: float32). The model is
    left in eval mode. `profile` (a Profile) gets the seconds of reading, of the network and
    of assembling the class map (classifying the kept voxels). `tile`: voxels of each tile,
    one number or z, y, x (choose_tile)."""
    check_probability_threshold(threshold)
    device = torch.device(device)
    class_map = np.zeros(volume.shape, dtype=np.uint8)
    tiles = tile_origins(volume.shape, tile, pad)
    model.eval()
    profile = profile or Profile()
    batches = profile.waiting(prefetch(tile_batches(volume, tiles, tile, batch, centre, scale)), "reading")
    with freed_memory_kept():
        for chunk, inputs in tracked(batches, -(-len(tiles) // batch), description, "tile batches"):
            with profile.step("network"), torch.no_grad():
                inputs = torch.from_numpy(inputs).unsqueeze(1).to(device)
                with autocast(device, amp_dtype):
                    logits = model(inputs)
            # Only each tile's kept centre is classified: a patch-sized tile keeps a quarter
            # of its voxels, and classifying all of them took a third of the time. Tiles that
            # keep the same part of themselves (all but those at faces) are classified together.
            with profile.step("assembling"), torch.no_grad():
                by_inside = {}  # (start, stop) per axis inside the tile: the tiles keeping it
                for i, kept in enumerate(chunk):
                    inside = tuple((s - o, e - o) for o, s, e in zip(kept.origin, kept.keep_start, kept.keep_stop))
                    by_inside.setdefault(inside, []).append(i)
                for inside, members in by_inside.items():
                    part = (members, slice(None)) + tuple(slice(*bounds) for bounds in inside)
                    labels, foreground = classify(logits[part], threshold)
                    labels = labels.cpu().numpy()
                    foreground = foreground.cpu().numpy() if probability_out is not None else None
                    for j, i in enumerate(members):
                        target = tuple(slice(s, e) for s, e in zip(chunk[i].keep_start, chunk[i].keep_stop))
                        class_map[target] = labels[j]
                        if foreground is not None:
                            probability_out[target] = foreground[j]
                release_pages(volume)
    return class_map
