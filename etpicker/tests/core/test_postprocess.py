import numpy as np
import pytest
import torch

from etpicker.core.labels import paint_labels
from etpicker.core.postprocess import deduplicate, ideal_score, mp_nms

torch.set_num_threads(1)


def test_two_touching_spheres_give_two_centres():
    centres = [[20, 20, 20], [20, 20, 29]]  # diameter 9: the balls touch
    class_map, _ = paint_labels((40, 40, 50), centres, [1, 1], [9], "ball")
    ids, zyx, score = mp_nms(class_map, [9])
    assert len(zyx) == 2
    found = zyx[np.argsort(zyx[:, 2])]
    np.testing.assert_allclose(found, centres, atol=1.0)
    assert np.all(ids == 1)


@pytest.mark.parametrize("blob", [1, 2, 3])
def test_a_tiny_blob_is_rejected_but_a_particle_is_kept(blob):
    class_map, _ = paint_labels((40, 40, 40), [[12, 12, 12]], [1], [9], "tball")
    class_map[28:28 + blob, 28:28 + blob, 28:28 + blob] = 1
    _, zyx, score = mp_nms(class_map, [9])
    np.testing.assert_allclose(zyx, [[12, 12, 12]], atol=0.5)
    assert score[0] >= ideal_score(9)


@pytest.mark.parametrize("diameter", [3, 4, 5, 6])
def test_small_particles_fully_segmented_are_picked(diameter):
    class_map, _ = paint_labels((24, 24, 24), [[12, 12, 12]], [1], [diameter], "ball")
    _, zyx, _ = mp_nms(class_map, [diameter])
    assert len(zyx) == 1


def test_even_diameter_centre_is_found_between_voxels():
    class_map, _ = paint_labels((30, 30, 30), [[15, 15, 15]], [1], [8], "ball")
    _, zyx, _ = mp_nms(class_map, [8])
    np.testing.assert_allclose(zyx, [[14.5, 14.5, 14.5]], atol=0.05)  # the cube spans 11..18


def test_classes_are_separate_and_named_by_their_id():
    class_map, _ = paint_labels((30, 30, 60), [[15, 15, 12], [15, 15, 40]], [2, 1], [9, 15], "tball")
    ids, zyx, _ = mp_nms(class_map, [9, 15])
    assert list(ids) == [1, 2]
    np.testing.assert_allclose(zyx, [[15, 15, 40], [15, 15, 12]], atol=0.5)


def test_slabs_give_the_whole_volume_result():
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 1, size=(40, 3)) * [48, 40, 44]
    class_map, _ = paint_labels((48, 40, 44), centres, rng.integers(1, 3, 40), [7, 12], "tball")
    class_map[20:40, 5:30, 10:40] = 2  # a large flat region: plateau thinning must be slab-exact too
    whole = mp_nms(class_map, [7, 12], slab=48)
    for slab in (1, 5, 13):
        parts = mp_nms(class_map, [7, 12], slab=slab)
        for a, b in zip(whole, parts):
            np.testing.assert_array_equal(a, b)
    assert len(whole[0]) > 10


def test_min_score_and_min_distance_can_be_set():
    class_map, _ = paint_labels((40, 40, 60), [[20, 20, 15], [20, 20, 30]], [1, 1], [11], "ball")
    assert len(mp_nms(class_map, [11])[0]) == 2
    assert len(mp_nms(class_map, [11], min_distance=16)[0]) == 1
    assert len(mp_nms(class_map, [11], min_score=0.99)[0]) == 0


def test_deduplicate_keeps_the_higher_score():
    zyx = np.array([[0, 0, 0], [0, 0, 3], [0, 0, 6], [0, 0, 20]], float)
    score = np.array([0.5, 0.9, 0.6, 0.1])
    kept = deduplicate(zyx, score, min_distance=4)
    assert sorted(kept) == [1, 3]  # 1 beats both neighbours; 3 is alone
    assert sorted(deduplicate(zyx, score, min_distance=3)) == [0, 1, 2, 3]  # exactly 3 apart is not closer


def test_an_over_segmented_volume_gives_a_few_picks_not_one_per_voxel():
    class_map = np.ones((40, 60, 60), np.uint8)
    ids, zyx, score = mp_nms(class_map, [9])
    assert 1 <= len(ids) <= 5


def test_empty_map_gives_no_particles():
    ids, zyx, score = mp_nms(np.zeros((10, 10, 10), np.uint8), [5, 7])
    assert ids.shape == (0,) and zyx.shape == (0, 3) and score.shape == (0,)


def test_a_particle_shared_between_two_classes_is_picked_once_as_the_majority_class():
    class_map = np.zeros((32, 32, 32), dtype=np.uint8)
    ball, _ = paint_labels((32, 32, 32), [[16, 16, 16]], [1], [13], "ball")
    class_map[ball > 0] = 2
    class_map[:, :, :13][ball[:, :, :13] > 0] = 1  # a slice of the particle went to class 1
    ids, zyx, score = mp_nms(class_map, [13, 13], min_score=0.05)  # both classes have maxima
    assert list(ids) == [2]
    assert np.abs(zyx[0] - 16).max() <= 2


def test_touching_particles_of_different_sizes_are_both_kept():
    # 5.8 voxels apart: more than half the small diameter, less than half the large one
    class_map, _ = paint_labels((40, 40, 60), [[20, 20, 20], [20, 20, 25]], [1, 2], [7, 15], "ball")
    ids, zyx, _ = mp_nms(class_map, [7, 15])
    assert list(ids) == [1, 2]
    np.testing.assert_allclose(zyx[0], [20, 20, 20], atol=0.5)
