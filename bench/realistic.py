"""Realistic simulated cryo-ET tomograms built from real density maps at 10 Å/voxel, imaged
at 10 Å/voxel or resampled to another voxel size (--voxel-size: binned or finer).

Target proteins (the classes to pick) are placed among many non-target proteins,
membrane vesicles and gold beads, crowded but not overlapping, in random orientations.
The volume then goes through a ±60° missing wedge (tilt axis y, beam along z), a
phase-contrast CTF (300 kV, 10 Å voxels) and wedge-limited Gaussian noise at a chosen SNR:
the variance of the imaged proteins (targets and others, not vesicles or gold) over that of
the noise.

Usage:
    python bench/realistic.py --out DIR [--n-tomos 4] [--shape 128 256 256] [--snr 0.1 ...]

writes DIR/snr<S>/<stem>.mrc with the targets' ground truth DIR/snr<S>/<stem>.csv
(`class,x,y,z`, 0-based voxels) and every placed object in DIR/snr<S>/<stem>_objects.csv
(`kind,x,y,z,radius`: map names, "vesicle" or "gold"; radius in voxels), which the accuracy
benchmark uses to say what the false picks sit on. The maps come from /work/shared/data/templates_10A
(see its NOTICE.md); without that folder the script stops with a clear message.
"""

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from scipy import ndimage, signal
from scipy.spatial.transform import Rotation

from etpicker.core.io import Coords, read_coords, write_coords
from etpicker.core.simulate import fourier_frequencies, missing_wedge_mask

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "templates_10A"
VOXEL_SIZE = 10.0  # Å; the maps' sampling
DEFAULT_TARGETS = ("4v4r", "3j9i", "1bxn")
# Subunits of a target would be ambiguous distractors, so they are left out.
EXCLUDED_MAPS = ("4v4r_30S", "4v4r_50S")
SERIES_RECORD = "series.json"  # the parameters a folder of tomograms was made with
OBJECTS_SUFFIX = "_objects.csv"  # every placed object of a tomogram, targets or not
SERIES_VERSION = 2  # raise when the simulation changes, so that old series are remade
MAP_FLOOR = 0.05  # fraction of a map's maximum below which it counts as solvent

VESICLE_AMPLITUDE = 0.8  # lipid head groups, relative to a protein's peak density
GOLD_AMPLITUDE = 6.0  # gold scatters far more strongly than protein


class TemplatesMissing(RuntimeError):
    """The folder of real maps is absent: the realistic benchmark cannot run."""


@dataclass
class Template:
    """A normalised map (peak 1), its centre of mass and the radius enclosing its density."""

    name: str
    density: np.ndarray
    centre: np.ndarray
    radius: float
    diameter: float  # equivalent-sphere diameter from the radius of gyration, voxels


def load_templates(folder=TEMPLATES_DIR):
    folder = Path(folder)
    if not folder.is_dir():
        raise TemplatesMissing(
            f"realistic benchmark needs the real maps in {folder}, which does not exist")
    templates = {}
    for path in sorted(folder.glob("*.mrc")):
        if path.stem in EXCLUDED_MAPS:
            continue
        with mrcfile.open(path, permissive=True) as mrc:
            density = np.clip(mrc.data.astype(np.float32), 0, None)
        density /= density.max()
        centre = np.array(ndimage.center_of_mass(density))
        solid = np.argwhere(density > MAP_FLOOR)
        distances = np.linalg.norm(solid - centre, axis=1)
        radius = float(distances.max()) + 1.0
        weights = density[density > MAP_FLOOR]
        gyration = np.sqrt(np.average(distances ** 2, weights=weights))
        diameter = 2.0 * np.sqrt(5.0 / 3.0) * gyration  # a uniform ball has Rg² = 3R²/5
        templates[path.stem] = Template(path.stem, density, centre, radius, float(diameter))
    return templates



