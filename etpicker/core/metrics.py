"""Picking accuracy: one-to-one matching within a tolerance, P/R/F1 per class, summed over
tomograms, and swept over score thresholds.

Torch-free: the CLI, the evaluate protocol, the viewers and the benchmarks all score here.
Conventions: a prediction matches at most one true particle and vice versa (extra
predictions near one particle are false positives); distance <= tolerance matches. Empty ratios: precision is 1 when there are no predictions
and nothing to find, else tp / (tp + fp) with 0/0 = 0; recall likewise with tp / (tp + fn);
so an empty prediction on an empty ground truth scores precision = recall = F1 = 1.
"""
import csv

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .errors import InputError
from .io import Coords
from .settings import DEFAULT_RELATIVE_MIN_SCORE

ALL = "all"  # the class-agnostic entry of an evaluation
COUNTS = ("tp", "fp", "fn")
RATIOS = ("precision", "recall", "f1")
# A pick matches a particle within a quarter of its diameter (half its radius).
TOLERANCE_PER_DIAMETER = 0.25
CURVE_COLUMNS = ("class", "threshold") + COUNTS + RATIOS


def tolerances(classes, diameters):
    """{class: matching distance (voxels)} from one diameter (voxels) per class."""
    return {name: TOLERANCE_PER_DIAMETER * diameter for name, diameter in zip(classes, diameters)}


def matched(pred_xyz, gt_xyz, tolerance):
    """(pred_hit, gt_hit): boolean masks of the predictions and true particles paired by a
    maximum one-to-one matching (closest pairs preferred among maxima); tolerance is a float
    or one per true particle."""
    pred_xyz = np.asarray(pred_xyz, dtype=np.float64).reshape(-1, 3)
    gt_xyz = np.asarray(gt_xyz, dtype=np.float64).reshape(-1, 3)
    pred_hit, gt_hit = np.zeros(len(pred_xyz), bool), np.zeros(len(gt_xyz), bool)
    if len(pred_xyz) == 0 or len(gt_xyz) == 0:
        return pred_hit, gt_hit
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (len(gt_xyz),))
    distances = cKDTree(gt_xyz).sparse_distance_matrix(cKDTree(pred_xyz), float(tolerance.max()),
                                                       output_type="coo_matrix")
    allowed = distances.data <= tolerance[distances.row]
    gt_index, pred_index, distance = distances.row[allowed], distances.col[allowed], distances.data[allowed]
    if len(gt_index) == 0:
        return pred_hit, gt_hit
    # Matching only interacts within connected groups of nearby points: solve each alone.
    n_gt = len(gt_xyz)
    graph = coo_matrix((np.ones(len(gt_index)), (gt_index, pred_index + n_gt)),
                       shape=(n_gt + len(pred_xyz),) * 2)
    _, component = connected_components(graph, directed=False)
    for label in np.unique(component[gt_index]):
        in_group = component[gt_index] == label
        rows, row_index = np.unique(gt_index[in_group], return_inverse=True)
        cols, col_index = np.unique(pred_index[in_group], return_inverse=True)
        # A forbidden pair costs more than all allowed pairs together, so the optimum first
        # maximises the number of allowed pairs, then minimises their total distance.
        forbidden = distance[in_group].sum() + 1.0
        cost = np.full((len(rows), len(cols)), forbidden)
        cost[row_index, col_index] = distance[in_group]
        r, c = linear_sum_assignment(cost)
        paired = cost[r, c] < forbidden
        gt_hit[rows[r[paired]]] = True
        pred_hit[cols[c[paired]]] = True
    return pred_hit, gt_hit


def match(pred_xyz, gt_xyz, tolerance):
    """(tp, fp, fn) of a maximum one-to-one matching; tolerance is a float or one per true particle."""
    pred_hit, gt_hit = matched(pred_xyz, gt_xyz, tolerance)
    tp = int(pred_hit.sum())
    return tp, len(pred_hit) - tp, len(gt_hit) - tp


