"""Accuracy benchmark on realistic simulated tomograms (bench/realistic.py).

For each SNR: train etpicker on a few tomograms through the command line within a time
budget, pick held-out tomograms, and score them with `evaluate` (one-to-one matching
within half a particle radius). A difference-of-Gaussians picker, its threshold tuned on
the training tomograms, is scored the same way for context. For each method the picks of
each class are also listed by what they sit on (the simulation records every object), which
tells look-alike proteins from empty space, gold or membranes as the source of false picks.

Usage:
    python bench/bench_accuracy.py [--out bench_output/accuracy] [--max-minutes 15]
        [--snr 0.1 0.05] [--train-args "--diameter 9"] [--skip-dog]
        [--annotated-fraction 0.3 --annotations complete partial]

--annotated-fraction F keeps a random F of each training (and validation) tomogram's
particles in the coordinates `train` gets, the rest present but unannotated; the test
tomograms stay fully annotated. --annotations trains once per mode given (`train
--annotations`), same data, seed and budget, one table row each.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for etpicker.core

import realistic  # noqa: E402  (same folder)
import with_setting  # noqa: E402  (same folder)
from etpicker.core import io, metrics, model_folder  # noqa: E402
from etpicker.core.normalise import robust_stats  # noqa: E402
from etpicker.core.settings import ANNOTATION_MODES  # noqa: E402
from etpicker.core.tiling import model_tiling, tile_origins  # noqa: E402


def core(*args, log, setting=None):
    """Runs `python -m etpicker.core ARGS`, echoing its progress lines; fails loudly.
    `setting` (MODULE.NAME=VALUE): through bench/with_setting.py, with that core choice."""
    command = [sys.executable, "-m", "etpicker.core", *map(str, args)]
    if setting:
        command[1:3] = [str(Path(__file__).with_name("with_setting.py")), setting]
    log("$ " + " ".join(shlex.quote(part) for part in command))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=Path(__file__).resolve().parents[1])
    for line in process.stdout:
        log("  " + line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"etpicker.core {args[0]} failed with exit status {process.returncode}")


def gt_folder(files, folder):
    """A folder holding only the given ground-truth CSVs, so `evaluate` scores just these."""
    folder.mkdir(parents=True, exist_ok=True)
    for _, csv_path in files:
        shutil.copy(csv_path, folder / csv_path.name)
    return folder


def evaluate(pred_dir, gt_dir, diameters, json_path, log):
    core("evaluate", "--pred", pred_dir, "--gt", gt_dir, "--diameter",
         ",".join(f"{d:.2f}" for d in diameters), "--json", json_path, log=log)
    return json.loads(Path(json_path).read_text())


SIGMA_RATIO = 1.6  # of the difference of Gaussians


def difference_of_gaussians(volume, diameter):
    """Band-pass response, largest (positive for bright, negative for dark objects) on
    balls of `diameter` voxels."""
    sigma = max(0.5, diameter / 2 / np.sqrt(3))  # a ball of radius R answers most at R/sqrt(3)
    return ndimage.gaussian_filter(volume, sigma) - ndimage.gaussian_filter(volume, SIGMA_RATIO * sigma)


class DogPicker:
    """Blob detection by a difference of Gaussians at each target class's scale.

    The class of a peak is the scale that answers most strongly; peaks closer than the
    stronger one's radius are dropped. Polarity and threshold are learnt on training data."""

    def __init__(self, classes, diameters):
        self.classes = list(classes)
        self.diameters = np.asarray(diameters, dtype=float)
        self.polarity = 1.0
        self.threshold = 0.0

    def responses(self, path):
        volume = io.open_tomogram(path).data
        centre, scale = robust_stats(volume)
        volume = self.polarity * (np.asarray(volume, np.float32) - centre) / scale
        best = np.full(volume.shape, -np.inf, np.float32)
        best_class = np.zeros(volume.shape, np.int8)
        for index, diameter in enumerate(self.diameters):
            dog = difference_of_gaussians(volume, diameter)
            better = dog > best
            best[better] = dog[better]
            best_class[better] = index
        return best, best_class

    def candidates(self, path):
        """All local maxima, strongest first, after suppression: (class index, zyx, score)."""
        response, response_class = self.responses(path)
        size = max(3, int(self.diameters.min() / 2) | 1)
        peaks = np.argwhere((ndimage.maximum_filter(response, size=size) == response)
                            & (response > 0))
        score = response[tuple(peaks.T)]
        order = np.argsort(-score)
        peaks, score = peaks[order], score[order]
        classes = response_class[tuple(peaks.T)]
        tree = cKDTree(peaks)
        kept = np.ones(len(peaks), bool)
        for i in range(len(peaks)):
            if kept[i]:
                near = tree.query_ball_point(peaks[i], self.diameters[classes[i]] / 2)
                kept[[j for j in near if j > i]] = False
        return classes[kept], peaks[kept], score[kept]

    def as_coords(self, candidates, threshold):
        classes, zyx, score = candidates
        chosen = score >= threshold
        return io.Coords(np.array(self.classes)[classes[chosen]], zyx[chosen][:, ::-1],
                         score[chosen].astype(np.float64))

    def fit(self, files, tolerances, log):
        """Chooses the polarity and threshold that maximise class-agnostic F1 on `files`."""
        best = (-1.0, 1.0, 0.0)
        for polarity in (1.0, -1.0):
            self.polarity = polarity
            found = [(self.candidates(mrc), io.read_coords(csv)) for mrc, csv in files]
            scores = np.concatenate([c[2] for c, _ in found])
            for threshold in np.quantile(scores, np.linspace(0, 0.995, 200)):
                f1 = pooled_f1([(self.as_coords(c, threshold), gt) for c, gt in found],
                               tolerances)
                if f1 > best[0]:
                    best = (f1, polarity, threshold)
        f1, self.polarity, self.threshold = best
        log(f"DoG picker tuned on {len(files)} training tomograms: polarity {self.polarity:+g}, "
            f"threshold {self.threshold:.4g}, training F1 {f1:.3f}")

    def pick(self, files, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        for mrc, _ in files:
            io.write_coords(out_dir / f"{mrc.stem}.csv",
                            self.as_coords(self.candidates(mrc), self.threshold))
        return out_dir


def pooled_f1(pairs, tolerances):
    """Class-agnostic F1 over several tomograms, from the core's evaluation."""
    return metrics.evaluate_many(pairs, tolerances)[metrics.ALL]["f1"]


MEMBRANE_REACH = 3.0  # voxels from a vesicle's mid-membrane radius that count as on it


def sits_on(xyz, objects):
    """Per point, the kind of object it lies on: within a protein's or gold bead's radius
    or on a vesicle's membrane, the closest relative to that reach; "nothing" otherwise."""
    kinds, centres, radii = objects
    if len(centres) == 0:
        return np.full(len(xyz), "nothing")
    distance = np.linalg.norm(np.asarray(xyz)[:, None, :] - centres[None], axis=2)
    vesicle = kinds == "vesicle"
    reach = np.where(vesicle, np.abs(distance - radii) / MEMBRANE_REACH, distance / radii)
    closest = reach.argmin(axis=1)
    found = reach[np.arange(len(xyz)), closest] <= 1.0
    return np.where(found, kinds[closest], "nothing")


def report_sources(pred_dir, test, classes, sizes, log):
    """Logs, per predicted class, how many picks sit on each kind of object."""
    counts = {name: Counter() for name in classes}
    for mrc, _ in test:
        objects_file = realistic.objects_path(mrc)
        if not objects_file.is_file():
            log(f"  {objects_file.name} missing: no breakdown of the picks")
            return
        picks = io.read_coords(pred_dir / f"{mrc.stem}.csv")
        objects = realistic.read_objects(objects_file)
        for name, kind in zip(picks.names, sits_on(picks.xyz, objects)):
            counts.setdefault(name, Counter())[kind] += 1
    log("  picks by what they sit on (diameter in voxels):")
    for name, found in counts.items():
        ranked = sorted(found.items(), key=lambda item: (item[0] != name, -item[1]))
        log(f"    {name} ({sum(found.values())}): " + (", ".join(
            f"{kind}{f' ({sizes[kind]:.1f})' if kind in sizes else ''} {n}" for kind, n in ranked)
            or "no picks"))


def tile_distance(xyz, shape, tile, pad):
    """Per point, its Chebyshev distance (voxels) from the centre of the tile (z, y, x voxels)
    whose kept region holds it, with the tiling that `pick` uses."""
    zyx = np.floor(np.asarray(xyz, dtype=float)[:, ::-1] + 0.5).astype(int)
    distance = np.zeros(len(zyx))
    for kept in tile_origins(shape, tile, pad):
        inside = np.all((zyx >= kept.keep_start) & (zyx < kept.keep_stop), axis=1)
        distance[inside] = np.abs(zyx[inside] - np.asarray(kept.origin) - (np.asarray(tile) - 1) / 2).max(axis=1)
    return distance


def report_tile_positions(pred_dir, test, model_dir, tolerances, log, bins=3):
    """Logs true and false picks and misses by how far from their tile's centre they lie. A
    network that learnt where targets sit in a training patch (it sees positions through
    CoordConv) picks falsely at tile centres and misses at tile edges. Picks are matched
    per class as `evaluate` matches them."""
    config = model_folder.read_config(model_dir)
    pad, smallest = config["pad"], np.inf
    found = {"tp": [], "fp": [], "fn": []}
    for mrc, csv_path in test:
        shape = io.open_tomogram(mrc).data.shape
        tile, _ = model_tiling(config, shape, pad, 4, torch.device("cpu"))
        smallest = min(smallest, min(tile))
        picks, truth = io.read_coords(pred_dir / f"{mrc.stem}.csv"), io.read_coords(csv_path)
        hit, taken = np.zeros(len(picks), bool), np.zeros(len(truth), bool)
        for name in set(truth.names) | set(picks.names):
            in_picks, in_truth = picks.names == name, truth.names == name
            hit[in_picks], taken[in_truth] = metrics.matched(picks.xyz[in_picks], truth.xyz[in_truth],
                                                             tolerances.get(name, 0.0))
        where = tile_distance(picks.xyz, shape, tile, pad)
        found["tp"].append(where[hit])
        found["fp"].append(where[~hit])
        found["fn"].append(tile_distance(truth.xyz[~taken], shape, tile, pad))
    found = {kind: np.concatenate(values) for kind, values in found.items()}
    half_width = (smallest - 2 * pad) / 2  # of the smallest kept region
    edges = np.linspace(0, half_width, bins + 1)
    edges[-1] = np.inf  # tiles at the volume's faces are shifted inwards: their kept voxels lie further out
    log(f"  picks by distance from their tile's centre (voxels; kept half-width {half_width:g}):")
    for low, high in zip(edges[:-1], edges[1:]):
        tp, fp, fn = (int(np.sum((values >= low) & (values < high))) for values in found.values())
        log(f"    {low:4.1f} to {high:4.1f}: {tp} true, {fp} false, {fn} missed; precision "
            f"{tp / max(tp + fp, 1):.2f}, recall {tp / max(tp + fn, 1):.2f}")


def annotated_subset(files, fraction, folder, seed):
    """(mrc, csv) pairs whose CSVs, written to `folder`, keep a random `fraction` of each
    tomogram's particles (at least one), as a user who annotates only some of them."""
    if fraction >= 1:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kept = []
    for mrc, csv_path in files:
        truth = io.read_coords(csv_path)
        chosen = np.sort(rng.permutation(len(truth))[:max(1, int(round(fraction * len(truth))))])
        io.write_coords(folder / csv_path.name, truth.subset(np.isin(np.arange(len(truth)), chosen)))
        kept.append((mrc, folder / csv_path.name))
    return kept


def summarise(result, classes):
    per_class = [result["classes"].get(name, {}).get("f1", 0.0) for name in classes]
    return per_class, float(np.mean(per_class)), result[metrics.ALL]["f1"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_output/accuracy"))
    parser.add_argument("--snr", type=float, nargs="+", default=(0.1, 0.05))
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxels (default: 128 256 256 at 10 Å/voxel, the same field of view at "
                             "another --voxel-size)")
    parser.add_argument("--voxel-size", type=float, default=realistic.VOXEL_SIZE,
                        help="Å per voxel of the tomograms (default %(default)g, the maps'; others are "
                             "resampled: binned or finer)")
    parser.add_argument("--val-shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="default: --shape. Validation picks choose the best epoch and each "
                             "class's score threshold; 21 particles (64 160 160) made both noisy")
    parser.add_argument("--n-train", type=int, default=3)
    parser.add_argument("--n-val", type=int, default=1)
    parser.add_argument("--n-test", type=int, default=2)
    parser.add_argument("--targets", default=",".join(realistic.DEFAULT_TARGETS))
    parser.add_argument("--max-minutes", type=float, default=15.0,
                        help="training budget per SNR (default %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-args", default="",
                        help="extra options for `train`, e.g. \"--diameter 9 --patch 64\"; train always gets "
                             "the targets' --particle-diameter and otherwise its defaults")
    parser.add_argument("--pick-args", default="", help="extra options for `pick`")
    parser.add_argument("--skip-dog", action="store_true", help="skip the DoG baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotated-fraction", type=float, default=1.0,
                        help="fraction of each training and validation tomogram's particles annotated, chosen at "
                             "random (default 1: all); test tomograms are always fully annotated")
    parser.add_argument("--annotations", nargs="+", default=["complete"],
                        type=with_setting.variant(ANNOTATION_MODES),
                        help="train --annotations mode(s), each trained and scored on the same data; "
                             "MODE+MODULE.NAME=VALUE trains one with another core choice (bench/with_setting.py), "
                             "e.g. partial+partial.RULE=self or partial+partial.IGNORE_CONFIDENCE=0.3")
    args = parser.parse_args(argv)

    log = realistic.print_line
    templates = realistic.load_templates_or_report("bench_accuracy")
    if templates is None:
        return 2
    targets = tuple(args.targets.split(","))
    classes = sorted(targets)  # the core's class order when --classes is not given
    finer = realistic.VOXEL_SIZE / args.voxel_size  # the maps' voxels per tomogram voxel, along an axis
    args.shape = tuple(args.shape or (int(round(n * finer)) for n in (128, 256, 256)))
    diameters = [finer * templates[name].diameter for name in classes]
    tolerances = metrics.tolerances(classes, diameters)
    sizes = {name: finer * template.diameter for name, template in templates.items()}
    log("targets (particle diameter, voxels): "
        + ", ".join(f"{name} {d:.1f}" for name, d in zip(classes, diameters)))

    started = time.time()
    log(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    data = realistic.generate(args.out / "data", args.n_train + args.n_test, tuple(args.shape),
                              args.snr, args.seed, targets, templates=templates, log=log,
                              voxel_size=args.voxel_size)
    val_data = realistic.generate(args.out / "data_val", args.n_val, tuple(args.val_shape or args.shape),
                                  args.snr, args.seed + 1000, targets, templates=templates,
                                  log=log, voxel_size=args.voxel_size)
    rows = []
    for snr in args.snr:
        train, test = data[snr][:args.n_train], data[snr][args.n_train:]
        val = val_data[snr]
        run_dir = args.out / f"snr{snr:g}"
        gt_dir = gt_folder(test, run_dir / "gt_test")
        log(f"\n== SNR {snr:g}: train {len(train)}, validate {len(val)}, test {len(test)} ==")

        train = annotated_subset(train, args.annotated_fraction, run_dir / "annotated", args.seed)
        val = annotated_subset(val, args.annotated_fraction, run_dir / "annotated_val", args.seed + 1)
        if args.annotated_fraction < 1:
            log(f"annotated: {sum(len(io.read_coords(c)) for _, c in train)} of the training tomograms' "
                f"particles, {sum(len(io.read_coords(c)) for _, c in val)} of validation's")
        for variant in args.annotations:
            mode, setting = with_setting.split(variant)
            name = "" if args.annotations == ["complete"] else f"_{with_setting.run_name(variant)}"
            model_dir, pred_dir = run_dir / f"model{name}", run_dir / f"pred{name}"
            shutil.rmtree(model_dir, ignore_errors=True)
            train_started, cpu_started = time.time(), os.times()
            core("train", "--tomos", *[m for m, _ in train], "--coords", *[c for _, c in train],
                 *(["--val-tomos", *[m for m, _ in val], "--val-coords", *[c for _, c in val]]
                   if val else []),
                 "--out", model_dir, "--max-minutes", args.max_minutes, "--seed", args.seed,
                 "--device", args.device, "--particle-diameter", ",".join(f"{d:.2f}" for d in diameters),
                 "--annotations", mode, *shlex.split(args.train_args), log=log,
                 setting=setting)
            train_minutes = (time.time() - train_started) / 60
            cpu = os.times()
            train_cpu = (cpu.children_user - cpu_started.children_user + cpu.children_system
                         - cpu_started.children_system) / 60
            pick_started = time.time()
            core("pick", "--model", model_dir, "--tomos", *[m for m, _ in test],
                 "--out", pred_dir, "--device", args.device, *shlex.split(args.pick_args),
                 log=log)
            pick_seconds = time.time() - pick_started
            result = evaluate(pred_dir, gt_dir, diameters, run_dir / f"etpicker{name}.json", log)
            report_sources(pred_dir, test, classes, sizes, log)
            report_tile_positions(pred_dir, test, model_dir, tolerances, log)
            overall = result[metrics.ALL]
            label = f" --annotations {mode}" + (f" ({setting})" if setting else "") if name else ""
            rows.append((snr, f"etpicker{label} ({train_minutes:.1f} min, {train_cpu:.1f} CPU min train, "
                              f"{pick_seconds:.0f} s pick; P {overall['precision']:.2f} R {overall['recall']:.2f})",
                         *summarise(result, classes)))

        if not args.skip_dog:
            dog = DogPicker(classes, diameters)
            dog.fit(train, tolerances, log)
            dog_dir = dog.pick(test, run_dir / "dog")
            result = evaluate(dog_dir, gt_dir, diameters, run_dir / "dog.json", log)
            report_sources(dog_dir, test, classes, sizes, log)
            rows.append((snr, "DoG baseline", *summarise(result, classes)))

    log(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    log(f"Accuracy on held-out realistic tomograms ({args.n_test} per SNR, "
        f"shape {tuple(args.shape)} at {args.voxel_size:g} Å/voxel, tolerance = particle radius / 2), "
        f"{(time.time() - started) / 60:.1f} min in all")
    if args.annotated_fraction < 1:
        log(f"{args.annotated_fraction:g} of each training and validation tomogram's particles annotated "
            f"(seed {args.seed}); test tomograms fully annotated")
    width = max([42] + [len(row[1]) + 1 for row in rows])
    header = f"{'SNR':>5}  {'method':<{width}}" + "".join(f"{name:>8}" for name in classes) \
        + f"{'class-aware':>13}{'agnostic':>10}"
    log(header)
    for snr, method, per_class, mean_f1, agnostic_f1 in rows:
        log(f"{snr:>5g}  {method:<{width}}" + "".join(f"{f:>8.3f}" for f in per_class)
            + f"{mean_f1:>13.3f}{agnostic_f1:>10.3f}")
    log("targets: class-agnostic F1 >= 0.9, class-aware (mean per-class) F1 >= 0.85")
    return 0


if __name__ == "__main__":
    sys.exit(main())
