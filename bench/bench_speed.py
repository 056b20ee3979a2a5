"""Speed and memory benchmark of the etpicker core (a benchmark, not a test).

Prints, as absolute numbers and as ratios against naive alternatives:
  inference  segment() throughput (voxels/s) on a 200×512×512 volume (patch 72, pad 12), and its
             time's shares: waiting for tiles to be read, the network, assembling the class map;
             patch-sized tiles against the automatic larger ones (tiling.choose_tile)
  nms        MP-NMS time and peak memory on a 200×512×512 class map, slab-wise (ours)
             against whole-volume pooling (naive)
  train      one training step (batch 8, patch 72, forward + backward + AdamW)
  memory     peak resident memory of `python -m etpicker.core pick` on a 300×1024×1024
             MRC file on disk (limit: 3 GB on CPU), against keeping all tiles in RAM, and
             where that pick's time went (`pick --profile`)
  pick       the whole `pick` command with a trained model on given tomograms: patch-sized
             tiles against the automatic ones, seconds per tomogram, F1 and their ratio

Usage:
    python bench/bench_speed.py [--quick] [--device auto|cpu|cuda:N] [--only SECTION ...]
        [--pick-model MODEL_DIR --pick-tomos A.mrc ... --pick-gt GT_DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch
import torch.nn.functional as F

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from etpicker.core import __version__, metrics, model_folder  # noqa: E402
from etpicker.core.io import open_tomogram, read_coords  # noqa: E402
from etpicker.core.validation import MIN_SCORE_CHOICES, CandidatePicker  # noqa: E402
from etpicker.core.labels import paint_labels  # noqa: E402
from etpicker.core.losses import soft_dice_loss, soft_target  # noqa: E402
from etpicker.core.model import ResUNet3D, build_model  # noqa: E402
from etpicker.core.device import AMP_MODES, autocast, autocast_dtype, dtype_name, resolve_device  # noqa: E402
from etpicker.core.model_store import load_model, save_weights  # noqa: E402
from etpicker.core.postprocess import mp_nms  # noqa: E402
from etpicker.core.profile import Profile  # noqa: E402
from etpicker.core.sampling import PatchSampler, PatchSource  # noqa: E402
from etpicker.core.tiling import (batch_for, choose_tile, max_tile_voxels, segment, tile_batches,  # noqa: E402
                                  tile_origins)
from etpicker.core.settings import DEFAULT_WIDTHS, TrainSettings, default_pad  # noqa: E402

SECTIONS = ("inference", "nms", "train", "memory", "pick")
REFERENCE_PICK_PAD = 18  # the reference's picking margin for a 72-voxel patch
N_CLASSES = 3
LABEL_DIAMETERS = (9, 13, 17)  # weak-label diameters of the three benchmark classes
MEMORY_LIMIT = 3 * 1024 ** 3
NARROW_WIDTHS = (4, 8, 8, 8)
GB = 1024 ** 3
COORDCONV = TrainSettings.defaults()["coordconv"]  # train's default network


def log(message=""):
    print(message, flush=True)


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# A fresh, small process starts each measured command: a child forked straight from this
# (large) benchmark process would report this process's high-water mark as its own.
LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(f"PEAK_RSS_KB={usage.ru_maxrss}", flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(command):
    """Runs a command in a child process; returns (seconds, peak resident bytes, output)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *map(str, command)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed "
                           f"(exit {done.returncode}):\n{done.stdout[-3000:]}")
    lines = done.stdout.strip().splitlines()
    peak = int(lines[-1].removeprefix("PEAK_RSS_KB=")) * 1024
    return seconds, peak, "\n".join(lines[:-1])


