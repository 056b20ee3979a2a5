"""Domain shift: a model trained on one kind of realistic tomograms picking another kind,
unadapted, adapted without the target's labels (each `adapt --method`), and trained on the
labelled target data, all with the same budget (class-agnostic F1 on held-out tomograms).

The source: SNR 0.1, tilts ±60°, 3 µm underfocus, among one half of the non-target maps.
Each case changes one of these (or all together) for the target. Reported per case:
unadapted, each adaptation method, a control (the source model fine-tuned as long on its
own data alone: what adapting gains beyond training longer), trained on the labelled
target, the share of the gap each method recovers ((adapted - unadapted) / (target-trained
- unadapted)), and the source test F1 after adapting (it must stay within 0.02). The source
model and each case's target-trained model are trained once and reused from --out, so that
methods run later are compared with the same references.

Usage (the acceptance's budget is --minutes 15: hours on 2 CPU cores):
    python bench/bench_adapt.py [--cases all] [--minutes 15] [--shape 128 256 256] [--seed 0]
    python bench/bench_adapt.py --synthetic [--minutes 0.5]   # core/simulate.py's shift, minutes

--synthetic: the core test's case instead (core/simulate.py, one class "particle": SNR 4 and
±60° -> SNR 0.5 and ±30°, 48×96×96 voxels, a tiny network trained 4 epochs), where the
methods can be compared in minutes.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for etpicker.core

import realistic  # noqa: E402  (same folder)
import with_setting  # noqa: E402  (same folder)
from bench_accuracy import core, evaluate, gt_folder  # noqa: E402
from etpicker.core import model_folder, simulate  # noqa: E402
from etpicker.core.adapt_settings import METHODS  # noqa: E402
from etpicker.core.io import Coords, write_coords  # noqa: E402

SOURCE = {"snr": 0.1, "tilt": 60.0, "defocus_um": -3.0, "others": 0}
CASES = {"snr": {"snr": 0.05}, "tilt": {"tilt": 45.0}, "defocus": {"defocus_um": -5.0}, "others": {"others": 1},
         "all": {"snr": 0.05, "tilt": 45.0, "defocus_um": -5.0, "others": 1}}


def image(templates, targets, shape, seed, snr, tilt, defocus_um, others):
    """(volume, truth rows (name, z, y, x)) of one crowded tomogram among the `others`-th half
    of the non-target maps, imaged at this SNR, tilt range and defocus."""
    distractors = sorted(name for name in templates if name not in targets)[others::2]
    chosen = {name: templates[name] for name in (*targets, *distractors)}
    proteins, context, truth, _ = realistic.layout(chosen, shape, seed, targets)
    protein_signal = realistic.imaged_signal(proteins, defocus_um=defocus_um, max_tilt_degrees=tilt)
    signal = protein_signal + realistic.imaged_signal(context, defocus_um=defocus_um, max_tilt_degrees=tilt)
    volume = realistic.add_noise(signal, protein_signal.var(), snr, np.random.default_rng([seed, 7]), tilt)
    return volume, truth


def dataset(folder, templates, targets, shape, seeds, imaging, log):
    """[(mrc, csv)] of the tomograms of one imaging, written once (reused when present)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "imaging.json"
    wanted = {**imaging, "shape": list(shape), "seeds": list(seeds), "targets": list(targets)}
    files = [(folder / f"tomo_{seed}.mrc", folder / f"tomo_{seed}.csv") for seed in seeds]
    if record.is_file() and json.loads(record.read_text()) == wanted:
        return files
    for seed, (mrc_path, csv_path) in zip(seeds, files):
        volume, truth = image(templates, targets, shape, seed, **imaging)
        realistic.write_tomogram(mrc_path, volume)
        # class-agnostic annotations would be a choice of the user; the truth keeps the classes
        write_coords(csv_path, Coords([row[0] for row in truth], np.array([row[3:0:-1] for row in truth], float)))
        log(f"imaged {mrc_path} ({imaging}): {len(truth)} targets")
    record.write_text(json.dumps(wanted))
    return files


