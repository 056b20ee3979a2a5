"""The model folder: its file names, what config.json holds (checked, values included),
history.csv, and which epoch's weights are kept.

Torch-free, so the protocols, viewers and benchmarks read and check a model folder by
the same rules as the core that writes it (docs/DESIGN.md, "model folder").
"""
import csv
import json
import math
import os
from pathlib import Path

from .errors import InputError
from .labels import check_diameters
from .settings import check_pad, check_patch, check_widths
from .shape_check import checks_from_config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.pt"  # the kept epoch's state_dict
HISTORY_NAME = "history.csv"
CHECKPOINT_NAME = "checkpoint.pt"  # the last epoch's, for --resume
FORMAT = 1
REQUIRED_KEYS = ("classes", "diameters", "voxel_size", "widths", "patch", "pad")  # what picking needs
# history.csv; readers use the names, and columns may be added at the end. val_min_scores
# holds one relative score threshold per class, '/'-separated, in class order.
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_precision", "val_recall", "val_f1", "seconds",
                   "val_min_scores")
NUMERIC_COLUMNS = HISTORY_COLUMNS[1:-1]


def replace_whole(path, write):
    """`write(temporary path)`, then rename it over `path`: neither a kill mid-write nor a
    reader (a viewer plotting a running training) ever sees half a file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def read_config(folder) -> dict:
    """config.json of a model folder, parsed but not checked (check_config)."""
    path = Path(folder) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing; is {folder} a model folder?") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from None


def write_config(folder, config: dict):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Training rewrites the config when validation improves: never leave half a file.
    replace_whole(folder / CONFIG_NAME, lambda temporary: temporary.write_text(json.dumps(config, indent=2) + "\n"))


def check_config(config, path):
    """InputError naming `path` unless a model config holds what picking needs, consistently."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}")
    try:
        _check_values(config)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except (TypeError, ValueError) as error:  # wrong JSON types, e.g. hand-edited
        raise InputError(f"{path}: malformed ({error})") from None


def _check_values(config):
    classes = list(config["classes"])
    if not classes or len(config["diameters"]) != len(classes):
        raise InputError(f"give one diameter per class ({len(classes)})")
    check_diameters(config["diameters"])
    check_widths(config["widths"])
    check_pad(config["pad"], check_patch(config["patch"]))
    if not float(config["voxel_size"]) > 0:
        raise InputError("voxel_size must be positive")
    checks_from_config(config)


def read_checked_config(folder) -> dict:
    """config.json of a model folder, checked as picking needs it."""
    config = read_config(folder)
    check_config(config, Path(folder) / CONFIG_NAME)
    return config


def epoch_rank(row):
    """How an epoch's weights rank for keeping: validation F1 first, then the lower
    validation loss. F1 is NaN when validation scores no particle; it then counts as 0,
    so the loss decides."""
    f1 = float(row["val_f1"])
    return (f1 if math.isfinite(f1) else 0.0, -float(row["val_loss"]))


def kept_epoch(config, history=()):
    """The epoch whose weights the folder keeps: written in config.json by training; for a
    model written before that, found in its history by the same rule (None without one)."""
    if config.get("kept_epoch") is not None:
        return int(config["kept_epoch"])
    history = list(history)
    return int(max(history, key=epoch_rank)["epoch"]) if history else None


def write_history(folder, history):
    """history.csv from rows {column: value}, val_min_scores a {class: threshold} dict."""
    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(HISTORY_COLUMNS)
            for row in history:
                writer.writerow([row["epoch"]] + [f"{row[key]:.6g}" for key in NUMERIC_COLUMNS]
                                + ["/".join(f"{value:g}" for value in row.get("val_min_scores", {}).values())])
    replace_whole(Path(folder) / HISTORY_NAME, write)


