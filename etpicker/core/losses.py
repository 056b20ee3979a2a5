"""Training losses: multi-class soft Dice over all channels, optionally plus cross-entropy."""

import torch
import torch.nn.functional as F


def soft_target(class_ids, weight, n_channels):
    """Per-channel target B x C x ... from painted labels: channel c holds `weight` where the
    label is c (c >= 1), and the background channel takes what the classes leave, so soft
    (Gaussian) labels give soft targets that still sum to one."""
    class_ids = class_ids.long()
    one_hot = F.one_hot(class_ids, n_channels).movedim(-1, 1).to(weight.dtype)
    target = one_hot * weight.unsqueeze(1)
    target[:, 0] = 1.0 - target[:, 1:].sum(dim=1)
    return target


def soft_dice_loss(logits, target, smooth=1.0, summed=None, taught=None):
    """1 - mean over channels of the soft Dice coefficient, summed over the whole batch.

    Summing over the batch (not per patch) keeps a class absent from one patch from
    dominating the loss; `smooth` makes an absent class predicted absent score ~1.
    `summed` (distributed.Processes.summed): the batch's sums made those of every process's
    batch, so that several processes learn as one would on all their patches.
    `taught` (B x ..., or None for all ones): each voxel's weight in the loss; 0 leaves a
    voxel out, as if it were not in the patch (partial annotations: core/partial.py)."""
    probability = logits.float().softmax(dim=1)
    target = target.float()
    if taught is not None:
        probability, target = probability * taught.unsqueeze(1), target * taught.unsqueeze(1)
    dims = [0] + list(range(2, logits.dim()))
    overlap = (probability * target).sum(dim=dims)
    total = probability.sum(dim=dims) + target.sum(dim=dims)
    if summed is not None:
        overlap, total = summed(torch.stack([overlap, total]))
    dice = (2 * overlap + smooth) / (total + smooth)
    return 1.0 - dice.mean()


def dice_ce_loss(logits, target, ce_weight=0.0, summed=None, taught=None):
    """Soft Dice (`summed`, `taught`: see soft_dice_loss), plus `ce_weight` times
    cross-entropy against the (soft) target, averaged over the taught voxels."""
    loss = soft_dice_loss(logits, target, summed=summed, taught=taught)
    if ce_weight:
        log_probability = logits.float().log_softmax(dim=1)
        cross_entropy = -(target.float() * log_probability).sum(dim=1)
        if taught is None:
            cross_entropy = cross_entropy.mean()
        else:
            cross_entropy = (cross_entropy * taught).sum() / taught.sum().clamp(min=1.0)
        loss = loss + ce_weight * cross_entropy
    return loss
