import numpy as np
from scipy.spatial import cKDTree

from etpicker.core.labels import paint_labels
from etpicker.core.negatives import binned, hard_negatives
from etpicker.core.sampling import PatchSampler, PatchSource

SHAPE = (40, 64, 64)
ANNOTATED = np.array([[20, 16, 16], [20, 48, 48]], float)
OTHERS = np.array([[20, 16, 48], [20, 48, 16]], float)  # unannotated macromolecules


def _crowded_volume():
    ids, _ = paint_labels(SHAPE, np.vstack([ANNOTATED, OTHERS]), [1, 1, 1, 1], [9], "ball")
    noise = np.random.default_rng(0).normal(0, 0.05, SHAPE)
    return (-1.0 * (ids > 0) + noise).astype(np.float32)  # dark protein, as in most tomograms


def test_binned_averages_blocks_slab_by_slab():
    volume = np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4)
    small = binned(volume, 2)
    assert small.shape == (4, 3, 2)
    assert small[1, 2, 0] == volume[2:4, 4:6, 0:2].mean()


def test_hard_negatives_are_the_unannotated_blobs():
    found = hard_negatives(_crowded_volume(), ANNOTATED, [9], SHAPE, count=2)
    assert len(found) == 2
    distance, _ = cKDTree(OTHERS).query(found)
    assert np.all(distance <= 2.0)
    assert np.all(cKDTree(ANNOTATED).query(found)[0] > 9)


def test_hard_negatives_respect_the_training_limit():
    limit = (40, 64, 32)  # x >= 32 is a held-out validation block
    found = hard_negatives(_crowded_volume(), ANNOTATED, [9], limit, count=10)
    assert len(found) and np.all(found[:, 2] < 32)


def test_sampler_centres_the_hard_negative_share_of_patches_on_negatives():
    volume = _crowded_volume()
    source = PatchSource(volume, 0.0, 1.0, ANNOTATED, np.array([1, 1]), np.array([True, True]), SHAPE,
                         negatives_zyx=OTHERS)
    sampler = PatchSampler([source], [9], "tball", 16, background_fraction=0.0, hard_negative_fraction=1.0)
    plan = sampler.epoch_plan(np.random.default_rng(0))
    assert sampler.n_hard == 2 and len(plan) == 4
    centres = np.array([origin for _, origin in plan]) + 8
    near_other = cKDTree(OTHERS).query(centres)[0] <= 16 // 5 * np.sqrt(3) + 1
    assert near_other.sum() == 2
