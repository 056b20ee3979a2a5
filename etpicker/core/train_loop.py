"""The optimisation itself: the learning-rate schedule, one training epoch, the validation
loss. Knows tensors and the network, not files."""
import math
from dataclasses import dataclass

import numpy as np
import torch

from .device import autocast
from .distributed import SINGLE
from .errors import InputError
from .losses import dice_ce_loss, soft_target
from .prefetch import prefetch
from .progress import tracked

DIVERGED_STEPS = 3  # consecutive non-finite training losses that stop a run


@dataclass
class Optimisation:
    """What a resumed run restores to go on as if it had never stopped, and the network
    training calls (`network`: the model itself, or the model in DistributedDataParallel)."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    rng: np.random.Generator  # the epochs' patch plans, drawn alike by every process
    network: torch.nn.Module = None

    def __post_init__(self):
        if self.network is None:
            self.network = self.model

    def state(self):
        rng = {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng}

    def restore(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        self.rng.bit_generator.state = rng["numpy"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def one_cycle(total_steps, time_spent=None, warmup=0.3, start=1 / 25, end=1e-4):
    """Learning-rate factor per step: cosine warm-up from `start` to 1, then cosine
    annealing to `end`, over whichever runs out first, the planned steps (None: no plan) or
    the time budget (`time_spent`: a function giving the fraction of training's time spent, as
    budget.Pace does; None: no budget). A run cut short by --max-minutes then still anneals
    instead of stopping near its peak rate (what a step-sized one-cycle schedule would do)."""
    def factor(step):
        progress = 0.0 if total_steps is None else step / total_steps
        if time_spent is not None:
            progress = max(progress, time_spent())
        progress = min(progress, 1.0)
        if progress < warmup:
            return start + (1 - start) * (1 - math.cos(math.pi * progress / warmup)) / 2
        return end + (1 - end) * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))) / 2
    return factor


def augmentation_streams(seed, epoch, positions):
    """A random stream (torch.Generator) for each patch of an epoch, from the run's seed, the
    epoch and the patch's place in the epoch's plan: a patch is augmented alike whichever
    process trains it, so N processes train as one does, and a resumed run as an
    uninterrupted one."""
    return [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, int(position)])
                                              .generate_state(1)[0])) for position in positions]


def _augmented(augmentation, image, label, streams):
    """Each patch of a batch augmented with its own stream."""
    done = [augmentation(image[i:i + 1], label[i:i + 1], stream) for i, stream in enumerate(streams)]
    return torch.cat([image for image, _ in done]), torch.cat([label for _, label in done])


def train_epoch(optimisation, sampler, plan, streams, batch, augmentation, device, amp_dtype, n_channels,
                ce_weight, pace=None, processes=SINGLE, description="training", relabel=None, extra_loss=None):
    """One pass over this process's plan (`batch` patches a step, each augmented with its
    stream of `streams`), or until the time is spent (`pace`, budget.Pace): on a slow CPU a
    single epoch can outlast the whole time budget. Every process takes the same number of
    steps and stops at the same one; the loss returned is the mean over all processes'
    patches. Only the main process reports progress. `relabel` (logits, class ids) -> (class
    ids, taught weight): partial annotations' targets (partial.partial_targets). `extra_loss(network, image, target)`,
    when given, is added to each step's loss (the network has just run on `image`; adapt.py's
    domain-adaptation terms)."""
    network, optimizer, scheduler, scaler = (optimisation.network, optimisation.optimizer, optimisation.scheduler,
                                             optimisation.scaler)
    network.train()
    total, count, diverged = 0.0, 0, 0
    batches = prefetch(sampler.batches(plan, batch))
    if processes.is_main:
        batches = tracked(batches, math.ceil(len(plan) / batch), description)
    for step, (image, label) in enumerate(batches):
        if pace is not None and pace.update() > 1 and count:
            break
        image, label = _augmented(augmentation, image.to(device), label.to(device),
                                  streams[step * batch:(step + 1) * batch])
        class_ids, taught = label[:, 0].round().long(), None
        with autocast(device, amp_dtype):
            logits = network(image)
        if relabel is not None:
            class_ids, taught = relabel(logits, class_ids)
        target = soft_target(class_ids, label[:, 1], n_channels)
        # Dice over every process's patches
        loss = dice_ce_loss(logits, target, ce_weight, processes.summed, taught)
        if extra_loss is not None:
            loss = loss + extra_loss(network, image, target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        # the same on every process, so that all stop together when it diverges
        value = processes.mean(loss.item())
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


def validation_loss(model, sampler, plan, batch, device, amp_dtype, n_channels, relabel=None):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for image, label in prefetch(sampler.batches(plan, batch)):
            image, label = image.to(device), label.to(device)
            with autocast(device, amp_dtype):
                logits = model(image)
            class_ids, taught = label[:, 0].round().long(), None
            if relabel is not None:
                class_ids, taught = relabel(logits, class_ids)
            target = soft_target(class_ids, label[:, 1], n_channels)
            total += dice_ce_loss(logits, target, taught=taught).item() * len(image)
            count += len(image)
    return total / count


