"""Picking accuracy: one-to-one matching within a tolerance, and P/R/F1 per class.

Torch-free, so Scipion-side code may use it. Conventions: a prediction matches at most one
true particle and vice versa (extra predictions near one particle are false positives);
distance <= tolerance matches. Empty ratios: precision is 1 when there are no predictions
and nothing to find, else tp / (tp + fp) with 0/0 = 0; recall likewise with tp / (tp + fn);
so an empty prediction on an empty ground truth scores precision = recall = F1 = 1.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .io import Coords, InputError


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
    result["all"] = scores(*match(pred.xyz, gt.xyz, per_gt))
    return result
