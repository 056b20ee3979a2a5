"""Command line of the core: `python -m etpicker.core SUBCOMMAND ...`.

Exit codes: 0 success, 2 bad input or an output path that cannot be written (one line
`etpicker: error: ...` on stderr, no traceback), 1 an unexpected failure. Progress goes to
stdout, one flushed line per step.
"""

import argparse
import json
import sys
from pathlib import Path

import mrcfile
import numpy as np

from . import __version__, distributed
from .adapt import adapt
from .adapt_settings import DEFAULT_ADVERSARIAL_WEIGHT, DEFAULT_METHOD, DEFAULT_MINUTES, METHODS, methods_help
from .device import resolve_device
from .errors import InputError
from .io import Coords, check_inside, open_tomogram, read_coords, repeated, sorted_names, write_coords, write_volume
from .labels import LABEL_TYPES, paint_labels
from .metrics import ALL, evaluate_many, tolerances
from .model_store import load_model
from .pick import pick_tomogram, voxel_size_warning
from .profile import Profile
from .recipe import CPU_RECIPE, GPU_RECIPE, LABEL_PER_PARTICLE
from .pretrain import pretrain
from .settings import (AMP_MODES, ANNOTATION_MODES, DEFAULT_DIAMETER, DEFAULT_EPOCHS, MIN_VAL_PARTICLES,
                       PRETRAIN_OBJECTIVES, PickSettings, PretrainSettings, TrainSettings, check_voxel_size)
from .simulate import DEFAULT_SHAPE, DEFAULT_SNR, DEFAULT_VOXEL_SIZE, write_dataset
from .train import train
from .train_data import class_order, expand_diameters

TRAIN_DEFAULTS = TrainSettings.defaults()
PICK_DEFAULTS = PickSettings.defaults()
PRETRAIN_DEFAULTS = PretrainSettings.defaults()

DEFAULT_EVALUATE_DIAMETER = 12


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InputError(f"{message} (see '{self.prog} --help')")


def _finite(text):
    """A float option's type: nan and inf are refused like any other non-number."""
    try:
        value = float(text)
    except ValueError:
        value = np.nan
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _number_list(text, kind=_finite):
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _name_list(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _diameter_help(default):
    return (f"weak-label diameter in voxels, one for all classes or one per class in class order "
            f"(D or D1,D2,...; default {default})")


def _add_simulate(subparsers):
    parser = subparsers.add_parser("simulate", help="write synthetic tomograms with ground truth",
                                   description="Write DIR/tomo_NNN.mrc and its ground truth DIR/tomo_NNN.csv: "
                                               "three particle classes (small, medium, large) in random "
                                               "orientations, distractors, CTF, missing wedge and noise.")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--n-tomos", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE, metavar=("Z", "Y", "X"))
    parser.add_argument("--snr", type=_finite, default=DEFAULT_SNR, help="signal variance / noise variance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voxel-size", type=_finite, default=DEFAULT_VOXEL_SIZE, help="Å, written to the header")
    parser.set_defaults(run=_simulate)


def _simulate(args):
    check_voxel_size(args.voxel_size)
    write_dataset(args.out, args.n_tomos, tuple(args.shape), args.snr, args.seed, args.voxel_size)


def _add_labels(subparsers):
    parser = subparsers.add_parser("labels", help="paint a weak-label volume from coordinates",
                                   description="Paint the weak labels of a tomogram's coordinates into a "
                                               "uint8 MRC (0 = background, i = i-th class).")
    parser.add_argument("--tomo", required=True, type=Path, metavar="T.mrc")
    parser.add_argument("--coords", required=True, type=Path, metavar="C.csv")
    parser.add_argument("--out", required=True, type=Path, metavar="L.mrc")
    parser.add_argument("--label-type", choices=LABEL_TYPES, default="tball")
    parser.add_argument("--diameter", type=_number_list, help=_diameter_help(DEFAULT_DIAMETER))
    parser.add_argument("--classes", type=_name_list, metavar="A,B",
                        help="class order (default: sorted class names of the coordinates)")
    parser.add_argument("--voxel-size", type=_finite, metavar="ANGSTROM",
                        help="voxel size of the tomogram in Å, written to the labels' header (default: the "
                             "tomogram's MRC header)")
    parser.set_defaults(run=_labels)


def _labels(args):
    if args.out.resolve() == args.tomo.resolve():
        raise InputError(f"--out {args.out} is the tomogram itself; write the labels to another file")
    check_voxel_size(args.voxel_size)
    tomogram = open_tomogram(args.tomo, args.voxel_size)
    coords = read_coords(args.coords)
    check_inside(coords.xyz, tomogram.data.shape, args.coords)
    classes = class_order([coords], args.classes)
    diameters = expand_diameters(args.diameter, len(classes))
    class_ids = np.array([classes.index(name) + 1 for name in coords.names], dtype=np.int64)
    zyx = coords.xyz[:, ::-1]
    labels = np.zeros(tomogram.data.shape, dtype=np.uint8)
    slab = 32  # painting slab by slab keeps the temporary float buffers small
    for z0 in range(0, labels.shape[0], slab):
        shape = (min(slab, labels.shape[0] - z0),) + labels.shape[1:]
        labels[z0:z0 + shape[0]], _ = paint_labels(shape, zyx, class_ids, diameters, args.label_type,
                                                   origin=(z0, 0, 0))
    write_volume(args.out, labels, tomogram.voxel_size)
    print(f"wrote {args.out}: {len(coords)} particles, classes {','.join(classes)}", flush=True)


def _automatic(key):
    def shown(value):
        return ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}"
    return f"default: automatic, {shown(CPU_RECIPE[key])} on a CPU, {shown(GPU_RECIPE[key])} on a GPU"


