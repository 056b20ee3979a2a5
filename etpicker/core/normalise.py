"""Per-tomogram standardisation that ignores extreme outliers such as gold beads."""
import math

import numpy as np

from .errors import InputError
from .io import release_pages

MAX_SAMPLES = 16_000_000
TAIL_PERCENT = 0.1  # each tail; gold beads and hot pixels live there


def robust_stats(volume, name="tomogram"):
    """(centre, scale) such that (volume - centre) / scale is standardised.

    Statistics come from a strided subsample (at most ~16 M voxels, so a memory-mapped
    tomogram is never read whole) with the 0.1 % tails on each side left out."""
    step = max(1, math.ceil((volume.size / MAX_SAMPLES) ** (1 / 3)))
    sample = np.array(volume[::step, ::step, ::step], dtype=np.float32).ravel()
    release_pages(volume)  # a strided read touches nearly every page of the map
    if sample.size == 0:
        raise InputError(f"{name}: empty volume")
    if not np.isfinite(sample).all():
        raise InputError(f"{name}: the volume contains NaN or infinite values")
    low, high = np.percentile(sample, [TAIL_PERCENT, 100 - TAIL_PERCENT])
    kept = sample[(sample >= low) & (sample <= high)].astype(np.float64)
    centre, scale = float(kept.mean()), float(kept.std())
    if not scale > 0:
        raise InputError(f"{name}: the volume is constant (zero variance), nothing to pick")
    return centre, scale
