"""retune: a trained model's score thresholds chosen again on annotated tomograms."""
import torch

from etpicker.core import model_folder, train
from etpicker.core.retune import retune
from etpicker.core.validation import MIN_SCORE_CHOICES
from etpicker.tests.core.test_adapt import SHIFT_TRAIN, _f1, _write


def test_retuning_on_annotated_tomograms_restores_spoiled_score_thresholds(tmp_path):
    """A model whose thresholds were set far too high picks almost nothing; re-tuned on its
    annotated tomograms, it picks as well as training left it."""
    torch.set_num_threads(1)
    data = [_write(tmp_path, f"s{i}", 4.0, 60, i) for i in range(2)]
    train.train([data[0][0]], [data[0][1]], tmp_path / "model", seed=0, **SHIFT_TRAIN)
    trained = _f1(tmp_path / "model", data[1:])
    config = model_folder.read_config(tmp_path / "model")
    config["relative_min_score"] = {name: float(MIN_SCORE_CHOICES[-1]) for name in config["classes"]}
    model_folder.write_config(tmp_path / "model", config)
    assert _f1(tmp_path / "model", data[1:]) < 0.3
    f1, check_f1s = retune(tmp_path / "model", [([data[0][0]], [data[0][1]], [], [])], fit_checks=False,
                           device="cpu", log=lambda _: None)
    assert f1 > 0.7 and check_f1s == {}
    assert _f1(tmp_path / "model", data[1:]) >= trained - 0.05 > 0.7
