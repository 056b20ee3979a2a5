"""A second look at each pick: is it the class's particle or a look-alike of its size?

The network paints other macromolecules of a target's size nearly as confidently as the
target (bench/README.md, "What limits accuracy"), yet the tomogram around a pick tells
them apart well: the radial density profile about the centre, and how much the density
varies within each spherical shell, do not depend on the particle's orientation, so ~100
annotated particles suffice to learn them. Per class, a logistic model on those profiles
(of the tomogram and of a lightly smoothed copy) plus the network's score is fitted on the
network's own picks in the training tomograms: those near an annotation are true, the
others are what the network confuses with the class. Its probability threshold is chosen
on the validation picks, and a class keeps its check only where it raised validation F1.
"""
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .io import InputError, release_pages

RADIUS_FACTOR = 1.5  # profile radius / weak-label diameter: the particle and a shell of its surroundings
SMOOTHING_SIGMA = 1.0  # voxels; the smoothed profile sees the shape past the noise
REGULARISATION = 0.3  # L2 weight; stronger and weaker (0.1-1) were as good, 0.001 over-fitted
MIN_EXAMPLES = 5  # true and false training picks a class needs before it gets a check
NEWTON_STEPS = 50
# Picks of a checked class are candidates down to this x a fully segmented ball's score:
# the lowest score threshold validation tries, which holds nearly every particle.
CANDIDATE_RELATIVE_MIN_SCORE = 0.2
# Probability thresholds tried on validation picks
THRESHOLD_CHOICES = np.round(np.arange(0.05, 0.951, 0.025), 3)


def profile_radius(diameter):
    """Radius (voxels) of the profile around a pick of a class with this weak-label diameter."""
    return max(3, int(round(RADIUS_FACTOR * diameter)))


def radial_profiles(volume, stats, xyz, radius):
    """Features of each pick (n x 4*(radius+1)): shell means and shell standard deviations
    of the standardised tomogram and of its smoothed copy, for shells 0..radius voxels from
    the pick. Each pick reads only a small box from `volume` (a memory map is fine);
    outside the volume counts as the tomogram's mean."""
    centre, scale = stats
    margin = int(np.ceil(3 * SMOOTHING_SIGMA))
    half = radius + margin
    grid = np.mgrid[-radius:radius + 1, -radius:radius + 1, -radius:radius + 1]
    shell = np.rint(np.sqrt((grid ** 2).sum(axis=0))).astype(np.intp).ravel()
    inside = shell <= radius
    shell = shell[inside]
    counts = np.bincount(shell, minlength=radius + 1)
    features = np.empty((len(xyz), 4 * (radius + 1)), dtype=np.float64)
    shape = np.array(volume.shape)
    for row, point in enumerate(np.asarray(xyz, dtype=np.float64)):
        zyx = np.rint(point[::-1]).astype(np.intp)
        low, high = zyx - half, zyx + half + 1
        box = np.zeros((2 * half + 1,) * 3, dtype=np.float32)
        src_low, src_high = np.maximum(low, 0), np.minimum(high, shape)
        if np.all(src_high > src_low):
            src = tuple(slice(a, b) for a, b in zip(src_low, src_high))
            dst = tuple(slice(a - l, b - l) for a, b, l in zip(src_low, src_high, low))
            box[dst] = (np.asarray(volume[src], dtype=np.float32) - centre) / scale
        smooth = ndimage.gaussian_filter(box, SMOOTHING_SIGMA, mode="nearest")
        crop = (slice(margin, margin + 2 * radius + 1),) * 3
        parts = []
        for values in (box[crop], smooth[crop]):
            values = values.ravel()[inside].astype(np.float64)
            mean = np.bincount(shell, values, radius + 1) / counts
            square = np.bincount(shell, values * values, radius + 1) / counts
            parts += [mean, np.sqrt(np.maximum(square - mean * mean, 0.0))]
        features[row] = np.concatenate(parts)
    release_pages(volume)
    return features


@dataclass
class ShapeCheck:
    """One class's check: a logistic model on standardised [profiles, network score]."""

    radius: int
    mean: list
    std: list
    weights: list
    bias: float
    threshold: float = 0.5

    def probability(self, profiles, network_scores):
        x = (np.column_stack([profiles, network_scores]) - np.asarray(self.mean)) / np.asarray(self.std)
        return 1.0 / (1.0 + np.exp(-np.clip(x @ np.asarray(self.weights) + self.bias, -50, 50)))

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(int(data["radius"]), list(data["mean"]), list(data["std"]), list(data["weights"]),
                   float(data["bias"]), float(data["threshold"]))


def fit_shape_check(profiles, network_scores, is_true, radius, regularisation=REGULARISATION):
    """A ShapeCheck separating true (`is_true`) from false picks, or None when either kind
    has fewer than MIN_EXAMPLES picks."""
    is_true = np.asarray(is_true, dtype=np.float64)
    if is_true.sum() < MIN_EXAMPLES or (1 - is_true).sum() < MIN_EXAMPLES:
        return None
    x = np.column_stack([profiles, network_scores])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    design = np.column_stack([(x - mean) / std, np.ones(len(x))])
    penalty = regularisation * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    w = np.zeros(design.shape[1])
    for _ in range(NEWTON_STEPS):  # Newton's method on the penalised mean log-loss
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -50, 50)))
        gradient = design.T @ (p - is_true) / len(x) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(x) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return ShapeCheck(int(radius), mean.tolist(), std.tolist(), w[:-1].tolist(), float(w[-1]))


def checks_from_config(config):
    """{class: ShapeCheck} stored in a model config (empty when it has none); InputError
    when an entry is malformed (a hand-edited config.json)."""
    checks = {}
    for name, data in config.get("shape_check", {}).items():
        try:
            check = ShapeCheck.from_json(data)
            sizes = {len(check.mean), len(check.std), len(check.weights)}
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"the model's shape check of class {name} is malformed ({error!r})") from None
        if sizes != {4 * (check.radius + 1) + 1}:
            raise InputError(f"the model's shape check of class {name} has {sorted(sizes)} weights, "
                             f"not the {4 * (check.radius + 1) + 1} of radius {check.radius}")
        checks[name] = check
    return checks


def probabilities(coords, volume, stats, checks):
    """Each pick's probability of being its class's particle under that class's check (1
    where the class has none)."""
    chance = np.ones(len(coords.names))
    for name, check in checks.items():
        mine = coords.names == name
        if mine.any():
            chance[mine] = check.probability(radial_profiles(volume, stats, coords.xyz[mine], check.radius),
                                             coords.score[mine])
    return chance


def apply_checks(coords, volume, stats, checks):
    """The picks of `coords` that pass their class's check (classes without one all pass)."""
    threshold = np.array([checks[name].threshold if name in checks else 0.0 for name in coords.names])
    return coords.subset(probabilities(coords, volume, stats, checks) >= threshold)