def load_templates_or_report(program):
    """The templates for a benchmark's main(), or None after saying on stderr why they are
    missing (the benchmark then exits with 2)."""
    try:
        return load_templates()
    except TemplatesMissing as error:
        print(f"{program}: {error}", file=sys.stderr)
        return None


def print_line(message, **_):
    """A benchmark's log: one line, flushed at once (runs are followed through tee and locks)."""
    print(message, flush=True)


def rotated(template, rotation):
    """The template rotated about its centre of mass, in an odd cube centred on it."""
    half = int(np.ceil(template.radius))
    matrix = rotation.as_matrix()
    offset = template.centre - matrix @ np.full(3, half)
    return ndimage.affine_transform(template.density, matrix, offset=offset,
                                    output_shape=(2 * half + 1,) * 3, order=1)


def vesicle_shell(radius):
    """A lipid bilayer: two Gaussian leaflets 4 nm apart on a sphere of the given radius."""
    half = int(np.ceil(radius + 4))
    grid = np.mgrid[-half:half + 1, -half:half + 1, -half:half + 1]
    distance = np.sqrt((grid ** 2).sum(axis=0))
    leaflets = sum(np.exp(-((distance - radius - s) ** 2) / (2 * 0.8 ** 2)) for s in (-2, 2))
    return (VESICLE_AMPLITUDE * leaflets).astype(np.float32)


def gold_bead(radius):
    half = int(np.ceil(radius + 2))
    grid = np.mgrid[-half:half + 1, -half:half + 1, -half:half + 1]
    distance = np.sqrt((grid ** 2).sum(axis=0))
    # A ball with a one-voxel soft edge, so that it is not a pure aliasing pattern.
    return (GOLD_AMPLITUDE / (1 + np.exp((distance - radius) / 0.5))).astype(np.float32)


class Placer:
    """Random sequential placement of solid balls and hollow shells that must not overlap."""

    def __init__(self, shape, rng):
        self.shape = np.array(shape)
        self.rng = rng
        self.centres = np.zeros((0, 3))
        self.radii = np.zeros(0)
        self.hollow = np.zeros(0, bool)  # vesicles: only their membrane is excluded

    def place(self, radius, hollow=False, attempts=50):
        """A free integer centre keeping the whole object inside the volume, or None."""
        margin = int(np.ceil(radius))
        if np.any(self.shape <= 2 * margin):
            return None
        for _ in range(attempts):
            centre = self.rng.integers(margin, self.shape - margin)
            if self._fits(centre, radius, hollow):
                self.centres = np.vstack([self.centres, centre])
                self.radii = np.append(self.radii, radius)
                self.hollow = np.append(self.hollow, hollow)
                return centre
        return None

    def _fits(self, centre, radius, hollow):
        distance = np.linalg.norm(self.centres - centre, axis=1)
        membrane = 3.0
        for d, r, h in zip(distance, self.radii, self.hollow):
            if h and not hollow:
                # A protein may sit inside or outside a vesicle, never across its membrane.
                if abs(d - r) < radius + membrane:
                    return False
            elif hollow and not h:
                if abs(d - radius) < r + membrane:
                    return False
            elif d < r + radius:
                return False
        return True


def paste(volume, block, centre):
    """Adds a cube centred on an integer voxel (the placer keeps it inside the volume)."""
    half = block.shape[0] // 2
    z, y, x = (int(c) - half for c in centre)
    n = block.shape[0]
    volume[z:z + n, y:y + n, x:x + n] += block


