"""Hard negatives: blob-like objects away from every annotated particle.

In crowded tomograms most false picks are other macromolecules the size of the targets.
Random background patches rarely centre on one; patches centred on blobs that a
difference of Gaussians finds away from the annotations show the network what is *not* a
target. Annotations are assumed complete inside the training region (the weak labels
already assume it: unannotated voxels are background).
"""
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .io import release_pages

BIN = 2  # blobs are searched on a 2x-binned copy: 8x less memory and time
SIGMA_RATIO = 1.6
SLAB_SLICES = 32  # binned z-slices read from the memory map at a time


def binned(volume, factor=BIN):
    """Mean of factor^3 blocks, read slab by slab from a (memory-mapped) volume."""
    shape = [n // factor for n in volume.shape]
    out = np.empty(shape, np.float32)
    for z0 in range(0, shape[0], SLAB_SLICES):
        z1 = min(shape[0], z0 + SLAB_SLICES)
        block = np.asarray(volume[z0 * factor:z1 * factor, :shape[1] * factor, :shape[2] * factor],
                           dtype=np.float32)
        out[z0:z1] = block.reshape(z1 - z0, factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))
        release_pages(volume)
    return out


def difference_of_gaussians(volume, diameter):
    """Band-pass response, largest (positive for bright, negative for dark objects) on
    balls of `diameter` voxels."""
    sigma = max(0.5, diameter / 2 / np.sqrt(3))  # a ball of radius R answers most at R/sqrt(3)
    return ndimage.gaussian_filter(volume, sigma) - ndimage.gaussian_filter(volume, SIGMA_RATIO * sigma)


def blob_centres(small, diameter):
    """(zyx in the binned volume's voxels, strength) of the extrema of a difference of
    Gaussians tuned to balls of `diameter` binned voxels, strongest first. Both polarities
    count: depending on the CTF and the reconstruction, protein is dark or bright."""
    response = np.abs(difference_of_gaussians(small, diameter))
    size = max(3, int(diameter / 2) | 1)
    peaks = np.argwhere((ndimage.maximum_filter(response, size=size) == response) & (response > 0))
    strength = response[tuple(peaks.T)]
    order = np.argsort(-strength, kind="stable")
    return peaks[order], strength[order]


def hard_negatives(volume, centres_zyx, diameters, limit_zyx, count):
    """Up to `count` blob centres (zyx voxels of `volume`) inside [0, limit_zyx), each farther
    than the largest diameter from every annotated centre, strongest blobs first, taken in
    turn from each class's scale."""
    if count <= 0:
        return np.zeros((0, 3))
    small = binned(volume)
    if min(small.shape) < 3:
        return np.zeros((0, 3))
    small = (small - small.mean()) / (small.std() or 1.0)
    reach = max(diameters)
    tree = cKDTree(centres_zyx) if len(centres_zyx) else None
    per_scale = []
    for diameter in sorted(set(diameters)):
        peaks, _ = blob_centres(small, diameter / BIN)
        zyx = peaks * BIN + (BIN - 1) / 2  # centre of the binned block, in full voxels
        inside = np.all(zyx < np.asarray(limit_zyx), axis=1)
        zyx = zyx[inside]
        if tree is not None and len(zyx):
            zyx = zyx[tree.query(zyx, distance_upper_bound=reach)[0] > reach]
        per_scale.append(zyx)
    # Interleave the scales so that every size of non-target gets its share.
    chosen = []
    for rank in range(max((len(z) for z in per_scale), default=0)):
        chosen.extend(z[rank] for z in per_scale if rank < len(z))
        if len(chosen) >= count:
            break
    return np.array(chosen[:count], dtype=np.float64).reshape(-1, 3)
