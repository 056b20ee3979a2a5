import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy.spatial import cKDTree

from etpicker.core import io, model_folder
from etpicker.core.cli import main
from etpicker.core.model import build_model
from etpicker.core.model_store import save_weights

REPOSITORY = Path(__file__).resolve().parents[3]
# Runs the core's command line in a fresh interpreter where Scipion cannot be imported.
WITHOUT_SCIPION = ("import sys, runpy; sys.modules.update(pwem=None, pyworkflow=None, tomo=None); "
                   "sys.argv = ['etpicker'] + sys.argv[1:]; runpy.run_module('etpicker.core', run_name='__main__')")
# The end-to-end setting: small enough to train on a laptop CPU in well under a minute.
E2E_SIMULATE = ("--shape", 48, 96, 96, "--snr", 4, "--seed", 0)
E2E_TRAIN = ("--epochs", 4, "--patch", 32, "--batch", 4, "--widths", "8,16,24,32", "--lr", "5e-3",
             "--diameter", 11, "--pad", 4, "--seed", 0)
E2E_PICK = ("--min-distance", 8)  # the score threshold is the one training tuned on validation


def run_cli(*args, timeout=300):
    # One thread: on a busy 2-core machine (or beside other test workers) more threads spin and
    # slow torch down several times.
    environment = {"OMP_NUM_THREADS": "1", **os.environ}
    return subprocess.run([sys.executable, "-c", WITHOUT_SCIPION, *map(str, args)], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=timeout, env=environment)


def _one_error_line(result):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etpicker: error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_help_works_without_scipion():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("simulate", "labels", "train", "pick", "evaluate"):
        assert command in result.stdout
    result = run_cli("train", "--help")
    assert result.returncode == 0 and "--max-minutes" in result.stdout and "--resume" in result.stdout