def place_objects(shape, templates, targets, rng, target_count, distractor_count,
                  n_vesicles, n_gold, render=True):
    """Clean densities of a crowded tomogram, (proteins, vesicles and gold), the targets'
    centres as (name, z, y, x) and every object as (kind, z, y, x, radius). With
    render=False only the layout is made (the same one: the random stream is consumed
    alike) and the densities are None."""
    context = np.zeros(shape, np.float32) if render else None
    volume = np.zeros(shape, np.float32) if render else None
    placer = Placer(shape, rng)
    objects = []
    for _ in range(n_vesicles):
        radius = rng.uniform(15, 35)
        centre = placer.place(radius + 4, hollow=True)
        if centre is not None:
            objects.append(("vesicle", *centre, radius))
            if render:
                paste(context, vesicle_shell(radius), centre)
    for _ in range(n_gold):
        radius = rng.uniform(2.5, 5)
        centre = placer.place(radius + 2)
        if centre is not None:
            objects.append(("gold", *centre, radius))
            if render:
                paste(context, gold_bead(radius), centre)

    others = [name for name in templates if name not in targets]
    # Targets first, so that their counts do not depend on luck; within each group large
    # particles go first so that crowding does not lock them out.
    queue = sorted((name for name in targets for _ in range(target_count)),
                   key=lambda name: -templates[name].radius)
    queue += sorted(rng.choice(others, size=distractor_count),
                    key=lambda name: -templates[name].radius)
    truth = []
    for name in queue:
        template = templates[name]
        centre = placer.place(template.radius)
        if centre is None:
            continue
        rotation = Rotation.random(random_state=rng)
        if render:
            paste(volume, rotated(template, rotation), centre)
        objects.append((name, *centre, template.diameter / 2))
        if name in targets:
            truth.append((name, *centre))
    return volume, context, truth, objects


def ctf(frequency, defocus_um=-3.0, kilovolts=300.0, cs_mm=2.7, amplitude_contrast=0.07):
    """Phase-contrast transfer at spatial frequencies in 1/Å (underfocus is negative)."""
    volts = kilovolts * 1e3
    wavelength = 12.2643 / np.sqrt(volts * (1 + 0.978466e-6 * volts))  # Å, relativistic
    defocus = -defocus_um * 1e4  # Å, positive for underfocus
    cs = cs_mm * 1e7
    chi = np.pi * wavelength * defocus * frequency ** 2 \
        - 0.5 * np.pi * cs * wavelength ** 3 * frequency ** 4
    # Sign chosen so that protein (positive density) appears dark, as in real tomograms.
    return -(np.sqrt(1 - amplitude_contrast ** 2) * np.sin(chi) + amplitude_contrast * np.cos(chi))


def imaged_signal(density, phase_flip=False, defocus_um=-3.0, max_tilt_degrees=60.0):
    """The clean density as the microscope and reconstruction render it (wedge + CTF)."""
    kz, ky, kx = fourier_frequencies(density.shape)
    frequency = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2) / VOXEL_SIZE
    transfer = ctf(frequency, defocus_um)
    if phase_flip:
        transfer = np.abs(transfer)
    transfer = transfer * missing_wedge_mask(density.shape, max_tilt_degrees)
    return np.fft.irfftn(np.fft.rfftn(density) * transfer, s=density.shape).astype(np.float32)


def add_noise(signal, reference_variance, snr, rng, max_tilt_degrees=60.0):
    """Noise measured through the same wedge, scaled so reference_variance/var(noise) = snr."""
    white = rng.standard_normal(signal.shape, dtype=np.float32)
    noise = np.fft.irfftn(np.fft.rfftn(white) * missing_wedge_mask(signal.shape, max_tilt_degrees), s=signal.shape)
    noise *= np.sqrt(reference_variance / snr) / noise.std()
    return (signal + noise).astype(np.float32)


def layout(templates, shape, seed, targets=DEFAULT_TARGETS, render=True):
    """place_objects with the counts of a `shape` volume: about 35 of each target and 300
    others for 128×256×256, scaled with the volume."""
    scale = float(np.prod(shape)) / (128 * 256 * 256)
    return place_objects(shape, templates, targets, np.random.default_rng(seed),
                         target_count=max(1, round(35 * scale)),
                         distractor_count=max(1, round(300 * scale)),
                         n_vesicles=max(1, round(3 * scale)), n_gold=max(1, round(8 * scale)),
                         render=render)


