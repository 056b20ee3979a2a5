"""Partial annotations (`train --annotations partial`): what the loss leaves out, how
validation scores, and that a partly annotated tomogram trains a better picker with it."""
import numpy as np
import pytest
import torch

from etpicker.core import io, metrics, partial, simulate
from etpicker.core.cli import main
from etpicker.core.errors import InputError
from etpicker.core.labels import paint_labels
from etpicker.core.losses import dice_ce_loss, soft_target
from etpicker.core.model_folder import read_config
from etpicker.core.settings import TrainSettings

N = 32
DIAMETERS = [5, 7]


def _confident(logits, class_channel, zyx, half=2):
    """Make the network 'see' a particle of `class_channel` in a small cube at zyx."""
    z, y, x = zyx
    logits[0, :, z - half:z + half + 1, y - half:y + half + 1, x - half:x + half + 1] = -5.0
    logits[0, class_channel, z - half:z + half + 1, y - half:y + half + 1, x - half:x + half + 1] = 5.0


def _batch():
    """One patch annotated with a class-1 particle at (8, 8, 8); the network also finds a
    class-2 particle at (24, 24, 24), far from it, and a class-1 one at (8, 8, 13), next to it."""
    ids, _ = paint_labels((N,) * 3, [[8, 8, 8]], [1], DIAMETERS)
    class_ids = torch.from_numpy(ids).long()[None]
    logits = torch.zeros(1, 3, N, N, N)
    logits[0, 0] = 4.0  # background elsewhere
    _confident(logits, 2, (24, 24, 24))
    _confident(logits, 1, (8, 8, 13))
    return logits, class_ids


def test_partial_targets_leave_out_the_particles_the_network_finds_away_from_annotations():
    logits, class_ids = _batch()
    ids, taught = partial.partial_targets(logits, class_ids, DIAMETERS)
    assert torch.equal(ids, class_ids)  # nothing is relabelled, only left out
    blob_reach, annotation_reach = partial.reaches(DIAMETERS)
    # the found particle and a label radius around it are not taught
    around = taught[0, 24 - 2 - blob_reach:24 + 3 + blob_reach, 24 - 2 - blob_reach:24 + 3 + blob_reach,
                    24 - 2 - blob_reach:24 + 3 + blob_reach]
    assert around.sum() == 0
    # annotated voxels and the surroundings of an annotation (even where the network finds
    # something) are taught in full; plain background far from annotations is taught at the
    # unlabelled weight, since an unannotated particle the network misses may sit there
    assert taught[0][class_ids[0] > 0].min() == 1
    assert taught[0, 8, 8, 13] == 1 and taught[0, 8, 8, 8 + annotation_reach] == 1
    assert 0 < partial.UNLABELLED_WEIGHT < 1
    assert taught[0, 2, 28, 2] == partial.UNLABELLED_WEIGHT and taught[0, 20, 4, 4] == partial.UNLABELLED_WEIGHT
    # what is left out is a small part of the patch
    assert 0 < (taught == 0).float().mean() < 0.1


def test_the_loss_ignores_what_partial_annotations_leave_out():
    logits, class_ids = _batch()
    _, taught = partial.partial_targets(logits, class_ids, DIAMETERS)
    target = soft_target(class_ids, torch.ones(class_ids.shape), 3)
    for ce_weight in (0.0, 1.0):
        loss = dice_ce_loss(logits, target, ce_weight, taught=taught)
        changed = logits.clone()
        changed[:, :, taught[0] == 0] = torch.randn(3, int((taught == 0).sum()))  # any prediction there
        assert dice_ce_loss(changed, target, ce_weight, taught=taught).item() == pytest.approx(loss.item())
        # ... while a change of what is taught changes the loss
        taught_changed = logits.clone()
        taught_changed[0, 1, 20, 4, 4] = 8.0
        assert dice_ce_loss(taught_changed, target, ce_weight, taught=taught).item() > loss.item() + 1e-6
        # gradients reach no left-out voxel
        leaf = logits.clone().requires_grad_()
        dice_ce_loss(leaf, target, ce_weight, taught=taught).backward()
        assert leaf.grad[:, :, taught[0] == 0].abs().max() == 0
    # the same batch with complete annotations is taught everywhere: the found particle is background
    leaf = logits.clone().requires_grad_()
    dice_ce_loss(leaf, target, 1.0).backward()
    assert leaf.grad[0, :, 24, 24, 24].abs().max() > 0


