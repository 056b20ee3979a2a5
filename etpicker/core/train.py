"""Training: wires the data, the loop, validation and the model folder together.

The model folder gets `config.json` at the start, `weights.pt` (and the kept epoch in
config.json) whenever validation improves, and `checkpoint.pt` plus `history.csv` after
every epoch, so a run stopped by its time budget (or killed) leaves a usable model and can
be resumed. On several processes (distributed.py) the main one alone does all of that, and
logs; the others train their share of each epoch and follow its decision to stop.
"""
import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, recipe
from .augment import default_augmentation
from .budget import Pace, TimeBudget, seconds_per_batch, shapes_of
from .device import autocast_dtype, dtype_name
from .distributed import SINGLE
from .errors import InputError
from .model import build_model
from .model_folder import (CHECKPOINT_NAME, FORMAT, HISTORY_NAME, TRAINING_DATA_KEY, WEIGHTS_NAME, epoch_rank,
                           kept_epoch, read_init_config, record_training_data, write_config, write_history)
from .init_model import architecture, load_initial_weights
from .model_store import load_checkpoint, load_weights, save_checkpoint, save_weights
from .partial import PARTIAL, annotated_score, partial_targets, validation_note
from .sampling import PatchSampler, patch_origin
from .settings import DEFAULT_RELATIVE_MIN_SCORE, MIN_VAL_PARTICLES, TrainSettings
from .train_data import (class_order, common_voxel_size, expand_diameters, pair_by_stem, per_class, prepare_data,
                         sparse_validation_classes)
from .train_loop import Optimisation, augmentation_streams, one_cycle, train_epoch, validation_loss
from .validation import (CandidatePicker, feature_seconds, fitted_checks, validation_candidates,
                         validation_scores)

BACKGROUND_FRACTION = 0.15
MAX_VAL_PATCHES = 64
# Settings a resumed run must share with the run that wrote the checkpoint.
RESUME_KEYS = ("classes", "diameters", "label_type", "voxel_size", "patch", "pad", "widths", "epochs", "batch",
               "lr", "val_fraction", "ce_weight", "annotations")


def _model_config(settings, classes, diameters, voxel_size, pairs, held_out, init_model):
    """config.json of a new run: what picking needs, and how the model was trained."""
    training = settings.to_json()
    for key in ("classes", "particle_diameters", "diameters", "voxel_size", "patch", "widths",
                "label_type"):  # stored at the top
        training.pop(key)
    training.update(val_fraction=settings.val_fraction if held_out else None,
                    tomograms=[str(t.path) for t, _ in pairs], init_model=str(init_model or ""))
    return {"format": FORMAT, "classes": classes, "diameters": diameters,
            "particle_diameters": settings.particle_diameters, "label_type": settings.label_type,
            "voxel_size": voxel_size, "patch": settings.patch, "pad": settings.pad,
            "widths": list(settings.widths), "coordconv": settings.coordconv, "pyramid": True,
            "normalisation": "robust-standardise", "version": __version__, "training": training}


def _resume(out, config, device, optimisation):
    """(history, best rank, epochs done) of the checkpointed run, whose state is loaded
    into `optimisation`; InputError when its settings differ."""
    checkpoint = load_checkpoint(out, device)
    saved = {**checkpoint["config"], **checkpoint["config"]["training"]}
    current = {**config, **config["training"]}
    changed = [key for key in RESUME_KEYS if saved.get(key) != current.get(key)]
    if changed:
        raise InputError(f"--resume: {', '.join(changed)} differ from the checkpointed run in {out}")
    optimisation.restore(checkpoint)
    for key in ("relative_min_score", "kept_epoch"):  # the kept epoch's, until a better one
        if key in checkpoint["config"]:
            config[key] = checkpoint["config"][key]
    return checkpoint["history"], checkpoint["best"], checkpoint["epoch"]


def _clear(out, log):
    """A fresh run replaces a model already there: never leave its weights next to this config."""
    stale = [out / name for name in (WEIGHTS_NAME, CHECKPOINT_NAME, HISTORY_NAME) if (out / name).exists()]
    for path in stale:
        path.unlink()
    if stale:
        log(f"replacing the model in {out} (give --resume to continue it instead)")