def native_shape(shape, voxel_size):
    """The shape at the maps' 10 Å/voxel of a volume of `shape` voxels at `voxel_size` Å."""
    return tuple(max(16, int(round(n * voxel_size / VOXEL_SIZE))) for n in shape)


def resample(volume, shape):
    """A volume Fourier-resampled to `shape`, as a reconstruction at another voxel size
    gives it (binning averages the noise away; finer voxels add no detail)."""
    for axis, size in enumerate(shape):
        if volume.shape[axis] != size:
            volume = signal.resample(volume, size, axis=axis)
    return np.asarray(volume, dtype=np.float32)


def rescaled(rows, shape, native):
    """Truth or object rows (name, z, y, x[, radius]) at 10 Å/voxel (`native` shape) moved to
    the voxels of `shape` (Fourier resampling keeps voxel 0 in place)."""
    scale = np.asarray(shape, dtype=float) / np.asarray(native, dtype=float)
    return [(row[0], *(scale * np.asarray(row[1:4], dtype=float)), *(float(scale.mean() * r) for r in row[4:]))
            for row in rows]


def simulate_series(templates, shape, snrs, seed, targets=DEFAULT_TARGETS, phase_flip=False,
                    voxel_size=VOXEL_SIZE):
    """One crowded layout imaged at each SNR: ({snr: volume}, truth rows (name, z, y, x),
    object rows (kind, z, y, x, radius)), `shape` voxels at `voxel_size` Å/voxel: simulated at
    the maps' 10 Å/voxel over the same field of view, then resampled."""
    native = native_shape(shape, voxel_size)
    volumes, truth, objects = _simulate_native(templates, native, snrs, seed, targets, phase_flip)
    if native == tuple(shape):
        return volumes, truth, objects
    return ({snr: resample(volume, shape) for snr, volume in volumes.items()}, rescaled(truth, shape, native),
            rescaled(objects, shape, native))


def _simulate_native(templates, shape, snrs, seed, targets, phase_flip):
    proteins, context, truth, objects = layout(templates, shape, seed, targets)
    protein_signal = imaged_signal(proteins, phase_flip)
    signal = protein_signal + imaged_signal(context, phase_flip)
    # The SNR is the proteins' signal over the noise: noise comes from the dose, so adding gold
    # or membranes (about half the signal variance here) must not make it louder.
    reference = protein_signal.var()
    volumes = {snr: add_noise(signal, reference, snr, np.random.default_rng([seed, int(snr * 1e6)]))
               for snr in snrs}
    return volumes, truth, objects


def write_truth(path, truth):
    """Truth rows (name, z, y, x) as the core's coordinate CSV."""
    names = [str(row[0]) for row in truth]
    write_coords(path, Coords(names, [[x, y, z] for _, z, y, x in truth]))


def same_truth(truth, csv_path):
    """Whether truth rows (name, z, y, x) are the targets written to `csv_path`."""
    written = read_coords(csv_path)
    return sorted((str(name), round(float(x), 3), round(float(y), 3), round(float(z), 3))
                  for name, z, y, x in truth) \
        == sorted(zip(written.names.tolist(), *np.round(written.xyz, 3).T.tolist()))


def write_objects(path, objects):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "x", "y", "z", "radius"])
        for kind, z, y, x, radius in objects:
            writer.writerow([kind, x, y, z, f"{radius:.2f}"])


