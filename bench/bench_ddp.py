"""Data-parallel training: does training on 2 processes (torch DDP) learn as fast, per epoch,
as on 1? The same synthetic data, seed and settings are trained once on one process and
once on two (`train --processes 2`, gloo on the CPU; `--gpus` on GPUs), and the validation
F1 of every epoch (history.csv) is printed side by side, with the epoch at which each run
first reaches the 1-process run's best F1.

A step takes `--batch` patches in both runs (2 per process on 2 processes), each patch is
augmented from its own stream wherever it is trained, and the Dice loss sums over all
processes' patches: the two runs should agree but for the order of sums. On the 2 CPU cores
of a laptop two processes are not faster; on GPUs each process computes its share of a step.

Usage:
    python bench/bench_ddp.py [--out bench_output/ddp] [--epochs 8] [--snr 2] [--seed 0]
        [--gpus 0,1]
"""

import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project, for etpicker.core

from etpicker.core import io, simulate  # noqa: E402
from etpicker.core.model_folder import HISTORY_NAME  # noqa: E402

TRAIN = ("--patch", 32, "--batch", 4, "--widths", "8,16,24,32", "--lr", "5e-3", "--diameter", 11, "--pad", 4,
         "--no-shape-check")


def _core(*args, log):
    command = [sys.executable, "-m", "etpicker.core", *map(str, args)]
    log("$ " + shlex.join(command))
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench_ddp: failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return time.monotonic() - started


def _data(folder, n_train, shape, snr, seed):
    """Training and validation tomograms, every particle clicked as one class."""
    simulate.write_dataset(folder / "simulated", n_train + 1, shape, snr, seed, log=lambda _: None)
    files = {}
    for index, kind in enumerate(["train"] * n_train + ["val"]):
        stem = f"tomo_{index:03d}"
        truth = io.read_coords(folder / "simulated" / f"{stem}.csv")
        (folder / kind).mkdir(exist_ok=True)
        shutil.copy(folder / "simulated" / f"{stem}.mrc", folder / kind / f"{stem}.mrc")
        io.write_coords(folder / kind / f"{stem}.csv", io.Coords(["particle"] * len(truth), truth.xyz))
        files.setdefault(kind, []).append(folder / kind / stem)
    return files


def _f1s(model):
    with open(model / HISTORY_NAME) as handle:
        return [float(row["val_f1"]) for row in csv.DictReader(handle)]


def _first_reaching(f1s, target):
    return next((epoch for epoch, f1 in enumerate(f1s, 1) if f1 >= target - 1e-9), None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "ddp")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 96, 96), metavar=("Z", "Y", "X"))
    parser.add_argument("--snr", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpus", help="compare 1 GPU with these (e.g. 0,1) instead of 1 and 2 CPU processes")
    args = parser.parse_args(argv)

    def log(message):
        print(message, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    files = _data(args.out, args.n_train, tuple(args.shape), args.snr, args.seed)
    inputs = ["--tomos", *[f"{stem}.mrc" for stem in files["train"]],
              "--coords", *[f"{stem}.csv" for stem in files["train"]],
              "--val-tomos", *[f"{stem}.mrc" for stem in files["val"]],
              "--val-coords", *[f"{stem}.csv" for stem in files["val"]],
              "--epochs", args.epochs, "--seed", args.seed, *TRAIN]
    if args.gpus:
        runs = {"1 GPU": ["--device", "cuda:0"], f"{len(args.gpus.split(','))} GPUs": ["--gpus", args.gpus]}
    else:
        runs = {"1 process": ["--device", "cpu"], "2 processes": ["--processes", 2]}
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the same threads per process in both runs
    f1s, seconds = {}, {}
    for name, where in runs.items():
        model = args.out / name.replace(" ", "_")
        seconds[name] = _core("train", *inputs, "--out", model, *where, log=log)
        f1s[name] = _f1s(model)
    first, second = runs
    target = max(f1s[first])
    log(f"\nvalidation F1 per epoch ({args.n_train} training tomograms {'x'.join(map(str, args.shape))} at SNR "
        f"{args.snr:g}, validation on another; seed {args.seed})")
    log(f"{'epoch':>5}  {first:>12}  {second:>12}")
    for epoch, pair in enumerate(zip(f1s[first], f1s[second]), 1):
        log(f"{epoch:>5}  {pair[0]:>12.3f}  {pair[1]:>12.3f}")
    for name in runs:
        reached = _first_reaching(f1s[name], target)
        log(f"{name}: best {max(f1s[name]):.3f}; reaches {target:.3f} (the {first} best) at epoch "
            f"{reached if reached else 'never'}; {seconds[name]:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