def _resolve(settings, n_classes, device, voxel_size, processes, log):
    """(settings with the automatic recipe filled in, label diameters per class, {setting:
    value} chosen automatically), the choice and the processes logged as training's first
    line. A step's batch is shared among the processes, rounded up to a multiple of them."""
    particles = settings.particle_diameters and per_class(settings.particle_diameters, n_classes,
                                                          "particle diameter")
    chosen = recipe.choose(settings.to_json(), device.type, particles)
    settings = dataclasses.replace(settings, **chosen, particle_diameters=particles)
    if settings.diameters is None and particles:
        diameters = recipe.label_diameters(particles)
        chosen["diameters"] = diameters
    else:
        diameters = expand_diameters(settings.diameters, n_classes)
    asked = settings.batch
    settings = dataclasses.replace(settings, batch=processes.batch(asked) * processes.world)
    described = {key: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
                 for key, value in chosen.items()}
    run_on = "1 process"
    if processes.backend is not None:
        run_on = (f"{processes.world} process{'es' if processes.world > 1 else ''} (DDP over {processes.backend}), "
                  f"{processes.batch(asked)} patches each per step"
                  + (f" (batch {asked} rounded up)" if settings.batch != asked else ""))
    log(f"recipe ({'automatic for ' + device.type if chosen else 'as given'}): patch {settings.patch}, "
        f"batch {settings.batch}, widths {','.join(map(str, settings.widths))}, lr {settings.lr:g}, "
        f"ce-weight {settings.ce_weight:g}, label diameters {','.join(map(str, diameters))} voxels"
        + (f"; chosen: {', '.join(f'{k} {v}' for k, v in described.items())}" if chosen else "") + f"; {run_on}")
    for warning in recipe.size_warnings(particles or [], voxel_size):
        log(warning)
    return settings, diameters, chosen


def _scored_validation(val_sets, classes, log):
    """Whether validation scores any particle, warning where it scores none or few of a class."""
    scored = np.concatenate([val.scored_truth.names for val in val_sets])
    if len(scored) == 0:  # F1 on nothing means nothing: choose by the validation loss
        log("warning: validation scores no particle (all lie at the held-out block's face); the epoch kept is the "
            "one with the lowest validation loss and picking keeps the default score thresholds: give "
            "--val-tomos/--val-coords or a larger --val-fraction")
    for name, count in sparse_validation_classes(scored, classes).items():
        log(f"warning: validation scores only {count} particle(s) of {name}; the epoch kept and {name}'s score "
            f"threshold are chosen on them and will be noisy: give {MIN_VAL_PARTICLES} or more per class")
    return len(scored) > 0


@dataclass
class _Validation:
    """What the main process does after each epoch: the validation loss, and the picking
    scores at each class's best score threshold (NaN and the default thresholds where
    validation scores no particle), timed for the time budget."""
    picker: CandidatePicker
    sampler: PatchSampler
    plan: list
    sets: list
    scores_particles: bool
    fits_checks: bool
    amp_dtype: object
    n_channels: int
    train_voxels: int
    relabel: object = None  # partial annotations' targets, as in training

    def __call__(self, time_budget):
        picker, started = self.picker, time.monotonic()
        val_loss = validation_loss(picker.model, self.sampler, self.plan, picker.batch, picker.device, self.amp_dtype,
                                   self.n_channels, self.relabel)
        picking_started, features = time.monotonic(), 0.0
        if self.scores_particles:
            candidates = validation_candidates(picker, self.sets)
            precision, recall, f1, min_scores = validation_scores(picker, candidates)
            if self.fits_checks:
                features = feature_seconds(picker, candidates)
        else:  # nothing to pick for: no F1, default thresholds
            precision = recall = f1 = math.nan
            min_scores = {name: DEFAULT_RELATIVE_MIN_SCORE for name in picker.config["classes"]}
        time_budget.measured(time.monotonic() - started, time.monotonic() - picking_started, features,
                             self.train_voxels, sum(val.tomogram.data.size for val in self.sets), self.fits_checks)
        return {"val_loss": val_loss, "val_precision": precision, "val_recall": recall, "val_f1": f1,
                "val_min_scores": min_scores}


