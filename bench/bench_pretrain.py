"""Few labels, with and without self-supervised pre-training (issue 19).

Realistic crowded tomograms (bench/realistic.py, as bench_accuracy makes them): the training
tomograms' annotations are cut to about --per-class particles of each class in all (chosen at
random; the others stay in the tomograms, unannotated). For each objective, `pretrain` learns
from the training tomograms (no labels) within --pretrain-minutes, then `train --init-model`
within --train-minutes; `train` from scratch gets the same labels, seed and training budget.
Each model picks unseen, fully annotated tomograms; class-agnostic and per-class F1 are
printed side by side. Validation (the kept epoch, the score thresholds) picks a corner
(--val-box) of bench_accuracy's fully annotated validation tomogram, alike for every arm.

Usage:
    python bench/bench_pretrain.py [--out bench_output/pretrain] [--pretrain-minutes 15]
        [--train-minutes 15] [--per-class 10] [--objectives regions masked]
    # the label-efficiency table: every count x annotations mode, with and without pre-training
    python bench/bench_pretrain.py --per-class 5 10 20 50 all --annotations partial complete
"""
import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for etpicker.core

import realistic  # noqa: E402  (same folder)
from bench_accuracy import core, evaluate, gt_folder, summarise  # noqa: E402
from etpicker.core import io  # noqa: E402
from etpicker.core.model_folder import WEIGHTS_NAME  # noqa: E402
from etpicker.core.partial import PARTIAL  # noqa: E402
from etpicker.core.settings import ANNOTATION_MODES, PRETRAIN_OBJECTIVES  # noqa: E402


def few_labels(train, per_class, folder, seed):
    """Copies of the training CSVs holding about `per_class` particles of each class in all,
    drawn at random over the tomograms; returns their paths (same stems as the tomograms)."""
    rng = np.random.default_rng(seed)
    coords = [io.read_coords(csv_path) for _, csv_path in train]
    keep = [np.zeros(len(c), bool) for c in coords]
    for name in sorted({n for c in coords for n in c.names}):
        where = [(t, i) for t, c in enumerate(coords) for i in np.flatnonzero(c.names == name)]
        for index in rng.permutation(len(where))[:per_class]:
            t, i = where[index]
            keep[t][i] = True
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (_, csv_path), c, mask in zip(train, coords, keep):
        io.write_coords(folder / csv_path.name, c.subset(mask))
        paths.append(folder / csv_path.name)
    return paths


def cropped(pair, box, folder):
    """The corner `box` (z, y, x voxels) of a tomogram and the particles inside it, written to
    `folder` under the same stem: a small validation region, since validation picks it after
    every epoch and a whole tomogram took most of a few-minute budget."""
    mrc_path, csv_path = pair
    tomogram = io.open_tomogram(mrc_path)
    z, y, x = box
    folder.mkdir(parents=True, exist_ok=True)
    io.write_volume(folder / mrc_path.name, np.asarray(tomogram.data[:z, :y, :x]), tomogram.voxel_size)
    coords = io.read_coords(csv_path)
    inside = np.all(coords.xyz < np.array([x, y, z]), axis=1)
    io.write_coords(folder / csv_path.name, coords.subset(inside))
    return folder / mrc_path.name, folder / csv_path.name


ALL = "all"  # --per-class: every particle annotated


