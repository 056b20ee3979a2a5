"""How a time budget (--max-minutes) is shared: training gets what validation after each
epoch and the shape checks at the end will not need.

Before the first epoch their seconds are estimated from one timed network batch and the
number of tiles they will segment; after each epoch, from what validation really took. With
several training processes the main one keeps the budget and the others follow it (Pace)."""
import math
import time

import numpy as np
import torch

from .device import autocast
from .tiling import model_tiling, tile_origins

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


def segmenting_seconds(shapes, config, pad, batch, per_batch, device):
    """Estimated seconds to pick regions of the given shapes (z, y, x) with picking's tiling,
    from the seconds of one network call on `batch` patch-sized tiles: the network's time
    goes with the voxels it computes."""
    voxels = 0
    for shape in shapes:
        tile, _ = model_tiling(config, shape, pad, batch, device)
        voxels += len(tile_origins(shape, tile, pad)) * math.prod(tile)
    return OVERHEAD * voxels / (batch * config["patch"] ** 3) * per_batch


class TimeBudget:
    """Deadlines within `budget` seconds (None: no budget) of a run started at `started`
    (time.monotonic()), `before` seconds having been spent by the runs it resumes."""

    def __init__(self, budget, started, before=0.0):
        self.budget, self.started, self.before = budget, started, before
        self.validation = 0.0  # seconds one validation (loss and picking) takes
        self.checks = 0.0  # seconds the shape checks take at the end

    def estimate(self, per_batch, batch, config, pad, device, val_shapes, train_shapes, val_patches, fits_checks):
        """Expected validation and shape-check seconds from one network batch's seconds."""
        picking = segmenting_seconds(val_shapes, config, pad, batch, per_batch, device)
        self.validation = picking + math.ceil(val_patches / batch) * per_batch
        self.checks = (picking + segmenting_seconds(train_shapes, config, pad, batch, per_batch, device)) \
            if fits_checks else 0.0

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

    def training_share_spent(self):
        """The fraction of training's seconds spent so far, 1 or more when none is left (None
        without a budget)."""
        if self.budget is None:
            return None
        share = self.training_seconds()
        return self.spent() / share if share > 0 else math.inf

    def exhausted(self):
        """Whether no time is left for another epoch's training."""
        return self.budget is not None and self.training_share_spent() >= 1


class Pace:
    """How much of training's time is spent, as the main process's budget counts it, agreed
    by all processes once per training step (`update`): an epoch stops when it passes 1, and
    the learning rate anneals over it (train_loop.one_cycle calls it)."""

    def __init__(self, budget, processes):
        self.budget, self.processes = budget, processes
        self.spent = 0.0  # the same on every process from the start, as the learning rate must be

    def update(self):
        own = self.budget.training_share_spent() if self.processes.is_main else 0.0
        self.spent = self.processes.from_main(own)
        return self.spent

    def __call__(self):
        return self.spent


def shapes_of(sources):
    """The trainable region (z, y, x) of each training source."""
    return [tuple(int(n) for n in np.asarray(source.limit_zyx)) for source in sources]