def _record(out, row, best, history, model, config, optimisation):
    """An epoch's outcome on disk: the weights and thresholds where it ranks best, the
    checkpoint and the history always; returns the best rank."""
    if best is None or epoch_rank(row) > tuple(best):
        best = epoch_rank(row)
        save_weights(model, out)
        config.update(relative_min_score=row["val_min_scores"], kept_epoch=row["epoch"])
        write_config(out, config)
    save_checkpoint(out, {**optimisation.state(), "epoch": row["epoch"], "best": best, "history": history,
                          "config": config})
    write_history(out, history)
    return best


def train(tomos, coords, out, *, val_tomos=(), val_coords=(), resume=False, init_model=None, settings=None,
          processes=SINGLE, log=print, extra_loss=None, **options):
    """Train a picking model into the folder `out`; returns a summary dict. `settings` (a
    TrainSettings), or its fields as keyword `options`. `processes` (distributed.Processes):
    this one among several training processes; each trains on its share of every epoch's
    patches, and the main one alone validates, writes `out` and logs. `extra_loss`: see
    train_loop.train_epoch (adapt.py's adaptation terms)."""
    started = time.monotonic()
    settings = settings or TrainSettings(**options)
    out = Path(out)
    if not processes.is_main:
        log = _quiet
    if bool(val_tomos) != bool(val_coords):
        raise InputError("give both --val-tomos and --val-coords, or neither")
    device = processes.device(settings.device)
    pairs = pair_by_stem(tomos, coords, voxel_size=settings.voxel_size)
    val_pairs = pair_by_stem(val_tomos, val_coords, "--val-coords", settings.voxel_size) if val_tomos else []
    classes = class_order([c for _, c in pairs], settings.classes)
    # A stated voxel size (Scipion's sampling rate) is known better than the headers.
    voxel_size = settings.voxel_size or common_voxel_size([t for t, _ in pairs + val_pairs])
    torch.manual_seed(settings.seed)  # every process starts from the same weights
    if init_model:  # its network's shape (widths, CoordConv) is the new one's
        settings = dataclasses.replace(settings, **architecture(read_init_config(init_model), settings.widths))
    settings, diameters, chosen = _resolve(settings, len(classes), device, voxel_size, processes, log)
    config = _model_config(settings, classes, diameters, voxel_size, pairs, not val_pairs, init_model)
    config["recipe"] = {"device": device.type, "automatic": sorted(chosen)}  # what the user left unset
    model = build_model(config).to(device)
    if init_model:
        log(load_initial_weights(model, init_model, classes, device))

    patch, pad, batch = settings.patch, settings.pad, settings.batch
    partial = settings.annotations == PARTIAL
    relabel = functools.partial(partial_targets, diameters=diameters) if partial else None
    picker = CandidatePicker(model, config, pad, batch, device, settings.amp,
                             objective=annotated_score if partial else None)
    # particles closer to the held-out block's face than validation's matching distance are not scored
    sources, val_sources, val_sets = prepare_data(pairs, val_pairs, classes, settings.val_fraction, patch,
                                                  max(picker.tolerances.values()))
    sampler = PatchSampler(sources, diameters, settings.label_type, patch, BACKGROUND_FRACTION,
                           max_offset=patch // 2 - pad)
    if sampler.n_patches == 0:
        raise InputError("no particle is left for training")
    val_plan = [(i, patch_origin(c, patch, s.limit_zyx)) for i, s in enumerate(val_sources)
                for c in s.centres_zyx[s.trainable]][:MAX_VAL_PATCHES]
    if not val_plan:
        raise InputError("the validation coordinates hold no particles")
    scores_particles = _scored_validation(val_sets, classes, log)

    epochs = settings.planned_epochs  # None: until the time budget is spent
    of_epochs = f"/{epochs}" if epochs else ""
    steps_per_epoch = math.ceil(len(processes.share(range(sampler.n_patches))) / processes.batch(batch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    time_budget = TimeBudget(None if settings.max_minutes is None else 60.0 * settings.max_minutes, started)
    pace = None if time_budget.budget is None else Pace(time_budget, processes)
    # the learning rate anneals over training's share of the budget
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(epochs and epochs * steps_per_epoch, pace))
    amp_dtype = autocast_dtype(device, settings.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    optimisation = Optimisation(model, optimizer, scheduler, scaler, np.random.default_rng(settings.seed),
                                processes.wrap(model, device))
    augmentation = default_augmentation()
    history, best, first_epoch = [], None, 0
    if resume:  # every process restores the checkpoint
        history, best, first_epoch = _resume(out, config, device, optimisation)
        time_budget.before = sum(row["seconds"] for row in history)
        log(f"resuming {out} after epoch {first_epoch}{of_epochs}")
    elif processes.is_main:
        _clear(out, log)
    if processes.is_main:  # the training data recorded, for `adapt`
        config[TRAINING_DATA_KEY] = record_training_data(out, tomos, coords, val_tomos, val_coords)
        write_config(out, config)

    fits_checks = settings.shape_check and scores_particles
    validate = _Validation(picker, PatchSampler(val_sources, diameters, settings.label_type, patch, 0.0), val_plan,
                           val_sets, scores_particles, fits_checks, amp_dtype, len(classes) + 1,
                           sum(int(np.prod(source.limit_zyx)) for source in sources), relabel)
    if time_budget.budget is not None and processes.is_main:  # validation and the checks are held back
        time_budget.estimate(seconds_per_batch(model, patch, batch, device, amp_dtype), batch, config, pad, device,
                             [val.tomogram.data.shape for val in val_sets] if scores_particles else [],
                             shapes_of(sources), len(val_plan), fits_checks)
    if not resume:
        n_particles = sum(int(s.trainable.sum()) for s in sources)
        log(f"training on {n_particles} particles ({', '.join(classes)}) + {sampler.n_background} background "
            f"patches per epoch, validating on {len(val_sets)} region(s), device {device} "
            f"({dtype_name(amp_dtype)} network)")
        if partial:
            log(validation_note(settings.annotations))
    epochs_done, stopped_by_budget = first_epoch, False
    for epoch in range(first_epoch, epochs or sys.maxsize):
        epoch_started = time.monotonic()
        plan = sampler.epoch_plan(optimisation.rng)  # the same on every process
        mine = processes.share(range(len(plan)))
        # The budget covers the whole run, resumed parts included (raise it to go on).
        train_loss = train_epoch(optimisation, sampler, [plan[i] for i in mine],
                                 augmentation_streams(settings.seed, epoch, mine), processes.batch(batch),
                                 augmentation, device, amp_dtype, len(classes) + 1, settings.ce_weight, pace,
                                 processes, f"epoch {epoch + 1}{of_epochs}", relabel, extra_loss)
        epochs_done, stop = epoch + 1, False
        if processes.is_main:
            row = {"epoch": epoch + 1, "train_loss": train_loss, **validate(time_budget)}
            row["seconds"] = time.monotonic() - epoch_started
            history.append(row)
            best = _record(out, row, best, history, model, config, optimisation)
            log(f"epoch {epoch + 1}{of_epochs} loss {train_loss:.3f} {'val_score' if partial else 'val_f1'} "
                f"{row['val_f1']:.3f} min_scores "
                f"{'/'.join(f'{value:.2f}' for value in row['val_min_scores'].values())} ({row['seconds']:.1f} s)")
            # Epochs are cut at the deadline, so the budget is spent on training, not guessed.
            stop = (epochs is None or epoch + 1 < epochs) and time_budget.exhausted()
        if processes.from_main(stop):  # the others wait here while the main process validates
            stopped_by_budget = True
            log(f"time budget of {settings.max_minutes:g} min reached after epoch {epoch + 1}; stopping")
            break
    if not processes.is_main:  # the main process alone fits the shape checks
        return {"epochs_done": epochs_done, "stopped_by_budget": stopped_by_budget, "best_epoch": None,
                "best_f1": None, "shape_check_f1": {}}
    kept_number = kept_epoch(config, history)  # a checkpoint from before kept_epoch was stored: the same rule
    kept = next((row for row in history if row["epoch"] == kept_number), None)
    if kept:
        log(f"best {'val_score' if partial else 'val_f1'} {kept['val_f1']:.3f} at epoch {kept['epoch']}; "
            f"model in {out}")
    check_f1s = {}
    if fits_checks and kept:
        load_weights(model, out, device).eval()
        checks, check_f1s = fitted_checks(picker, pairs, sources, val_sets, log)
        config.update(checks)
        write_config(out, config)
    return {"epochs_done": len(history), "stopped_by_budget": stopped_by_budget,
            "best_epoch": kept and kept["epoch"], "best_f1": kept and kept["val_f1"], "shape_check_f1": check_f1s}


def _quiet(_line):
    """The log of a process other than the main one."""