def per_class_count(text):
    """An argparse type: a positive number of particles per class, or 'all'."""
    if text == ALL:
        return ALL
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of particles per class, or {ALL}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_output/pretrain"))
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=2)
    parser.add_argument("--val-box", type=int, nargs=3, default=(64, 128, 128), metavar=("Z", "Y", "X"),
                        help="the corner of the validation tomogram validation picks (voxels)")
    parser.add_argument("--per-class", type=per_class_count, nargs="+", default=[10],
                        help=f"annotated particles per class, in all; several (and {ALL}) give a label-efficiency "
                             f"table, with one pre-training shared by every row")
    parser.add_argument("--annotations", nargs="+", default=[PARTIAL], choices=ANNOTATION_MODES,
                        help="train --annotations mode(s) of every row (default %(default)s: the particles not "
                             "among those annotated are in the tomograms too)")
    parser.add_argument("--pretrain-minutes", type=float, default=15.0)
    parser.add_argument("--train-minutes", type=float, default=15.0)
    parser.add_argument("--objectives", nargs="+", default=list(PRETRAIN_OBJECTIVES), choices=PRETRAIN_OBJECTIVES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-args", default="", help="extra options for every `train`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-scratch", action="store_true",
                        help="score the from-scratch model an earlier run left in --out with the same settings "
                             "instead of training it again (keeps a locked run short)")
    parser.add_argument("--reuse-pretrained", action="store_true",
                        help="fine-tune the pre-trained folders an earlier run left in --out with the same settings "
                             "instead of pre-training again (to compare training settings on the same start)")
    args = parser.parse_args(argv)

    log = realistic.print_line
    templates = realistic.load_templates_or_report("bench_pretrain")
    if templates is None:
        return 2
    targets = realistic.DEFAULT_TARGETS
    classes = sorted(targets)
    diameters = [templates[name].diameter for name in classes]
    shape = (128, 256, 256)
    started = time.time()
    log(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    data = realistic.generate(args.out / "data", args.n_train + max(args.n_test, 2), shape, [args.snr], args.seed, targets,
                              templates=templates, log=log)[args.snr]
    val = realistic.generate(args.out / "data_val", 1, shape, [args.snr], args.seed + 1000, targets,
                             templates=templates, log=log)[args.snr]
    train, test = data[:args.n_train], data[args.n_train:args.n_train + args.n_test]
    val = [cropped(val[0], args.val_box, args.out / f"snr{args.snr:g}_val")]
    log(f"validation: {len(io.read_coords(val[0][1]))} particles in the {args.val_box} corner of a fully annotated "
        f"tomogram")
    shutil.rmtree(args.out / f"snr{args.snr:g}_gt_test", ignore_errors=True)  # only these tomograms' truth is scored
    gt_dir = gt_folder(test, args.out / f"snr{args.snr:g}_gt_test")

    def train_and_score(run_dir, labels, annotations, name, init=()):
        """(train minutes, summarise(...)) of one model trained on `labels` and picking the test tomograms."""
        model_dir = run_dir / name
        shutil.rmtree(model_dir, ignore_errors=True)
        train_started = time.time()
        core("train", "--tomos", *[m for m, _ in train], "--coords", *labels,
             "--val-tomos", *[m for m, _ in val], "--val-coords", *[c for _, c in val],
             "--out", model_dir, "--max-minutes", args.train_minutes, "--seed", args.seed,
             "--device", args.device, "--particle-diameter", ",".join(f"{d:.2f}" for d in diameters),
             "--annotations", annotations, *init, *shlex.split(args.train_args), log=log)
        minutes = (time.time() - train_started) / 60
        core("pick", "--model", model_dir, "--tomos", *[m for m, _ in test], "--out", run_dir / f"pred_{name}",
             "--device", args.device, log=log)
        result = evaluate(run_dir / f"pred_{name}", gt_dir, diameters, run_dir / f"{name}.json", log)
        return minutes, summarise(result, classes)

    # pre-training reads no labels: one per objective serves every row
    pretrained = {}
    for objective in args.objectives:
        folder = args.out / f"snr{args.snr:g}_pretrained_{objective}"
        pretrained[objective] = (folder, float("nan"))
        if args.reuse_pretrained and (folder / WEIGHTS_NAME).is_file():
            log(f"reusing the pre-trained folder {folder}")
            continue
        shutil.rmtree(folder, ignore_errors=True)
        pretrain_started = time.time()
        core("pretrain", "--tomos", *[m for m, _ in train], "--out", folder, "--objective", objective,
             "--max-minutes", args.pretrain_minutes, "--seed", args.seed, "--device", args.device, log=log)
        pretrained[objective] = (folder, (time.time() - pretrain_started) / 60)

    rows = []  # (per class, annotations, method, pretrain minutes, train minutes, per-class F1s, mean, agnostic)
    for per_class in args.per_class:
        run_dir = args.out / f"snr{args.snr:g}_per{per_class}"
        labels = ([c for _, c in train] if per_class == ALL else
                  few_labels(train, per_class, run_dir / "labels", args.seed))
        counts = {name: sum(int((io.read_coords(p).names == name).sum()) for p in labels) for name in classes}
        log(f"annotated for training: {counts} (of {sum(len(io.read_coords(c)) for _, c in train)} particles)")
        for annotations in args.annotations:
            suffix = "" if annotations == PARTIAL else f"_{annotations}"
            scratch_json = run_dir / f"scratch{suffix}.json"
            if args.reuse_scratch and scratch_json.is_file():
                log(f"reusing the from-scratch model's scores in {scratch_json}")
                minutes, scores = float("nan"), summarise(json.loads(scratch_json.read_text()), classes)
            else:
                minutes, scores = train_and_score(run_dir, labels, annotations, f"scratch{suffix}")
            rows.append((per_class, annotations, "from scratch", 0.0, minutes, *scores))
            for objective, (folder, pretrain_minutes) in pretrained.items():
                minutes, scores = train_and_score(run_dir, labels, annotations, f"init_{objective}{suffix}",
                                                  ("--init-model", folder))
                rows.append((per_class, annotations, f"pretrain {objective} + train", pretrain_minutes, minutes,
                             *scores))
        (args.out / f"snr{args.snr:g}_rows.json").write_text(json.dumps(rows, indent=1))

    log(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {(time.time() - started) / 60:.1f} min "
        f"in all")
    log(f"Labels per class (in all) x annotations mode x pre-training, SNR {args.snr:g}, {args.n_test} unseen fully "
        f"annotated tomogram(s), budgets {args.pretrain_minutes:g} min pretrain + {args.train_minutes:g} min train, "
        f"seed {args.seed}")
    log(f"{'per class':>9} {'annotations':<12}{'method':<28}{'pretrain':>9}{'train':>7}"
        + "".join(f"{name:>8}" for name in classes) + f"{'class-aware':>13}{'agnostic':>10}{'vs scratch':>12}")
    scratch = {}
    for per_class, annotations, method, pre, minutes, per_class_f1, mean_f1, agnostic in rows:
        scratch.setdefault((per_class, annotations), agnostic)
        log(f"{per_class:>9} {annotations:<12}{method:<28}{pre:>9.1f}{minutes:>7.1f}"
            + "".join(f"{f:>8.3f}" for f in per_class_f1)
            + f"{mean_f1:>13.3f}{agnostic:>10.3f}{agnostic - scratch[per_class, annotations]:>+12.3f}")
    log("acceptance (10 per class): class-agnostic F1 >= 0.85 and >= 0.10 above scratch, within 15 + 15 min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
