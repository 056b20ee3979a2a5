"""Carry a trained model to new, unlabelled tomograms (`adapt`): fine-tune it on its own
source training data (read back from the model folder) plus a term that uses the target
tomograms without labels, then tune its picking rules (each class's score threshold and
shape check, retune.py) on the source data and on copies of it restyled as the target
(spectrum.py): rules fitted on the source alone judge the target's particles by how they
looked in the source (RETUNE_DATA).

Every method but `rules` is one `extra_loss` added to training's own step
(train_loop.train_epoch), so patch sampling, augmentation, the time budget, validation on
the source's held-out data, the kept epoch and the model folder are training's:

* `dual-adversarial`: the source document's dual domain adaptation, in 3D. Two
  discriminators tell source patches from target ones: an image-level one on the
  bottleneck (the deepest encoder block's output, globally pooled: contrast, noise level,
  style) and a feature-level one, fully convolutional, on the last decoder block's output
  just before the 1x1x1 head (the decoder's levels fused through the skips: local
  differences of the segmentation features). A gradient-reversal layer makes the network
  maximise what the discriminators minimise (Ganin & Lempitsky's min-max in one backward
  pass); the discriminators are not part of the saved network.
* `self-training`: the source model picks the target tomograms as `pick` does (its score
  thresholds and checks); its confident picks (the upper half of each class's) become weak
  labels, and the network trains on patches around them beside the source's, every other
  voxel of those patches taught as background. They are a partial annotation of the target,
  but teaching them as one (partial.partial_targets) measured worse on realistic data
  (PSEUDO_LABEL_ANNOTATIONS).
* `rules`: no training: the source network as it is, with only its picking rules tuned
  again (as after every other method). Where the target looks much like the source it
  measured best on both domains (bench/README.md).
* `spectrum`: source patches restyled as target ones: every augmented source patch is moved
  a random part of the way to the target's 3D power spectrum (its missing wedge, CTF and
  noise level; estimated from patches of both) by attenuating where the target has less
  power and adding random-phase noise where it has more, and is trained on with its source
  labels. Global intensity itself needs no matching: inputs are standardised per tomogram
  and every layer of the network is instance-normalised over its patch, so brightness and
  contrast shifts never reach the network; what differs between datasets is the spectrum.
"""
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .adapt_settings import DEFAULT_ADVERSARIAL_WEIGHT, DEFAULT_METHOD, DEFAULT_MINUTES, METHODS
from .budget import seconds_per_batch, segmenting_seconds
from .device import autocast, autocast_dtype, resolve_device
from .errors import InputError
from .io import open_tomogram
from .losses import dice_ce_loss, soft_target
from .model_folder import (ADAPTATION_NAME, HISTORY_NAME, TRAINING_DATA_KEY, WEIGHTS_NAME, read_checked_config,
                           read_config, record_training_data, training_data, training_data_problem,
                           write_adaptation, write_config)
from .model_store import load_model
from .normalise import robust_stats
from .partial import COMPLETE, PARTIAL, partial_targets
from .pick import pick_tomogram
from .retune import retune
from .sampling import PatchSampler, PatchSource
from .settings import DEFAULT_RELATIVE_MIN_SCORE, TrainSettings
from .spectrum import SpectrumShift, restyle_tomogram
from .train import train
from .validation import CandidatePicker