@pytest.mark.parametrize("command", ["simulate", "labels", "pick", "evaluate"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0 and "usage: etpicker " + command in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line(tmp_path):
    _one_error_line(run_cli("train", "--tomos", tmp_path / "missing.mrc", "--coords", tmp_path / "missing.csv",
                            "--out", tmp_path / "model"))
    _one_error_line(run_cli("simulate", "--out", tmp_path, "--shapes", "1"))


def test_missing_arguments_and_bad_values_are_input_errors(tmp_path, capsys):
    assert main(["pick", "--tomos", "a.mrc"]) == 2
    assert main(["simulate", "--out", str(tmp_path), "--snr", "-1"]) == 2
    assert main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--diameter", "x"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("etpicker: error: ") for line in errors)


@pytest.fixture()
def tomogram(tmp_path):
    volume = np.random.default_rng(0).normal(size=(24, 32, 40)).astype(np.float32)
    io.write_volume(tmp_path / "t.mrc", volume, 13.5)
    io.write_coords(tmp_path / "t.csv", io.Coords(["b", "a"], [[5, 6, 7], [30, 20, 10]]))
    return tmp_path / "t.mrc", tmp_path / "t.csv"


def test_labels_writes_uint8_with_the_voxel_size(tomogram, tmp_path):
    out = tmp_path / "labels.mrc"
    assert main(["labels", "--tomo", str(tomogram[0]), "--coords", str(tomogram[1]), "--out", str(out),
                 "--diameter", "5,3", "--label-type", "ball"]) == 0
    with mrcfile.open(out) as mrc:
        labels = mrc.data.astype(np.uint8)
        assert mrc.voxel_size.x == pytest.approx(13.5)
    assert labels.shape == (24, 32, 40)
    assert labels[7, 6, 5] == 2 and labels[10, 20, 30] == 1  # class "b" is second in sorted order
    assert (labels == 1).sum() == 33 and (labels == 2).sum() == 7  # balls of radius 2 and 1


def test_labels_takes_a_stated_voxel_size_over_a_stretched_header(tomogram, tmp_path, capsys):
    with mrcfile.open(tomogram[0], mode="r+") as mrc:
        mrc.voxel_size = (13.5, 13.5, 27.0)
    out = tmp_path / "labels.mrc"
    args = ["labels", "--tomo", str(tomogram[0]), "--coords", str(tomogram[1]), "--out", str(out)]
    assert main(args) == 2
    assert "voxels are not cubic (13.5 x 13.5 x 27 Å" in capsys.readouterr().err
    assert main(args + ["--voxel-size", "13.5"]) == 0
    with mrcfile.open(out) as mrc:
        assert tuple(mrc.voxel_size.tolist()) == pytest.approx((13.5, 13.5, 13.5))


def test_labels_never_overwrite_the_tomogram(tomogram, capsys):
    before = tomogram[0].read_bytes()
    assert main(["labels", "--tomo", str(tomogram[0]), "--coords", str(tomogram[1]), "--out", str(tomogram[0])]) == 2
    assert "is the tomogram itself" in capsys.readouterr().err and tomogram[0].read_bytes() == before


def test_labels_rejects_centres_outside_the_volume(tomogram, tmp_path, capsys):
    io.write_coords(tomogram[1], io.Coords(["a"], [[100, 1, 1]]))
    assert main(["labels", "--tomo", str(tomogram[0]), "--coords", str(tomogram[1]),
                 "--out", str(tmp_path / "l.mrc")]) == 2
    assert "outside" in capsys.readouterr().err


def _random_model(folder):
    config = {"format": 1, "classes": ["a", "b"], "diameters": [5, 5], "label_type": "tball", "voxel_size": 10.0,
              "patch": 16, "pad": 4, "widths": [4, 4, 4, 4], "coordconv": True, "pyramid": True,
              "normalisation": "robust-standardise", "version": "0.1.0"}
    model_folder.write_config(folder, config)
    save_weights(build_model(config), folder)
    return folder


def test_pick_continues_after_a_failing_tomogram(tomogram, tmp_path, capsys):
    model = _random_model(tmp_path / "model")
    broken = tmp_path / "broken.mrc"
    broken.write_text("not an MRC file")
    code = main(["pick", "--model", str(model), "--tomos", str(broken), str(tomogram[0]),
                 "--out", str(tmp_path / "picks"), "--device", "cpu", "--save-probability"])
    assert code == 2
    assert "broken.mrc" in capsys.readouterr().err.strip().splitlines()[-1]
    picks = io.read_coords(tmp_path / "picks" / "t.csv")
    assert picks.score is not None and set(picks.names) <= {"a", "b"}
    with mrcfile.open(tmp_path / "picks" / "t_probability.mrc") as mrc:
        assert mrc.data.shape == (24, 32, 40) and 0 <= mrc.data.min() and mrc.data.max() <= 1


def test_pick_profile_says_where_each_tomograms_time_went(tomogram, tmp_path, capsys):
    model = _random_model(tmp_path / "model")
    assert main(["pick", "--model", str(model), "--tomos", str(tomogram[0]), "--out", str(tmp_path / "picks"),
                 "--device", "cpu", "--profile"]) == 0
    line, = [line for line in capsys.readouterr().out.splitlines() if line.startswith("profile t: ")]
    steps = dict(re.findall(r"([A-Za-z -]+?) ([0-9.]+) s \(\d+ %\)(?:, |$)", line[len("profile t: "):]))
    assert list(steps) == ["statistics", "reading", "network", "assembling", "MP-NMS", "shape check", "writing"]
    assert float(steps["network"]) > 0


def test_a_coordconv_model_picks_with_tiles_of_its_patch_only(tomogram, tmp_path, capsys):
    model = _random_model(tmp_path / "model")  # CoordConv, patch 16
    assert main(["pick", "--model", str(model), "--tomos", str(tomogram[0]), "--out", str(tmp_path / "picks"),
                 "--device", "cpu", "--tile", "32"]) == 2
    assert "CoordConv" in capsys.readouterr().err
    assert main(["pick", "--model", str(model), "--tomos", str(tomogram[0]), "--out", str(tmp_path / "picks"),
                 "--device", "cpu", "--tile", "16"]) == 0


def test_pick_warns_when_a_header_voxel_size_is_not_the_models(tomogram, tmp_path, capsys):
    model = _random_model(tmp_path / "model")  # 10 Å/voxel
    volume = np.asarray(io.open_tomogram(tomogram[0]).data)
    for name, voxel_size in (("same", 10.0), ("binned", 20.0), ("unknown", 0.0)):
        io.write_volume(tmp_path / f"{name}.mrc", volume, voxel_size)
    assert main(["pick", "--model", str(model), "--tomos", *(str(tmp_path / f"{name}.mrc")
                 for name in ("same", "binned", "unknown")), "--out", str(tmp_path / "picks"), "--device", "cpu"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert len(warnings) == 2
    assert "binned.mrc is at 20 Å/voxel, the model at 10: rescale" in warnings[0]
    assert "unknown.mrc gives no voxel size; it is picked as if at the model's 10 Å/voxel" in warnings[1]
    # Scipion states its sampling rate, which overrides the headers
    assert main(["pick", "--model", str(model), "--tomos", str(tmp_path / "binned.mrc"), str(tmp_path / "unknown.mrc"),
                 "--voxel-size", "10", "--out", str(tmp_path / "picks"), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_pick_refuses_tomograms_that_would_write_the_same_file(tomogram, tmp_path, capsys):
    # TS_01/rec.mrc and TS_02/rec.mrc: both would be picked into PRED_DIR/rec.csv
    model = _random_model(tmp_path / "model")
    for folder in ("TS_01", "TS_02"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rec.mrc").write_bytes(tomogram[0].read_bytes())
    assert main(["pick", "--model", str(model), "--tomos", str(tmp_path / "TS_01" / "rec.mrc"),
                 str(tmp_path / "TS_02" / "rec.mrc"), "--out", str(tmp_path / "picks")]) == 2
    assert "several tomograms are named rec" in capsys.readouterr().err
    assert not (tmp_path / "picks").exists()


@pytest.mark.parametrize("change, message", [
    ({"diameters": [5]}, "one diameter per class"),
    ({"widths": [4, 4]}, "4 positive whole numbers"),
    ({"patch": "16"}, "multiple of 8"),
    ({"diameters": [5, "x"]}, "malformed"),
])
def test_pick_refuses_an_inconsistent_model_config(tomogram, tmp_path, capsys, change, message):
    model = _random_model(tmp_path / "model")
    model_folder.write_config(model, {**model_folder.read_config(model), **change})
    assert main(["pick", "--model", str(model), "--tomos", str(tomogram[0]), "--out", str(tmp_path / "p")]) == 2
    error = capsys.readouterr().err
    assert "config.json" in error and re.search(message, error), error


def test_output_paths_that_cannot_be_written_are_input_errors(tomogram, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["simulate", "--out", str(blocker)]) == 2
    assert main(["labels", "--tomo", str(tomogram[0]), "--coords", str(tomogram[1]),
                 "--out", str(tmp_path / "no" / "such" / "l.mrc")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("etpicker: error: ") for line in errors), errors


def test_non_finite_numbers_are_refused(tmp_path, capsys):
    assert main(["pick", "--model", str(tmp_path), "--tomos", "a.mrc", "--out", str(tmp_path),
                 "--min-score", "nan"]) == 2
    assert main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path), "--diameter", "inf"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "s"), "--voxel-size", "0"]) == 2
    errors = capsys.readouterr().err
    assert "expected a number, got 'nan'" in errors and "--voxel-size must be positive" in errors


def test_evaluate_prints_a_table_and_the_agnostic_f1(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    io.write_coords(tmp_path / "gt" / "t.csv", io.Coords(["a", "a", "b"], [[10, 10, 10], [30, 10, 10], [10, 30, 10]]))
    # one hit, one hit of the wrong class, one false positive; 'a' at x=30 is missed
    io.write_coords(tmp_path / "pred" / "t.csv",
                    io.Coords(["a", "a", "b"], [[11, 10, 10], [10, 30, 10], [50, 50, 10]], [1, 1, 1]))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "F1=0.667"
    assert any(line.split()[:4] == ["a", "1", "1", "1"] for line in lines)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["all"]["tp"] == 2 and scores["classes"]["b"]["tp"] == 0
    assert scores["tolerance"] == {"a": 3.0, "b": 3.0}  # a quarter of the default diameter 12


def test_evaluate_counts_picks_where_the_truth_has_no_particles_as_false(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    io.write_coords(tmp_path / "gt" / "t.csv", io.Coords([], np.zeros((0, 3))))
    io.write_coords(tmp_path / "pred" / "t.csv", io.Coords(["a"], [[10, 10, 10]], [1]))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "F1=0.000"
    assert json.loads((tmp_path / "scores.json").read_text())["all"]["fp"] == 1
    # picks of a tomogram without ground truth are named, not silently dropped
    io.write_coords(tmp_path / "pred" / "u.csv", io.Coords(["a"], [[1, 1, 1]], [1]))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0
    assert f"{tmp_path / 'pred' / 'u.csv'} is not scored" in capsys.readouterr().out


def test_simulate_train_pick_evaluate_without_scipion(tmp_path):
    """THE end-to-end test: a small synthetic tomogram trains a model on CPU that picks a
    held-out synthetic tomogram with class-agnostic F1 >= 0.8, all through the command line."""
    data, model, picks = tmp_path / "data", tmp_path / "model", tmp_path / "picks"
    result = run_cli("simulate", "--out", data, "--n-tomos", 2, *E2E_SIMULATE)
    assert result.returncode == 0, result.stderr
    # The annotator clicks every particle as one kind; the score is localisation (class-agnostic).
    truth = io.read_coords(data / "tomo_000.csv")
    (tmp_path / "clicks").mkdir()
    io.write_coords(tmp_path / "clicks" / "tomo_000.csv", io.Coords(["particle"] * len(truth), truth.xyz))
    result = run_cli("train", "--tomos", data / "tomo_000.mrc", "--coords", tmp_path / "clicks" / "tomo_000.csv",
                     "--out", model, "--device", "cpu", "--no-coordconv", *E2E_TRAIN)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^epoch 1/\d+ loss [\d.]+ .*val_f1 [\d.]+ min_scores [\d./]+ \([\d.]+ s\)$", result.stdout, re.MULTILINE)
    # the shape check was fitted on the training picks and judged on validation
    assert re.search(r"^shape check particle: (validation F1 [\d.]+ without|not fitted)", result.stdout, re.MULTILINE)
    result = run_cli("pick", "--model", model, "--tomos", data / "tomo_001.mrc", "--out", picks, "--device", "cpu",
                     *E2E_PICK)
    assert result.returncode == 0, result.stderr
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "tomo_001.csv").write_text((data / "tomo_001.csv").read_text())

    def f1_of(folder):
        result = run_cli("evaluate", "--pred", folder, "--gt", tmp_path / "truth")
        assert result.returncode == 0, result.stderr
        return float(result.stdout.strip().splitlines()[-1].removeprefix("F1="))

    f1 = f1_of(picks)
    assert f1 >= 0.8, f1
    # Without CoordConv (--no-coordconv) picking segments tiles larger than the training patch,
    # normalised over patch-sized cells. Patch-sized tiles pick mostly the same particles
    # about as accurately (measured: F1 0.872 large, 0.891 patch-sized; 82 % of the picks
    # within the matching distance of one of the other's).
    assert not model_folder.read_config(model)["coordconv"]
    result = run_cli("pick", "--model", model, "--tomos", data / "tomo_001.mrc", "--out", tmp_path / "patch_tiles",
                     "--device", "cpu", "--tile", 32, *E2E_PICK)
    assert result.returncode == 0, result.stderr
    assert abs(f1_of(tmp_path / "patch_tiles") - f1) <= 0.05
    distance, _ = cKDTree(io.read_coords(tmp_path / "patch_tiles" / "tomo_001.csv").xyz).query(
        io.read_coords(picks / "tomo_001.csv").xyz)
    assert (distance <= 2.75).mean() >= 0.75  # the evaluation's matching distance
    # validation (a held-out block of the training tomogram) scored real picks to choose on
    with open(model / "history.csv") as handle:
        assert max(float(row["val_f1"]) for row in csv.DictReader(handle)) >= 0.5
    # centres, not just detections: a systematic shift would hide inside the 2.75-voxel tolerance
    # (unbiased picks scatter by ~0.7 voxel per axis, so ~40 matches average to within ~0.15)
    picked, truth = io.read_coords(picks / "tomo_001.csv").xyz, io.read_coords(data / "tomo_001.csv").xyz
    distance, nearest = cKDTree(truth).query(picked)
    matched = distance < 2.75
    bias = (picked[matched] - truth[nearest[matched]]).mean(axis=0)
    assert np.all(np.abs(bias) < 0.5), f"picks are shifted by {bias} voxels (x, y, z)"
