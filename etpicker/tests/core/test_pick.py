import numpy as np
import pytest
import torch
from torch import nn

from etpicker.core.errors import InputError
from etpicker.core.io import open_tomogram, write_volume
from etpicker.core.labels import paint_labels
from etpicker.core.model import build_model
from etpicker.core.model_folder import write_config
from etpicker.core.model_store import load_model
from etpicker.core.pick import pick_tomogram

torch.set_num_threads(1)

CONFIG = {"format": 1, "classes": ["small", "big"], "diameters": [7, 11], "label_type": "tball",
          "voxel_size": 10.0, "patch": 16, "pad": 3, "widths": [4, 4, 8, 8], "coordconv": True, "pyramid": True}


def test_load_model_restores_the_saved_network(tmp_path):
    torch.manual_seed(0)
    saved = build_model(CONFIG).eval()
    write_config(tmp_path, CONFIG)
    torch.save(saved.state_dict(), tmp_path / "weights.pt")
    model, config = load_model(tmp_path, "cpu")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), saved(x))
    assert config["classes"] == ["small", "big"]


def test_load_model_explains_missing_or_mismatched_files(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        load_model(tmp_path)
    write_config(tmp_path, CONFIG)
    with pytest.raises(InputError, match="weights.pt: missing"):
        load_model(tmp_path)
    torch.save(build_model({**CONFIG, "classes": ["one"]}).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InputError, match="does not match"):
        load_model(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"truncated")
    with pytest.raises(InputError, match="weights.pt"):
        load_model(tmp_path)


class ContrastNet(nn.Module):
    """A stand-in network: bright voxels are class 1, dark voxels class 2."""

    def forward(self, x):
        smooth = nn.functional.avg_pool3d(x, 3, stride=1, padding=1)
        return torch.cat([torch.zeros_like(x), 3 * (smooth - 1), 3 * (-smooth - 1)], dim=1)


def test_pick_tomogram_finds_particles_with_class_names_in_xyz_order(tmp_path):
    shape = (30, 40, 50)
    centres_zyx = np.array([[10, 12, 14], [20, 28, 36], [15, 30, 10]], float)
    ids, _ = paint_labels(shape, centres_zyx, [1, 1, 2], CONFIG["diameters"], "ball")
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 0.3, shape).astype(np.float32) + 3.0 * (ids == 1) - 3.0 * (ids == 2)
    write_volume(tmp_path / "t.mrc", volume)
    probability = np.zeros(shape, np.float32)
    coords = pick_tomogram(ContrastNet(), CONFIG, open_tomogram(tmp_path / "t.mrc"), probability_out=probability)
    order = np.lexsort(coords.xyz.T)
    expected = centres_zyx[:, ::-1]
    np.testing.assert_allclose(coords.xyz[order], expected[np.lexsort(expected.T)], atol=1.0)
    assert sorted(coords.names) == ["big", "small", "small"]
    assert np.all(coords.score > 0)
    assert probability[10, 12, 14] > 0.9 and probability[0, 0, 0] < 0.2


def test_pick_tomogram_honours_the_models_tuned_min_score_unless_overridden(tmp_path):
    shape = (30, 40, 50)
    ids, _ = paint_labels(shape, np.array([[10, 12, 14], [20, 28, 36]], float), [1, 1], CONFIG["diameters"], "ball")
    write_volume(tmp_path / "t.mrc", (3.0 * (ids == 1)).astype(np.float32))
    tomogram = open_tomogram(tmp_path / "t.mrc")
    assert len(pick_tomogram(ContrastNet(), CONFIG, tomogram)) == 2
    # pooled scores never exceed 1 and a 7-voxel ball's ideal is ~0.3: 4x the ideal drops both
    strict = dict(CONFIG, relative_min_score=4.0)
    assert len(pick_tomogram(ContrastNet(), strict, tomogram)) == 0
    assert len(pick_tomogram(ContrastNet(), strict, tomogram, min_score=0.0)) == 2


def test_each_class_is_cut_at_its_own_tuned_min_score(tmp_path):
    shape = (30, 40, 50)
    ids, _ = paint_labels(shape, np.array([[10, 12, 14], [20, 28, 36]], float), [1, 2], CONFIG["diameters"], "ball")
    write_volume(tmp_path / "t.mrc", (3.0 * (ids == 1) - 3.0 * (ids == 2)).astype(np.float32))
    tomogram = open_tomogram(tmp_path / "t.mrc")  # one bright "small" and one dark "big" particle
    for strict, kept in (("big", ["small"]), ("small", ["big"])):
        tuned = dict(CONFIG, relative_min_score={"small": 0.2, "big": 0.2, strict: 4.0})
        assert list(pick_tomogram(ContrastNet(), tuned, tomogram).names) == kept