def read_history(path):
    """Rows of a history.csv (a file, or the model folder holding one): epoch an int, the
    other columns floats (NaN where empty), val_min_scores a list of floats."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{"epoch": int(row["epoch"]),
             **{key: float(row[key]) if row.get(key) not in ("", None) else math.nan for key in NUMERIC_COLUMNS},
             "val_min_scores": [float(v) for v in (row.get("val_min_scores") or "").split("/") if v]}
            for row in rows]


# A pre-trained model folder (pretrain.py): config.json with "kind": PRETRAINED_KIND, the
# encoder and decoder's weights.pt (no head) and history.csv with these columns; the
# objective's parts of the loss that do not apply are left empty.
PRETRAINED_KIND = "pretrained"
PRETRAIN_HISTORY_COLUMNS = ("epoch", "loss", "grey", "semantic", "restoration", "seconds")
INIT_KEYS = ("widths", "patch")  # what train --init-model needs of either kind of folder


def is_pretrained(config):
    return config.get("kind") == PRETRAINED_KIND


def read_init_config(folder) -> dict:
    """config.json of a folder that train --init-model starts from: a pre-trained folder
    or a trained model folder, checked; InputError naming what is wrong."""
    path = Path(folder) / CONFIG_NAME
    if not Path(folder).is_dir():
        raise InputError(f"--init-model {folder}: no such folder")
    config = read_config(folder)
    if not is_pretrained(config):
        check_config(config, path)
        return config
    missing = [key for key in INIT_KEYS if key not in config]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}")
    try:
        check_widths(config["widths"])
        check_patch(config["patch"])
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    return config


def write_pretrain_history(folder, rows):
    """history.csv of a pre-training from rows {column: value} (missing parts left empty)."""
    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(PRETRAIN_HISTORY_COLUMNS)
            for row in rows:
                writer.writerow([row["epoch"]] + ["" if row.get(key) is None else f"{row[key]:.6g}"
                                                  for key in PRETRAIN_HISTORY_COLUMNS[1:]])
    replace_whole(Path(folder) / HISTORY_NAME, write)


def read_pretrain_history(path):
    """Rows of a pre-training's history.csv (a file or its folder): epoch an int, the
    rest floats (NaN where empty)."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    with open(path, newline="") as handle:
        return [{"epoch": int(row["epoch"]),
                 **{key: float(row[key]) if row.get(key) not in ("", None) else math.nan
                    for key in PRETRAIN_HISTORY_COLUMNS[1:]}}
                for row in csv.DictReader(handle)]


# The training data a model folder records, so that `adapt` can rebuild its training set:
# config.json's "training_data" holds the tomograms' paths (absolute, as given) and the
# names of copies of their coordinate files kept in this sub-folder.
TRAINING_DATA_DIR = "training_data"
TRAINING_DATA_KEY = "training_data"


def record_training_data(folder, tomos, coords, val_tomos=(), val_coords=()):
    """Copy the coordinate files into `folder`/training_data/{train,val} and return what
    config.json's "training_data" holds: {tomograms, coords, val_tomograms, val_coords}
    (tomograms absolute; coordinate copies relative to the folder, so a moved folder still
    finds them)."""
    folder = Path(folder)
    record = {"tomograms": [os.path.abspath(path) for path in tomos],  # links kept: stems pair files
              "val_tomograms": [os.path.abspath(path) for path in val_tomos]}
    for key, part, paths in (("coords", "train", coords), ("val_coords", "val", val_coords)):
        (folder / TRAINING_DATA_DIR / part).mkdir(parents=True, exist_ok=True)
        record[key] = []
        for path in paths:
            name = str(Path(TRAINING_DATA_DIR, part, Path(path).name))
            data = Path(path).read_bytes()
            replace_whole(folder / name, lambda temporary: temporary.write_bytes(data))
            record[key].append(name)
    return record


def training_data(folder, config):
    """(tomograms, coordinate files, validation tomograms, validation coordinate files) a
    model folder recorded, coordinate files as paths; None for a folder written before
    models recorded their training data."""
    record = config.get(TRAINING_DATA_KEY)
    if not record:
        return None
    folder = Path(folder)
    return ([Path(p) for p in record["tomograms"]], [folder / p for p in record["coords"]],
            [Path(p) for p in record.get("val_tomograms", [])], [folder / p for p in record.get("val_coords", [])])


# An adapted model's curves: one row per training step, the adaptation term's values
# (their names depend on the method: discriminator losses and domain accuracies, or the
# loss on pseudo-labelled or restyled patches).
ADAPTATION_NAME = "adaptation.csv"


def write_adaptation(folder, records):
    """adaptation.csv from (step, {name: value}) records."""
    names = list(dict.fromkeys(name for _, values in records for name in values))

    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["step"] + names)
            for step, values in records:
                writer.writerow([step] + [f"{values[name]:.6g}" if name in values else "" for name in names])
    replace_whole(Path(folder) / ADAPTATION_NAME, write)


def read_adaptation(path):
    """{column: list of floats} of an adaptation.csv (a file, or the model folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTATION_NAME
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = list(rows[0]) if rows else ["step"]
    return {name: [float(row[name]) if row[name] not in ("", None) else math.nan for row in rows] for name in names}


def training_data_problem(folder, config):
    """Why a model folder's recorded training data cannot be used (a sentence), or None."""
    recorded = training_data(folder, config)
    if recorded is None:
        return (f"{folder} does not record its training data (it was trained before models kept it): give its "
                f"training tomograms and coordinate files")
    missing = [str(path) for paths in recorded for path in paths if not Path(path).is_file()]
    if missing:
        return (f"the training data of {folder} is no longer where it was recorded ({', '.join(missing)}): give its "
                f"training tomograms and coordinate files")
    return None