def read_objects(path):
    """(kinds, xyz float n×3, radii) of an objects file."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kinds = np.array([row["kind"] for row in rows], dtype=str)
    xyz = np.array([[float(row[a]) for a in "xyz"] for row in rows]).reshape(-1, 3)
    return kinds, xyz, np.array([float(row["radius"]) for row in rows])


def objects_path(mrc_path):
    return Path(mrc_path).with_name(Path(mrc_path).stem + OBJECTS_SUFFIX)


def write_tomogram(path, volume, voxel_size=VOXEL_SIZE):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = voxel_size


def snr_folder(out, snr):
    return Path(out) / f"snr{snr:g}"


def generate(out, n_tomos, shape, snrs, seed, targets=DEFAULT_TARGETS, phase_flip=False,
             templates=None, log=print, voxel_size=VOXEL_SIZE):
    """Writes n_tomos tomograms per SNR, `shape` voxels at `voxel_size` Å; returns {snr:
    [(mrc path, csv path), ...]}."""
    templates = templates or load_templates()
    unknown = [name for name in targets if name not in templates]
    if unknown:
        raise ValueError(f"unknown target maps {unknown}; choose from {sorted(templates)}")
    # Benchmark variants reuse a series made with the same parameters (minutes per tomogram).
    params = {"n_tomos": n_tomos, "shape": list(shape), "seed": seed, "targets": list(targets),
              "phase_flip": phase_flip, "version": SERIES_VERSION}
    if voxel_size != VOXEL_SIZE:  # series at the maps' voxel size keep their old record
        params["voxel_size"] = voxel_size
    written = {snr: [(snr_folder(out, snr) / f"tomo_{i:02d}.mrc", snr_folder(out, snr) / f"tomo_{i:02d}.csv")
                     for i in range(n_tomos)] for snr in snrs}
    if all(_series_matches(snr_folder(out, snr), params) for snr in snrs):
        log(f"reusing the tomograms in {out}")
        for index in range(n_tomos):
            paths = [objects_path(written[snr][index][0]) for snr in snrs]
            if not all(path.is_file() for path in paths):  # a series made before objects were kept
                native = native_shape(shape, voxel_size)
                _, _, truth, objects = layout(templates, native, seed + index, targets, render=False)
                if native != tuple(shape):
                    truth, objects = (rescaled(rows, shape, native) for rows in (truth, objects))
                if not same_truth(truth, written[snrs[0]][index][1]):
                    log(f"{paths[0].name}: the replayed layout differs from the tomogram's (maps "
                        f"changed?); not written")
                    continue
                for path in paths:
                    write_objects(path, objects)
        return written
    for snr in snrs:
        snr_folder(out, snr).mkdir(parents=True, exist_ok=True)
        (snr_folder(out, snr) / SERIES_RECORD).unlink(missing_ok=True)
    for index in range(n_tomos):
        volumes, truth, objects = simulate_series(templates, shape, snrs, seed + index, targets,
                                                  phase_flip=phase_flip, voxel_size=voxel_size)
        stem = f"tomo_{index:02d}"
        for snr, volume in volumes.items():
            mrc_path, csv_path = written[snr][index]
            write_tomogram(mrc_path, volume, voxel_size)
            write_truth(csv_path, truth)
            write_objects(objects_path(mrc_path), objects)
        counts = {name: sum(row[0] == name for row in truth) for name in targets}
        log(f"{stem}: {counts}", flush=True)
    for snr in snrs:
        (snr_folder(out, snr) / SERIES_RECORD).write_text(json.dumps(params))
    return written


def _series_matches(folder, params):
    record = folder / SERIES_RECORD
    return record.is_file() and json.loads(record.read_text()) == params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-tomos", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256),
                        metavar=("Z", "Y", "X"), help="voxels at --voxel-size")
    parser.add_argument("--voxel-size", type=float, default=VOXEL_SIZE,
                        help="Å per voxel of the tomograms written (default: the maps' %(default)g)")
    parser.add_argument("--snr", type=float, nargs="+", default=(0.1, 0.05))
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated map names to pick (default %(default)s)")
    parser.add_argument("--phase-flip", action="store_true", help="apply |CTF| instead of CTF")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        templates = load_templates()
        generate(args.out, args.n_tomos, tuple(args.shape), args.snr, args.seed,
                 tuple(args.targets.split(",")), args.phase_flip, templates, voxel_size=args.voxel_size)
    except (TemplatesMissing, ValueError) as error:
        print(f"realistic: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
