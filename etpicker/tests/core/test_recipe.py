import time

import pytest

from etpicker.core import io, recipe, simulate, train
from etpicker.core.model_folder import read_config
from etpicker.core.settings import DEFAULT_EPOCHS, TrainSettings

# The realistic benchmark's targets at 10 Å/voxel (voxels) and the labels measured best for them.
REALISTIC_PARTICLES = [11.12, 15.29, 21.93]


def test_a_cpu_gets_the_measured_15_minute_recipe_and_a_gpu_the_reference_size():
    nothing = TrainSettings().to_json()
    assert recipe.choose(nothing, "cpu", REALISTIC_PARTICLES) == recipe.CPU_RECIPE
    assert recipe.choose(nothing, "cuda", REALISTIC_PARTICLES) == recipe.GPU_RECIPE
    assert recipe.CPU_RECIPE["patch"] == 40 and recipe.GPU_RECIPE["widths"] == (24, 48, 72, 108)


def test_an_explicit_setting_always_wins():
    chosen = recipe.choose(TrainSettings(patch=64, lr=1e-4).to_json(), "cpu", [60.0])
    assert "patch" not in chosen and "lr" not in chosen and chosen["batch"] == recipe.CPU_RECIPE["batch"]


def test_large_particles_get_a_patch_that_holds_them():
    assert recipe.choose({}, "cpu", [30.0])["patch"] == 56  # 1.8 x 30 = 54, rounded up to a multiple of 8
    assert recipe.choose({}, "cpu", [10.0])["patch"] == 40  # never below the measured recipe's


def test_labels_follow_the_particle_size_as_measured():
    assert recipe.label_diameters(REALISTIC_PARTICLES) == [7, 9, 13]
    assert recipe.label_diameters([2.0]) == [3]  # the smallest label that paints anything


def test_particles_the_network_was_not_measured_on_are_named_with_the_binning_that_fixes_them():
    large, = recipe.size_warnings([60.0], 5.0)
    assert "bin the tomograms by 3 (to 15 Å/voxel)" in large
    small, = recipe.size_warnings([5.0], 20.0)
    assert "use tomograms at 14.3 Å/voxel or finer" in small  # where they span 7 voxels
    assert recipe.size_warnings(REALISTIC_PARTICLES, 10.0) == []


def test_training_states_its_recipe_first_and_keeps_it_with_the_particle_sizes(tmp_path):
    tomo = simulate.simulate_tomogram((24, 40, 64), rng=0, snr=1.0, n_per_class=4)
    io.write_volume(tmp_path / "t.mrc", tomo.volume, 10.0)
    io.write_coords(tmp_path / "t.csv", io.Coords(tomo.names, tomo.xyz))
    lines = []
    # patch and widths given (the tiny volume), the rest automatic
    train.train([tmp_path / "t.mrc"], [tmp_path / "t.csv"], tmp_path / "m", epochs=1, patch=16,
                widths=(4, 8, 8, 8), val_fraction=0.4, device="cpu", particle_diameters=[12.0, 8.0, 5.0],
                log=lines.append)
    assert lines[0].startswith("recipe (automatic for cpu): patch 16, batch 4, widths 4,8,8,8, lr 0.002, "
                               "ce-weight 1, label diameters 7,5,3 voxels")
    config = read_config(tmp_path / "m")
    assert config["particle_diameters"] == [12.0, 8.0, 5.0] and config["diameters"] == [7, 5, 3]
    assert config["recipe"] == {"device": "cpu", "automatic": ["batch", "ce_weight", "diameters", "lr"]}
    assert config["training"]["batch"] == 4 and config["training"]["ce_weight"] == 1.0


def test_particle_diameters_must_be_positive():
    with pytest.raises(io.InputError, match="particle diameters must be positive"):
        TrainSettings(particle_diameters=[10, -1])


def test_without_epochs_a_time_budget_decides_how_many_and_without_one_the_default_does():
    assert TrainSettings().planned_epochs == DEFAULT_EPOCHS
    assert TrainSettings(max_minutes=15).planned_epochs is None
    assert TrainSettings(epochs=5, max_minutes=15).planned_epochs == 5
    with pytest.raises(io.InputError, match="--epochs"):
        TrainSettings(epochs=0)


def test_a_time_budget_bounds_the_whole_run_shape_checks_included(tmp_path):
    tomo = simulate.simulate_tomogram((32, 64, 96), rng=0, snr=1.0, n_per_class=6)
    io.write_volume(tmp_path / "t.mrc", tomo.volume, 10.0)
    io.write_coords(tmp_path / "t.csv", io.Coords(tomo.names, tomo.xyz))
    budget_minutes, lines = 0.25, []
    started = time.monotonic()
    # no epochs given: the budget alone decides how many
    summary = train.train([tmp_path / "t.mrc"], [tmp_path / "t.csv"], tmp_path / "m", patch=16,
                          widths=(4, 8, 8, 8), batch=1, val_fraction=0.4, device="cpu", max_minutes=budget_minutes,
                          log=lines.append)
    elapsed = time.monotonic() - started
    assert summary["stopped_by_budget"] and summary["epochs_done"] >= 1
    assert elapsed <= 60 * budget_minutes * 1.05 + 2.0  # the 5 % the run may take, and start-up
    assert any(line.startswith("shape check") for line in lines)  # the checks were fitted within it
