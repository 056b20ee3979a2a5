"""What a user may set for training and picking: the rules every setting obeys and the
two settings dataclasses, validated once when made and saved as plain JSON data.

Torch-free, so the protocols check their forms with the same rules the core applies.
"""
import math
import numbers
from dataclasses import asdict, dataclass, fields

from .errors import InputError
from .labels import LABEL_TYPES, check_diameters

PATCH_MULTIPLE = 8  # the network halves the patch three times
MIN_PATCH = 16
N_WIDTHS = 4  # network levels
DEFAULT_WIDTHS = (24, 48, 72, 108)  # the reference's
AMP_MODES = ("auto", "off")  # automatic mixed precision
# complete: every particle of the classes is annotated; partial: some are not (core/partial.py)
ANNOTATION_MODES = ("complete", "partial")
VOXEL_SIZE_TOLERANCE = 0.01  # relative difference below which two voxel sizes are the same
DEFAULT_DIAMETER = 9  # weak-label diameter (voxels) when none is given
DEFAULT_EPOCHS = 60  # training epochs without a time budget
# Scores grow with blob volume but their scale depends on the diameter (pooling passes), so
# the default threshold is relative: a maximum must reach this fraction of the score of a
# fully segmented ball of the class diameter. Specks of a few voxels stay far below it.
DEFAULT_RELATIVE_MIN_SCORE = 0.5
# Fewer validation particles of a class than this draw a warning: the kept epoch and the
# class's score threshold are chosen on them. With 7 per class both were noisy, and
# thresholds tuned on 35 per class picked test tomograms better (bench/README.md).
MIN_VAL_PARTICLES = 20


def check_patch(patch):
    """InputError unless `patch` is a whole multiple of 8 and at least 16 voxels."""
    if not (isinstance(patch, numbers.Integral) and patch >= MIN_PATCH and patch % PATCH_MULTIPLE == 0):
        raise InputError(f"the patch size must be a multiple of {PATCH_MULTIPLE} and at least {MIN_PATCH}, "
                         f"got {patch}")
    return int(patch)


def default_pad(patch):
    """Tile margin for validation picking, stored for picking: the reference's training 12
    voxels for a 72-voxel patch. Picking with the margin that validation tuned the score
    thresholds at was as accurate as the reference's picking 18 (patch/4), or more, and
    about twice as fast (bench/README.md)."""
    return round(patch / 6)


def check_pad(pad, patch):
    """InputError unless a tile margin leaves a kept centre: 0 <= 2*pad < patch."""
    if not (isinstance(pad, numbers.Integral) and 0 <= 2 * pad < patch):
        raise InputError(f"pad must be a whole number with 0 <= 2*pad < patch; got pad {pad} with patch {patch}")
    return int(pad)


def check_probability_threshold(threshold):
    """InputError unless a foreground probability threshold lies in (0, 1]."""
    if not 0 < threshold <= 1:
        raise InputError(f"--threshold is a foreground probability in (0, 1], got {threshold}")
    return threshold


def check_widths(widths):
    """Network widths as 4 positive ints; InputError otherwise."""
    widths = list(widths)
    if len(widths) != N_WIDTHS or any(not float(w) == int(w) > 0 for w in widths):
        raise InputError(f"the network widths must be {N_WIDTHS} positive whole numbers, got {widths}")
    return [int(w) for w in widths]


def check_voxel_size(value):
    """InputError unless a stated voxel size (--voxel-size, Å) is None or positive."""
    if value is not None and not value > 0:
        raise InputError(f"--voxel-size must be positive (Å), got {value}")
    return value


def voxel_sizes_agree(sizes):
    """Whether voxel sizes (Å) are one size, within VOXEL_SIZE_TOLERANCE."""
    return max(sizes) <= min(sizes) * (1 + VOXEL_SIZE_TOLERANCE)


def check_particle_diameters(values):
    """Positive particle diameters (voxels) as floats; InputError otherwise."""
    values = [float(v) for v in values]
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise InputError(f"particle diameters must be positive numbers of voxels, got {values}")
    return values


def _check_amp(amp):
    if amp not in AMP_MODES:
        raise InputError(f"unknown mixed-precision mode {amp!r}; use {' or '.join(AMP_MODES)}")


