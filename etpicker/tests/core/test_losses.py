import pytest
import torch

from etpicker.core.losses import dice_ce_loss, soft_dice_loss, soft_target


def _labels():
    ids = torch.zeros(2, 8, 8, 8, dtype=torch.uint8)
    ids[0, 2:5, 2:5, 2:5] = 1
    ids[1, 4:7, 1:4, 3:6] = 2
    return ids


def _logits_for(ids, n_channels=3, confidence=20.0):
    return torch.nn.functional.one_hot(ids.long(), n_channels).movedim(-1, 1).float() * confidence


def test_perfect_prediction_scores_near_zero_and_wrong_near_one():
    ids = _labels()
    target = soft_target(ids, torch.ones(ids.shape), 3)
    assert soft_dice_loss(_logits_for(ids), target).item() < 1e-3
    wrong = (ids.long() + 1) % 3
    assert soft_dice_loss(_logits_for(wrong), target).item() > 0.97


def test_soft_target_sums_to_one_with_gaussian_weights():
    ids = _labels()
    weight = torch.rand(ids.shape) * (ids > 0)
    target = soft_target(ids, weight, 3)
    assert torch.allclose(target.sum(dim=1), torch.ones(ids.shape))
    assert torch.equal(target[:, 1], weight * (ids == 1))


def test_cross_entropy_term_adds_to_dice_and_prefers_the_right_answer():
    ids = _labels()
    target = soft_target(ids, torch.ones(ids.shape), 3)
    uncertain = _logits_for(ids, confidence=1.0)
    assert dice_ce_loss(uncertain, target, ce_weight=0.5).item() > soft_dice_loss(uncertain, target).item()
    assert dice_ce_loss(_logits_for(ids), target, ce_weight=0.5).item() == pytest.approx(0.0, abs=1e-3)


def test_loss_has_gradients():
    ids = _labels()
    logits = torch.zeros(2, 3, 8, 8, 8, requires_grad=True)
    dice_ce_loss(logits, soft_target(ids, torch.ones(ids.shape), 3), ce_weight=1.0).backward()
    assert logits.grad.abs().sum() > 0
