"""A second look at each pick: is it the class's particle or a look-alike of its size?

The network paints other macromolecules of a target's size nearly as confidently as the
target (bench/README.md, "What limits accuracy"), yet the tomogram around a pick tells
them apart well. The radial density profile about the centre, how much the density varies
within each spherical shell, and how that variation is arranged on the shell (the power
of its spherical harmonics per degree) do not depend on the particle's orientation, so
~100 annotated particles suffice to learn them. Per class, a logistic model on those
features (of the tomogram and of a lightly smoothed copy) plus the network's score is
fitted on the network's own picks in the training tomograms: those near an annotation are
true, the others are what the network confuses with the class. Its probability threshold is chosen
on the validation picks, and a class keeps its check only where it raised validation F1.

Then each class may keep a likeness check too: a pick is kept only if its features lie near
those of the class's annotated particles. It needs no false examples, so it works for a
class the network made too few false picks of to learn from, and it rejects look-alikes the
training tomograms never held, such as another dataset's own proteins (bench/README.md,
adapt's "other proteins" case). It is kept where it does not lower validation F1.
"""
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage, special

from .errors import InputError
from .io import release_pages

RADIUS_FACTOR = 1.5  # profile radius / weak-label diameter: the particle and a shell of its surroundings
SMOOTHING_SIGMA = 1.0  # voxels; the smoothed profile sees the shape past the noise
# Spherical-harmonic degrees per shell. On the realistic benchmark (one model, SNR 0.1) 1bxn's
# test F1 went 0.84 (0: profiles only, the first checks) -> 0.92 (4) -> 0.93 (6) -> 0.94 (8).
HARMONIC_DEGREES = 8
REGULARISATION = 0.3  # L2 weight; stronger and weaker (0.1-1) were as good, 0.001 over-fitted
MIN_EXAMPLES = 5  # true and false training picks a class needs before it gets a check
NEWTON_STEPS = 50
# Picks of a checked class are candidates down to this x a fully segmented ball's score:
# the lowest score threshold validation tries, which holds nearly every particle.
CANDIDATE_RELATIVE_MIN_SCORE = 0.2
# Probability thresholds tried on validation picks
THRESHOLD_CHOICES = np.round(np.arange(0.05, 0.951, 0.025), 3)
# Likeness check: annotated particles a class needs for one, and its cut, x the largest
# distance among them. On adapt's "other proteins" case (bench/README.md) 1.2 kept 34 of
# 35 true 4v4r picks and 4 of 26 false ones; 1.0 kept 34 and 3. Fewer references give a
# tighter cut than new particles need: with ~32 per class (30 % annotated) the checks cost
# test F1 0.860 -> 0.829, with 54-59 (adapt's source model) they cost nothing.
LIKENESS_MIN_EXAMPLES = 50
LIKENESS_CUT_FACTOR = 1.2
# A check learns from and judges at most this many candidates of a class per region, the
# strongest, or CANDIDATES_PER_PARTICLE per annotated particle where that is more. A barely
# trained network's thousands of weak candidates cost minutes of shape features (the time
# budget held back for them stopped few-label training after its first epoch), and the
# weakest of them lie below any threshold worth keeping.
MAX_DESCRIBED = 100
CANDIDATES_PER_PARTICLE = 4


def described(scores, n_annotated):
    """Indices (ascending) of the candidates with these `scores` that a check describes, in a
    region holding `n_annotated` annotated particles of their class: the strongest
    max(MAX_DESCRIBED, CANDIDATES_PER_PARTICLE x n_annotated)."""
    scores = np.asarray(scores)
    limit = max(MAX_DESCRIBED, CANDIDATES_PER_PARTICLE * int(n_annotated))
    if len(scores) <= limit:
        return np.arange(len(scores))
    return np.sort(np.argsort(-scores, kind="stable")[:limit])


def profile_radius(diameter):
    """Radius (voxels) of the profile around a pick of a class with this weak-label diameter."""
    return max(3, int(round(RADIUS_FACTOR * diameter)))


def feature_count(radius, degrees):
    """Features of one pick: 4 per shell 0..radius (profiles), `degrees` per shell 2..radius."""
    return 4 * (radius + 1) + degrees * (radius - 1)


def _real_harmonics(degrees, polar, azimuth):
    """Real orthonormal spherical harmonics of degrees 1..`degrees` at the given points
    (n points x columns, degree by degree). Built on `lpmv`, which every scipy has."""
    x, columns = np.cos(polar), []
    for degree in range(1, degrees + 1):
        for order in range(-degree, degree + 1):
            m = abs(order)
            norm = np.sqrt((2 * degree + 1) / (4 * np.pi)
                           * np.exp(special.gammaln(degree - m + 1) - special.gammaln(degree + m + 1)))
            legendre = norm * special.lpmv(m, degree, x)
            columns.append(legendre if order == 0 else
                           np.sqrt(2) * legendre * (np.cos(m * azimuth) if order > 0 else np.sin(m * azimuth)))
    return np.stack(columns, axis=1)