LR_FACTOR = 0.5  # fine-tuning: half the source run's peak learning rate
SPECTRUM_PATCHES = 48  # patches per domain whose power spectra are averaged
# Each restyled patch moves a uniform random part of the way toward the target's spectrum,
# from this much to all of it (1: all the way; bench/README.md measured 0, 0.5 and 1).
SPECTRUM_MIN_STRENGTH = 0.5
# What the adapted network's score thresholds and shape checks are tuned on after training,
# "+"-joined: "source", the source's own annotated tomograms (training's own rules, alone);
# "restyled", copies of them restyled all the way to the target's spectrum. Both measured
# best on the realistic "all" shift (bench/README.md; the unadapted network: target F1
# 0.656 -> 0.751, source 0.882 -> 0.866; restyled copies alone: 0.755, source 0.855).
SOURCE_DATA, RESTYLED_DATA = "source", "restyled"
RETUNE_DATA = "source+restyled"
# The re-tuning's seconds per domain, per second that budget.segmenting_seconds estimates
# for picking every tomogram once: with shape checks it restyles, picks the training and
# validation regions, and describes the picks (realistic benchmark, when it picked the
# validation regions twice: 85 s per domain against an estimate of 86 s); without, it picks
# the validation regions alone.
RETUNE_COST = {True: 1.2, False: 0.5}
PSEUDO_LABEL_QUANTILE = 0.5  # of each class's picks (PSEUDO_LABEL_PICKS), the upper half are labels
# Which of the source model's picks may become pseudo-labels: MODEL_PICKS, those `pick`
# gives (its score thresholds, shape checks and likeness checks), so that look-alikes the
# checks reject are not taught as the class; THRESHOLDED_PICKS, those above each class's
# score threshold, checks not applied (before stop 33; bench/README.md).
MODEL_PICKS, THRESHOLDED_PICKS = "model", "thresholded"
PSEUDO_LABEL_PICKS = MODEL_PICKS
# How self-training teaches them: COMPLETE, the rest as background. PARTIAL, as partial
# annotations, measured worse (bench/README.md, realistic "all" shift: target F1 0.578 vs 0.683).
PSEUDO_LABEL_ANNOTATIONS = COMPLETE
RULES_ONLY = "rules"  # the method that trains nothing


class _TargetPatches:
    """Random standardised patches of the target tomograms (read from their memory maps)."""

    def __init__(self, tomograms, patch, seed):
        self.volumes = [(t.data, *robust_stats(t.data, name=str(t.path))) for t in tomograms]
        small = [str(t.path) for t in tomograms if min(t.data.shape) < patch]
        if small:
            raise InputError(f"target tomogram(s) {', '.join(small)} are smaller than the model's {patch}-voxel patch")
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def batch(self, size):
        patches = []
        for _ in range(size):
            data, centre, scale = self.volumes[int(self.rng.integers(len(self.volumes)))]
            lo = [int(self.rng.integers(0, n - self.patch + 1)) for n in data.shape]
            block = np.asarray(data[lo[0]:lo[0] + self.patch, lo[1]:lo[1] + self.patch, lo[2]:lo[2] + self.patch],
                               dtype=np.float32)
            patches.append((block - centre) / scale)
        return torch.from_numpy(np.stack(patches))[:, None]


class _Reversal(torch.autograd.Function):
    """Identity forward; the gradient times -weight backward."""

    @staticmethod
    def forward(context, x, weight):
        context.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(context, grad):
        return -context.weight * grad, None