def _add_train(subparsers):
    parser = subparsers.add_parser(
        "train", help="train a picking model",
        description="Train a 3D-ResUNet on weak labels around annotated centres. Coordinates are matched "
                    "to tomograms by file stem (T.mrc <-> T.csv). Without --val-tomos, a block at one end "
                    "of each tomogram holding --val-fraction of its particles is held out for validation. "
                    "The epoch with the best validation picking F1 is kept, with each class's score "
                    f"threshold tuned there: give {MIN_VAL_PARTICLES} or more validation particles per class.")
    parser.add_argument("--tomos", required=True, nargs="+", type=Path, metavar="T.mrc")
    parser.add_argument("--coords", required=True, nargs="+", type=Path, metavar="T.csv")
    parser.add_argument("--val-tomos", nargs="+", type=Path, default=[], metavar="V.mrc")
    parser.add_argument("--val-coords", nargs="+", type=Path, default=[], metavar="V.csv")
    parser.add_argument("--val-fraction", type=_finite, default=TRAIN_DEFAULTS["val_fraction"])
    parser.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR")
    parser.add_argument("--diameter", dest="diameters", type=_number_list, metavar="D[,D2...]",
                        help=_diameter_help(f"{LABEL_PER_PARTICLE:g} of --particle-diameter when given, else "
                                            f"{DEFAULT_DIAMETER}"))
    parser.add_argument("--label-type", choices=LABEL_TYPES, default=TRAIN_DEFAULTS["label_type"])
    parser.add_argument("--classes", type=_name_list, metavar="A,B",
                        help="class order (default: sorted class names of the coordinates)")
    parser.add_argument("--voxel-size", type=_finite, metavar="ANGSTROM",
                        help="voxel size of all the tomograms in Å, stored in the model (default: their MRC "
                             "headers, which must agree and give one)")
    parser.add_argument("--epochs", type=int, default=TRAIN_DEFAULTS["epochs"],
                        help=f"most training epochs (default: with --max-minutes as many as it allows, else "
                             f"{DEFAULT_EPOCHS})")
    parser.add_argument("--max-minutes", type=_finite, help="wall-clock budget of the whole run (minutes): the "
                        "learning rate anneals over it and training stops when it is spent, "
                        "mid-epoch if need be (that epoch is still validated), keeping the best model")
    parser.add_argument("--particle-diameter", dest="particle_diameters", type=_number_list, metavar="D[,D2...]",
                        help="particle diameter in voxels, one for all classes or one per class in class order: "
                             "the weak labels (0.6 of it), the validation tolerance and the automatic patch follow "
                             "from it")
    parser.add_argument("--patch", type=int, help=f"training patch size, a multiple of 8 (default: automatic, "
                        f"{CPU_RECIPE['patch']} on a CPU, {GPU_RECIPE['patch']} on a GPU, larger for large particles)")
    parser.add_argument("--pad", type=int, help="tile margin of validation picking, stored in the model for "
                                                "picking (default patch/6, 12 for 72)")
    parser.add_argument("--batch", type=int, help=_automatic("batch"))
    parser.add_argument("--lr", type=_finite, help="peak learning rate of the one-cycle schedule; " + _automatic("lr"))
    parser.add_argument("--ce-weight", type=_finite,
                        help="weight of cross-entropy added to Dice; " + _automatic("ce_weight"))
    parser.add_argument("--no-shape-check", dest="shape_check", action="store_false",
                        help="do not fit the per-class shape checks after training (a logistic model on the "
                             "density around each pick, kept for a class where it raised "
                             "validation F1, and a likeness check to the class's annotated particles, "
                             "kept where it does not lower validation F1)")
    parser.add_argument("--annotations", choices=ANNOTATION_MODES, default=TRAIN_DEFAULTS["annotations"],
                        help="complete: every particle of the classes in the training (and validation) tomograms "
                             "is annotated, and the rest is background; partial: some are not (e.g. 30 of a "
                             "tomogram's 120), so particles the network finds away from the annotations are not "
                             "taught as background, the rest of what is not annotated is taught as background "
                             "with less weight, and validation and the shape checks do not count them "
                             "as false picks")
    _add_amp(parser)
    parser.add_argument("--no-coordconv", dest="coordconv", action="store_false",
                        help="leave out CoordConv's coordinate channels (relative to the patch): picking then "
                             "uses tiles larger than the patch, about 3x faster, not yet shown to be as accurate")
    parser.add_argument("--widths", type=lambda t: _number_list(t, int), metavar="W1,W2,W3,W4",
                        help="channels per network level; " + _automatic("widths"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoint.pt")
    parser.add_argument("--init-model", type=Path, metavar="DIR",
                        help="start from this folder's network: a pre-trained folder (pretrain) or a trained "
                             "model; its encoder and decoder are copied (and its widths and CoordConv taken), its "
                             "head only for a trained model of the same classes")
    launcher = parser.add_mutually_exclusive_group()
    launcher.add_argument("--gpus", type=_gpu_list, metavar="0,1,...",
                          help="train on these GPUs (numbered as CUDA_VISIBLE_DEVICES numbers them), one process "
                               "each, through torchrun and torch DDP: each trains on its share of every epoch's "
                               "patches and --batch (a step's patches) is shared among them")
    launcher.add_argument("--processes", type=int, metavar="N",
                          help="train in N CPU processes (torch DDP over gloo), through torchrun")
    parser.set_defaults(run=_train)


def _gpu_list(text):
    gpus = _number_list(text, int)
    if not gpus or min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"expected distinct GPU numbers such as 0,1,2,3, got {text!r}")
    return gpus


def _train(args):
    settings = TrainSettings(**{name: getattr(args, name) for name in TRAIN_DEFAULTS})  # checked before launching
    if args.gpus or args.processes is not None:
        return _launch(args)
    # under torchrun (or --gpus/--processes) one of several processes, else the only one
    with distributed.started(settings.device) as processes:
        train(args.tomos, args.coords, args.out, val_tomos=args.val_tomos, val_coords=args.val_coords,
              resume=args.resume, init_model=args.init_model, settings=settings, processes=processes)


LAUNCHER_OPTIONS = ("--gpus", "--processes")


def _without_launcher_options(words):
    """Command-line words without --gpus and --processes and their values (argparse takes
    them abbreviated too, with the value next or after '=')."""
    kept, skip = [], False
    for word in words:
        name = word.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) > 2 and any(option.startswith(name) for option in LAUNCHER_OPTIONS):
            skip = "=" not in word
        else:
            kept.append(word)
    return kept