SYNTHETIC = {"source": (4.0, 60.0), "all": (0.5, 30.0)}  # (SNR, tilt range) per domain
# the end-to-end test's tiny recipe (test_cli.py), so that each training takes about a minute
SYNTHETIC_TRAIN = ("--epochs", 4, "--patch", 32, "--batch", 4, "--widths", "8,16,24,32", "--lr", "5e-3",
                   "--diameter", 11, "--pad", 4, "--no-coordconv", "--no-shape-check")


def synthetic(folder, domain, seeds):
    """[(mrc, csv)] of core/simulate.py tomograms of one domain, every particle one class."""
    folder.mkdir(parents=True, exist_ok=True)
    snr, tilt = SYNTHETIC[domain]
    files = []
    for seed in seeds:
        tomo = simulate.simulate_tomogram((48, 96, 96), rng=seed, snr=snr, max_tilt_degrees=tilt)
        files.append((folder / f"tomo_{seed}.mrc", folder / f"tomo_{seed}.csv"))
        realistic.write_tomogram(files[-1][0], tomo.volume)
        write_coords(files[-1][1], Coords(["particle"] * len(tomo.names), tomo.xyz))
    return files


def f1_of(model, test, run_dir, name, diameters, args, log):
    """Class-agnostic F1 of `model` on the `test` tomograms."""
    pred = run_dir / f"pred_{name}"
    shutil.rmtree(pred, ignore_errors=True)
    core("pick", "--model", model, "--tomos", *[m for m, _ in test], "--out", pred, "--device", args.device, log=log)
    result = evaluate(pred, gt_folder(test, run_dir / f"gt_{test[0][0].parent.name}"), diameters,
                      run_dir / f"{name}.json", log)
    return result["all"]["f1"]