def scores(tp, fp, fn):
    """{tp, fp, fn, precision, recall, f1} with the empty-case conventions of this module."""
    nothing = tp + fp + fn == 0
    precision = 1.0 if nothing else (tp / (tp + fp) if tp + fp else 0.0)
    recall = 1.0 if nothing else (tp / (tp + fn) if tp + fn else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": precision, "recall": recall, "f1": f1}


def evaluate(pred: Coords, gt: Coords, tolerance):
    """Per class (same-class matches only) and class-agnostic ('all') scores.

    tolerance (voxels): a float, or {class name: float} covering every ground-truth class;
    in the class-agnostic matching each true particle keeps its own class's tolerance."""
    classes = sorted(set(gt.names) | set(pred.names))
    if isinstance(tolerance, dict):
        missing = sorted(set(gt.names) - set(tolerance))
        if missing:
            raise InputError(f"no matching tolerance for class(es) {', '.join(missing)}")
        per_gt = np.array([tolerance[name] for name in gt.names], dtype=np.float64)
    else:
        per_gt = np.full(len(gt), float(tolerance))
    result = {"classes": {}, "tolerance": tolerance}
    for name in classes:
        in_gt, in_pred = gt.names == name, pred.names == name
        result["classes"][name] = scores(*match(pred.xyz[in_pred], gt.xyz[in_gt], per_gt[in_gt]))
    result[ALL] = scores(*match(pred.xyz, gt.xyz, per_gt))
    return result


def summed_counts(pairs, tolerance):
    """{class or ALL: [tp, fp, fn]} of `evaluate` summed over (predicted, truth) pairs."""
    totals = {ALL: [0, 0, 0]}
    for predicted, truth in pairs:
        result = evaluate(predicted, truth, tolerance)
        for name, counts in list(result["classes"].items()) + [(ALL, result[ALL])]:
            total = totals.setdefault(name, [0, 0, 0])
            for i, key in enumerate(COUNTS):
                total[i] += counts[key]
    return totals


def evaluate_many(pairs, tolerance):
    """`evaluate` over several tomograms ((predicted, truth) Coords pairs): counts summed
    per class and for all classes, then precision, recall and F1 from the sums."""
    totals = summed_counts(pairs, tolerance)
    overall = scores(*totals.pop(ALL))
    return {"classes": {name: scores(*counts) for name, counts in sorted(totals.items())}, ALL: overall,
            "tolerance": tolerance}


def sweep(pairs, thresholds, tolerance):
    """summed_counts at each threshold: pairs are (predicted Coords, a value per prediction,
    truth Coords), and a prediction counts where its value reaches the threshold."""
    return [summed_counts([(predicted.subset(values >= threshold), truth) for predicted, values, truth in pairs],
                          tolerance) for threshold in thresholds]


def f1_of(tp, fp, fn):
    """F1 from counts (0 where nothing matched)."""
    return 2 * tp / max(1, 2 * tp + fp + fn)


def best_min_scores(picks, classes, tolerance, choices, default=DEFAULT_RELATIVE_MIN_SCORE, objective=None):
    """(precision, recall, F1, {class: threshold}): for each class the threshold of `choices`
    giving its best F1 over all `picks` ((predicted Coords, their relative scores, true
    Coords) per region), and the micro-averaged scores at those thresholds. A class with
    nothing to choose on (F1 0 everywhere) gets the choice nearest `default`. `objective`
    (tp, fp, fn) -> score replaces F1, in the choice and the third value returned.

    Per class, because how fully the network segments a particle, hence its score relative
    to a whole ball, differs between classes."""
    tp = fp = fn = 0
    thresholds = {}
    for name in classes:
        mine = [(predicted.subset(predicted.names == name), relative[predicted.names == name],
                 truth.subset(truth.names == name)) for predicted, relative, truth in picks]
        results = [counts[ALL] for counts in sweep(mine, choices, tolerance)]
        f1 = [(objective or f1_of)(t, p, n) if t else 0.0 for t, p, n in results]
        if max(f1) == 0:
            best = int(np.argmin(np.abs(np.asarray(choices) - default)))
        else:  # of equally good thresholds the middle one: the F1 plateau is noisy at its ends
            tied = [i for i, value in enumerate(f1) if value == max(f1)]
            best = tied[len(tied) // 2]
        thresholds[name] = float(choices[best])
        tp, fp, fn = tp + results[best][0], fp + results[best][1], fn + results[best][2]
    micro = scores(tp, fp, fn)
    score = micro["f1"] if objective is None else objective(tp, fp, fn)
    return micro["precision"], micro["recall"], score, thresholds


def threshold_curve(pairs, tolerance, n_thresholds=40):
    """Precision, recall and F1 against the minimum score kept, per true class and ALL.

    pairs: [(picks, truth)] Coords of the same tomogram, the picks with scores. Returns
    {class name or ALL: {'threshold', 'tp', ..., 'f1': arrays}}."""
    all_scores = np.concatenate([picks.score for picks, _ in pairs if len(picks)] or [[]])
    if all_scores.size == 0:
        raise ValueError("no scored picks to draw a threshold curve from")
    # Actual scores as thresholds, so every point of the curve is a reachable cut.
    thresholds = np.unique(np.quantile(all_scores, np.linspace(0, 1, n_thresholds), method="lower"))
    names = sorted({str(name) for _, truth in pairs for name in truth.names}) + [ALL]
    counted = sweep([(picks, picks.score, truth) for picks, truth in pairs], thresholds, tolerance)
    curve = {}
    for name in names:
        rows = [scores(*counts.get(name, (0, 0, 0))) for counts in counted]
        curve[name] = {"threshold": thresholds, **{key: np.array([row[key] for row in rows])
                                                   for key in COUNTS + RATIOS}}
    return curve


def write_curve(path, curve):
    """A threshold_curve as CSV (CURVE_COLUMNS)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CURVE_COLUMNS)
        for name, table in curve.items():
            for i, threshold in enumerate(table["threshold"]):
                writer.writerow([name, f"{threshold:.6g}"] + [int(table[key][i]) for key in COUNTS]
                                + [f"{table[key][i]:.6f}" for key in RATIOS])


def read_curve(path):
    """A curve written by write_curve: {class name: {column: array}}."""
    curve = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            table = curve.setdefault(row["class"], {key: [] for key in CURVE_COLUMNS[1:]})
            for key in CURVE_COLUMNS[1:]:
                table[key].append(float(row[key]))
    return {name: {key: np.array(values) for key, values in table.items()} for name, table in curve.items()}