@lru_cache(maxsize=16)
def _shell_samples(radius, degrees):
    """(sample points z, y, x relative to the pick (3 x n), per shell 2..radius the matrix
    that takes its samples to its harmonic coefficients, each coefficient's degree - 1).
    Points spread evenly on each sphere (a Fibonacci lattice), about one per voxel of its
    area."""
    points, projections = [], []
    degree_of = np.repeat(np.arange(degrees), 2 * np.arange(1, degrees + 1) + 1)
    for r in range(2, radius + 1):
        n = max(60, int(4 * np.pi * r * r))
        i = np.arange(n) + 0.5
        polar, azimuth = np.arccos(1 - 2 * i / n), (np.pi * (1 + np.sqrt(5)) * i) % (2 * np.pi)
        points.append(r * np.stack([np.cos(polar), np.sin(polar) * np.sin(azimuth), np.sin(polar) * np.cos(azimuth)]))
        # Coefficients by quadrature: the lattice's points carry equal areas, 4 pi / n.
        projections.append((_real_harmonics(degrees, polar, azimuth) * (4 * np.pi / n)).T)
    return np.concatenate(points, axis=1), tuple(projections), degree_of


def shell_harmonics(smooth, centre_zyx, radius, degrees):
    """Per shell 2..radius around `centre_zyx` of the 3-D array `smooth`, the amplitude
    (square root of the power) of its spherical harmonics of each degree 1..`degrees`:
    how the density is arranged around the shell, which the shell's spread sums up in one
    number. Power per degree is the same in any orientation of the particle."""
    points, projections, degree_of = _shell_samples(radius, degrees)
    values = ndimage.map_coordinates(smooth, points + np.asarray(centre_zyx, float)[:, None], order=1)
    amplitudes, start = [], 0
    for projection in projections:
        shell = values[start:start + projection.shape[1]]
        start += projection.shape[1]
        coefficients = projection @ (shell - shell.mean())
        amplitudes.append(np.sqrt(np.bincount(degree_of, coefficients * coefficients, degrees)))
    return np.concatenate(amplitudes)


def shape_features(volume, stats, xyz, radius, degrees=HARMONIC_DEGREES):
    """Features of each pick (n x feature_count(radius, degrees)): shell means and shell
    standard deviations of the standardised tomogram and of its smoothed copy, for shells
    0..radius voxels from the pick, then the smoothed copy's shell harmonics. Each pick
    reads only a small box from `volume` (a memory map is fine); outside the volume counts
    as the tomogram's mean."""
    centre, scale = stats
    margin = int(np.ceil(3 * SMOOTHING_SIGMA))
    half = radius + margin
    grid = np.mgrid[-radius:radius + 1, -radius:radius + 1, -radius:radius + 1]
    shell = np.rint(np.sqrt((grid ** 2).sum(axis=0))).astype(np.intp).ravel()
    inside = shell <= radius
    shell = shell[inside]
    counts = np.bincount(shell, minlength=radius + 1)
    features = np.empty((len(xyz), feature_count(radius, degrees)), dtype=np.float64)
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
        if degrees:
            parts.append(shell_harmonics(smooth, (half, half, half), radius, degrees))
        features[row] = np.concatenate(parts)
    release_pages(volume)
    return features


@dataclass
class ShapeCheck:
    """One class's check: a logistic model on standardised [shape features, network score].
    `degrees`: the shell harmonics' highest degree its features use (0 in models from before
    they were added, which still load and pick as they were fitted)."""

    radius: int
    mean: list
    std: list
    weights: list
    bias: float
    threshold: float = 0.5
    degrees: int = 0

    def features(self, volume, stats, xyz):
        return shape_features(volume, stats, xyz, self.radius, self.degrees)

    # The network's score is one of its inputs: its picks are candidates down to CANDIDATE_RELATIVE_MIN_SCORE.
    decides_score = True

    def probability(self, features, network_scores):
        x = (np.column_stack([features, network_scores]) - np.asarray(self.mean)) / np.asarray(self.std)
        return 1.0 / (1.0 + np.exp(-np.clip(x @ np.asarray(self.weights) + self.bias, -50, 50)))

    def passes(self, features, network_scores):
        return self.probability(features, network_scores) >= self.threshold

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(int(data["radius"]), list(data["mean"]), list(data["std"]), list(data["weights"]),
                   float(data["bias"]), float(data["threshold"]), int(data.get("degrees", 0)))


