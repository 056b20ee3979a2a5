import numpy as np
import pytest

from etpicker.core.errors import InputError
from etpicker.core.io import Coords
from etpicker.core.metrics import evaluate, match


def test_duplicates_are_false_positives():
    gt = [[10, 10, 10]]
    pred = [[10, 10, 11], [10, 11, 10], [11, 10, 10]]
    assert match(pred, gt, 2.0) == (1, 2, 0)


def test_tolerance_is_inclusive():
    assert match([[0, 0, 3]], [[0, 0, 0]], 3.0) == (1, 0, 0)
    assert match([[0, 0, 3.01]], [[0, 0, 0]], 3.0) == (0, 1, 1)


def test_matching_is_maximum_not_greedy():
    # pred A is closest to gt 1, but taking that pair would leave gt 0 unmatched
    gt = [[0, 0, 0], [0, 0, 2]]
    pred = [[0, 0, 1.2], [0, 0, 3.5]]
    assert match(pred, gt, 1.6) == (2, 0, 0)


def test_separate_groups_and_unmatched_points():
    gt = [[0, 0, 0], [50, 50, 50], [100, 0, 0]]
    pred = [[0, 0, 1], [50, 50, 52], [200, 0, 0]]
    assert match(pred, gt, 2.5) == (2, 1, 1)
    assert match([], gt, 2.5) == (0, 0, 3)
    assert match(pred, [], 2.5) == (0, 3, 0)


def _coords(rows):
    return Coords([r[0] for r in rows], [r[1:] for r in rows])


def test_evaluate_per_class_and_class_agnostic():
    gt = _coords([("a", 0, 0, 0), ("a", 20, 0, 0), ("b", 40, 0, 0)])
    pred = _coords([("a", 0, 0, 1), ("b", 20, 0, 1), ("b", 40, 0, 0), ("b", 60, 0, 0)])
    result = evaluate(pred, gt, 2.0)
    a, b, everything = result["classes"]["a"], result["classes"]["b"], result["all"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 0, 1)
    assert (b["tp"], b["fp"], b["fn"]) == (1, 2, 0)
    assert b["precision"] == pytest.approx(1 / 3) and b["recall"] == 1.0 and b["f1"] == pytest.approx(0.5)
    # ignoring classes, the wrongly classified pick at x=20 is a hit
    assert (everything["tp"], everything["fp"], everything["fn"]) == (3, 1, 0)
    assert everything["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert result["tolerance"] == 2.0


def test_per_class_tolerance_applies_in_class_agnostic_matching_too():
    gt = _coords([("small", 0, 0, 0), ("big", 50, 0, 0)])
    pred = _coords([("small", 0, 0, 3), ("big", 50, 0, 3)])
    result = evaluate(pred, gt, {"small": 2.0, "big": 4.0})
    assert result["classes"]["small"]["tp"] == 0 and result["classes"]["big"]["tp"] == 1
    assert result["all"]["tp"] == 1
    with pytest.raises(InputError, match="big"):
        evaluate(pred, gt, {"small": 2.0})


def test_empty_cases():
    empty = _coords([])
    perfect = evaluate(empty, empty, 2.0)["all"]
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)
    missed = evaluate(empty, _coords([("a", 0, 0, 0)]), 2.0)["classes"]["a"]
    assert (missed["precision"], missed["recall"], missed["f1"], missed["fn"]) == (0.0, 0.0, 0.0, 1)
    invented = evaluate(_coords([("a", 0, 0, 0)]), empty, 2.0)["classes"]["a"]
    assert (invented["precision"], invented["recall"], invented["f1"], invented["fp"]) == (0.0, 0.0, 0.0, 1)


def test_only_pairs_within_the_tolerance_can_match():
    # a maximum matching over all pairs would count 3; within 2 voxels only 2 pairs can hold
    gt = np.array([[0, 0, 0], [0, 0, 3.8], [0, 1.5, 3]])
    pred = np.array([[1.5, 0, 0], [-1.5, 0, 0], [0, 0, 1.9]])
    assert match(pred, gt, 2.0) == (2, 1, 1)


def test_large_crowded_case_counts_add_up():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 300, size=(3000, 3))
    pred = np.concatenate([gt[:2500] + rng.normal(0, 0.5, size=(2500, 3)), rng.uniform(0, 300, size=(400, 3))])
    tp, fp, fn = match(pred, gt, 2.0)
    assert tp >= 2490 and tp + fp == 2900 and tp + fn == 3000
