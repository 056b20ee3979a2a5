"""Synthetic cryo-ET tomograms with ground truth, for tests and the demo.

Three target classes of different sizes and shapes in random 3D orientations, distractors
that are not in the ground truth (vesicle membranes, dense gold beads, tiny blobs), a CTF
band-pass, a missing wedge of +-60 degrees about the y axis and Gaussian noise at a chosen
signal-to-noise ratio (signal variance / noise variance). Everything is generated here; no
files outside the project are used.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from scipy.spatial.transform import Rotation
from scipy.special import expit

from . import io

DEFAULT_SHAPE = (96, 192, 192)
DEFAULT_SNR = 0.5
DEFAULT_VOXEL_SIZE = 10.0
VOXELS_PER_PARTICLE_OF_A_CLASS = 30_000
EDGE_SOFTNESS = 0.4  # voxels: keeps rendered edges smooth, as real densities are


def _ellipsoid(u):
    semi_axes = np.array([4.0, 3.2, 2.6])
    return (np.linalg.norm(u / semi_axes, axis=-1) - 1.0) * semi_axes.min()


def _two_lobes(u):
    big = np.linalg.norm(u - [2.6, 0.0, 0.0], axis=-1) - 3.4
    small = np.linalg.norm(u - [-3.2, 0.0, 0.0], axis=-1) - 2.8
    return np.minimum(big, small)


def _wheel(u):
    """A ring with a central hub, like a barrel-shaped complex seen along its axis."""
    in_plane = np.linalg.norm(u[..., :2], axis=-1)
    ring = np.hypot(in_plane - 5.5, u[..., 2]) - 2.3
    return np.minimum(ring, np.linalg.norm(u, axis=-1) - 2.6)


def _sphere(radius):
    return lambda u: np.linalg.norm(u, axis=-1) - radius


def _shell(radius, thickness=2.0):
    return lambda u: np.abs(np.linalg.norm(u, axis=-1) - radius) - thickness / 2


@dataclass(frozen=True)
class Shape:
    """A density given by a signed distance function (negative inside) of body coordinates."""
    signed_distance: object
    radius: float  # bounding radius, voxels
    amplitude: float


# Target classes: compact blob (~8 voxels), elongated two-lobed (~12), wheel (~16).
PARTICLE_CLASSES = {
    "small": Shape(_ellipsoid, 4.0, 1.0),
    "medium": Shape(_two_lobes, 6.0, 1.0),
    "large": Shape(_wheel, 7.8, 1.0),
}


@dataclass
class SyntheticTomogram:
    volume: np.ndarray  # float32 [z, y, x]
    names: np.ndarray  # class name per particle
    xyz: np.ndarray  # float64 n x 3, 0-based voxels, x first


def _place(occupied, radius, shape, rng, margin, tries=200):
    """A random centre (z, y, x) whose bounding sphere overlaps no occupied one, or None."""
    low = np.full(3, margin)
    high = np.array(shape) - 1 - margin
    if np.any(high < low):
        return None
    for _ in range(tries):
        centre = rng.integers(low, high + 1)
        if not occupied:
            return centre
        centres = np.array([c for c, _ in occupied])
        radii = np.array([r for _, r in occupied])
        if np.all(np.linalg.norm(centres - centre, axis=1) >= radii + radius + 1.0):
            return centre
    return None


def _render(volume, centre_zyx, shape: Shape, rotation: Rotation):
    half = int(np.ceil(shape.radius)) + 2
    lo = np.maximum(centre_zyx - half, 0)
    hi = np.minimum(centre_zyx + half + 1, volume.shape)
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    offsets_xyz = np.stack([g - c for g, c in zip(grids[::-1], centre_zyx[::-1])], axis=-1)
    body = rotation.inv().apply(offsets_xyz.reshape(-1, 3)).reshape(offsets_xyz.shape)
    density = expit(-shape.signed_distance(body) / EDGE_SOFTNESS)
    volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += shape.amplitude * density


def fourier_frequencies(shape):
    """kz, ky, kx grids (cycles/voxel) broadcasting to the rfft layout of `shape`."""
    kz = scipy.fft.fftfreq(shape[0])[:, None, None]
    ky = scipy.fft.fftfreq(shape[1])[None, :, None]
    kx = scipy.fft.rfftfreq(shape[2])[None, None, :]
    return kz, ky, kx


def missing_wedge_mask(shape, max_tilt_degrees=60.0):
    """rfft-layout mask of the Fourier components a tilt series about y measures.

    A tilt by theta about y measures the central plane normal to the tilted beam, so a
    component (kx, ky, kz) is measured when |kz| <= tan(max tilt) * |kx|.
    """
    kz, _, kx = fourier_frequencies(shape)
    mask = np.abs(kz) <= np.tan(np.radians(max_tilt_degrees)) * np.abs(kx) + 1e-9
    return np.broadcast_to(mask, (shape[0], shape[1], shape[2] // 2 + 1))


def ctf(shape, voxel_size, defocus_um=4.0, amplitude_contrast=0.07, b_factor=1600.0):
    """A 300 kV phase-contrast transfer function with a B-factor envelope (rfft layout)."""
    kz, ky, kx = fourier_frequencies(shape)
    f2 = (kz ** 2 + ky ** 2 + kx ** 2) / voxel_size ** 2  # 1/Å^2
    wavelength = 0.0197  # Å at 300 kV
    chi = np.pi * wavelength * defocus_um * 1e4 * f2
    phase = np.sqrt(1 - amplitude_contrast ** 2) * np.sin(chi) + amplitude_contrast * np.cos(chi)
    return -phase * np.exp(-b_factor * f2 / 4)


def simulate_tomogram(shape=DEFAULT_SHAPE, rng=None, snr=DEFAULT_SNR, n_per_class=None,
                      voxel_size=DEFAULT_VOXEL_SIZE, max_tilt_degrees=60.0):
    """One synthetic tomogram and its ground truth; snr=None leaves the noise out.

    The noise is drawn last from `rng`, so the same seed with and without noise gives the
    same signal.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise io.InputError(f"simulated tomogram shape must be 3 sizes of at least 16 voxels, got {shape}")
    if snr is not None and not snr > 0:
        raise io.InputError(f"SNR must be positive, got {snr}")
    rng = np.random.default_rng(rng)
    n_voxels = int(np.prod(shape))
    if n_per_class is None:
        n_per_class = max(2, round(n_voxels / VOXELS_PER_PARTICLE_OF_A_CLASS))
    vesicles = [Shape(_shell(rng.uniform(10, 18)), 19.0, 0.8) for _ in range(n_voxels // 1_500_000 + 1)]
    gold_beads = [Shape(_sphere(3.0), 3.0, 5.0) for _ in range(n_voxels // 1_000_000 + 1)]
    tiny_blobs = [Shape(_sphere(1.6), 1.6, 1.0) for _ in range(n_voxels // 100_000 + 1)]
    signal = np.zeros(shape, np.float32)
    occupied, names, centres = [], [], []

    def add(shape_, margin):
        centre = _place(occupied, shape_.radius, shape, rng, margin)
        if centre is not None:
            occupied.append((centre, shape_.radius))
            _render(signal, centre, shape_, Rotation.random(random_state=rng))
        return centre

    # Large objects first, classes interleaved, so crowding does not starve one class.
    for vesicle in vesicles:
        add(vesicle, margin=0)
    for _ in range(n_per_class):
        for name in ("large", "medium", "small"):
            particle = PARTICLE_CLASSES[name]
            centre = add(particle, margin=int(np.ceil(particle.radius)))
            if centre is not None:
                names.append(name)
                centres.append(centre)
    for distractor in gold_beads + tiny_blobs:
        add(distractor, margin=0)

    wedge = missing_wedge_mask(shape, max_tilt_degrees)
    spectrum = scipy.fft.rfftn(signal) * (ctf(shape, voxel_size) * wedge)
    volume = scipy.fft.irfftn(spectrum, s=shape)
    if snr is not None:
        noise = scipy.fft.irfftn(scipy.fft.rfftn(rng.standard_normal(shape)) * wedge, s=shape)
        volume += noise * np.sqrt(volume.var() / snr / noise.var())
    xyz = np.array(centres, np.float64).reshape(-1, 3)[:, ::-1].copy()
    return SyntheticTomogram(volume.astype(np.float32), np.array(names, dtype=str), xyz)


def write_dataset(out_dir, n_tomos=2, shape=DEFAULT_SHAPE, snr=DEFAULT_SNR, seed=0,
                  voxel_size=DEFAULT_VOXEL_SIZE, log=print):
    """Write `tomo_NNN.mrc` and its ground truth `tomo_NNN.csv` into out_dir; return the stems."""
    if n_tomos < 1:
        raise io.InputError(f"the number of tomograms must be at least 1, got {n_tomos}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = []
    for index in range(n_tomos):
        stem = f"tomo_{index:03d}"
        tomo = simulate_tomogram(shape, np.random.default_rng([seed, index]), snr, voxel_size=voxel_size)
        io.write_volume(out_dir / f"{stem}.mrc", tomo.volume, voxel_size)
        io.write_coords(out_dir / f"{stem}.csv", io.Coords(tomo.names, tomo.xyz, None))
        log(f"simulated {stem}: shape {shape}, {len(tomo.names)} particles, SNR {snr}")
        stems.append(stem)
    return stems