def fit_shape_check(features, network_scores, is_true, radius, degrees=HARMONIC_DEGREES,
                    regularisation=REGULARISATION):
    """A ShapeCheck separating true (`is_true`) from false picks by their shape_features(...,
    radius, degrees), or None when either kind has fewer than MIN_EXAMPLES picks."""
    is_true = np.asarray(is_true, dtype=np.float64)
    if is_true.sum() < MIN_EXAMPLES or (1 - is_true).sum() < MIN_EXAMPLES:
        return None
    x = np.column_stack([features, network_scores])
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
    return ShapeCheck(int(radius), mean.tolist(), std.tolist(), w[:-1].tolist(), float(w[-1]), degrees=int(degrees))


@dataclass
class LikenessCheck:
    """One class's likeness check: a pick passes when the root mean square of its shape
    features, each standardised by the mean and standard deviation over the class's
    annotated particles, is at most `cut`. The network's score is left to the class's score
    threshold."""

    radius: int
    mean: list
    std: list
    cut: float
    degrees: int = HARMONIC_DEGREES
    decides_score = False

    def features(self, volume, stats, xyz):
        return shape_features(volume, stats, xyz, self.radius, self.degrees)

    def distance(self, features):
        standardised = (np.asarray(features) - np.asarray(self.mean)) / np.asarray(self.std)
        return np.sqrt(np.mean(standardised * standardised, axis=1))

    def passes(self, features, network_scores=None):
        return self.distance(features) <= self.cut

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(int(data["radius"]), list(data["mean"]), list(data["std"]), float(data["cut"]), int(data["degrees"]))


def fit_likeness_check(reference_features, radius, degrees=HARMONIC_DEGREES):
    """A LikenessCheck from the shape_features(..., radius, degrees) of a class's annotated
    particles, or None when there are fewer than LIKENESS_MIN_EXAMPLES of them."""
    reference_features = np.asarray(reference_features, dtype=np.float64)
    if len(reference_features) < LIKENESS_MIN_EXAMPLES:
        return None
    check = LikenessCheck(int(radius), reference_features.mean(axis=0).tolist(),
                          (reference_features.std(axis=0) + 1e-6).tolist(), 0.0, int(degrees))
    check.cut = float(LIKENESS_CUT_FACTOR * check.distance(reference_features).max())
    return check


# The config keys of the two kinds of check, each {class: the check as JSON}
CHECK_KINDS = {"shape_check": ShapeCheck, "likeness_check": LikenessCheck}


def checks_from_config(config):
    """{class: [its checks, shape check first]} stored in a model config (empty when it has
    none); InputError when an entry is malformed (a hand-edited config.json)."""
    checks = {}
    for key, kind in CHECK_KINDS.items():
        for name, data in config.get(key, {}).items():
            label = key.replace("_", " ")
            try:
                check = kind.from_json(data)
                sizes = {len(check.mean), len(check.std), *([len(check.weights)] if kind is ShapeCheck else [])}
            except (KeyError, TypeError, ValueError) as error:
                raise InputError(f"the model's {label} of class {name} is malformed ({error!r})") from None
            wanted = feature_count(check.radius, check.degrees) + (kind is ShapeCheck)
            if sizes != {wanted}:
                raise InputError(f"the model's {label} of class {name} has {sorted(sizes)} weights, "
                                 f"not the {wanted} of radius {check.radius} and degrees {check.degrees}")
            checks.setdefault(name, []).append(check)
    return checks


def checks_to_config(checks):
    """The config entries ({key: {class: check as JSON}}, every key of CHECK_KINDS) of
    {class: [checks]}."""
    return {key: {name: check.to_json() for name, mine in checks.items() for check in mine if isinstance(check, kind)}
            for key, kind in CHECK_KINDS.items()}


def apply_checks(coords, volume, stats, checks):
    """The picks of `coords` that pass every check of their class ({class: [checks]}; classes
    without one all pass)."""
    keep = np.ones(len(coords.names), dtype=bool)
    for name, mine_checks in checks.items():
        mine = coords.names == name
        features = {}  # a class's checks usually read the same features: computed once
        for check in mine_checks if mine.any() else ():
            if (check.radius, check.degrees) not in features:
                features[check.radius, check.degrees] = check.features(volume, stats, coords.xyz[mine])
            keep[mine] &= check.passes(features[check.radius, check.degrees], coords.score[mine])
    return coords.subset(keep)
