"""Self-supervised pre-training on unlabelled tomograms (`python -m etpicker.core pretrain`).

Random patches stream from the tomograms' memory maps, standardised as training does;
the ResUNet3D's encoder and decoder learn through a pretext objective (region_contrast.py)
and are written, without a head, into a pre-trained model folder (model_folder.py) that
`train --init-model` starts from. An epoch is a fixed number of steps; a time budget
(--max-minutes) ends the run after the epoch that spends it, mid-epoch if need be, with
the learning rate annealed over it as training does.
"""
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, recipe
from .budget import TimeBudget
from .device import autocast, autocast_dtype, dtype_name, resolve_device
from .errors import InputError
from .io import open_tomogram
from .model import HEAD_PREFIX, ResUNet3D
from .model_folder import (FORMAT, PRETRAINED_KIND, WEIGHTS_NAME, write_config, write_pretrain_history)
from .model_store import save_atomically
from .normalise import robust_stats
from .progress import tracked
from .region_contrast import pretext
from .settings import PretrainSettings
from .train_data import common_voxel_size
from .train_loop import DIVERGED_STEPS, one_cycle



class PatchStream:
    """Random patch-sized cubes from memory-mapped tomograms, each standardised by its
    tomogram's robust statistics; a tomogram is chosen in proportion to its volume."""

    def __init__(self, tomograms, patch, rng):
        self.patch, self.rng = patch, rng
        self.sources = []
        for tomogram in tomograms:
            if min(tomogram.data.shape) < patch:
                raise InputError(f"{tomogram.path}: {tomogram.data.shape} voxels (z, y, x) is smaller than the "
                                 f"{patch}-voxel patch; give a smaller --patch")
            self.sources.append((tomogram.data, *robust_stats(tomogram.data, str(tomogram.path))))
        sizes = np.array([data.size for data, _, _ in self.sources], float)
        self.weights = sizes / sizes.sum()

    def batch(self, size):
        patches = []
        for index in self.rng.choice(len(self.sources), size=size, p=self.weights):
            data, centre, scale = self.sources[index]
            z, y, x = (int(self.rng.integers(0, n - self.patch + 1)) for n in data.shape)
            block = np.asarray(data[z:z + self.patch, y:y + self.patch, x:x + self.patch], dtype=np.float32)
            patches.append((block - centre) / scale)
        return torch.from_numpy(np.stack(patches)[:, None])


def _config(settings, voxel_size, tomograms, device):
    training = settings.to_json()
    for key in ("patch", "widths", "coordconv", "voxel_size"):  # stored at the top
        training.pop(key)
    return {"format": FORMAT, "kind": PRETRAINED_KIND, "objective": settings.objective, "voxel_size": voxel_size,
            "patch": settings.patch, "widths": list(settings.widths), "coordconv": settings.coordconv,
            "pyramid": True, "normalisation": "robust-standardise", "version": __version__,
            "pretraining": {**training, "tomograms": [str(t.path) for t in tomograms], "device": device.type}}


def backbone_state(model):
    """The encoder and decoder's weights: all but the head's."""
    return {key: value for key, value in model.state_dict().items() if not key.startswith(HEAD_PREFIX)}


def pretrain(tomos, out, *, settings=None, log=print, **options):
    """Pre-train a network on the tomograms at `tomos` into the folder `out`; returns
    {"epochs_done", "history"}. `settings` (a PretrainSettings), or its fields as `options`."""
    started = time.monotonic()
    settings = settings or PretrainSettings(**options)
    device = resolve_device(settings.device)
    tomograms = [open_tomogram(path, settings.voxel_size) for path in tomos]
    if not tomograms:
        raise InputError("give at least one tomogram (--tomos)")
    voxel_size = settings.voxel_size or common_voxel_size(tomograms)
    chosen = recipe.choose(settings.to_json(), device.type)  # the network train would build
    settings = dataclasses.replace(settings, **{key: chosen[key] for key in ("patch", "widths", "batch", "lr")
                                                if key in chosen})
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)  # augmentations and masks, on the CPU
    stream = PatchStream(tomograms, settings.patch, rng)
    model = ResUNet3D(1, widths=settings.widths, coordconv=settings.coordconv).normalise_like(settings.patch)
    head = pretext(settings.objective, settings.widths[0])
    model.to(device), head.to(device)
    parameters = [p for name, p in model.named_parameters() if not name.startswith(HEAD_PREFIX)]
    optimizer = torch.optim.AdamW(parameters + list(head.parameters()), lr=settings.lr, weight_decay=0.01)
    budget = TimeBudget(None if settings.max_minutes is None else 60.0 * settings.max_minutes, started)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, one_cycle(settings.epochs * settings.steps_per_epoch,
                             None if settings.max_minutes is None else budget.training_share_spent))
    amp_dtype = autocast_dtype(device, settings.amp)
    config = _config(settings, voxel_size, tomograms, device)
    out = Path(out)
    write_config(out, config)
    log(f"pre-training ({settings.objective}) on {len(tomograms)} tomogram(s), no labels: patch {settings.patch}, "
        f"batch {settings.batch}, widths {','.join(map(str, settings.widths))}, lr {settings.lr:g}, "
        f"{settings.steps_per_epoch} steps per epoch, device {device} ({dtype_name(amp_dtype)} network)")
    history = []
    for epoch in range(settings.epochs):
        epoch_started = time.monotonic()
        model.train(), head.train()
        totals, steps, diverged = {}, 0, 0
        for _ in tracked(range(settings.steps_per_epoch), settings.steps_per_epoch,
                         f"epoch {epoch + 1}/{settings.epochs}", "steps"):
            if steps and budget.exhausted():
                break
            image = stream.batch(settings.batch).to(device)
            with autocast(device, amp_dtype):
                loss, parts = head.loss(model, image, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = loss.item()
            diverged = 0 if math.isfinite(value) else diverged + 1
            if diverged >= DIVERGED_STEPS:
                raise InputError(f"the pre-training loss was NaN or infinite for {DIVERGED_STEPS} steps in a row: "
                                 "the run diverged; lower --lr")
            if diverged == 0:
                for key, part in {"loss": value, **parts}.items():
                    totals[key] = totals.get(key, 0.0) + part
                steps += 1
        row = {"epoch": epoch + 1, **{key: total / max(steps, 1) for key, total in totals.items()},
               "seconds": time.monotonic() - epoch_started}
        history.append(row)
        save_atomically(backbone_state(model), out / WEIGHTS_NAME)
        config["epochs_done"] = epoch + 1
        write_config(out, config)
        write_pretrain_history(out, history)
        parts = ", ".join(f"{key} {row[key]:.4f}" for key in totals if key != "loss")
        log(f"epoch {epoch + 1}/{settings.epochs} loss {row['loss']:.4f} ({parts}) ({row['seconds']:.1f} s)")
        if budget.exhausted():
            if epoch + 1 < settings.epochs:
                log(f"time budget of {settings.max_minutes:g} min reached after epoch {epoch + 1}; stopping")
            break
    log(f"pre-trained model in {out} ({len(history)} epochs, {(time.monotonic() - started) / 60:.1f} min)")
    return {"epochs_done": len(history), "history": history}
