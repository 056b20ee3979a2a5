import json

import pytest
import torch

from etpicker.core import io, simulate, train
from etpicker.core.cli import main
from etpicker.core.init_model import load_initial_weights
from etpicker.core.model import build_model
from etpicker.core.model_folder import (CONFIG_NAME, PRETRAINED_KIND, WEIGHTS_NAME, read_config,
                                        read_pretrain_history)
from etpicker.core.pretrain import pretrain
from etpicker.core.region_contrast import grey_level_loss, random_transforms, transformed

TINY_NET = dict(patch=16, widths=(4, 8, 8, 8), batch=4, lr=3e-3, device="cpu", log=lambda _: None)
TINY_TRAIN = dict(epochs=1, patch=16, batch=4, lr=3e-3, ce_weight=0.0, val_fraction=0.4, device="cpu",
                  shape_check=False, log=lambda _: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tomo = simulate.simulate_tomogram((24, 40, 64), rng=0, snr=1.0, n_per_class=4)
    io.write_volume(folder / "t.mrc", tomo.volume, 10.0)
    io.write_coords(folder / "t.csv", io.Coords(tomo.names, tomo.xyz))
    return [folder / "t.mrc"], [folder / "t.csv"]


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    pretrain(data[0], out, objective="regions", epochs=4, steps_per_epoch=8, seed=1, **TINY_NET)
    return out


def test_region_pretraining_loss_falls_and_writes_a_pretrained_folder(pretrained):
    history = read_pretrain_history(pretrained)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    # both parts of the joint objective learn: regions of uniform grey level, matching views
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert history[-1]["grey"] < history[0]["grey"] and history[-1]["semantic"] < history[0]["semantic"]
    config = read_config(pretrained)
    assert config["kind"] == PRETRAINED_KIND and config["objective"] == "regions"
    assert config["widths"] == [4, 8, 8, 8] and config["patch"] == 16 and config["coordconv"] is True
    weights = torch.load(pretrained / WEIGHTS_NAME, weights_only=True)
    assert weights and not any(key.startswith("head.") for key in weights)


def test_masked_pretraining_loss_falls_and_a_seed_repeats_it(data, tmp_path):
    runs = []
    for name in ("a", "b"):
        pretrain(data[0], tmp_path / name, objective="masked", epochs=3, steps_per_epoch=6, seed=2, **TINY_NET)
        runs.append([row["loss"] for row in read_pretrain_history(tmp_path / name)])
    assert runs[0] == runs[1]
    assert runs[0][-1] < 0.8 * runs[0][0]


def test_views_correspond_voxel_by_voxel_once_their_transforms_are_undone():
    image = torch.randn(6, 2, 8, 8, 8)
    transforms = random_transforms(6, torch.Generator().manual_seed(0))
    assert torch.equal(transformed(transformed(image, transforms), transforms, inverse=True), image)


def test_grey_level_loss_prefers_regions_that_split_the_intensities():
    image = torch.cat([torch.zeros(1, 1, 50), torch.ones(1, 1, 50)], dim=2)
    split = torch.cat([torch.stack([torch.ones(50), torch.zeros(50)]), torch.stack([torch.zeros(50), torch.ones(50)])],
                      dim=1)[None]
    mixed = torch.full((1, 2, 100), 0.5)
    assert grey_level_loss(split, image) < 1e-3 < 0.99 < grey_level_loss(mixed, image)


def test_init_model_copies_the_pretrained_encoder_and_decoder_and_reinitialises_the_head(data, pretrained, tmp_path):
    config = {"classes": ["large", "medium", "small"], "widths": [4, 8, 8, 8], "patch": 16}
    torch.manual_seed(5)
    fresh = build_model(config).state_dict()
    torch.manual_seed(5)
    model = build_model(config)
    line = load_initial_weights(model, pretrained, config["classes"])
    assert "head re-initialised for 3 class(es)" in line
    saved = torch.load(pretrained / WEIGHTS_NAME, weights_only=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in saved.items())
    assert all(torch.equal(loaded[key], fresh[key]) for key in loaded if key.startswith("head."))
    assert not torch.equal(loaded["encoders.0.convs.0.0.weight"], fresh["encoders.0.convs.0.0.weight"])
    # through train: it trains from there, takes the widths, and config.json records the initial model
    lines = []
    train.train(*data, tmp_path / "tuned", init_model=pretrained, **dict(TINY_TRAIN, log=lines.append))
    tuned = read_config(tmp_path / "tuned")
    assert tuned["widths"] == [4, 8, 8, 8] and tuned["training"]["init_model"] == str(pretrained)
    assert any("initial weights from the pre-trained model" in line for line in lines)


def test_init_from_a_trained_model_keeps_its_head_only_for_the_same_classes(data, tmp_path):
    train.train(*data, tmp_path / "base", widths=(4, 8, 8, 8), **TINY_TRAIN)
    base = torch.load(tmp_path / "base" / WEIGHTS_NAME, weights_only=True)
    same = build_model({"classes": ["large", "medium", "small"], "widths": [4, 8, 8, 8], "patch": 16})
    assert "head too" in load_initial_weights(same, tmp_path / "base", ["large", "medium", "small"])
    assert all(torch.equal(same.state_dict()[key], value) for key, value in base.items())
    other = build_model({"classes": ["ribosome"], "widths": [4, 8, 8, 8], "patch": 16})
    load_initial_weights(other, tmp_path / "base", ["ribosome"])
    assert torch.equal(other.state_dict()["decoders.2.convs.2.0.weight"], base["decoders.2.convs.2.0.weight"])
    assert other.state_dict()["head.weight"].shape[0] == 2


def test_a_bad_init_folder_is_refused_with_what_is_wrong(data, pretrained, tmp_path, capsys):
    with pytest.raises(io.InputError, match="no such folder"):
        train.train(*data, tmp_path / "m", init_model=tmp_path / "nowhere", **TINY_TRAIN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.InputError, match="config.json: missing"):
        train.train(*data, tmp_path / "m", init_model=tmp_path / "empty", **TINY_TRAIN)
    with pytest.raises(io.InputError, match="widths 4,8,8,8; leave --widths out"):
        train.train(*data, tmp_path / "m", init_model=pretrained, widths=(8, 8, 8, 8), **TINY_TRAIN)
    other = tmp_path / "other"  # weights of a network narrower than its config says
    other.mkdir()
    config = json.loads((pretrained / CONFIG_NAME).read_text())
    (other / CONFIG_NAME).write_text(json.dumps({**config, "widths": [8, 8, 8, 8]}))
    (other / WEIGHTS_NAME).write_bytes((pretrained / WEIGHTS_NAME).read_bytes())
    with pytest.raises(io.InputError, match=r"do not fit this network \(encoders.0.*shape"):
        train.train(*data, tmp_path / "m", init_model=other, **TINY_TRAIN)
    (other / WEIGHTS_NAME).unlink()
    tomos, coords = data
    assert main(["train", "--tomos", *tomos, "--coords", *coords, "--out", tmp_path / "m", "--init-model", other,
                 "--epochs", "1", "--device", "cpu"]) == 2
    assert "weights.pt: missing" in capsys.readouterr().err


def test_pretrain_command_line_refuses_a_tomogram_smaller_than_the_patch(data, tmp_path, capsys):
    assert main(["pretrain", "--tomos", *data[0], "--out", tmp_path, "--patch", "32", "--device", "cpu"]) == 2
    assert "smaller than the 32-voxel patch" in capsys.readouterr().err
    assert main(["pretrain", "--tomos", *data[0], "--out", tmp_path, "--objective", "pixels"]) == 2


def test_pretraining_stops_when_its_time_budget_is_spent(data, tmp_path):
    summary = pretrain(data[0], tmp_path, objective="masked", epochs=1000, steps_per_epoch=4, max_minutes=0.05,
                       **TINY_NET)
    assert 1 <= summary["epochs_done"] < 1000
    assert sum(row["seconds"] for row in summary["history"]) < 3.0 + 2.0  # at most a step past the deadline
