
import numpy as np
import pytest

from etpicker.core.errors import InputError
from etpicker.core.labels import paint_labels


def _count(kind, diameter):
    ids, _ = paint_labels((40, 40, 40), [[20, 20, 20]], [1], [diameter], kind)
    return int((ids == 1).sum())


@pytest.mark.parametrize("kind, diameter, voxels", [
    ("cubic", 3, 27), ("cubic", 4, 64),
    ("ball", 3, 7), ("ball", 4, 8), ("ball", 5, 33),
    ("tball", 3, 19), ("tball", 4, 32), ("tball", 5, 93),
    ("gaussian", 4, 32),
])
def test_voxel_counts_for_odd_and_even_diameters(kind, diameter, voxels):
    assert _count(kind, diameter) == voxels


def test_even_diameter_cube_spans_d_voxels_from_p_minus_half_d():
    ids, _ = paint_labels((20, 20, 20), [[10, 10, 10]], [1], [4], "cubic")
    z, y, x = np.nonzero(ids)
    assert (z.min(), z.max(), y.min(), x.max()) == (8, 11, 8, 11)


def test_tball_is_ball_cut_by_cube_faces():
    ids, _ = paint_labels((30, 30, 30), [[15, 15, 15]], [1], [9], "tball")
    assert ids[15, 15, 11] == 1 and ids[15, 15, 10] == 0  # face centre inside, beyond the cube outside
    assert ids[11, 11, 15] == 1  # edge centre at sqrt(2) r
    assert ids[11, 11, 11] == 0  # cube corner at sqrt(3) r


def test_gaussian_weight_peaks_at_centre_and_background_weight_is_one():
    ids, weight = paint_labels((30, 30, 30), [[15, 15, 15]], [1], [9], "gaussian")
    assert weight[15, 15, 15] == 1.0
    sigma = 9 / 4
    assert weight[15, 15, 19] == pytest.approx(np.exp(-16 / (2 * sigma ** 2)))
    assert np.all(weight[ids == 0] == 1.0)


def test_overlap_goes_to_nearest_centre_not_last_painted():
    # cubes x 3..9 and 7..13 overlap on x 7..9; x=8 is equally far from both (tie: lower index)
    ids, _ = paint_labels((11, 11, 20), [[5, 5, 6], [5, 5, 10]], [1, 2], [7, 7], "cubic")
    assert list(ids[5, 5, 2:15]) == [0] + [1] * 6 + [2] * 5 + [0]


def test_tie_goes_to_lower_index_whichever_order():
    ids_a, _ = paint_labels((9, 9, 16), [[4, 4, 5], [4, 4, 9]], [1, 2], [5, 5], "cubic")
    ids_b, _ = paint_labels((9, 9, 16), [[4, 4, 9], [4, 4, 5]], [2, 1], [5, 5], "cubic")
    assert ids_a[4, 4, 7] == 1 and ids_b[4, 4, 7] == 2


def test_masks_are_clipped_at_the_border_and_patches_match_the_volume():
    centres = [[0, 0, 0], [9, 5, 17], [4, 10, 10]]
    ids, _ = paint_labels((10, 12, 18), centres, [1, 2, 1], [7, 5], "tball")
    assert ids[0, 0, 0] == 1 and ids[9, 5, 17] == 2
    patch, _ = paint_labels((6, 6, 6), centres, [1, 2, 1], [7, 5], "tball", origin=(4, 6, 12))
    np.testing.assert_array_equal(patch, ids[4:10, 6:12, 12:18])


def test_bad_inputs():
    with pytest.raises(InputError, match="label type"):
        paint_labels((5, 5, 5), [[2, 2, 2]], [1], [3], "sphere")
    with pytest.raises(InputError, match="class ids"):
        paint_labels((5, 5, 5), [[2, 2, 2]], [2], [3], "ball")
    with pytest.raises(InputError, match="diameters"):
        paint_labels((5, 5, 5), [[2, 2, 2]], [1], [2.5], "ball")
    with pytest.raises(InputError, match=">= 3"):  # a 2-voxel ball would paint nothing
        paint_labels((5, 5, 5), [[2, 2, 2]], [1], [2], "ball")


def test_centres_round_to_the_nearest_voxel():
    ids, _ = paint_labels((21, 21, 21), [[10, 10, 10.6]], [1], [3], "ball")
    assert list(ids[10, 10, 9:14]) == [0, 1, 1, 1, 0]  # centred on voxel 11, not 10
