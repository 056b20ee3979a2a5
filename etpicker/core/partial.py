"""Partial annotations (`train --annotations partial`): a user who clicked 30 of a
tomogram's 120 particles has not said that the other 90 are background.

Training: weak labels paint the annotated particles; every other voxel is "unlabelled",
not background. Where the network, as it trains, already finds a particle of a class
(a voxel of class probability above IGNORE_CONFIDENCE) away from every annotation, that
blob and a label radius around it get no loss at all, so the network is not taught that
an unannotated particle it recognises is background. The rest of the unlabelled voxels
(empty solvent, membranes, gold, proteins of other kinds the network does not take for a
target, and the unannotated particles it does not find yet) are taught as background at
UNLABELLED_WEIGHT, so that a particle not found yet is pushed down less than an annotated
one is pulled up. Voxels near an annotation are always taught in full, so an annotated
particle's own halo is never left out. The rule is online: it needs no
pass over the tomograms, only the network's forward pass of each training patch.

Validation and the shape checks: an unmatched pick may be an unannotated particle, so
precision against the annotations ("apparent precision") underestimates true precision by
the annotated fraction, which is unknown. Recall on the annotated particles is unbiased
when the annotated ones are a random choice, and recall x apparent precision is then
proportional to recall x precision (Lee & Liu's criterion for positive-unlabelled data):
the score thresholds, the kept epoch and the shape checks' thresholds and keep decisions
are chosen by its square root, ANNOTATED_SCORE. The shape checks are still fitted on
annotated (true) against unmatched (false) picks: a classifier of annotated against
unlabelled examples ranks examples as one of true against false would (Elkan & Noto),
and only its ranking and a threshold chosen by that score are used.
"""
import math

import torch
import torch.nn.functional as F

from .settings import ANNOTATION_MODES

COMPLETE, PARTIAL = ANNOTATION_MODES
# Class probability that makes an unannotated voxel part of a found particle. Realistic, 30 %
# annotated, 15 min (bench/README.md): class-agnostic F1 0.689 at 0.5, 0.764 at 0.3, 0.833 at
# 0.2, 0.824 at 0.1: the sooner an unannotated particle stops being taught as background, the
# more of them the network learns to find.
IGNORE_CONFIDENCE = 0.2
RULES = ("ignore", "weight", "self")  # the rules measured (bench/README.md); RULE is partial's
RULE = "ignore"  # realistic, 30 % annotated (stop 27, weight 1): class-agnostic F1 0.859, self 0.412, complete 0.691
# Loss weight of the unlabelled voxels still taught as background (every rule). Realistic, 30 %
# annotated, 15 min, both weights on the same data and seed, seeds 0 and 1 (bench/README.md):
# ignore at weight 1 class-agnostic F1 0.856 / 0.785, at 0.3 0.908 / 0.876.
UNLABELLED_WEIGHT = 0.3


def dilated(mask, reach):
    """A B x Z x Y x X boolean mask grown by `reach` voxels along each axis (a cube),
    by three one-axis max-pools, cheap even for large reaches."""
    grown = mask.float().unsqueeze(1)
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = 2 * reach + 1
        padding = [k // 2 for k in kernel]
        grown = F.max_pool3d(grown, kernel, stride=1, padding=padding)
    return grown.squeeze(1) > 0


def reaches(diameters):
    """(reach of a found blob, reach of an annotation) in voxels, from the weak-label
    diameters: a found blob is left out with a label radius around it; voxels within a
    label diameter of an annotated label are always taught."""
    largest = max(diameters)
    return int(math.ceil(largest / 2)), int(largest)


def partial_targets(logits, class_ids, diameters, rule=None):
    """(class ids, taught weight B x ...) of a partially annotated batch: `class_ids` as
    painted (0 unlabelled), `logits` the network's (detached here). See the module's
    docstring; `rule` (one of RULES, default RULE) is for the benchmarks' comparison."""
    rule = rule or RULE
    blob_reach, annotation_reach = reaches(diameters)
    far = ~dilated(class_ids > 0, annotation_reach)
    unlabelled = (class_ids == 0) & far
    if rule not in RULES:
        raise ValueError(f"unknown partial-annotation rule {rule!r}; one of {RULES}")
    left_out = torch.zeros_like(unlabelled)  # "weight": positive-unlabelled weighting alone
    if rule != "weight":
        with torch.no_grad():
            probability, found_class = logits.detach().float().softmax(dim=1)[:, 1:].max(dim=1)
        found = (probability > IGNORE_CONFIDENCE) & far
        left_out = dilated(found, blob_reach) & unlabelled
        if rule == "self":  # self-training: the confident core is taught as its class
            class_ids = torch.where(found, found_class + 1, class_ids)
            left_out &= ~found
    background_weight = torch.where(unlabelled & (class_ids == 0), UNLABELLED_WEIGHT, 1.0)
    return class_ids, torch.where(left_out, 0.0, background_weight).float()


def annotated_score(tp, fp, fn):
    """The validation score of partial annotations: sqrt(recall on the annotated particles
    x apparent precision), counts against the annotations (module docstring)."""
    if tp == 0:
        return 0.0
    return math.sqrt(tp / (tp + fn) * tp / (tp + fp))


def validation_note(annotations):
    """What validation and the shape checks do with these annotations, for the log; None
    when the annotations are complete."""
    if annotations != PARTIAL:
        return None
    return ("partial annotations: a pick matching no annotation may be an unannotated particle, so validation "
            "ranks epochs and chooses score thresholds and shape checks by sqrt(recall on the annotated particles "
            "x precision against them), proportional to sqrt(recall x precision) when the annotated particles are "
            "a random choice; logged as val_score (history.csv's val_f1 column holds it). The shape checks are "
            "fitted on the picks matching an annotation against the others")
