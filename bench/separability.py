"""How well the realistic tomograms' targets can be told from look-alike proteins at all.

An upper reference for the accuracy benchmark, not a picker: it knows every object's
centre (from the `_objects.csv` files of `realistic.py`) and the exact map each target was
made from. Each target map is rotated to `--rotations` random orientations and imaged as
the tomograms are (CTF and missing wedge, no noise); every target and every look-alike (a
non-target protein whose equivalent diameter is within `--size-margin` of the target's) is
scored by its best normalised cross-correlation with that bank, within one voxel of its
centre. The printed AUC is the chance that a target outscores a look-alike; the F1 is the
best a single threshold on that score gives among those objects.

A picker trained from clicked centres has neither the map nor the centres, so it cannot be
expected to reach these figures; a large gap says the network has not learnt what the data
hold (issue 2's notes: on these tomograms the network's false picks sit on look-alikes).

Usage:
    python bench/separability.py bench_output/stop5/data/snr0.1 [--tomos tomo_03 tomo_04]
"""

import argparse
import sys
from pathlib import Path

import mrcfile
import numpy as np
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project: realistic imports etpicker.core
import realistic  # noqa: E402  (same folder)

SHIFTS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)


def template_bank(template, n_rotations, seed):
    """(box size, spherical mask, bank n_rotations x mask voxels): the map in random
    orientations, imaged without noise, standardised inside the mask."""
    half = int(np.ceil(template.radius))
    box = 2 * half + 9  # room for the CTF's ringing around the particle
    mask = np.sum((np.indices((box,) * 3) - box // 2) ** 2, axis=0) <= (half + 1) ** 2
    rotations = Rotation.random(n_rotations, random_state=np.random.default_rng(seed))
    bank = np.empty((n_rotations, int(mask.sum())), np.float32)
    for k in range(n_rotations):
        volume = np.zeros((box,) * 3, np.float32)
        block = realistic.rotated(template, rotations[k])
        start = (box - len(block)) // 2
        volume[start:start + len(block), start:start + len(block), start:start + len(block)] = block
        values = realistic.imaged_signal(volume)[mask]
        bank[k] = (values - values.mean()) / values.std()
    return box, mask, bank


def best_correlation(volume, centre_zyx, box, mask, bank):
    """Highest normalised cross-correlation of the bank with the volume within one voxel of
    the centre, or None when the box leaves the volume."""
    crops = []
    for shift in SHIFTS:
        start = np.round(centre_zyx).astype(int) + shift - box // 2
        if np.any(start < 0) or np.any(start + box > volume.shape):
            return None
        values = np.asarray(volume[tuple(slice(s, s + box) for s in start)], np.float32)[mask]
        crops.append((values - values.mean()) / values.std())
    return float((np.stack(crops) @ bank.T).max() / mask.sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a realistic.py SNR folder (tomo_NN.mrc, _objects.csv)")
    parser.add_argument("--tomos", nargs="+", help="stems to score (default: all in the folder)")
    parser.add_argument("--targets", default=",".join(realistic.DEFAULT_TARGETS))
    parser.add_argument("--rotations", type=int, default=1000)
    parser.add_argument("--size-margin", type=float, default=0.25,
                        help="look-alikes: equivalent diameter within this fraction of the target's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        templates = realistic.load_templates()
    except realistic.TemplatesMissing as error:
        print(f"separability: {error}", file=sys.stderr)
        return 2
    stems = args.tomos or sorted(path.stem for path in args.folder.glob("tomo_*.mrc"))
    tomograms = []
    for stem in stems:
        objects = realistic.objects_path(args.folder / f"{stem}.mrc")
        if not objects.is_file():
            print(f"separability: {objects} missing (made by realistic.py)", file=sys.stderr)
            return 2
        kinds, xyz, _ = realistic.read_objects(objects)
        tomograms.append((mrcfile.mmap(args.folder / f"{stem}.mrc", mode="r", permissive=True).data, kinds, xyz))
    targets = args.targets.split(",")
    print(f"{args.folder}, {', '.join(stems)}: exact-map matching at known centres, {args.rotations} rotations")
    for target in targets:
        size = templates[target].diameter
        look_alikes = sorted(name for name, t in templates.items() if name not in targets
                             and abs(t.diameter - size) <= args.size_margin * size)
        box, mask, bank = template_bank(templates[target], args.rotations, args.seed)
        scores = {name: [] for name in [target] + look_alikes}
        for volume, kinds, xyz in tomograms:
            for kind, centre in zip(kinds, xyz):
                if kind in scores:
                    score = best_correlation(volume, centre[::-1], box, mask, bank)
                    if score is not None:
                        scores[kind].append(score)
        positive = np.array(scores[target])
        negative = np.array([s for name in look_alikes for s in scores[name]])
        if not len(positive) or not len(negative):
            print(f"  {target}: too few objects away from the faces to score")
            continue
        auc = float(np.mean(positive[:, None] > negative[None, :]))
        f1 = max(2 * np.sum(positive >= t) / (len(positive) + np.sum(positive >= t) + np.sum(negative >= t))
                 for t in np.concatenate([positive, negative]))
        print(f"  {target} (diameter {size:.1f} voxels): {len(positive)} targets, {len(negative)} look-alikes, "
              f"AUC {auc:.3f}, best F1 {f1:.3f}")
        print("    mean correlation: " + ", ".join(f"{name} {np.mean(values):.2f} ({len(values)})"
                                                for name, values in scores.items() if values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
