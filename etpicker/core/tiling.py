"""Overlapped tiling: segment a whole tomogram tile-batch by tile-batch, keeping tile centres."""
from dataclasses import dataclass
from itertools import product

import numpy as np
import torch

from .device import autocast
from .errors import InputError
from .io import release_pages
from .prefetch import prefetch
from .profile import Profile
from .progress import tracked
from .settings import check_pad, check_probability_threshold


@dataclass(frozen=True)
class Tile:
    origin: tuple  # z, y, x of the tile's first voxel in volume coordinates (may be negative)
    keep_start: tuple  # the kept region [keep_start, keep_stop) in volume coordinates
    keep_stop: tuple


def _axis_tiles(size, patch, pad):
    """(origin, keep_start, keep_stop) along one axis; the kept ranges partition [0, size)."""
    stride = patch - 2 * pad
    tiles = []
    for keep_start in range(0, size, stride):
        keep_stop = min(keep_start + stride, size)
        # Border tiles are shifted inside the volume rather than reflect-padded: the network
        # was trained on real data only, and mirrored context made it pick ghosts near the
        # faces. Only a volume smaller than a tile is padded.
        if size >= patch:
            origin = min(max(keep_start - pad, 0), size - patch)
        else:
            origin = max(min(keep_start - pad, size + pad - patch), -pad)
        tiles.append((origin, keep_start, keep_stop))
    return tiles


def tile_origins(shape, patch, pad):
    """All tiles covering a volume of `shape` (z, y, x): tile edges of `pad` voxels are
    discarded, so the stride is patch - 2 * pad; kept regions cover every voxel once."""
    check_pad(pad, patch)
    per_axis = [_axis_tiles(int(size), patch, pad) for size in shape]
    return [Tile(tuple(t[0] for t in combo), tuple(t[1] for t in combo), tuple(t[2] for t in combo))
            for combo in product(*per_axis)]


def _reflect(indices, size):
    """Mirror indices into 0..size-1 the way np.pad(mode='reflect') does, at any distance."""
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    indices = np.mod(indices, period)
    return np.where(indices >= size, period - indices, indices)


def read_tile(volume, origin, patch):
    """The patch³ region at `origin`, reflect-padded where it leaves the volume, as float32."""
    if all(0 <= o and o + patch <= n for o, n in zip(origin, volume.shape)):
        z, y, x = origin
        return np.asarray(volume[z:z + patch, y:y + patch, x:x + patch], dtype=np.float32)
    indices = [_reflect(np.arange(o, o + patch), n) for o, n in zip(origin, volume.shape)]
    lo = [int(i.min()) for i in indices]
    hi = [int(i.max()) + 1 for i in indices]
    region = np.asarray(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    return region[np.ix_(*(i - l for i, l in zip(indices, lo)))]


def tile_batches(volume, tiles, patch, batch, centre, scale):
    """(tiles, standardised float32 inputs batch x patch³) per batch of `tiles`."""
    for first in range(0, len(tiles), batch):
        chunk = tiles[first:first + batch]
        inputs = np.stack([read_tile(volume, tile.origin, patch) for tile in chunk])
        if not np.isfinite(inputs).all():
            raise InputError("the tomogram contains NaN or infinite values")
        yield chunk, (inputs - centre) / scale


def segment(model, volume, centre, scale, patch, pad, batch=4, device="cpu", threshold=0.5,
            probability_out=None, amp_dtype=None, description="segmenting", profile=None):
    """Segment `volume` (a [z, y, x] array or memory map) into a uint8 class map.

    A voxel is foreground when 1 - p_background >= threshold, and then gets the most
    probable foreground class: thresholding each class alone loses voxels whose
    probability is shared between similar classes early in training. Tiles are read lazily, on
    a background thread while the network runs, and only a few batches of them are in memory
    at a time. `probability_out`, when given (an array of the volume's shape, e.g. a
    writable memory map), receives the foreground probability 1 - p_background (float32).
    The network runs in `amp_dtype` (device.autocast_dtype; None: float32). The model is
    left in eval mode. `profile` (a Profile) gets the seconds of reading, of the network and
    of assembling the class map."""
    check_probability_threshold(threshold)
    device = torch.device(device)
    class_map = np.zeros(volume.shape, dtype=np.uint8)
    tiles = tile_origins(volume.shape, patch, pad)
    model.eval()
    profile = profile or Profile()
    batches = profile.waiting(prefetch(tile_batches(volume, tiles, patch, batch, centre, scale)), "reading")
    for chunk, inputs in tracked(batches, -(-len(tiles) // batch), description, "tile batches"):
        with profile.step("network"), torch.no_grad():
            inputs = torch.from_numpy(inputs).unsqueeze(1).to(device)
            with autocast(device, amp_dtype):
                logits = model(inputs)
            probabilities = torch.softmax(logits.float(), dim=1)
            foreground = 1 - probabilities[:, 0]
            best_class = probabilities[:, 1:].argmax(dim=1)
            labels = torch.where(foreground >= threshold, best_class + 1, 0).to(torch.uint8).cpu().numpy()
            foreground = foreground.cpu().numpy() if probability_out is not None else None
        with profile.step("assembling"):
            for i, tile in enumerate(chunk):
                inside = tuple(slice(s - o, e - o) for o, s, e in zip(tile.origin, tile.keep_start, tile.keep_stop))
                target = tuple(slice(s, e) for s, e in zip(tile.keep_start, tile.keep_stop))
                class_map[target] = labels[i][inside]
                if foreground is not None:
                    probability_out[target] = foreground[i][inside]
            release_pages(volume)
    return class_map