def train(files, out, minutes, diameters, args, log, *extra):
    shutil.rmtree(out, ignore_errors=True)
    recipe = SYNTHETIC_TRAIN if args.synthetic else ("--particle-diameter", ",".join(f"{d:.2f}" for d in diameters))
    core("train", "--tomos", *[m for m, _ in files], "--coords", *[c for _, c in files], "--out", out,
         "--max-minutes", minutes, "--seed", args.seed, "--device", args.device, *recipe, *extra, log=log)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_output/adapt"))
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--methods", nargs="+", type=with_setting.variant(METHODS), default=list(METHODS),
                        help=f"adapt --method(s) ({', '.join(METHODS)}); METHOD+MODULE.NAME=VALUE runs one with "
                             f"another core choice (bench/with_setting.py), e.g. "
                             f"self-training+adapt.PSEUDO_LABEL_ANNOTATIONS=partial")
    parser.add_argument("--minutes", type=float, default=15.0,
                        help="budget of every training and adaptation (minutes; the acceptance's: 15)")
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--n-train", type=int, default=2, help="tomograms per domain to train or adapt on")
    parser.add_argument("--n-test", type=int, default=1, help="held-out tomograms per domain")
    parser.add_argument("--targets", default=",".join(realistic.DEFAULT_TARGETS))
    parser.add_argument("--no-control", action="store_true", help="skip the fine-tuned-on-source control")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic", action="store_true", help="the core test's quick case (see above)")
    args = parser.parse_args(argv)

    log = realistic.print_line
    templates = realistic.load_templates_or_report("bench_adapt")
    if templates is None:
        return 2
    targets = tuple(args.targets.split(","))
    diameters = [templates[name].diameter for name in sorted(targets)]
    if args.synthetic:  # 11-voxel particles (the evaluation's tolerance: a quarter of it)
        args.cases, diameters = ["all"], [11.0]
    started = time.time()
    log(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; budget {args.minutes:g} min each, "
        f"shape {args.shape}, seed {args.seed}")
    shape, n = tuple(args.shape), args.n_train + args.n_test
    if args.synthetic:
        source = synthetic(args.out / "source", "source", range(args.seed, args.seed + n))
    else:
        source = dataset(args.out / "source", templates, targets, shape, range(args.seed, args.seed + n), SOURCE, log)
    source_train, source_test = source[:args.n_train], source[args.n_train:]
    source_model = args.out / "source_model"
    if not (source_model / model_folder.WEIGHTS_NAME).is_file():
        train(source_train, source_model, args.minutes, diameters, args, log)
    source_f1 = f1_of(source_model, source_test, args.out, "source_on_source", diameters, args, log)
    lr = model_folder.read_config(source_model)["training"]["lr"] * 0.5  # as adapt fine-tunes
    control_source_f1 = None
    rows = []
    for case in args.cases:
        run_dir = args.out / case
        imaging = {**SOURCE, **CASES[case]}
        seeds = range(args.seed + 100, args.seed + 100 + n)
        target = (synthetic(run_dir / "target", case, seeds) if args.synthetic else
                  dataset(run_dir / "target", templates, targets, shape, seeds, imaging, log))
        target_train, target_test = target[:args.n_train], target[args.n_train:]
        log(f"\n== case {case}: {imaging} ==")
        row = {"case": case, "unadapted": f1_of(source_model, target_test, run_dir, "unadapted", diameters, args, log)}
        if not (run_dir / "target_model" / model_folder.WEIGHTS_NAME).is_file():  # reused, as the source model
            train(target_train, run_dir / "target_model", args.minutes, diameters, args, log)
        row["target-trained"] = f1_of(run_dir / "target_model", target_test, run_dir, "target_trained", diameters,
                                      args, log)
        if not args.no_control:  # the same extra training, on the source alone
            if control_source_f1 is None:
                train(source_train, args.out / "control_model", args.minutes, diameters, args, log,
                      "--init-model", source_model, "--lr", lr)
                control_source_f1 = f1_of(args.out / "control_model", source_test, args.out, "control_on_source",
                                          diameters, args, log)
            row["control"] = f1_of(args.out / "control_model", target_test, run_dir, "control", diameters, args, log)
            row["control source"] = control_source_f1
        for method in args.methods:
            name, setting = with_setting.split(method)
            adapted = run_dir / f"adapted_{with_setting.run_name(method)}"
            shutil.rmtree(adapted, ignore_errors=True)
            adapt_started = time.time()
            core("adapt", "--model", source_model, "--tomos", *[m for m, _ in target_train], "--out", adapted,
                 "--method", name, "--max-minutes", args.minutes, "--seed", args.seed, "--device", args.device,
                 log=log, setting=setting)
            row[f"{method} minutes"] = (time.time() - adapt_started) / 60
            row[method] = f1_of(adapted, target_test, run_dir, adapted.name, diameters, args, log)
            row[f"{method} source"] = f1_of(adapted, source_test, run_dir, f"{adapted.name}_on_source", diameters,
                                            args, log)
        rows.append(row)
        (args.out / "results.json").write_text(json.dumps({"source_f1": source_f1, "rows": rows}, indent=2))

    log(f"\nsource model on the source test: class-agnostic F1 {source_f1:.3f}; budget {args.minutes:g} min, "
        f"shape {shape}, seed {args.seed}, {(time.time() - started) / 60:.1f} min in all, load average "
        f"{os.getloadavg()[0]:.1f}")
    columns = ["unadapted", *(["control"] if not args.no_control else []), *args.methods, "target-trained"]
    log(f"{'case':<9}" + "".join(f"{name:>18}" for name in columns) + "   gap recovered / source F1 after")
    for row in rows:
        gap = row["target-trained"] - row["unadapted"]
        recovered = " ".join(f"{name} {(row[name] - row['unadapted']) / gap:+.0%} / {row[name + ' source']:.3f}"
                             if gap > 0 else f"{name} (no gap) / {row[name + ' source']:.3f}"
                             for name in columns[1:-1])
        log(f"{row['case']:<9}" + "".join(f"{row[name]:>18.3f}" for name in columns) + "   " + recovered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
