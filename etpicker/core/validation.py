"""Validation by picking: the candidates a network picks in the validation regions, the
per-class score thresholds tuned there, and the shape checks kept where they raise F1."""
import time
from dataclasses import dataclass

import numpy as np

from .metrics import best_min_scores, matched, tolerances
from .pick import pick_tomogram
from .postprocess import ideal_score
from .progress import tracked
from .shape_check import (CANDIDATE_RELATIVE_MIN_SCORE, HARMONIC_DEGREES, LIKENESS_MIN_EXAMPLES, MIN_EXAMPLES,
                          THRESHOLD_CHOICES, checks_to_config, described, fit_likeness_check, fit_shape_check,
                          profile_radius, shape_features)

# Relative score thresholds (x a fully segmented ball's score) tried on validation picks;
# each class's best becomes the model's default for picking. Well-segmented particles
# score above 1 (the network paints more than the weak label's ball): up to 1/ideal_score,
# 3.2 for a 7-voxel label, where the best threshold of a small class can lie above 1.5.
MIN_SCORE_CHOICES = np.round(np.arange(CANDIDATE_RELATIVE_MIN_SCORE, 3.001, 0.05), 2)
FEATURE_SAMPLE = 16  # candidates of each class whose shape features are timed for the time budget


@dataclass
class CandidatePicker:
    """A network picking as validation does: down to the lowest score threshold tried,
    without shape checks, at the tile margin stored for picking."""
    model: object
    config: dict
    pad: int
    batch: int
    device: object
    amp: str
    tile: int = None  # None: picking's automatic tiling
    # (tp, fp, fn) -> the score validation maximises: None for F1, with partial annotations partial.annotated_score
    objective: object = None

    def __call__(self, tomogram, stats=None):
        return pick_tomogram(self.model, self.config, tomogram, pad=self.pad, tile=self.tile, batch=self.batch,
                             device=self.device, relative_min_score=CANDIDATE_RELATIVE_MIN_SCORE, amp=self.amp,
                             stats=stats, shape_check=False)

    def relative_scores(self, picks):
        """Each pick's score as a fraction of a fully segmented ball of its class."""
        ideal = {name: ideal_score(d) for name, d in zip(self.config["classes"], self.config["diameters"])}
        return picks.score / np.array([ideal[name] for name in picks.names])

    @property
    def tolerances(self):
        """Matching distances from the particle diameters, where the model knows them, as a
        user evaluates picks; else from the label diameters."""
        return tolerances(self.config["classes"], self.config.get("particle_diameters") or self.config["diameters"])


def validation_candidates(picker, val_sets):
    """(candidate picks in the tomogram's frame, only those in the scored part; ValidationSet)
    per validation region."""
    picked = []
    for val in val_sets:
        predicted = picker(val.tomogram, val.stats)
        predicted.xyz += val.offset_zyx[::-1]
        picked.append((predicted.subset(val.kept(predicted.xyz)), val))
    return picked


def validation_scores(picker, candidates):
    """Class-aware precision, recall, F1 of the validation candidates (validation_candidates),
    micro-averaged, at each class's relative score threshold (also returned) that is best there."""
    picks = [(predicted, picker.relative_scores(predicted), val.scored_truth) for predicted, val in candidates]
    return best_min_scores(picks, picker.config["classes"], picker.tolerances, MIN_SCORE_CHOICES,
                           objective=picker.objective)


def feature_seconds(picker, candidates, sample=FEATURE_SAMPLE):
    """Estimated seconds to compute the shape features of the validation candidates that the
    checks describe (shape_check.described), from timing a few of each class."""
    seconds = 0.0
    for name, diameter in zip(picker.config["classes"], picker.config["diameters"]):
        mine = [(predicted.subset(predicted.names == name), val) for predicted, val in candidates]
        total = sum(len(_described(predicted, val, name)) for predicted, val in mine)
        timed = next(((predicted, val) for predicted, val in mine if len(predicted)), None)
        if timed is None:
            continue
        predicted, val = timed
        xyz = predicted.xyz[:sample] - val.offset_zyx[::-1]
        started = time.monotonic()
        shape_features(val.tomogram.data, val.stats, xyz, profile_radius(diameter), HARMONIC_DEGREES)
        seconds += (time.monotonic() - started) / len(xyz) * total
    return seconds


def _described(picks, val, name):
    """Indices of a validation region's picks of class `name` (among `picks`' own picks of
    it) that the checks describe."""
    return described(picks.score[picks.names == name], np.sum(val.scored_truth.names == name))


def _training_examples(picker, training_regions, radius):
    """{class: (features, network scores, is true)} of the candidates picked in the training
    regions, and {class: features} of the annotated particles there."""
    tolerance = picker.tolerances
    examples = {name: [] for name in picker.config["classes"]}
    annotated = {name: [] for name in picker.config["classes"]}
    for tomogram, coords, stats, limit in tracked(training_regions, len(training_regions),
                                                  "shape checks: picking the training tomograms", "tomograms"):
        picks = picker(tomogram, stats)
        inside = np.all(picks.xyz[:, ::-1] < np.asarray(limit), axis=1)
        picks = picks.subset(inside)
        coords = coords.subset(np.all(coords.xyz[:, ::-1] < np.asarray(limit), axis=1))
        for name in examples:
            mine = picks.subset(picks.names == name)
            mine = mine.subset(described(mine.score, np.sum(coords.names == name)))
            is_true, _ = matched(mine.xyz, coords.xyz[coords.names == name], tolerance[name])
            features = shape_features(tomogram.data, stats, mine.xyz, radius[name], HARMONIC_DEGREES)
            examples[name].append((features, mine.score, is_true))
            annotated[name].append(shape_features(tomogram.data, stats, coords.xyz[coords.names == name],
                                                  radius[name], HARMONIC_DEGREES))
    return ({name: tuple(np.concatenate(part) for part in zip(*found)) for name, found in examples.items()},
            {name: np.concatenate(found) for name, found in annotated.items()})