def _launch(args):
    """`train --gpus` or `--processes`: the same training (these words but the launcher's)
    on several processes, started by torchrun; returns its exit status."""
    if args.gpus:
        if args.device not in ("auto", "cuda"):
            raise InputError(f"--gpus trains on the GPUs it lists; leave --device out (it is {args.device})")
        n_processes, device = len(args.gpus), "cuda"
    else:
        if args.processes < 1:
            raise InputError(f"--processes must be at least 1, got {args.processes}")
        if args.device not in ("auto", "cpu"):
            raise InputError(f"--processes trains on CPUs; for GPUs give --gpus instead of --device {args.device}")
        n_processes, device = args.processes, "cpu"
    words = _without_launcher_options(args.argv) + ["--device", device]
    return distributed.launch(words, n_processes, args.gpus)


def _add_pretrain(subparsers):
    parser = subparsers.add_parser(
        "pretrain", help="pre-train a network on unlabelled tomograms (self-supervised)",
        description="Learn the 3D-ResUNet's encoder and decoder from unlabelled tomograms, for train --init-model: "
                    "'masked' restores blocks of each patch hidden by noise; 'regions' divides each patch into "
                    "regions by the network's own features and contrasts them (grey-level and semantic losses). "
                    "Patches stream from the tomograms' memory maps; a line per epoch.")
    parser.add_argument("--tomos", required=True, nargs="+", type=Path, metavar="T.mrc")
    parser.add_argument("--out", required=True, type=Path, metavar="PRETRAINED_DIR")
    parser.add_argument("--objective", choices=PRETRAIN_OBJECTIVES, default=PRETRAIN_DEFAULTS["objective"],
                        help="the self-supervised objective (default %(default)s)")
    parser.add_argument("--max-minutes", type=_finite, help="wall-clock budget (minutes): the learning rate anneals "
                                                            "over it and pre-training stops when it is spent")
    parser.add_argument("--epochs", type=int, default=PRETRAIN_DEFAULTS["epochs"])
    parser.add_argument("--steps-per-epoch", type=int, default=PRETRAIN_DEFAULTS["steps_per_epoch"])
    parser.add_argument("--patch", type=int, help=f"patch size in voxels, a multiple of 8 (default: training's "
                        f"automatic one, {CPU_RECIPE['patch']} on a CPU, {GPU_RECIPE['patch']} on a GPU)")
    parser.add_argument("--widths", type=lambda t: _number_list(t, int), metavar="W1,W2,W3,W4",
                        help="channels per network level (train --init-model takes them); " + _automatic("widths"))
    parser.add_argument("--batch", type=int, help=_automatic("batch"))
    parser.add_argument("--lr", type=_finite, help="peak learning rate; " + _automatic("lr"))
    parser.add_argument("--voxel-size", type=_finite, metavar="ANGSTROM",
                        help="voxel size of the tomograms in Å (default: their MRC headers)")
    parser.add_argument("--no-coordconv", dest="coordconv", action="store_false",
                        help="leave out CoordConv's channels (then train --init-model trains without them too)")
    _add_amp(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.set_defaults(run=_pretrain)


def _pretrain(args):
    settings = PretrainSettings(**{name: getattr(args, name) for name in PRETRAIN_DEFAULTS})
    pretrain(args.tomos, args.out, settings=settings)


def _add_amp(parser):
    parser.add_argument("--amp", choices=AMP_MODES, default=TRAIN_DEFAULTS["amp"],
                        help="mixed precision. auto: the network runs in bfloat16 (float16) on a GPU and on CPUs "
                             "with native bfloat16 (about twice as fast there), else in float32; off: float32")


def _add_pick(subparsers):
    parser = subparsers.add_parser("pick", help="pick particles in tomograms with a trained model",
                                   description="Write PRED_DIR/<stem>.csv (class,x,y,z,score) per tomogram.")
    parser.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    parser.add_argument("--tomos", required=True, nargs="+", type=Path, metavar="A.mrc")
    parser.add_argument("--out", required=True, type=Path, metavar="PRED_DIR")
    parser.add_argument("--pad", type=int, help="tile margin (default: the model's, the one its training "
                        "validated with)")
    parser.add_argument("--threshold", type=_finite, default=PICK_DEFAULTS["threshold"],
                        help="foreground probability (1 - background) that makes a voxel foreground")
    parser.add_argument("--min-score", type=_finite, help="drop maxima scoring below this (default: per class, "
                                                        "the fraction of a fully segmented ball's score that gave "
                                                        "the best validation F1 in training; for a class with a "
                                                        "shape check, 0.2 of it, and the check decides)")
    parser.add_argument("--min-distance", type=_finite, help="of two picks closer than this (voxels), keep the "
                                                           "higher score (default: half the class diameter)")
    parser.add_argument("--no-shape-check", dest="shape_check", action="store_false",
                        help="skip the model's shape checks: keep every pick above the score threshold")
    parser.add_argument("--batch", type=int, default=PICK_DEFAULTS["batch"],
                        help="tiles per network call (fewer where they would not fit in memory)")
    parser.add_argument("--tile", type=int, metavar="VOXELS",
                        help="tile edge for the network, a multiple of 8 (default: automatic; a model without "
                             "CoordConv takes the tile that computes the fewest voxels within a memory budget, "
                             "one with CoordConv its training patch)")
    parser.add_argument("--voxel-size", type=_finite, metavar="ANGSTROM",
                        help="voxel size of all the tomograms in Å, checked against the model's (default: "
                             "their MRC headers); a mismatch only warns")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    _add_amp(parser)
    parser.add_argument("--save-probability", action="store_true",
                        help="also write PRED_DIR/<stem>_probability.mrc (foreground probability)")
    parser.add_argument("--profile", action="store_true",
                        help="print where each tomogram's time went (reading, network, MP-NMS, shape check, ...)")
    parser.set_defaults(run=_pick)


def _pick(args):
    settings = PickSettings(**{name: getattr(args, name) for name in PICK_DEFAULTS})
    clashes = repeated(path.stem for path in args.tomos)
    if clashes:  # picks are written to PRED_DIR/<stem>.csv: one would overwrite the other
        raise InputError(f"several tomograms are named {', '.join(clashes)}; give each its own file name")
    device = resolve_device(settings.device)
    model, config = load_model(args.model, device)
    pad, tile = settings.pad_for(config), settings.tile_for(config)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in args.tomos:
        try:
            tomogram = open_tomogram(path, settings.voxel_size)  # the caller may know it better (Scipion)
            warning = voxel_size_warning(tomogram, config)
            if warning:
                print(warning, flush=True)
            probability = None
            if settings.save_probability:
                probability_file = mrcfile.new_mmap(args.out / f"{tomogram.stem}_probability.mrc",
                                                    shape=tomogram.data.shape, mrc_mode=2, overwrite=True)
                probability_file.voxel_size = tomogram.voxel_size or 0.0
                probability = probability_file.data
            profile = Profile()
            try:
                coords = pick_tomogram(model, config, tomogram, pad=pad, tile=tile, threshold=settings.threshold,
                                       min_score=settings.min_score, min_distance=settings.min_distance,
                                       batch=settings.batch, device=device, probability_out=probability,
                                       amp=settings.amp, shape_check=settings.shape_check, profile=profile)
            finally:
                if probability is not None:
                    with profile.step("writing"):
                        probability_file.close()
            with profile.step("writing"):
                write_coords(args.out / f"{tomogram.stem}.csv", coords)
            print(f"picked {tomogram.stem}: {len(coords)} particles", flush=True)
            if args.profile:
                print(f"profile {tomogram.stem}: {profile.report()}", flush=True)
        except InputError as error:
            print(f"etpicker: error: {error}", file=sys.stderr, flush=True)
            failures.append(str(path))
    if failures:
        raise InputError(f"{len(failures)} of {len(args.tomos)} tomogram(s) failed: {', '.join(failures)}")


def _add_evaluate(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="score predictions against ground truth",
        description="Match PRED_DIR/<stem>.csv with GT_DIR/<stem>.csv one-to-one within a tolerance and "
                    "print per-class and class-agnostic precision, recall and F1; the last line is "
                    "F1=<class-agnostic F1>.")
    parser.add_argument("--pred", required=True, type=Path, metavar="PRED_DIR")
    parser.add_argument("--gt", required=True, type=Path, metavar="GT_DIR")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tolerance", type=_finite, metavar="VOXELS", help="match distance for every class")
    group.add_argument("--diameter", type=_number_list, metavar="D[,D2...]",
                       help=f"particle diameter(s) in voxels, in sorted class order; the tolerance is a "
                            f"quarter of it (half the radius). Default when neither is given: diameter "
                            f"{DEFAULT_EVALUATE_DIAMETER}")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")
    parser.set_defaults(run=_evaluate)


def _evaluate(args):
    for folder in (args.pred, args.gt):
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
    truths = {path.stem: read_coords(path) for path in sorted(args.gt.glob("*.csv"))}
    if not truths:
        raise InputError(f"{args.gt}: no ground-truth .csv files")
    predictions = {}
    for path in sorted(args.pred.glob("*.csv")):
        if path.stem not in truths:
            print(f"no ground truth {args.gt / path.name}: {path} is not scored", flush=True)
    for stem in truths:
        path = args.pred / f"{stem}.csv"
        if path.is_file():
            predictions[stem] = read_coords(path)
        else:
            print(f"no prediction {path}: counting all its particles as missed", flush=True)
            predictions[stem] = Coords(np.array([], str), np.zeros((0, 3)))
    # Predicted classes count too: picks of a class absent from the truth are all false.
    classes = sorted_names({name for coords in [*truths.values(), *predictions.values()] for name in coords.names})
    if args.tolerance is not None:
        if not args.tolerance > 0:
            raise InputError(f"--tolerance must be positive, got {args.tolerance}")
        tolerance = {name: args.tolerance for name in classes}
    else:
        diameters = args.diameter or [DEFAULT_EVALUATE_DIAMETER]
        if len(diameters) == 1:
            diameters = diameters * len(classes)
        if len(diameters) != len(classes) or min(diameters, default=1) <= 0:
            raise InputError(f"give one positive --diameter or one per class ({','.join(classes)})")
        tolerance = tolerances(classes, diameters)
    summary = evaluate_many([(predictions[stem], truth) for stem, truth in truths.items()], tolerance)
    print(f"{'class':<16}{'tp':>7}{'fp':>7}{'fn':>7}{'precision':>11}{'recall':>9}{'f1':>8}")
    for name, row in list(summary["classes"].items()) + [(ALL, summary[ALL])]:
        print(f"{name:<16}{row['tp']:>7}{row['fp']:>7}{row['fn']:>7}{row['precision']:>11.3f}"
              f"{row['recall']:>9.3f}{row['f1']:>8.3f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"F1={summary[ALL]['f1']:.3f}", flush=True)


def _add_adapt(subparsers):
    parser = subparsers.add_parser(
        "adapt", help="adapt a trained model to new tomograms without labels",
        description="Fine-tune a model on its own training data (recorded in its folder, or given) together "
                    "with unlabelled target tomograms, so that it picks those (another microscope, defocus, "
                    "dose, tilt range...); the adapted model goes to a new folder and picks like any other.")
    parser.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    parser.add_argument("--tomos", required=True, nargs="+", type=Path, metavar="T.mrc",
                        help="the target tomograms (no annotations needed)")
    parser.add_argument("--out", required=True, type=Path, metavar="NEW_MODEL_DIR")
    parser.add_argument("--source-tomos", nargs="+", type=Path, default=[], metavar="S.mrc",
                        help="the model's training tomograms (default: those its folder recorded)")
    parser.add_argument("--source-coords", nargs="+", type=Path, default=[], metavar="S.csv",
                        help="their coordinate files, matched by stem (default: the copies in the model folder)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                        help=methods_help())
    parser.add_argument("--max-minutes", type=_finite, default=DEFAULT_MINUTES,
                        help=f"wall-clock budget of the whole adaptation (minutes; default {DEFAULT_MINUTES:g})")
    parser.add_argument("--adversarial-weight", type=_finite, default=DEFAULT_ADVERSARIAL_WEIGHT,
                        help="dual-adversarial: weight of the reversed discriminator gradients (lambda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.set_defaults(run=_adapt)


def _adapt(args):
    adapt(args.model, args.tomos, args.out, source_tomos=args.source_tomos, source_coords=args.source_coords,
          method=args.method, max_minutes=args.max_minutes, seed=args.seed, device=args.device,
          adversarial_weight=args.adversarial_weight)


def build_parser():
    parser = _Parser(prog="etpicker", description="Weakly supervised 3D particle picking for cryo-ET "
                                                  "(DeepETPicker method).")
    parser.add_argument("--version", action="version", version=f"etpicker {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _add_simulate(subparsers)
    _add_labels(subparsers)
    _add_pretrain(subparsers)
    _add_train(subparsers)
    _add_pick(subparsers)
    _add_evaluate(subparsers)
    _add_adapt(subparsers)
    return parser


def main(argv=None):
    # Progress lines must reach a parent process (Scipion) as they happen, even through a pipe.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        argv = sys.argv[1:] if argv is None else [str(word) for word in argv]
        args = build_parser().parse_args(argv)
        args.argv = argv  # `train --gpus` hands them on to its processes
        return args.run(args) or 0
    except InputError as error:
        print(f"etpicker: error: {error}", file=sys.stderr, flush=True)
        return 2
    except OSError as error:  # an output path that is a file, a missing folder, a full disk...
        where = f": {error.filename}" if error.filename else ""
        print(f"etpicker: error: {error.strerror or error}{where}", file=sys.stderr, flush=True)
        return 2
