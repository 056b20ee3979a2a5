"""The automatic recipe: the training settings a user leaves unset, chosen from the
particle sizes and the device, and the weak-label diameters from the particle sizes.

Torch-free: the caller says what the device is. An explicit setting always wins.
"""
import math

from .labels import MIN_DIAMETER
from .settings import DEFAULT_WIDTHS, PATCH_MULTIPLE

# Measured best for a 15-minute budget on 2 CPU cores, realistic crowded tomograms at
# 10 Å/voxel with particles 11-22 voxels across (bench/README.md: class-agnostic F1 0.94
# where the reference-sized network finished one epoch in 20 minutes at F1 0.006).
CPU_RECIPE = {"patch": 40, "batch": 4, "widths": (16, 32, 48, 64), "lr": 2e-3, "ce_weight": 1.0}
# The reference's size; no GPU has measured better yet.
GPU_RECIPE = {"patch": 72, "batch": 8, "widths": DEFAULT_WIDTHS, "lr": 1e-3, "ce_weight": 0.0}
RECIPE_KEYS = tuple(CPU_RECIPE)
# Weak labels smaller than the particle: the measured label diameters 7, 9, 13 voxels for
# particles of 11.1, 15.3, 21.9 are 0.6 of them, rounded.
LABEL_PER_PARTICLE = 0.6
# A patch holds the largest particle with context around it: 40 voxels for 21.9.
PATCH_PER_PARTICLE = 1.8
# Particle diameters (voxels) outside this range were never measured to pick well: a
# smaller one leaves a label of a few voxels, a larger one little context in a patch. The
# realistic benchmark picked 7.4-voxel rubisco at 15 Å/voxel at F1 0.986 (bench/README.md).
WELL_SIZED = (7.0, 32.0)
TARGET_SIZE = 20.0  # voxels: what binning should bring particles to (the reference advises 20-30)


def label_diameters(particle_diameters):
    """Whole-voxel weak-label diameters, LABEL_PER_PARTICLE of each particle's, at least MIN_DIAMETER."""
    return [max(MIN_DIAMETER, int(round(LABEL_PER_PARTICLE * d))) for d in particle_diameters]


def patch_for(particle_diameters, base):
    """The recipe's patch, enlarged (to a multiple of 8) where the largest particle needs it."""
    if not particle_diameters:
        return base
    needed = PATCH_PER_PARTICLE * max(particle_diameters)
    return max(base, PATCH_MULTIPLE * math.ceil(needed / PATCH_MULTIPLE))


def choose(requested, device_type, particle_diameters=None):
    """{setting: value} for each recipe setting left None in `requested` (a dict), from the
    recipe of the device type ('cpu' or 'cuda') and the particle diameters (voxels)."""
    base = GPU_RECIPE if device_type == "cuda" else CPU_RECIPE
    chosen = {key: value for key, value in base.items() if requested.get(key) is None}
    if "patch" in chosen:
        chosen["patch"] = patch_for(particle_diameters, base["patch"])
    return chosen


def size_warnings(particle_diameters, voxel_size):
    """A warning line per class whose particles are too small or too large at this voxel
    size: the binning that brings large ones to about TARGET_SIZE voxels, the voxel size
    at which small ones span WELL_SIZED[0]."""
    warnings = []
    for diameter in particle_diameters:
        measured = f"it was measured with {WELL_SIZED[0]:g}-{WELL_SIZED[1]:g}"
        if diameter > WELL_SIZED[1]:
            factor = math.ceil(diameter / TARGET_SIZE)
            warnings.append(f"warning: particles of {diameter:.3g} voxels are large for the network ({measured}); "
                            f"bin the tomograms by {factor} (to {voxel_size * factor:g} Å/voxel)")
        elif diameter < WELL_SIZED[0]:
            finer = voxel_size * diameter / WELL_SIZED[0]
            warnings.append(f"warning: particles of {diameter:.3g} voxels are small for the network ({measured}); "
                            f"use tomograms at {finer:.3g} Å/voxel or finer")
    return warnings