def _validation_features(candidates, name, radius):
    """(indices among class `name`'s candidates, their shape features) of the candidates the
    checks describe, per validation region."""
    features = []
    for predicted, val in candidates:
        kept = _described(predicted, val, name)
        xyz = predicted.xyz[predicted.names == name][kept] - val.offset_zyx[::-1]
        features.append((kept, shape_features(val.tomogram.data, val.stats, xyz, radius, HARMONIC_DEGREES)))
    return features


def fit_shape_checks(picker, training_regions, val_sets, log=print, candidates=None):
    """({class: [kept checks]}, {class: (validation F1 without checks, with those kept)}).
    Per class, a ShapeCheck is kept where it raised validation F1, with its probability
    threshold chosen there; then a LikenessCheck where it did not lower it.

    `training_regions`: (Tomogram, its annotations, (centre, scale), limit_zyx) per training
    tomogram; picks there within [0, limit) near an annotation of their class are the true
    examples, the others the false ones, and the annotations there a likeness check's
    reference. `candidates`: validation_candidates(picker, val_sets) where the caller has
    them already."""
    classes, tolerance = picker.config["classes"], picker.tolerances
    radius = {name: profile_radius(diameter) for name, diameter in zip(classes, picker.config["diameters"])}
    candidates = candidates if candidates is not None else validation_candidates(picker, val_sets)
    relative = [(predicted, picker.relative_scores(predicted), val.scored_truth) for predicted, val in candidates]
    measure = "F1" if picker.objective is None else "score"
    examples, annotated = _training_examples(picker, training_regions, radius)
    kept_checks, f1s = {}, {}
    for name, (features, network_scores, is_true) in examples.items():
        *_, without, min_score = best_min_scores(relative, [name], tolerance, MIN_SCORE_CHOICES,
                                                 objective=picker.objective)
        # what decides a pick so far: its relative score against the class's threshold
        decided, threshold, score = relative, min_score[name], without
        check = fit_shape_check(features, network_scores, is_true, radius[name], HARMONIC_DEGREES)
        likeness = fit_likeness_check(annotated[name], radius[name], HARMONIC_DEGREES)
        fitted = check is not None or likeness is not None
        val_features = _validation_features(candidates, name, radius[name]) if fitted else None
        if check is None:
            log(f"shape check {name}: not fitted ({int(is_true.sum())} true and {int((~is_true).sum())} false "
                f"training picks; it needs {MIN_EXAMPLES} of each)")
        else:
            probability = _rescored(relative, val_features, name, lambda f, _, network: check.probability(f, network))
            _, _, with_check, chosen = best_min_scores(probability, [name], tolerance, THRESHOLD_CHOICES,
                                                       objective=picker.objective)
            if with_check > without:
                check.threshold = chosen[name]
                kept_checks[name] = [check]
                decided, threshold, score = probability, check.threshold, with_check
            log(f"shape check {name}: validation {measure} {without:.3f} without, {with_check:.3f} with"
                + (f" (probability >= {check.threshold:g}): kept" if name in kept_checks else ": not kept"))
        if likeness is None:
            log(f"likeness check {name}: not fitted ({len(annotated[name])} annotated training particles; "
                f"it needs {LIKENESS_MIN_EXAMPLES})")
        else:
            # at the threshold already chosen, which picking keeps: the likeness check only removes picks
            passing = _rescored(decided, val_features, name, lambda f, values, _: np.where(likeness.passes(f),
                                                                                             values, -np.inf))
            with_likeness = best_min_scores(passing, [name], tolerance, [threshold], objective=picker.objective)[2]
            kept = with_likeness >= score
            log(f"likeness check {name}: validation {measure} {score:.3f} before it, {with_likeness:.3f} with it "
                f"(distance <= {likeness.cut:.2f}): " + ("kept" if kept else "not kept"))
            if kept:
                kept_checks.setdefault(name, []).append(likeness)
                score = with_likeness
        f1s[name] = (without, score)
    return kept_checks, f1s


def _rescored(rows, val_features, name, rescore):
    """`rows` ((predicted, per-pick values, truth) per validation region) with the values of
    class `name`'s described picks replaced by rescore(their features, their values, their
    network scores), and those of its others by -inf: a check rejects what it did not judge."""
    rescored = []
    for (predicted, values, truth), (kept, features) in zip(rows, val_features):
        judged = np.flatnonzero(predicted.names == name)[kept]
        values = np.array(values, dtype=np.float64)
        judgement = rescore(features, values[judged], predicted.score[judged])
        values[predicted.names == name] = -np.inf
        values[judged] = judgement
        rescored.append((predicted, values, truth))
    return rescored


def fitted_checks(picker, pairs, sources, val_sets, log=print, candidates=None):
    """(the config entries of the checks kept (shape_check.checks_to_config), {class: (F1
    without, F1 with them)}), fitted on the training `pairs` (Tomogram, Coords) within their
    sources' limits (train_data.prepare_data)."""
    regions = [(tomogram, coords, (source.centre, source.scale), source.limit_zyx)
               for (tomogram, coords), source in zip(pairs, sources)]
    checks, f1s = fit_shape_checks(picker, regions, val_sets, log, candidates)
    return checks_to_config(checks), f1s