class _Settings:
    def to_json(self):
        """The settings as plain JSON data (tuples as lists); None where still automatic."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def defaults(cls):
        """{name: default} of every field (what the command line shows)."""
        return {field.name: field.default for field in fields(cls)}


@dataclass
class TrainSettings(_Settings):
    """How to train. patch, widths, batch, lr and ce_weight None: chosen by the automatic
    recipe (recipe.choose); `pad` None: default_pad(patch); `particle_diameters` (voxels)
    and `diameters` (weak labels, voxels) None or one value: the same for every class,
    label diameters from the particle diameters when only those are given; `classes`
    None: the annotations' names in sorted_names order; `voxel_size` None: the
    tomograms' headers; `max_minutes` None: no time budget; `epochs` None: as many as the
    time budget allows, DEFAULT_EPOCHS without one (planned_epochs)."""
    classes: list = None
    particle_diameters: list = None
    diameters: list = None
    label_type: str = "tball"
    voxel_size: float = None
    patch: int = None
    pad: int = None
    widths: tuple = None
    epochs: int = None
    max_minutes: float = None
    batch: int = None
    lr: float = None
    ce_weight: float = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    shape_check: bool = True
    # CoordConv's channels are relative to the patch, so a network with them picks with
    # patch-sized tiles; without them it picks larger ones, about 3x faster, but the demo's
    # F1 fell from 0.998 to 0.748 that way (bench/README.md), so it stays on by default.
    coordconv: bool = True
    annotations: str = "complete"

    def __post_init__(self):
        if self.annotations not in ANNOTATION_MODES:
            raise InputError(f"unknown annotations {self.annotations!r}; choose {' or '.join(ANNOTATION_MODES)}")
        if self.label_type not in LABEL_TYPES:
            raise InputError(f"unknown label type {self.label_type!r}; choose one of {', '.join(LABEL_TYPES)}")
        if self.patch is not None:
            check_patch(self.patch)
            self.pad = check_pad(default_pad(self.patch) if self.pad is None else self.pad, self.patch)
        if self.widths is not None:
            self.widths = tuple(check_widths(self.widths))
        if self.particle_diameters is not None:
            self.particle_diameters = check_particle_diameters(self.particle_diameters)
        if self.diameters is not None:
            self.diameters = check_diameters(self.diameters)
        if self.classes is not None:
            self.classes = [str(name) for name in self.classes]
        if self.ce_weight is not None and not self.ce_weight >= 0:
            raise InputError(f"--ce-weight must be at least 0, got {self.ce_weight}")
        if (self.epochs is not None and self.epochs < 1) or (self.batch is not None and self.batch < 1) or (
                self.lr is not None and not self.lr > 0):
            raise InputError("--epochs and --batch must be at least 1 and --lr positive")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction must lie between 0 and 1, got {self.val_fraction}")
        if self.max_minutes is not None and not (self.max_minutes > 0 and math.isfinite(self.max_minutes)):
            raise InputError(f"--max-minutes must be positive, got {self.max_minutes}")
        check_voxel_size(self.voxel_size)
        _check_amp(self.amp)

    @property
    def planned_epochs(self):
        """The most epochs to train, or None: until the time budget is spent. A budget alone
        decides, since a fixed count stopped 30 labelled particles after 9 of 15 minutes."""
        if self.epochs is not None:
            return self.epochs
        return None if self.max_minutes is not None else DEFAULT_EPOCHS


@dataclass
class PickSettings(_Settings):
    """How to pick. `pad` None: the model's; `min_score` None: each class's tuned relative
    threshold; `min_distance` None: half the class diameter; `voxel_size` None: the headers';
    `tile` None: automatic (tiling.choose_tile)."""
    pad: int = None
    tile: int = None
    threshold: float = 0.5
    min_score: float = None
    min_distance: float = None
    batch: int = 4
    voxel_size: float = None
    device: str = "auto"
    amp: str = "auto"
    shape_check: bool = True
    save_probability: bool = False

    def __post_init__(self):
        if self.batch < 1:
            raise InputError("--batch must be at least 1")
        if self.tile is not None:
            check_patch(self.tile)
        check_probability_threshold(self.threshold)
        if self.min_distance is not None and not self.min_distance > 0:
            raise InputError(f"--min-distance must be positive (voxels), got {self.min_distance}")
        check_voxel_size(self.voxel_size)
        _check_amp(self.amp)

    def tile_for(self, config):
        """The tile size asked for, None for automatic; a CoordConv model's coordinate channels
        span its patch, so it picks with patch-sized tiles only."""
        if self.tile is not None and config.get("coordconv", True) and self.tile != config["patch"]:
            raise InputError(f"this model has CoordConv channels relative to its {config['patch']}-voxel patch, "
                             f"so it picks with tiles of {config['patch']}, not --tile {self.tile}")
        return self.tile

    def pad_for(self, config):
        """The tile margin to pick a model with: this one, checked against its patch, or its own."""
        if self.pad is None:
            return config["pad"]
        try:
            return check_pad(self.pad, config["patch"])
        except InputError:
            raise InputError(f"--pad must satisfy 0 <= 2*pad < the model's patch {config['patch']}, "
                             f"got {self.pad}") from None


# Self-supervised pre-training (pretrain.py): region-level contrast, or masked restoration.
PRETRAIN_OBJECTIVES = ("regions", "masked")  # this order: the pretrain protocol stores an index


@dataclass
class PretrainSettings(_Settings):
    """How to pre-train on unlabelled tomograms. patch, widths, batch and lr None: the
    training recipe's for the device (recipe.choose), so that train --init-model gets the
    network it would have built; `max_minutes` None: no time budget."""
    # Masked restoration measured better than the source's region contrast on equal budgets
    # (bench_pretrain.py, 10 labels per class: F1 0.645 against 0.597, scratch 0.441) and
    # costs a third as much per step (bench/README.md).
    objective: str = "masked"
    patch: int = None
    widths: tuple = None
    batch: int = None
    lr: float = None
    epochs: int = 1000
    steps_per_epoch: int = 25
    max_minutes: float = None
    voxel_size: float = None
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    coordconv: bool = True

    def __post_init__(self):
        if self.objective not in PRETRAIN_OBJECTIVES:
            raise InputError(f"unknown objective {self.objective!r}; choose one of {', '.join(PRETRAIN_OBJECTIVES)}")
        if self.patch is not None:
            check_patch(self.patch)
        if self.widths is not None:
            self.widths = tuple(check_widths(self.widths))
        if self.epochs < 1 or self.steps_per_epoch < 1 or (self.batch is not None and self.batch < 1):
            raise InputError("--epochs, --steps-per-epoch and --batch must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        if self.max_minutes is not None and not (self.max_minutes > 0 and math.isfinite(self.max_minutes)):
            raise InputError(f"--max-minutes must be positive, got {self.max_minutes}")
        check_voxel_size(self.voxel_size)
        _check_amp(self.amp)