def test_threshold_and_pad_given_to_pick_are_used(tmp_path):
    shape = (30, 40, 50)
    ids, _ = paint_labels(shape, np.array([[10, 12, 14]], float), [1], CONFIG["diameters"], "ball")
    write_volume(tmp_path / "t.mrc", (3.0 * (ids == 1)).astype(np.float32))
    tomogram = open_tomogram(tmp_path / "t.mrc")
    loose, strict = (pick_tomogram(ContrastNet(), CONFIG, tomogram, threshold=t, min_score=0.0) for t in (0.3, 0.95))
    # a stricter foreground threshold segments less of the ball's blurred rim: a lower score
    loose, strict = loose.subset(loose.names == "small"), strict.subset(strict.names == "small")
    assert len(loose) == len(strict) == 1 and strict.score[0] < loose.score[0]
    with pytest.raises(InputError, match="pad"):  # 2 * 8 is not below the model's patch 16
        pick_tomogram(ContrastNet(), CONFIG, tomogram, pad=8)


def test_a_class_with_a_shape_check_is_picked_at_the_candidate_level_and_the_check_decides(tmp_path):
    shape = (30, 40, 50)
    ids, _ = paint_labels(shape, np.array([[10, 12, 14], [20, 28, 36]], float), [1, 1], CONFIG["diameters"], "ball")
    write_volume(tmp_path / "t.mrc", (3.0 * (ids == 1)).astype(np.float32))
    tomogram = open_tomogram(tmp_path / "t.mrc")
    n_features = 4 * (3 + 1) + 1  # profiles to radius 3, then the network score

    def check(bias):  # a check that ignores the features: it accepts (bias > 0) or rejects everything
        return {"radius": 3, "mean": [0.0] * n_features, "std": [1.0] * n_features,
                "weights": [0.0] * n_features, "bias": bias, "threshold": 0.5}

    strict = dict(CONFIG, relative_min_score=4.0)  # the tuned threshold alone would drop both
    assert len(pick_tomogram(ContrastNet(), dict(strict, shape_check={"small": check(5.0)}), tomogram)) == 2
    assert len(pick_tomogram(ContrastNet(), dict(strict, shape_check={"small": check(-5.0)}), tomogram)) == 0
    unchecked = pick_tomogram(ContrastNet(), dict(CONFIG, shape_check={"small": check(-5.0)}), tomogram,
                              shape_check=False)
    assert len(unchecked) == 2


def test_a_likeness_check_keeps_the_class_score_threshold_and_every_check_must_pass(tmp_path):
    shape = (30, 40, 50)
    ids, _ = paint_labels(shape, np.array([[10, 12, 14], [20, 28, 36]], float), [1, 1], CONFIG["diameters"], "ball")
    write_volume(tmp_path / "t.mrc", (3.0 * (ids == 1)).astype(np.float32))
    tomogram = open_tomogram(tmp_path / "t.mrc")
    n_features = 4 * (3 + 1)  # profiles to radius 3

    def likeness(cut):  # every pick lies at distance 0 from this reference: kept for cut >= 0
        return {"radius": 3, "mean": [0.0] * n_features, "std": [1e9] * n_features, "cut": cut, "degrees": 0}

    accepting_shape_check = {"radius": 3, "mean": [0.0] * (n_features + 1), "std": [1.0] * (n_features + 1),
                             "weights": [0.0] * (n_features + 1), "bias": 5.0, "threshold": 0.5}
    assert len(pick_tomogram(ContrastNet(), dict(CONFIG, likeness_check={"small": likeness(1.0)}), tomogram)) == 2
    strict = dict(CONFIG, relative_min_score=4.0)  # the tuned threshold alone drops both, and still does
    assert len(pick_tomogram(ContrastNet(), dict(strict, likeness_check={"small": likeness(1.0)}), tomogram)) == 0
    both = dict(strict, shape_check={"small": accepting_shape_check}, likeness_check={"small": likeness(1.0)})
    assert len(pick_tomogram(ContrastNet(), both, tomogram)) == 2  # the shape check decides the score
    both["likeness_check"] = {"small": likeness(-1.0)}
    assert len(pick_tomogram(ContrastNet(), both, tomogram)) == 0  # and the likeness check still rejects