def test_the_annotated_score_chooses_what_the_full_truth_would_where_f1_on_the_annotations_does_not():
    """At two thresholds the network picks (true picks T, false picks F) of 100 particles,
    30 % annotated at random: the loose threshold is truly better (F1 0.81 against 0.75),
    but F1 against the annotations, which counts unannotated particles as false, prefers
    the strict one. The annotated score prefers the loose one, as the truth does."""
    particles, fraction = 100, 0.3
    thresholds = {"strict": (60, 0), "loose": (95, 40)}

    def against_annotations(true, false):
        tp = round(fraction * true)
        return tp, false + true - tp, round(fraction * particles) - tp

    truth_f1 = {name: metrics.f1_of(t, f, particles - t) for name, (t, f) in thresholds.items()}
    annotated_f1 = {name: metrics.f1_of(*against_annotations(*counts)) for name, counts in thresholds.items()}
    score = {name: partial.annotated_score(*against_annotations(*counts)) for name, counts in thresholds.items()}
    assert max(truth_f1, key=truth_f1.get) == "loose"
    assert max(annotated_f1, key=annotated_f1.get) == "strict"
    assert max(score, key=score.get) == "loose"
    assert partial.annotated_score(0, 5, 5) == 0.0


def test_annotations_must_be_complete_or_partial():
    assert TrainSettings().annotations == "complete"
    with pytest.raises(InputError, match="complete or partial"):
        TrainSettings(annotations="some")


# 48x96x96 at SNR 4 holds 45 particles; one in three is annotated.
SIMULATED = dict(shape=(48, 96, 96), snr=4.0)
TRAIN = ("--epochs", 4, "--patch", 32, "--batch", 4, "--widths", "8,16,24,32", "--lr", "5e-3", "--diameter", 11,
         "--pad", 4, "--seed", 0, "--device", "cpu", "--no-coordconv", "--no-shape-check")
ANNOTATED_FRACTION = 0.35


def test_partial_annotations_train_a_picker_that_finds_the_unannotated_particles_too(tmp_path, capsys):
    """A tomogram with about a third of its particles annotated (the rest present, unannotated)
    trains twice through the command line, telling `train` the annotations are complete and
    that they are partial; each model picks a held-out, fully annotated tomogram. Measured
    (seed 0): F1 0.701 (recall 0.600) complete, 0.967 (recall 0.978) partial."""
    rng = np.random.default_rng(0)
    for stem, seed in (("train", 0), ("test", 1)):
        tomo = simulate.simulate_tomogram(SIMULATED["shape"], rng=seed, snr=SIMULATED["snr"])
        io.write_volume(tmp_path / f"{stem}.mrc", tomo.volume, 10.0)
        names = np.array(["particle"] * len(tomo.names))
        io.write_coords(tmp_path / f"{stem}_all.csv", io.Coords(names, tomo.xyz))
        keep = rng.permutation(len(names))[:round(ANNOTATED_FRACTION * len(names))]
        (tmp_path / "clicks").mkdir(exist_ok=True)
        io.write_coords(tmp_path / "clicks" / f"{stem}.csv", io.Coords(names[keep], tomo.xyz[keep]))
    truth = io.read_coords(tmp_path / "test_all.csv")
    scores = {}
    for mode in ("complete", "partial"):
        model = tmp_path / mode
        assert main(["train", "--tomos", tmp_path / "train.mrc", "--coords", tmp_path / "clicks" / "train.csv",
                     "--out", model, "--annotations", mode, *TRAIN]) == 0
        out = capsys.readouterr().out
        assert read_config(model)["training"]["annotations"] == mode
        assert ("partial annotations: a pick matching no annotation" in out) == (mode == "partial")
        assert main(["pick", "--model", model, "--tomos", tmp_path / "test.mrc", "--out", tmp_path / f"picks_{mode}",
                     "--device", "cpu", "--min-distance", 8]) == 0
        picks = io.read_coords(tmp_path / f"picks_{mode}" / "test.csv")
        scores[mode] = metrics.evaluate(picks, truth, 2.75)[metrics.ALL]
    complete, partly = scores["complete"], scores["partial"]
    assert partly["recall"] >= complete["recall"] + 0.15, scores
    assert partly["f1"] >= complete["f1"] + 0.1, scores
    assert partly["f1"] >= 0.85, scores