def random_class_map(shape, rng, spacing=24):
    """Balls of the three label diameters on a jittered grid: crowded, not touching."""
    class_map = np.zeros(shape, np.uint8)
    axes = [np.arange(spacing // 2, n - spacing // 2, spacing) for n in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    centres = grid + rng.integers(-3, 4, size=grid.shape)
    classes = rng.integers(1, N_CLASSES + 1, size=len(centres))
    for centre, class_id in zip(centres, classes):
        radius = LABEL_DIAMETERS[class_id - 1] // 2
        lo = centre - radius
        box = tuple(slice(a, a + 2 * radius + 1) for a in lo)
        offsets = np.ogrid[tuple(slice(-radius, radius + 1) for _ in range(3))]
        ball = sum(o ** 2 for o in offsets) <= radius ** 2
        class_map[box][ball] = class_id
    return class_map, len(centres)


def naive_mp_nms(class_map, diameters, device, k=5, floor=0.1):
    """MP-NMS on the whole volume at once: the memory-hungry way that slabs avoid."""
    found = 0
    for class_id, diameter in enumerate(diameters, start=1):
        soft = torch.from_numpy(class_map == class_id).to(device).float()[None, None]
        for _ in range(int(round(diameter / (k - 1) + 1))):
            soft = F.avg_pool3d(soft, k, stride=1, padding=k // 2)
        window = 2 * (int(diameter) // 4) + 1  # the same neighbourhood as ours
        peaks = (soft == F.max_pool3d(soft, window, stride=1, padding=window // 2)) \
            & (soft > floor)
        found += int(peaks.sum())
    return found


def child_nms(args):
    """In a child process: MP-NMS (ours or naive) on the first z-slices of a saved class map."""
    device = resolve_device(args.device)
    class_map = np.asarray(np.load(args.child_input, mmap_mode="r")[:args.child_slices])
    started = time.perf_counter()
    if args.child == "nms-ours":
        class_ids, _, _ = mp_nms(class_map, LABEL_DIAMETERS, device=device)
        found = len(class_ids)
    else:
        found = naive_mp_nms(class_map, LABEL_DIAMETERS, device)
    synchronise(device)
    print(json.dumps({"seconds": time.perf_counter() - started, "found": found}))


def bench_inference(args, device, out):
    shape = (40, 72, 72) if args.quick else (200, 512, 512)
    patch, batch = 72, args.batch
    pad = default_pad(patch)  # what a model trained with this patch picks with
    model = ResUNet3D(N_CLASSES, coordconv=COORDCONV).to(device)
    total_tiles = len(tile_origins(shape, patch, pad))
    amp_dtype = autocast_dtype(device, args.amp)
    log(f"\n[inference] segment(), default widths, patch {patch}, pad {pad}, batch {batch}, "
        f"{device}, {dtype_name(amp_dtype)}")

    # A first timed batch tells whether the whole volume fits the time budget; if not,
    # the throughput is measured on a sub-volume of whole strides and extrapolated.
    probe = torch.randn(batch, 1, patch, patch, patch, device=device)
    with torch.no_grad(), autocast(device, amp_dtype):
        model.eval()(probe[:1])  # warm-up
        synchronise(device)
        started = time.perf_counter()
        model(probe)
        synchronise(device)
    per_tile = (time.perf_counter() - started) / batch
    measured_shape = shape
    if per_tile * total_tiles > args.max_seconds:
        stride = patch - 2 * pad
        tiles_allowed = max(1, int(args.max_seconds / per_tile))
        side = max(1, int(np.sqrt(tiles_allowed / min(-(-shape[0] // stride), 2))))
        measured_shape = (min(shape[0], 2 * stride), min(shape[1], side * stride),
                          min(shape[2], side * stride))
    volume_path = out / "inference_volume.npy"
    np.save(volume_path, np.random.default_rng(1).standard_normal(measured_shape,
                                                                   dtype=np.float32))
    volume = np.load(volume_path, mmap_mode="r")
    profile = Profile()
    started = time.perf_counter()
    segment(model, volume, 0.0, 1.0, patch, pad, batch=batch, device=device, amp_dtype=amp_dtype, profile=profile)
    synchronise(device)
    seconds = time.perf_counter() - started
    measured_tiles = len(tile_origins(measured_shape, patch, pad))
    log(f"  measured on {measured_shape}: {seconds:.1f} s, "
        f"{np.prod(measured_shape) / seconds:,.0f} voxels/s ({measured_tiles} tiles, "
        f"{seconds / measured_tiles:.3f} s per tile)")
    if measured_shape != shape:
        # Cost goes with the number of tiles, which a small sub-volume under-represents.
        full_seconds = seconds / measured_tiles * total_tiles
        log(f"  {shape} ({total_tiles} tiles): ~{full_seconds / 60:.1f} min, "
            f"{np.prod(shape) / full_seconds:,.0f} voxels/s (extrapolated per tile: over the "
            f"{args.max_seconds:.0f} s budget)")
    else:
        log(f"  {shape}: {seconds:.1f} s for {total_tiles} tiles")
    log(f"  where segment()'s time went: {profile.report()} (reading: waiting for tiles the background "
        f"thread had not read yet)")
    tiles = tile_origins(measured_shape, patch, pad)
    started = time.perf_counter()
    for _ in tile_batches(volume, tiles, patch, batch, 0.0, 1.0):
        pass
    reading = time.perf_counter() - started
    log(f"  reading and standardising the tiles alone: {1000 * reading / -(-len(tiles) // batch):.1f} ms per "
        f"batch, {reading / seconds:.1%} of segment()'s time; a background thread does it while "
        f"the network runs (core.prefetch), which hides up to that share")
    overlap = total_tiles * patch ** 3 / np.prod(shape)
    log(f"  tiling overhead: each voxel goes through the network {overlap:.1f}× "
        f"(pad {pad}); the reference's picking pad {REFERENCE_PICK_PAD} would need "
        f"{len(tile_origins(shape, patch, REFERENCE_PICK_PAD)) / total_tiles:.2f}× the tiles")
    max_voxels = max_tile_voxels(DEFAULT_WIDTHS[0], device)
    tile = choose_tile(measured_shape, patch, pad, max_voxels)
    profile = Profile()
    started = time.perf_counter()
    without_coordconv = ResUNet3D(N_CLASSES, coordconv=False).to(device)  # what picks with larger tiles
    segment(without_coordconv, volume, 0.0, 1.0, tile, pad, batch=batch_for(tile, batch, max_voxels), device=device,
            amp_dtype=amp_dtype, profile=profile)
    synchronise(device)
    automatic = time.perf_counter() - started
    computed = len(tile_origins(measured_shape, tile, pad)) * np.prod(tile)
    log(f"  automatic tiles {tile} (a network without CoordConv; each voxel computed "
        f"{computed / np.prod(measured_shape):.2f}×): {automatic:.1f} s on {measured_shape}, "
        f"{seconds / automatic:.2f}× faster than patch-sized tiles; {profile.report()}")
    volume_path.unlink()
    return seconds / len(tile_origins(measured_shape, patch, pad))


def bench_nms(args, device, out):
    shape = (64, 128, 128) if args.quick else (200, 512, 512)
    class_map, n_particles = random_class_map(shape, np.random.default_rng(2))
    path = out / "class_map.npy"
    np.save(path, class_map)
    log(f"\n[nms] MP-NMS on a {shape} class map with {n_particles} particles "
        f"(label diameters {LABEL_DIAMETERS}), {device}")

    def measure(kind, slices):
        _, peak, output = run_measured([sys.executable, __file__, "--child", kind,
                                        "--child-input", path, "--child-slices", slices,
                                        "--device", str(device)])
        return json.loads(output.strip().splitlines()[-1]), peak

    ours, ours_peak = measure("nms-ours", shape[0])
    log(f"  ours (slabs, separable pooling, de-duplication): {ours['seconds']:.2f} s, "
        f"{ours['found']}/{n_particles} particles, peak RSS {ours_peak / GB:.2f} GB")
    # Whole-volume 3-D pooling is slow on a CPU: compare both on the first z-slices there.
    slices = shape[0] if device.type == "cuda" else min(shape[0], args.naive_slices)
    if slices < shape[0]:
        ours, ours_peak = measure("nms-ours", slices)
        log(f"  on the first {slices} slices: ours {ours['seconds']:.2f} s, "
            f"peak RSS {ours_peak / GB:.2f} GB")
    naive, naive_peak = measure("nms-naive", slices)
    log(f"  naive (whole volume at once, 3-D pooling, no de-duplication) on {slices} slices: "
        f"{naive['seconds']:.2f} s, {naive['found']} maxima, peak RSS {naive_peak / GB:.2f} GB")
    log(f"  ratio naive/ours: time {naive['seconds'] / ours['seconds']:.2f}×, "
        f"memory {naive_peak / ours_peak:.2f}×")
    path.unlink()


def bench_train(args, device, out):
    batch, patch = (2, 32) if args.quick else (8, 72)
    model = ResUNet3D(N_CLASSES, coordconv=COORDCONV).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.standard_normal((batch, 1, patch, patch, patch),
                                                  dtype=np.float32)).to(device)
    centres = rng.uniform(0, patch, size=(batch, 6, 3))
    painted = [paint_labels((patch,) * 3, c, rng.integers(1, N_CLASSES + 1, 6), LABEL_DIAMETERS)
               for c in centres]
    ids = torch.from_numpy(np.stack([p[0] for p in painted])).to(device)
    weight = torch.from_numpy(np.stack([p[1] for p in painted])).to(device)
    target = soft_target(ids, weight, N_CLASSES + 1)
    amp_dtype = autocast_dtype(device, args.amp)

    def step():
        optimiser.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        soft_dice_loss(logits, target).backward()
        optimiser.step()

    log(f"\n[train] one step: batch {batch}, patch {patch}, default widths, forward + "
        f"backward + AdamW, {device}, {dtype_name(amp_dtype)}")
    step()  # warm-up
    synchronise(device)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        synchronise(device)
        times.append(time.perf_counter() - started)
    log(f"  {np.mean(times):.2f} s per step (mean of {args.steps}, min {min(times):.2f} s); "
        f"{batch * patch ** 3 / np.mean(times):,.0f} training voxels/s")
    reading = patch_reading_seconds(out, batch, patch, args.steps)
    log(f"  reading a batch of patches from a memory-mapped tomogram and painting their labels: "
        f"{1000 * reading:.1f} ms, {reading / np.mean(times):.1%} of a step; a background thread "
        f"does it while the step runs (core.prefetch), which hides up to that share")
    if device.type == "cuda":
        log(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / GB:.2f} GB")


def patch_reading_seconds(out, batch, patch, n_batches):
    """Seconds per batch that training's PatchSampler takes to read particle-centred
    patches from an MRC memory map (in the page cache) and paint their labels."""
    shape = (max(128, 2 * patch),) + (256,) * 2
    path = out / "train_volume.mrc"
    write_big_tomogram(path, shape, np.random.default_rng(4))
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, shape, size=(300, 3))
    classes = rng.integers(1, N_CLASSES + 1, size=len(centres))
    with mrcfile.mmap(path, mode="r") as mrc:
        source = PatchSource(mrc.data, 0.0, 1.0, centres, classes, np.ones(len(centres), bool), shape)
        sampler = PatchSampler([source], LABEL_DIAMETERS, "tball", patch)
        plan = sampler.epoch_plan(rng)[:batch * n_batches]
        started = time.perf_counter()
        count = sum(1 for _ in sampler.batches(plan, batch))
        seconds = (time.perf_counter() - started) / count
    path.unlink()
    return seconds


def write_big_tomogram(path, shape, rng):
    """A noise tomogram with bright blobs, written slab by slab (never whole in RAM)."""
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
        for z in range(0, shape[0], 16):
            slab = rng.standard_normal((min(16, shape[0] - z),) + tuple(shape[1:]),
                                       dtype=np.float32)
            slab[:, ::24, ::24] += 20.0  # sparse bright lines: something to segment
            mrc.data[z:z + len(slab)] = slab


def write_model(folder, widths, patch, pad):
    """A model folder as train writes one, with untrained weights of the given widths."""
    config = {"format": 1, "classes": [f"c{i}" for i in range(1, N_CLASSES + 1)],
              "diameters": list(LABEL_DIAMETERS), "label_type": "tball", "voxel_size": 10.0,
              "patch": patch, "pad": pad, "widths": list(widths), "coordconv": COORDCONV,
              "pyramid": True, "normalisation": "robust-standardise", "version": __version__}
    folder.mkdir(parents=True, exist_ok=True)
    model_folder.write_config(folder, config)
    save_weights(build_model(config), folder)


def bench_memory(args, device, out, seconds_per_tile):
    shape = (100, 256, 256) if args.quick else (300, 1024, 1024)
    patch, pad = 72, args.memory_pad
    n_tiles = len(tile_origins(shape, patch, pad))
    widths = None
    estimate = (seconds_per_tile or 0) * n_tiles
    if seconds_per_tile is None or estimate > args.max_memory_minutes * 60:
        widths = NARROW_WIDTHS
    log(f"\n[memory] `pick` of a {shape} float32 MRC on disk "
        f"({np.prod(shape) * 4 / GB:.2f} GB), patch {patch}, pad {pad}, {device}")
    if widths:
        reason = (f"default widths would take ~{estimate / 60:.0f} min here"
                  if seconds_per_tile else "no inference timing")
        log(f"  network widths {widths} instead of the default ({reason}); memory is "
            f"dominated by volume-sized buffers, not by the network")
    tomo_path = out / "big_tomogram.mrc"
    write_big_tomogram(tomo_path, shape, np.random.default_rng(4))
    model_dir = out / "memory_model"
    write_model(model_dir, widths or DEFAULT_WIDTHS, patch, pad)
    seconds, peak, output = run_measured(
        [sys.executable, "-m", "etpicker.core", "pick", "--model", model_dir,
         "--tomos", tomo_path, "--out", out / "memory_pred", "--pad", pad,
         "--batch", args.batch, "--device", str(device), "--profile"])
    reference_tiles = len(tile_origins(shape, patch, REFERENCE_PICK_PAD))
    tiles_in_ram = reference_tiles * patch ** 3 * 4
    verdict = "OK" if peak < MEMORY_LIMIT or device.type == "cuda" else "OVER THE LIMIT"
    log(f"  {seconds / 60:.1f} min, peak RSS {peak / GB:.2f} GB "
        f"(limit {MEMORY_LIMIT / GB:.0f} GB on CPU: {verdict})")
    for line in output.splitlines():
        if line.startswith("profile "):
            log(f"  {line} (the whole pick)")
    log(f"  naive: all {reference_tiles} tiles (pad {REFERENCE_PICK_PAD}) in RAM would hold "
        f"{tiles_in_ram / GB:.1f} GB of input alone, {tiles_in_ram / peak:.1f}× our whole peak")
    shutil.rmtree(model_dir)
    shutil.rmtree(out / "memory_pred", ignore_errors=True)
    tomo_path.unlink()


def bench_pick(args, device, out):
    """The whole `pick` command on given tomograms with a trained model: the current tiling
    (tiles of the training patch) against the automatic one, time per tomogram and F1."""
    if not (args.pick_model and args.pick_tomos):
        log("\n[pick] skipped: give --pick-model DIR and --pick-tomos A.mrc ... (and --pick-gt DIR for F1), "
            "e.g. a model that bench_accuracy.py trained and its test tomograms")
        return
    config = model_folder.read_config(args.pick_model)
    diameters = config.get("particle_diameters") or config["diameters"]
    log(f"\n[pick] `pick` of {len(args.pick_tomos)} tomogram(s) with {args.pick_model} (patch {config['patch']}, "
        f"pad {config['pad']}, widths {config['widths']}, coordconv {config.get('coordconv', True)}), {device}")
    results = {}
    for name, extra in (("patch-sized tiles", ["--tile", config["patch"]]), ("automatic tiles", [])):
        pred = out / "pick_pred" / name.split()[0]
        shutil.rmtree(pred, ignore_errors=True)
        seconds, peak, output = run_measured(
            [sys.executable, "-m", "etpicker.core", "pick", "--model", args.pick_model, "--tomos", *args.pick_tomos,
             "--out", pred, "--device", str(device), "--profile", *extra])
        f1 = None
        if args.pick_gt:
            _, _, scores = run_measured([sys.executable, "-m", "etpicker.core", "evaluate", "--pred", pred,
                                         "--gt", args.pick_gt, "--diameter", ",".join(f"{d:.2f}" for d in diameters)])
            f1 = float(scores.strip().splitlines()[-1].removeprefix("F1="))
        results[name] = seconds / len(args.pick_tomos), f1
        log(f"  {name}: {seconds / len(args.pick_tomos):.1f} s per tomogram (whole command), peak RSS "
            f"{peak / GB:.2f} GB" + (f", class-agnostic F1 {f1:.3f}" if f1 is not None else ""))
        for line in output.splitlines():
            if line.startswith("profile "):
                log(f"    {line}")
    (old_seconds, old_f1), (new_seconds, new_f1) = results.values()
    log(f"  ratio patch-sized / automatic: time {old_seconds / new_seconds:.2f}×"
        + (f", F1 {new_f1 - old_f1:+.3f}" if old_f1 is not None else ""))
    if args.pick_val_tomo and args.pick_gt:
        retuned_comparison(args, device, config)


def retuned_comparison(args, device, config):
    """The model's thresholds were tuned on picks of its own tiling: give each tiling its
    own, tuned on the validation tomogram as training does, and score the test tomograms
    with them (no shape checks, which were fitted on one tiling's picks too)."""
    model, _ = load_model(args.pick_model, device)
    picker_args = dict(model=model, config=config, pad=config["pad"], batch=4, device=device, amp="auto")
    truth_of = {path.stem: read_coords(args.pick_gt / f"{path.stem}.csv") for path in args.pick_tomos}
    validation_truth = read_coords(args.pick_val_gt)
    for name, tile in (("patch-sized tiles", config["patch"]), ("automatic tiles", None)):
        picker = CandidatePicker(**picker_args, tile=tile)
        candidates = picker(open_tomogram(args.pick_val_tomo))
        *_, thresholds = metrics.best_min_scores([(candidates, picker.relative_scores(candidates), validation_truth)],
                                                 config["classes"], picker.tolerances, MIN_SCORE_CHOICES)
        pairs = []
        for path in args.pick_tomos:
            picks = picker(open_tomogram(path))
            needed = np.array([thresholds[n] for n in picks.names])
            pairs.append((picks.subset(picker.relative_scores(picks) >= needed), truth_of[path.stem]))
        result = metrics.evaluate_many(pairs, picker.tolerances)
        log(f"  {name}, thresholds re-tuned on {args.pick_val_tomo.name} "
            f"({', '.join(f'{n} {t:g}' for n, t in thresholds.items())}), no shape checks: class-agnostic F1 "
            f"{result[metrics.ALL]['f1']:.3f}, per class "
            + ", ".join(f"{n} {r['f1']:.3f}" for n, r in result["classes"].items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a quick check")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument("--batch", type=int, default=4, help="inference tiles per batch")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--amp", choices=AMP_MODES, default="auto",
                        help="mixed precision, as the core's --amp")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="time budget of the inference measurement (default %(default)s)")
    parser.add_argument("--max-memory-minutes", type=float, default=15.0,
                        help="above this estimated pick time, the memory run uses "
                             "narrow widths (default %(default)s)")
    parser.add_argument("--naive-slices", type=int, default=40,
                        help="on a CPU, the naive MP-NMS comparison uses this many z-slices "
                             "(default %(default)s)")
    parser.add_argument("--memory-pad", type=int, default=default_pad(72),
                        help="tile margin of the memory run; 0 needs 1/3 of the tiles and "
                             "leaves the peak memory unchanged (default %(default)s)")
    parser.add_argument("--pick-model", type=Path, metavar="MODEL_DIR", help="a trained model for the pick section")
    parser.add_argument("--pick-tomos", type=Path, nargs="+", metavar="A.mrc", help="tomograms for the pick section")
    parser.add_argument("--pick-gt", type=Path, metavar="GT_DIR", help="their true coordinates, for F1")
    parser.add_argument("--pick-val-tomo", type=Path, metavar="V.mrc",
                        help="the model's validation tomogram: each tiling's thresholds are re-tuned on it")
    parser.add_argument("--pick-val-gt", type=Path, metavar="V.csv", help="its true coordinates")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench_output" / "speed")
    parser.add_argument("--child", choices=("nms-ours", "nms-naive"), help=argparse.SUPPRESS)
    parser.add_argument("--child-input", help=argparse.SUPPRESS)
    parser.add_argument("--child-slices", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_nms(args)

    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"etpicker speed benchmark on {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
           else f" ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs)")
        + (", quick sizes" if args.quick else ""))
    seconds_per_tile = None
    if "inference" in args.only:
        seconds_per_tile = bench_inference(args, device, args.out)
    if "nms" in args.only:
        bench_nms(args, device, args.out)
    if "train" in args.only:
        bench_train(args, device, args.out)
    if "memory" in args.only:
        bench_memory(args, device, args.out, seconds_per_tile)
    if "pick" in args.only:
        bench_pick(args, device, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
