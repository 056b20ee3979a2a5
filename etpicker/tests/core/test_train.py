import csv

import mrcfile
import numpy as np
import pytest
import torch

from etpicker.core import budget, io, metrics, simulate, train, train_data, train_loop
from etpicker.core.distributed import SINGLE
from etpicker.core.labels import paint_labels
from etpicker.core.model_folder import CHECKPOINT_NAME, HISTORY_NAME, read_config
from etpicker.core.model_store import load_model
from etpicker.core.pick import pick_tomogram
from etpicker.core.settings import DEFAULT_DIAMETER, DEFAULT_RELATIVE_MIN_SCORE, MIN_VAL_PARTICLES
from etpicker.core.validation import MIN_SCORE_CHOICES

# val_fraction 0.4: the held-out block then scores 3 of the tiny tomogram's 8 particles (0.2: none)
TINY = dict(epochs=3, patch=16, batch=4, widths=(4, 8, 8, 8), lr=3e-3, ce_weight=0.0, val_fraction=0.4, device="cpu",
            log=lambda _: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tomo = simulate.simulate_tomogram((24, 40, 64), rng=0, snr=1.0, n_per_class=4)
    io.write_volume(folder / "t.mrc", tomo.volume, 10.0)
    io.write_coords(folder / "t.csv", io.Coords(tomo.names, tomo.xyz))
    return [folder / "t.mrc"], [folder / "t.csv"]


def _history(folder):
    with open(folder / HISTORY_NAME) as handle:
        return list(csv.DictReader(handle))


def _final_weights(folder):
    return torch.load(folder / CHECKPOINT_NAME, weights_only=False)["model"]


class Interrupted(Exception):
    pass


def _interrupt_after_epoch_1(line):
    if line.startswith("epoch 1/"):  # logged once the epoch's checkpoint is on disk
        raise Interrupted


def test_interrupted_run_resumes_to_the_same_result_as_an_uninterrupted_one(data, tmp_path):
    torch.set_num_threads(1)
    whole = train.train(*data, tmp_path / "whole", seed=5, **TINY)
    assert whole["epochs_done"] == 3 and not whole["stopped_by_budget"]

    parts = tmp_path / "parts"
    with pytest.raises(Interrupted):
        train.train(*data, parts, seed=5, **dict(TINY, log=_interrupt_after_epoch_1))
    assert [row["epoch"] for row in _history(parts)] == ["1"]

    resumed = train.train(*data, parts, seed=5, resume=True, **TINY)
    assert resumed["epochs_done"] == 3
    history = _history(parts)
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    for column in ("train_loss", "val_loss", "val_f1"):
        assert [float(r[column]) for r in history] == pytest.approx(
            [float(r[column]) for r in _history(tmp_path / "whole")], rel=1e-4)
    assert [r["val_min_scores"] for r in history] == [r["val_min_scores"] for r in _history(tmp_path / "whole")]
    for key, value in _final_weights(tmp_path / "whole").items():
        assert torch.allclose(value, _final_weights(parts)[key], atol=1e-5), key
    # the kept (best) model and its thresholds too: the resumed run knew epoch 1's score
    kept = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    for key, value in torch.load(parts / "weights.pt", weights_only=True).items():
        assert torch.allclose(value, kept[key], atol=1e-5), key
    assert read_config(parts)["relative_min_score"] == read_config(tmp_path / "whole")["relative_min_score"]


def test_time_budget_cuts_even_the_first_epoch_and_leaves_a_usable_model(data, tmp_path):
    torch.set_num_threads(1)
    stopped = train.train(*data, tmp_path, seed=5, max_minutes=1e-6, **dict(TINY, batch=1))
    assert stopped["stopped_by_budget"] and stopped["epochs_done"] == 1
    # one optimiser step, not the dozen a full epoch of batch-1 patches would take
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert checkpoint["scheduler"]["last_epoch"] == 1
    model, config = load_model(tmp_path)
    assert config["classes"] == ["large", "medium", "small"] and config["widths"] == [4, 8, 8, 8]
    picked = pick_tomogram(model, config, io.open_tomogram(data[0][0]))
    assert set(picked.names) <= set(config["classes"])


def test_another_seed_trains_differently(data, tmp_path):
    torch.set_num_threads(1)
    settings = dict(TINY, epochs=1)
    train.train(*data, tmp_path / "a", seed=1, **settings)
    train.train(*data, tmp_path / "b", seed=2, **settings)
    assert _history(tmp_path / "a")[0]["train_loss"] != _history(tmp_path / "b")[0]["train_loss"]


def test_config_holds_what_picking_needs(data, tmp_path):
    train.train(*data, tmp_path, seed=0, **dict(TINY, epochs=1), diameters=[7, 9, 11])
    config = read_config(tmp_path)
    assert config["diameters"] == [7, 9, 11] and config["label_type"] == "tball"
    assert config["voxel_size"] == pytest.approx(10.0) and config["patch"] == 16
    assert config["pad"] == config["training"]["pad"] == 3  # picks at the margin validation tuned at
    assert {"format", "classes", "coordconv", "pyramid", "normalisation", "version"} <= set(config)
    assert (tmp_path / "weights.pt").is_file()


def test_a_given_voxel_size_overrides_headers_that_disagree(data, tmp_path):
    # a tomogram whose header says 1 Å/voxel (a common import mistake) next to one at 10 Å
    (tomo,), (coords,) = data
    io.write_volume(tmp_path / "u.mrc", np.asarray(io.open_tomogram(tomo).data), 1.0)
    (tmp_path / "u.csv").write_text(coords.read_text())
    tomos, csvs = [tomo, tmp_path / "u.mrc"], [coords, tmp_path / "u.csv"]
    with pytest.raises(io.InputError, match="share one voxel size.*--voxel-size"):
        train.train(tomos, csvs, tmp_path / "headers", seed=0, **dict(TINY, epochs=1))
    # and one whose header gives none (0): never silently 1 Å
    io.write_volume(tmp_path / "z.mrc", np.asarray(io.open_tomogram(tomo).data), 0.0)
    (tmp_path / "z.csv").write_text(coords.read_text())
    with pytest.raises(io.InputError, match="headers of z give no voxel size; give --voxel-size"):
        train.train([tomo, tmp_path / "z.mrc"], [coords, tmp_path / "z.csv"], tmp_path / "none", seed=0,
                    **dict(TINY, epochs=1))
    # and one whose header gives a z size of its own
    io.write_volume(tmp_path / "w.mrc", np.asarray(io.open_tomogram(tomo).data), 10.0)
    with mrcfile.open(tmp_path / "w.mrc", mode="r+") as mrc:
        mrc.voxel_size = (10.0, 10.0, 20.0)
    (tmp_path / "w.csv").write_text(coords.read_text())
    with pytest.raises(io.InputError, match="w.mrc: voxels are not cubic"):
        train.train([tomo, tmp_path / "w.mrc"], [coords, tmp_path / "w.csv"], tmp_path / "stretched", seed=0,
                    **dict(TINY, epochs=1))
    tomos, csvs = tomos + [tmp_path / "z.mrc", tmp_path / "w.mrc"], csvs + [tmp_path / "z.csv", tmp_path / "w.csv"]
    train.train(tomos, csvs, tmp_path / "given", seed=0, voxel_size=10.0, **dict(TINY, epochs=1))
    assert read_config(tmp_path / "given")["voxel_size"] == 10.0


def test_validation_chooses_the_score_thresholds_that_picking_uses(data, tmp_path):
    summary = train.train(*data, tmp_path, seed=0, **TINY)
    config = read_config(tmp_path)
    assert summary["best_epoch"] == config["kept_epoch"]
    best = _history(tmp_path)[config["kept_epoch"] - 1]
    assert list(config["relative_min_score"]) == config["classes"]
    values = list(config["relative_min_score"].values())
    assert values == [float(v) for v in best["val_min_scores"].split("/")]
    assert all(value in MIN_SCORE_CHOICES for value in values)


def test_a_validation_with_few_particles_of_a_class_is_warned_about(data, tmp_path):
    lines = []
    train.train(*data, tmp_path, seed=0, **dict(TINY, epochs=1, log=lines.append))
    warnings = [line for line in lines if line.startswith("warning: validation scores only")]
    classes = read_config(tmp_path)["classes"]
    # the tiny tomogram holds 4 particles per class, so its held-out block has fewer than 20 of each
    assert len(warnings) == len(classes)
    assert all(f"of {name};" in line for name, line in zip(classes, warnings))
    assert all(f"give {MIN_VAL_PARTICLES} or more per class" in line for line in warnings)


def test_sparse_validation_classes_are_those_under_the_minimum():
    names = np.array(["a"] * 20 + ["b"] * 19)
    assert train_data.sparse_validation_classes(names, ["a", "b", "c"]) == {"b": 19, "c": 0}
    assert train_data.sparse_validation_classes(names, ["a", "b"], minimum=5) == {}


def test_best_min_scores_are_per_class_and_take_the_middle_of_a_tie():
    truth = io.Coords(np.array(["a", "a", "a", "b"]), np.array([[5.0, 5, 5], [20, 5, 5], [35, 5, 5], [5, 30, 5]]))
    predicted = io.Coords(np.array(["a"] * 5 + ["b", "b"]),
                          np.array([[5.0, 5, 5], [20, 5, 5], [35, 5, 5], [50, 5, 5], [65, 5, 5],
                                    [5, 30, 5], [50, 30, 5]]), np.ones(7))
    # class a: true picks score 0.6-0.8, false ones 0.3-0.35; class b: the true one only 0.3,
    # its false one 0.25, so b needs a threshold a would not tolerate
    relative = np.array([0.6, 0.7, 0.8, 0.3, 0.35, 0.3, 0.25])
    choices = np.round(np.arange(0.2, 1.001, 0.05), 2)
    precision, recall, f1, thresholds = metrics.best_min_scores([(predicted, relative, truth)], ["a", "b"],
                                                                {"a": 2.0, "b": 2.0}, choices)
    assert (precision, recall, f1) == (1.0, 1.0, 1.0)
    assert thresholds == {"a": pytest.approx(0.5), "b": pytest.approx(0.3)}  # a: 0.4-0.6 all fit; b: only 0.3


def test_a_class_validation_cannot_score_keeps_the_default_threshold():
    # class c has neither validation particles nor picks: every threshold gives F1 0
    truth = io.Coords(np.array(["a"]), np.array([[5.0, 5, 5]]))
    predicted = io.Coords(np.array(["a", "c"]), np.array([[5.0, 5, 5], [30, 5, 5]]), np.ones(2))
    *_, thresholds = metrics.best_min_scores([(predicted, np.array([0.9, 0.9]), truth)], ["a", "c"],
                                             {"a": 2.0, "c": 2.0}, MIN_SCORE_CHOICES)
    assert thresholds["c"] == pytest.approx(DEFAULT_RELATIVE_MIN_SCORE)


def test_resume_refuses_changed_settings_and_missing_checkpoint(data, tmp_path):
    with pytest.raises(io.InputError, match="no checkpoint.pt"):
        train.train(*data, tmp_path, resume=True, **TINY)
    train.train(*data, tmp_path, **dict(TINY, epochs=1))
    for change, name in ((dict(epochs=5), "epochs"), (dict(pad=2), "pad"), (dict(val_fraction=0.5), "val_fraction"),
                         (dict(ce_weight=1.0), "ce_weight"), (dict(voxel_size=5.0), "voxel_size")):
        with pytest.raises(io.InputError, match=name):
            train.train(*data, tmp_path, resume=True, **dict(TINY, **change))


def test_init_model_of_other_classes_trains_a_head_for_these(data, tmp_path):
    train.train(*data, tmp_path / "base", **dict(TINY, epochs=1))
    train.train(*data, tmp_path / "tuned", init_model=tmp_path / "base", classes=["large", "medium", "small", "x"],
                **dict(TINY, epochs=1))
    model, config = load_model(tmp_path / "tuned")
    assert config["classes"] == ["large", "medium", "small", "x"] and model.head.out_channels == 5


def test_validation_block_keeps_training_patches_out():
    zyx = np.array([[10, 20, x] for x in range(10, 100, 10)], dtype=float)
    axis, start = train_data.validation_block((32, 48, 128), zyx, 0.2, 32)
    assert axis == 2
    assert (zyx[:, 2] >= start).sum() == 2
    with pytest.raises(io.InputError, match="smaller --patch"):
        train_data.validation_block((32, 48, 128), zyx, 0.2, 96)


def test_classes_and_diameters_are_checked():
    coords = [io.Coords(["b", "a", "b"], np.zeros((3, 3)))]
    assert train_data.class_order(coords) == ["a", "b"]
    assert train_data.class_order(coords, ["b", "a", "c"]) == ["b", "a", "c"]
    with pytest.raises(io.InputError, match="missing from --classes"):
        train_data.class_order(coords, ["a"])
    assert train_data.expand_diameters([8], 3) == [8, 8, 8]
    assert train_data.expand_diameters(None, 2) == [DEFAULT_DIAMETER] * 2
    with pytest.raises(io.InputError, match="one per class"):
        train_data.expand_diameters([8, 9], 3)


def test_files_are_paired_by_stem(data, tmp_path):
    with pytest.raises(io.InputError, match="no --coords file named t.csv"):
        train_data.pair_by_stem(data[0], [tmp_path / "other.csv"])


def test_learning_rate_anneals_over_the_time_budget_when_it_is_shorter_than_the_epochs():
    by_steps = train_loop.one_cycle(1000)
    assert by_steps(0) == pytest.approx(1 / 25) and by_steps(300) == pytest.approx(1.0)
    assert by_steps(1000) == pytest.approx(1e-4)
    time_budget = budget.TimeBudget(60.0, budget.time.monotonic() - 18.0)  # 30 % of the budget spent at step 10
    pace = budget.Pace(time_budget, SINGLE)
    by_time = train_loop.one_cycle(1000, pace)
    pace.update()
    assert by_time(10) == pytest.approx(1.0, abs=1e-3)
    time_budget.before = 60.0  # a resumed run whose earlier parts spent the whole budget
    pace.update()
    assert by_time(10) == pytest.approx(1e-4) and time_budget.exhausted()


def test_a_nan_that_the_statistics_subsample_missed_stops_training_with_an_input_error():
    from etpicker.core.sampling import PatchSampler, PatchSource
    volume = np.zeros((32, 32, 32), np.float32)
    volume[9, 9, 9] = np.nan
    centres = np.array([[9.0, 9, 9]])
    source = PatchSource(volume, 0.0, 1.0, centres, np.array([1]), np.array([True]), volume.shape)
    sampler = PatchSampler([source], [5], "tball", 16)
    with pytest.raises(io.InputError, match="NaN"):
        sampler.read(0, (0, 0, 0))


def test_a_damaged_checkpoint_cannot_be_resumed_and_says_so(data, tmp_path):
    train.train(*data, tmp_path, **dict(TINY, epochs=1))
    checkpoint = tmp_path / CHECKPOINT_NAME
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    with pytest.raises(io.InputError, match="not a readable checkpoint"):
        train.train(*data, tmp_path, resume=True, **dict(TINY, epochs=1))


def test_a_fresh_run_into_a_model_folder_replaces_that_model(data, tmp_path):
    train.train(*data, tmp_path, **dict(TINY, epochs=1))
    lines = []
    # interrupted before its first epoch ends: the old weights must not stay beside the new config
    with pytest.raises(Interrupted):
        train.train(*data, tmp_path, classes=["small", "medium", "large"],
                    **dict(TINY, epochs=1, log=lambda line: lines.append(line) or _interrupt_at_training(line)))
    assert any(line.startswith("replacing the model") for line in lines)
    assert not (tmp_path / "weights.pt").exists() and not (tmp_path / CHECKPOINT_NAME).exists()


def _interrupt_at_training(line):
    if line.startswith("training on"):
        raise Interrupted


def test_validation_that_scores_no_particle_chooses_by_loss_with_default_thresholds(data, tmp_path):
    # the tiny tomogram's held-out block has its 2 particles at its face, where none is scored
    lines = []
    train.train(*data, tmp_path, seed=0, **dict(TINY, val_fraction=0.2, log=lines.append))
    assert any(line.startswith("warning: validation scores no particle") for line in lines)
    history = _history(tmp_path)
    assert all(row["val_f1"] == "nan" for row in history)  # not a perfect 1 on nothing
    losses = [float(row["val_loss"]) for row in history]
    kept_last = torch.load(tmp_path / "weights.pt", weights_only=True)
    same = all(torch.equal(value, _final_weights(tmp_path)[key]) for key, value in kept_last.items())
    assert same == (int(np.argmin(losses)) == len(losses) - 1)  # the lowest validation loss is kept
    assert set(read_config(tmp_path)["relative_min_score"].values()) == {DEFAULT_RELATIVE_MIN_SCORE}


def test_the_same_tomogram_twice_is_named(data, tmp_path):
    (tomo,), (coords,) = data
    with pytest.raises(io.InputError, match="two tomograms are named t"):
        train.train([tomo, tomo], [coords], tmp_path, **dict(TINY, epochs=1))


def test_a_diverging_run_stops_with_advice(data, tmp_path):
    with pytest.raises(io.InputError, match="diverged; lower --lr"):
        train.train(*data, tmp_path, seed=0, **dict(TINY, epochs=2, batch=1, lr=1e30))


def test_numeric_class_names_are_ordered_by_value():
    coords = io.Coords(np.array(["10", "2", "1", "b", "a"]), np.zeros((5, 3)))
    assert train_data.class_order([coords]) == ["1", "2", "10", "a", "b"]


def test_training_labels_sit_on_the_particles_they_label():
    from etpicker.core.sampling import PatchSampler, PatchSource
    from scipy import ndimage
    centre = np.array([[20.0, 21, 22]])
    ids, _ = paint_labels((40, 40, 40), centre, [1], [9], "ball")
    volume = ids.astype(np.float32)  # the particle is exactly its label ball
    source = PatchSource(volume, 0.0, 1.0, centre, np.array([1]), np.array([True]), volume.shape)
    image, label_ids, _ = PatchSampler([source], [9], "ball", 16).read(0, np.array([13, 12, 11]))
    np.testing.assert_array_equal(label_ids == 1, image > 0.5)
    np.testing.assert_allclose(ndimage.center_of_mass(label_ids == 1), centre[0] - [13, 12, 11])


def test_validation_tomograms_are_what_validation_scores(data, tmp_path):
    tomo = simulate.simulate_tomogram((24, 40, 64), rng=1, snr=1.0, n_per_class=4)
    io.write_volume(tmp_path / "v.mrc", tomo.volume, 10.0)
    io.write_coords(tmp_path / "v.csv", io.Coords(tomo.names, tomo.xyz))
    lines = []
    train.train(*data, tmp_path / "model", val_tomos=[tmp_path / "v.mrc"], val_coords=[tmp_path / "v.csv"],
                seed=0, **dict(TINY, epochs=1, log=lines.append))
    # every particle of the validation tomogram counts (no held-out block face to leave out)
    counted = {line.split(" of ")[1].split(";")[0]: int(line.split("only ")[1].split(" ")[0])
               for line in lines if line.startswith("warning: validation scores only")}
    assert counted == {name: int(np.sum(tomo.names == name)) for name in set(tomo.names)}
    assert read_config(tmp_path / "model")["training"]["val_fraction"] is None


def test_a_resume_with_nan_validation_f1_keeps_the_lowest_loss_weights_and_says_so(data, tmp_path):
    # the held-out block of val_fraction 0.2 scores no particle: F1 is NaN and the loss decides
    tiny = dict(TINY, val_fraction=0.2)
    whole = train.train(*data, tmp_path / "whole", seed=5, **tiny)
    with pytest.raises(Interrupted):
        train.train(*data, tmp_path / "parts", seed=5, **dict(tiny, log=_interrupt_after_epoch_1))
    lines = []
    resumed = train.train(*data, tmp_path / "parts", seed=5, resume=True, **dict(tiny, log=lines.append))
    losses = [float(row["val_loss"]) for row in _history(tmp_path / "parts")]
    lowest = int(np.argmin(losses)) + 1
    assert resumed["best_epoch"] == whole["best_epoch"] == read_config(tmp_path / "parts")["kept_epoch"] == lowest
    assert any(line.startswith(f"best val_f1 nan at epoch {lowest};") for line in lines)
    kept = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    for key, value in torch.load(tmp_path / "parts" / "weights.pt", weights_only=True).items():
        assert torch.allclose(value, kept[key], atol=1e-5), key


def test_a_resumed_run_replaces_the_kept_model_only_with_a_better_epoch(data, tmp_path):
    with pytest.raises(Interrupted):
        train.train(*data, tmp_path, seed=5, **dict(TINY, log=_interrupt_after_epoch_1))
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    checkpoint["best"] = (1.0, 0.0)  # as if epoch 1 had validated perfectly
    torch.save(checkpoint, tmp_path / CHECKPOINT_NAME)
    kept = (tmp_path / "weights.pt").read_bytes()
    train.train(*data, tmp_path, seed=5, resume=True, **TINY)
    assert (tmp_path / "weights.pt").read_bytes() == kept


def test_particles_are_spread_over_the_whole_region_that_picking_keeps(data, tmp_path, monkeypatch):
    # Picking keeps each tile's central patch - 2 pad voxels; a particle must appear anywhere
    # there in training, or the network (which sees positions) learns that targets sit mid-patch.
    from etpicker.core.sampling import PatchSampler, PatchSource
    samplers = []

    class Recording(PatchSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            samplers.append(self)

    monkeypatch.setattr(train, "PatchSampler", Recording)
    train.train(*data, tmp_path, seed=0, **dict(TINY, epochs=1, pad=2))
    reach = 16 // 2 - 2
    assert samplers[0].max_offset == reach
    volume = np.zeros((64, 64, 64), np.float32)
    centre = np.array([[32.0, 32, 32]])
    source = PatchSource(volume, 0.0, 1.0, centre, np.array([1]), np.array([True]), volume.shape)
    sampler = PatchSampler([source], [5], "tball", 16, background_fraction=0.0, max_offset=reach)
    rng = np.random.default_rng(0)
    where = np.array([32 - sampler.epoch_plan(rng)[0][1] - 16 // 2 for _ in range(400)])
    # on every axis both ends are reached, and never passed
    assert np.all(where.min(axis=0) == -reach) and np.all(where.max(axis=0) == reach)
