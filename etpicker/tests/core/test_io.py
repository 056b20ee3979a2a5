import mrcfile
import numpy as np
import pytest

from etpicker.core.errors import InputError
from etpicker.core.io import Coords, check_inside, open_tomogram, read_coords, write_coords, write_volume
from etpicker.core.model_folder import read_config, write_config
from etpicker.core.normalise import robust_stats


def test_tomogram_round_trip_keeps_axes_and_voxel_size(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    write_volume(tmp_path / "tomo_a.mrc", volume, voxel_size=13.5)
    tomo = open_tomogram(tmp_path / "tomo_a.mrc")
    assert tomo.stem == "tomo_a"
    assert tomo.voxel_size == pytest.approx(13.5)
    assert isinstance(tomo.data, np.memmap)
    np.testing.assert_array_equal(tomo.data, volume)


def test_zero_voxel_size_means_unknown(tmp_path):
    write_volume(tmp_path / "t.mrc", np.zeros((2, 2, 2), np.float32), voxel_size=0)
    assert open_tomogram(tmp_path / "t.mrc").voxel_size is None


def _write_with_voxel_sizes(path, sizes):
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.float32))
        mrc.voxel_size = sizes


def test_voxels_that_are_not_cubic_are_refused(tmp_path):
    _write_with_voxel_sizes(tmp_path / "t.mrc", (10.0, 10.0, 20.0))
    with pytest.raises(InputError, match=r"not cubic \(10 x 10 x 20 Å"):
        open_tomogram(tmp_path / "t.mrc")
    # unless the caller states the voxel size (Scipion's sampling rate), which replaces the header's
    assert open_tomogram(tmp_path / "t.mrc", voxel_size=10.0).voxel_size == 10.0


def test_a_header_that_gives_only_some_axes_or_rounds_them_is_cubic(tmp_path):
    _write_with_voxel_sizes(tmp_path / "zero_z.mrc", (13.48, 13.48, 0.0))
    _write_with_voxel_sizes(tmp_path / "rounded.mrc", (13.48, 13.48, 13.5))
    assert open_tomogram(tmp_path / "zero_z.mrc").voxel_size == pytest.approx(13.48)
    assert open_tomogram(tmp_path / "rounded.mrc").voxel_size == pytest.approx(13.48)


def test_uint8_labels_stay_8_bit(tmp_path):
    labels = np.array([0, 1, 2, 3, 0, 0, 0, 1], np.uint8).reshape(2, 2, 2)
    write_volume(tmp_path / "l.mrc", labels)
    data = open_tomogram(tmp_path / "l.mrc").data
    assert data.dtype.itemsize == 1
    np.testing.assert_array_equal(data, labels)


def test_bad_tomograms_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.mrc"
    garbage.write_bytes(b"not an mrc file" * 100)
    with pytest.raises(InputError, match="garbage.mrc"):
        open_tomogram(garbage)
    with pytest.raises(InputError, match="missing.mrc"):
        open_tomogram(tmp_path / "missing.mrc")
    write_volume(tmp_path / "cut.mrc", np.zeros((8, 8, 8), np.float32))
    (tmp_path / "cut.mrc").write_bytes((tmp_path / "cut.mrc").read_bytes()[:-100])
    with pytest.raises(InputError, match="cut.mrc"):
        open_tomogram(tmp_path / "cut.mrc")
    with mrcfile.new(tmp_path / "image.mrc", overwrite=True) as mrc:
        mrc.set_data(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="image.mrc.*3D"):
        open_tomogram(tmp_path / "image.mrc")


def test_coords_round_trip_with_scores_and_string_classes(tmp_path):
    coords = Coords(np.array(["ribosome", "7", "a b"]), np.array([[1.5, 2, 3], [4, 5, 6], [0, 0, 0.25]]),
                    np.array([0.9, 0.5, 0.125]))
    write_coords(tmp_path / "c.csv", coords)
    back = read_coords(tmp_path / "c.csv")
    assert list(back.names) == ["ribosome", "7", "a b"]
    np.testing.assert_allclose(back.xyz, coords.xyz, atol=1e-3)
    np.testing.assert_allclose(back.score, coords.score, atol=1e-4)


def test_coords_tolerate_whitespace_and_no_score(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(" class , x , y , z \n\n 1 , 10 , 20 , 30 \n2,1.5,2.5,3.5\n")
    coords = read_coords(path)
    assert coords.score is None
    assert list(coords.names) == ["1", "2"]
    np.testing.assert_array_equal(coords.xyz, [[10, 20, 30], [1.5, 2.5, 3.5]])


def test_coords_saved_by_a_spreadsheet_with_a_byte_order_mark_are_read(tmp_path):
    (tmp_path / "c.csv").write_bytes("\ufeffclass,x,y,z\nribosome,1,2,3\n".encode("utf-8"))
    assert list(read_coords(tmp_path / "c.csv").names) == ["ribosome"]


def test_coords_not_in_utf8_are_an_input_error(tmp_path):
    (tmp_path / "c.csv").write_bytes("class,x,y,z\nribosom\xe9,1,2,3\n".encode("latin-1"))
    with pytest.raises(InputError, match="c.csv: not UTF-8"):
        read_coords(tmp_path / "c.csv")


def test_header_only_file_is_empty(tmp_path):
    (tmp_path / "c.csv").write_text("class,x,y,z,score\n")
    coords = read_coords(tmp_path / "c.csv")
    assert len(coords) == 0 and coords.xyz.shape == (0, 3)


@pytest.mark.parametrize("text, message", [
    ("class,x,y\n1,2,3\n", "line 1: missing column.*z"),
    ("class,x,y,z\n1,2,3,4\n1,2,three,4\n", "line 3: column 'y' is not a number"),
    ("class,x,y,z\n1,2,nan,4\n", "line 2: column 'y' is not finite"),
    ("class,x,y,z\n1,2,3\n", "line 2: expected 4 values"),
    ("", "empty coordinate file"),
])
def test_bad_coordinate_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=f"bad.csv.*{message}"):
        read_coords(path)


def test_check_inside_counts_outside_centres():
    shape_zyx = (10, 20, 30)
    check_inside([[-0.5, -0.5, -0.5], [29.5, 19.5, 9.5]], shape_zyx, "c.csv")
    with pytest.raises(InputError, match="c.csv: 2 of 3 centres fall outside"):
        check_inside([[5, 5, 5], [30, 5, 5], [5, 5, 10]], shape_zyx, "c.csv")


def test_config_round_trip_and_missing_config(tmp_path):
    write_config(tmp_path / "model", {"classes": ["a"], "patch": 64})
    assert read_config(tmp_path / "model") == {"classes": ["a"], "patch": 64}
    with pytest.raises(InputError, match="config.json"):
        read_config(tmp_path)


def test_robust_stats_ignore_gold_beads():
    rng = np.random.default_rng(0)
    volume = rng.normal(3.0, 2.0, size=(40, 50, 50)).astype(np.float32)
    volume[::9, ::13, ::17] = -1000.0  # a few very dark beads (0.06 % of voxels)
    centre, scale = robust_stats(volume)
    assert centre == pytest.approx(3.0, abs=0.05)
    assert scale == pytest.approx(2.0, rel=0.03)


def test_robust_stats_reject_nan_and_constant_volumes():
    volume = np.ones((8, 8, 8), np.float32)
    with pytest.raises(InputError, match="constant"):
        robust_stats(volume)
    volume[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        robust_stats(volume)
