"""How a time budget (--max-minutes) is shared: training gets what validation after each
epoch and the shape checks at the end will not need.

Before the first epoch their seconds are estimated from one timed network batch and the
number of tiles they will segment; after each epoch, from what validation really took."""
import math
import time

import numpy as np
import torch

from .device import autocast
from .tiling import tile_origins

# Reading, standardising, MP-NMS and the shape features on top of the network's own time;
# generous, since an estimate too low overruns the budget and one too high only costs the
# first epoch some training (the measurement after it replaces the estimate).
OVERHEAD = 1.5


def seconds_per_batch(model, patch, batch, device, amp_dtype):
    """Wall seconds of one network call on `batch` tiles (after a warm-up call)."""
    inputs = torch.zeros((batch, 1, patch, patch, patch), device=device)
    model.eval()
    with torch.no_grad(), autocast(device, amp_dtype):
        model(inputs)
        started = time.monotonic()
        model(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.monotonic() - started


def segmenting_seconds(shapes, patch, pad, batch, per_batch):
    """Estimated seconds to pick regions of the given shapes (z, y, x) tile by tile."""
    tiles = sum(len(tile_origins(shape, patch, pad)) for shape in shapes)
    return OVERHEAD * math.ceil(tiles / batch) * per_batch


class TimeBudget:
    """Deadlines within `budget` seconds (None: no budget) of a run started at `started`
    (time.monotonic()), `before` seconds having been spent by the runs it resumes."""

    def __init__(self, budget, started, before=0.0):
        self.budget, self.started, self.before = budget, started, before
        self.validation = 0.0  # seconds one validation (loss and picking) takes
        self.checks = 0.0  # seconds the shape checks take at the end

    def estimate(self, per_batch, batch, patch, pad, val_shapes, train_shapes, val_patches, fits_checks):
        """Expected validation and shape-check seconds from one network batch's seconds."""
        picking = segmenting_seconds(val_shapes, patch, pad, batch, per_batch)
        self.validation = picking + math.ceil(val_patches / batch) * per_batch
        self.checks = (picking + segmenting_seconds(train_shapes, patch, pad, batch, per_batch)) if fits_checks \
            else 0.0

    def measured(self, validation, picking, features, train_voxels, val_voxels, fits_checks):
        """What one validation took (`picking` of it spent picking the validation regions) and
        the estimated seconds of the shape features of its candidates."""
        self.validation = validation
        if fits_checks:  # the checks pick and describe every training region and validation again
            self.checks = (picking + features) * (1 + train_voxels / val_voxels)

    def spent(self):
        return self.before + time.monotonic() - self.started

    def training_seconds(self):
        """Seconds of the whole run that training may use (None without a budget)."""
        return None if self.budget is None else self.budget - self.validation - self.checks

    def training_deadline(self):
        """time.monotonic() by which the current epoch's training must stop, or None."""
        if self.budget is None:
            return None
        return self.started - self.before + self.training_seconds()

    def exhausted(self):
        """Whether no time is left for another epoch's training."""
        return self.budget is not None and self.spent() >= self.training_seconds()


def shapes_of(sources):
    """The trainable region (z, y, x) of each training source."""
    return [tuple(int(n) for n in np.asarray(source.limit_zyx)) for source in sources]