def _image_discriminator(channels):
    """One domain logit per patch from the bottleneck's features (global)."""
    return nn.Sequential(nn.Conv3d(channels, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(32, 1))


def _feature_discriminator(channels):
    """A map of domain logits (one per region about a quarter of the patch wide)."""
    return nn.Sequential(nn.Conv3d(channels, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv3d(16, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(32, 1, 1))


class _Term:
    """An extra training loss (train_loop.train_epoch's `extra_loss`) recording its values."""

    def __init__(self, device, amp_dtype):
        self.device, self.amp_dtype = device, amp_dtype
        self.records = []  # (step, {name: value})

    def record(self, **values):
        self.records.append((len(self.records) + 1, values))


class DualAdversarial(_Term):
    """Image-level and feature-level discriminators behind gradient reversal."""

    def __init__(self, model, target, batch, device, amp_dtype, weight=DEFAULT_ADVERSARIAL_WEIGHT, lr=1e-3):
        super().__init__(device, amp_dtype)
        self.target, self.batch, self.weight = target, batch, weight
        self.features = {}
        # where the discriminators attach: the bottleneck and the features the head reads
        model.encoders[-1].register_forward_hook(self._keep("image"))
        model.decoders[-1].register_forward_hook(self._keep("feature"))
        widths = (model.encoders[-1].convs[0][0].out_channels, model.decoders[-1].convs[0][0].out_channels)
        self.discriminators = nn.ModuleDict({"image": _image_discriminator(widths[0]),
                                             "feature": _feature_discriminator(widths[1])}).to(device)
        self.optimizer = torch.optim.Adam(self.discriminators.parameters(), lr=lr, betas=(0.5, 0.999))
        self.stepped = False

    def _keep(self, name):
        def hook(_module, _inputs, output):
            self.features[name] = output
        return hook

    def __call__(self, network, _image, _target):
        # The discriminators' gradients of the previous step came from training's backward.
        if self.stepped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.stepped = True
        source = dict(self.features)  # from the source batch training just ran
        with autocast(self.device, self.amp_dtype):
            network(self.target.batch(self.batch).to(self.device))
        target = dict(self.features)
        total, values = 0.0, {}
        for name, discriminator in self.discriminators.items():
            logits = [discriminator(_Reversal.apply(features[name].float(), self.weight)).flatten()
                      for features in (source, target)]
            loss = (F.binary_cross_entropy_with_logits(logits[0], torch.ones_like(logits[0]))
                    + F.binary_cross_entropy_with_logits(logits[1], torch.zeros_like(logits[1])))
            accuracy = ((logits[0] > 0).float().mean() + (logits[1] <= 0).float().mean()) / 2
            total = total + loss
            values[f"{name}_discriminator_loss"] = loss.item()
            values[f"{name}_domain_accuracy"] = accuracy.item()
        self.record(**values)
        return total


class SelfTraining(_Term):
    """Dice + cross-entropy on target patches around confident pseudo-labels, taught as
    PSEUDO_LABEL_ANNOTATIONS says."""

    def __init__(self, sampler, batch, device, amp_dtype, n_channels, ce_weight, diameters, seed):
        super().__init__(device, amp_dtype)
        self.sampler, self.batch, self.n_channels, self.ce_weight = sampler, batch, n_channels, ce_weight
        self.diameters = diameters
        self.rng = np.random.default_rng(seed)
        self.plan = []

    def __call__(self, network, _image, _target):
        if len(self.plan) < self.batch:
            self.plan += self.sampler.epoch_plan(self.rng)
        chosen, self.plan = self.plan[:self.batch], self.plan[self.batch:]
        image, label = next(self.sampler.batches(chosen, self.batch))
        image, label = image.to(self.device), label.to(self.device)
        class_ids, taught = label[:, 0].round().long(), None
        with autocast(self.device, self.amp_dtype):
            logits = network(image)
        if PSEUDO_LABEL_ANNOTATIONS == PARTIAL:
            class_ids, taught = partial_targets(logits, class_ids, self.diameters)
        elif PSEUDO_LABEL_ANNOTATIONS != COMPLETE:
            raise ValueError(f"unknown PSEUDO_LABEL_ANNOTATIONS {PSEUDO_LABEL_ANNOTATIONS!r}")
        target = soft_target(class_ids, label[:, 1], self.n_channels)
        loss = dice_ce_loss(logits, target, self.ce_weight, taught=taught)
        self.record(pseudo_label_loss=loss.item())
        return loss


class SpectrumMatched(_Term):
    """Source patches given (part of the way) the target's power spectrum, trained on with
    their labels."""

    def __init__(self, shift, device, amp_dtype, ce_weight, seed):
        super().__init__(device, amp_dtype)
        self.shift = SpectrumShift(shift.gain.to(device), shift.noise.to(device))
        self.ce_weight = ce_weight
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def restyle(self, image):
        # each patch moved a random part of the way (SPECTRUM_MIN_STRENGTH)
        strength = 1 - (1 - SPECTRUM_MIN_STRENGTH) * torch.rand((len(image), 1, 1, 1), generator=self.generator,
                                                                device=image.device)
        styled = self.shift.apply(image[:, 0].float(), strength, self.generator)[:, None]
        return (styled - styled.mean(dim=(2, 3, 4), keepdim=True)) / styled.std(dim=(2, 3, 4), keepdim=True)

    def __call__(self, network, image, target):
        with autocast(self.device, self.amp_dtype):
            logits = network(self.restyle(image))
        loss = dice_ce_loss(logits, target, self.ce_weight)
        self.record(restyled_source_loss=loss.item())
        return loss


def source_data(model_dir, config, source_tomos=None, source_coords=None):
    """(tomograms, coordinate files, validation tomograms, validation coordinate files) of
    the model's training: those given, else those its folder recorded."""
    if bool(source_tomos) != bool(source_coords):
        raise InputError("give both --source-tomos and --source-coords, or neither")
    if source_tomos:
        return list(source_tomos), list(source_coords), [], []
    problem = training_data_problem(model_dir, config)
    if problem:
        raise InputError(f"{problem} (--source-tomos and --source-coords)")
    return training_data(model_dir, config)


def _source_settings(config, max_minutes, seed, device):
    """The source run's TrainSettings, fine-tuning: its recipe, another seed and budget,
    half its peak learning rate."""
    fields = TrainSettings.defaults()
    training = {key: value for key, value in config["training"].items() if key in fields}
    training.update({key: config[key] for key in ("classes", "particle_diameters", "diameters", "label_type",
                                                   "voxel_size", "patch", "widths") if key in config})
    training.update(coordconv=config.get("coordconv", True), max_minutes=max_minutes, seed=seed, device=device,
                    lr=training.get("lr", 1e-3) * LR_FACTOR)
    if training.get("val_fraction") is None:  # validated on given tomograms: the default is unused
        training.pop("val_fraction", None)
    return TrainSettings(**training)


def _retuned():
    """Whether training's own picking rules are tuned again after adapting (RETUNE_DATA)."""
    domains = RETUNE_DATA.split("+")
    unknown = set(domains) - {SOURCE_DATA, RESTYLED_DATA}
    if unknown:
        raise ValueError(f"unknown RETUNE_DATA {RETUNE_DATA!r}")
    return domains != [SOURCE_DATA]


def _retune_seconds(paths, config, settings, model, device, amp_dtype):
    """Estimated seconds of re-tuning the picking rules after training (RETUNE_DATA)."""
    if not _retuned():
        return 0.0
    shapes = [open_tomogram(p, settings.voxel_size).data.shape for p in paths]
    per_batch = seconds_per_batch(model, settings.patch, settings.batch, device, amp_dtype)
    picking = segmenting_seconds(shapes, config, config["pad"], settings.batch, per_batch, device)
    return RETUNE_COST[settings.shape_check] * picking * len(RETUNE_DATA.split("+"))


def _retune(out, tomos, coords, val_tomos, val_coords, shift, settings, fits_checks, seed, device, log):
    """The adapted model's score thresholds and shape checks tuned on RETUNE_DATA; returns
    retune()'s (validation F1, {class: (F1 without, F1 with its check)})."""
    with tempfile.TemporaryDirectory(prefix="restyled-", dir=out) as folder:
        datasets = []
        for domain in RETUNE_DATA.split("+"):
            if domain == SOURCE_DATA:
                datasets.append((tomos, coords, val_tomos, val_coords))
                continue
            restyled = []  # same names as the source's, so the same coordinate files
            for path in [*tomos, *val_tomos]:
                tomogram = open_tomogram(path, settings.voxel_size)
                restyled.append(restyle_tomogram(tomogram.data, robust_stats(tomogram.data, name=str(path)),
                                                 Path(folder) / Path(path).name, shift, seed, tomogram.voxel_size, log))
            datasets.append((restyled[:len(tomos)], coords, restyled[len(tomos):], val_coords))
        return retune(out, datasets, fits_checks, device, log)


def _source_picks(picker, tomogram):
    """The source model's picks of `tomogram` that may become pseudo-labels (PSEUDO_LABEL_PICKS)."""
    if PSEUDO_LABEL_PICKS == MODEL_PICKS:
        return pick_tomogram(picker.model, picker.config, tomogram, pad=picker.pad, batch=picker.batch,
                             device=picker.device, amp=picker.amp)
    if PSEUDO_LABEL_PICKS != THRESHOLDED_PICKS:
        raise ValueError(f"unknown PSEUDO_LABEL_PICKS {PSEUDO_LABEL_PICKS!r}")
    picks = picker(tomogram)
    thresholds = picker.config.get("relative_min_score", {})
    minimum = np.array([thresholds.get(name, DEFAULT_RELATIVE_MIN_SCORE) for name in picks.names], dtype=float)
    return picks.subset(picker.relative_scores(picks) >= minimum)


def pseudo_labels(picker, tomograms, log=print):
    """{tomogram stem: (zyx, class ids)} of the confident picks: per class, the upper
    PSEUDO_LABEL_QUANTILE of the source model's picks (PSEUDO_LABEL_PICKS)."""
    classes = picker.config["classes"]
    picked = {t.stem: _source_picks(picker, t) for t in tomograms}
    cut = {}
    for name in classes:
        scores = np.concatenate([picker.relative_scores(p)[p.names == name] for p in picked.values()])
        cut[name] = np.quantile(scores, PSEUDO_LABEL_QUANTILE) if len(scores) else math.inf
    labels = {}
    for stem, picks in picked.items():
        relative = picker.relative_scores(picks)
        keep = relative >= np.array([cut[name] for name in picks.names]) if len(picks) else np.zeros(0, bool)
        kept = picks.subset(keep)
        labels[stem] = (kept.xyz[:, ::-1].copy(), np.array([classes.index(n) + 1 for n in kept.names], np.int64))
    ids = np.concatenate([class_ids for _, class_ids in labels.values()])
    counts = {name: int(np.sum(ids == i + 1)) for i, name in enumerate(classes)}
    log("pseudo-labels on the target: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return labels


def adapt(model_dir, target_tomos, out, *, source_tomos=None, source_coords=None, method=DEFAULT_METHOD,
          max_minutes=DEFAULT_MINUTES, seed=0, device="auto", adversarial_weight=DEFAULT_ADVERSARIAL_WEIGHT,
          log=print):
    """Adapt the model in `model_dir` to the unlabelled `target_tomos`; the adapted model
    goes to the folder `out` (a plain model: pick it as any other). Returns train()'s
    summary with the method's curves."""
    started = time.monotonic()
    if method not in METHODS:
        raise InputError(f"unknown adaptation method {method!r}; choose one of {', '.join(METHODS)}")
    model_dir, out = Path(model_dir), Path(out)
    if out.resolve() == model_dir.resolve():
        raise InputError(f"--out {out} is the source model itself; write the adapted model to another folder")
    if not target_tomos:
        raise InputError("give the target tomograms (--tomos)")
    if not (max_minutes > 0 and math.isfinite(max_minutes)):
        raise InputError(f"--max-minutes must be positive, got {max_minutes}")
    config = read_checked_config(model_dir)
    if "training" not in config:
        raise InputError(f"{model_dir}/config.json holds no training settings; only a model trained by etpicker "
                         f"can be adapted")
    tomos, coords, val_tomos, val_coords = source_data(model_dir, config, source_tomos, source_coords)
    settings = _source_settings(config, max_minutes, seed, device)
    targets = [open_tomogram(path, settings.voxel_size) for path in target_tomos]
    torch_device = resolve_device(device)
    amp_dtype = autocast_dtype(torch_device, settings.amp)
    batch, patch = settings.batch, settings.patch
    log(f"adapting {model_dir} to {len(targets)} target tomogram(s) by {method}, source data: {len(tomos)} "
        f"tomogram(s), {max_minutes:g} min, seed {seed}")
    source_model, _ = load_model(model_dir, torch_device)
    target_patches = _TargetPatches(targets, patch, seed)
    source_patches = _TargetPatches([open_tomogram(p, settings.voxel_size) for p in tomos], patch, seed + 1)
    shift = SpectrumShift.between(source_patches.batch(SPECTRUM_PATCHES), target_patches.batch(SPECTRUM_PATCHES))
    if method == RULES_ONLY:
        return _rules_only(model_dir, out, config, (tomos, coords, val_tomos, val_coords), shift, settings, {
            "target_tomos": target_tomos, "max_minutes": max_minutes, "seed": seed, "started": started}, device, log)
    n_channels = len(config["classes"]) + 1
    if method == "self-training":
        picker = CandidatePicker(source_model, config, config["pad"], 4, torch_device, settings.amp)
        labels = pseudo_labels(picker, targets, log)
        sources = [PatchSource(t.data, *robust_stats(t.data, name=str(t.path)), labels[t.stem][0],
                               labels[t.stem][1], np.ones(len(labels[t.stem][0]), bool), t.data.shape)
                   for t in targets if len(labels[t.stem][0])]
        if not sources:
            raise InputError("the source model picks nothing confidently on the target tomograms: self-training "
                             "has no pseudo-labels; choose another --method")
        sampler = PatchSampler(sources, config["diameters"], config["label_type"], patch, 0.0,
                               max_offset=patch // 2 - config["pad"])
        term = SelfTraining(sampler, batch, torch_device, amp_dtype, n_channels, settings.ce_weight,
                            config["diameters"], seed)
    elif method == "spectrum":
        term = SpectrumMatched(shift, torch_device, amp_dtype, settings.ce_weight, seed)
    else:
        term = None  # built on the network train() loads (the hooks attach to it)
    # the pseudo-labels' picking counts, and the re-tuning after training is held back
    retuning = _retune_seconds(tomos + val_tomos, config, settings, source_model, torch_device, amp_dtype)
    left = max_minutes - (time.monotonic() - started) / 60 - retuning / 60
    if left <= 0:
        raise InputError(f"--max-minutes {max_minutes:g} leaves no time to train (picking the target and "
                         f"re-tuning the picking rules take {retuning / 60:.1f} min of it)")
    fits_checks = settings.shape_check
    settings = TrainSettings(**{**settings.to_json(), "max_minutes": left,
                                "shape_check": fits_checks and not _retuned()})
    if term is None:
        term = _LazyAdversarial(target_patches, batch, torch_device, amp_dtype, adversarial_weight)
    summary = train(tomos, coords, out, val_tomos=val_tomos, val_coords=val_coords, init_model=model_dir,
                    settings=settings, log=log, extra_loss=term)
    if _retuned():
        retune_started = time.monotonic()
        _retune(out, tomos, coords, val_tomos, val_coords, shift, settings, fits_checks, seed, device, log)
        log(f"picking rules re-tuned in {(time.monotonic() - retune_started) / 60:.1f} min "
            f"({retuning / 60:.1f} min held back)")
    records = term.records
    adapted = read_config(out)
    adapted["training"]["shape_check"] = fits_checks
    _write_provenance(out, adapted, records, config, model_dir, method, {
        "target_tomos": target_tomos, "max_minutes": max_minutes, "seed": seed, "started": started,
        "adversarial_weight": adversarial_weight if method == "dual-adversarial" else None}, log)
    return {**summary, "records": records}


def _write_provenance(out, adapted, records, source_config, model_dir, method, run, log):
    """The adapted folder's curves and its config.json with the adaptation's provenance."""
    write_adaptation(out, records)
    adapted["adaptation"] = {"source_model": str(model_dir.resolve()),
                             "target_tomograms": [str(Path(p).resolve()) for p in run["target_tomos"]],
                             "method": method, "max_minutes": run["max_minutes"],
                             "minutes": round((time.monotonic() - run["started"]) / 60, 2), "seed": run["seed"],
                             "picking_rules_tuned_on": RETUNE_DATA, "adversarial_weight": run.get("adversarial_weight"),
                             "source_training_data": source_config.get(TRAINING_DATA_KEY)}
    write_config(out, adapted)
    log(f"adapted model in {out} ({adapted['adaptation']['minutes']:g} min; curves in {out / ADAPTATION_NAME})")


def _rules_only(model_dir, out, config, source, shift, settings, run, device, log):
    """The `rules` method: the source network copied to `out` with its training data, its
    picking rules tuned on RETUNE_DATA; returns a summary as adapt's."""
    if not _retuned():
        raise ValueError(f"method {RULES_ONLY!r} tunes the picking rules again, but RETUNE_DATA is {RETUNE_DATA!r}: "
                         f"the model would not change")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / WEIGHTS_NAME, out / WEIGHTS_NAME)
    if (model_dir / HISTORY_NAME).is_file():  # the network's own training, which it still is
        shutil.copyfile(model_dir / HISTORY_NAME, out / HISTORY_NAME)
    adapted = {**config, TRAINING_DATA_KEY: record_training_data(out, *source)}
    write_config(out, adapted)
    f1, check_f1s = _retune(out, *source, shift, settings, settings.shape_check, run["seed"], device, log)
    _write_provenance(out, read_config(out), [], config, model_dir, RULES_ONLY, run, log)
    return {"epochs_done": 0, "stopped_by_budget": False, "best_epoch": None, "best_f1": f1,
            "shape_check_f1": check_f1s, "records": []}


class _LazyAdversarial:
    """DualAdversarial built at its first call, on the network train() loaded from the
    source model (train() builds it; the hooks must sit on that very network)."""

    def __init__(self, target, batch, device, amp_dtype, weight):
        self.arguments = (target, batch, device, amp_dtype, weight)
        self.term = None
        self.records = []

    def __call__(self, network, image, target):
        if self.term is None:
            model = getattr(network, "module", network)  # inside DistributedDataParallel
            target_patches, batch, device, amp_dtype, weight = self.arguments
            self.term = DualAdversarial(model, target_patches, batch, device, amp_dtype, weight)
            self.term.records = self.records
            # the hooks were not there for the source batch this step ran on: run it again
            with autocast(device, amp_dtype):
                network(image)
        return self.term(network, image, target)
