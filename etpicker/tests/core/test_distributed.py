"""Training on several processes (torch DDP): gloo on the CPU here, through torchrun and
through train's own launcher (--processes / --gpus)."""
import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from etpicker.core import distributed, io, simulate, train, train_loop
from etpicker.core.cli import main
from etpicker.core.distributed import Processes
from etpicker.core.model_folder import CHECKPOINT_NAME, HISTORY_NAME, TRAINING_DATA_DIR, WEIGHTS_NAME

REPOSITORY = Path(__file__).resolve().parents[3]
# test_cli's end-to-end setting: a model that picks a held-out synthetic tomogram at F1 >= 0.8
TRAIN = ("--epochs", 4, "--patch", 32, "--batch", 4, "--widths", "8,16,24,32", "--lr", "5e-3", "--diameter", 11,
         "--pad", 4, "--seed", 0)


def _tiny(epochs=3):
    """test_train's tiny setting, for what needs no accuracy; in float32, since the runs are
    compared to 1e-5 and a CPU with native bfloat16 would otherwise train in it."""
    return ("--epochs", epochs, "--patch", 16, "--batch", 4, "--widths", "4,8,8,8", "--lr", "3e-3", "--ce-weight", 0,
            "--val-fraction", 0.4, "--seed", 5, "--no-shape-check", "--amp", "off")


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


def _environment():
    # one thread per process: two processes on two cores (and the same sums in every run)
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*words, timeout=300):
    return subprocess.run([str(word) for word in words], cwd=REPOSITORY, capture_output=True, text=True,
                          timeout=timeout, env=_environment())


def _torchrun_train(*args, timeout=300):
    return _run(*TORCHRUN, "-m", "etpicker.core", "train", *args, "--device", "cpu", timeout=timeout)


def _launcher_train(*args, timeout=300):
    return _run(sys.executable, "-m", "etpicker.core", "train", *args, "--processes", 2, timeout=timeout)


def _tensors(path, key=None):
    state = torch.load(path, weights_only=False)
    return state[key] if key else state


def _same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def _history(folder):
    with open(folder / HISTORY_NAME) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    """A synthetic tomogram to train on, its particles clicked as one class, and another to pick."""
    folder = tmp_path_factory.mktemp("ddp")
    simulate.write_dataset(folder / "data", 2, (48, 96, 96), 4.0, 0, log=lambda _: None)
    truth = io.read_coords(folder / "data" / "tomo_000.csv")
    (folder / "clicks").mkdir()
    io.write_coords(folder / "clicks" / "tomo_000.csv", io.Coords(["particle"] * len(truth), truth.xyz))
    (folder / "truth").mkdir()
    (folder / "truth" / "tomo_001.csv").write_text((folder / "data" / "tomo_001.csv").read_text())
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tomo = simulate.simulate_tomogram((24, 40, 64), rng=0, snr=1.0, n_per_class=4)
    io.write_volume(folder / "t.mrc", tomo.volume, 10.0)
    io.write_coords(folder / "t.csv", io.Coords(tomo.names, tomo.xyz))
    return folder


@pytest.fixture(scope="module")
def tiny_runs(tiny):
    """The same tiny training twice on two gloo processes: through torchrun, and through --processes."""
    inputs = ("--tomos", tiny / "t.mrc", "--coords", tiny / "t.csv")
    return (_torchrun_train(*inputs, "--out", tiny / "torchrun", *_tiny()),
            _launcher_train(*inputs, "--out", tiny / "launcher", *_tiny()))


def test_two_gloo_processes_train_a_model_that_picks_at_f1_0_8_and_only_the_main_one_speaks(clicks, capsys):
    model = clicks / "model"
    result = _torchrun_train("--tomos", clicks / "data" / "tomo_000.mrc", "--coords", clicks / "clicks" / "tomo_000.csv",
                             "--out", model, *TRAIN)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.match(r"recipe \(automatic for cpu\): patch 32, batch 4, .*; 2 processes \(DDP over gloo\), "
                    r"2 patches each per step$", lines[0]), lines[0]
    # rank 1 logs nothing: each line once
    for epoch in range(1, 5):
        assert sum(line.startswith(f"epoch {epoch}/4 loss ") for line in lines) == 1, result.stdout
    assert sum(line.startswith("recipe (") for line in lines) == 1
    assert re.search(r"^shape check particle: ", result.stdout, re.MULTILINE)  # the main process fits them
    assert sorted(path.name for path in model.iterdir()) == sorted(["config.json", CHECKPOINT_NAME, HISTORY_NAME,
                                                                    WEIGHTS_NAME, TRAINING_DATA_DIR])
    assert main(["pick", "--model", str(model), "--tomos", str(clicks / "data" / "tomo_001.mrc"),
                 "--out", str(clicks / "picks"), "--device", "cpu", "--min-distance", "8"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(clicks / "picks"), "--gt", str(clicks / "truth")]) == 0
    f1 = float(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("F1="))
    assert f1 >= 0.8


def test_two_runs_with_the_same_seed_give_the_same_weights_through_torchrun_or_the_launcher(tiny, tiny_runs):
    by_torchrun, by_launcher = tiny_runs
    assert by_torchrun.returncode == 0, by_torchrun.stderr[-3000:]
    assert by_launcher.returncode == 0, by_launcher.stderr[-3000:]
    # the launcher says what it runs: torchrun with train's words, less its own option
    command = by_launcher.stdout.splitlines()[0]
    assert command.startswith("launching 2 processes on CPUs: ")
    assert " -m torch.distributed.run --standalone --nproc_per_node 2 -m etpicker.core train --tomos " in command
    assert command.endswith(" --device cpu") and "--processes" not in command
    assert by_launcher.stdout.splitlines()[1].startswith("recipe (")
    one, other = tiny / "torchrun", tiny / "launcher"
    assert _same_tensors(_tensors(one / CHECKPOINT_NAME, "model"), _tensors(other / CHECKPOINT_NAME, "model"))
    assert _same_tensors(_tensors(one / WEIGHTS_NAME), _tensors(other / WEIGHTS_NAME))
    assert [row["train_loss"] for row in _history(one)] == [row["train_loss"] for row in _history(other)]


def test_two_processes_train_the_weights_one_process_trains(tiny, tiny_runs, tmp_path):
    # each patch is augmented alike wherever it is trained, and the Dice loss sums over all
    # processes' patches: only the order of the sums differs
    torch.set_num_threads(1)
    train.train([tiny / "t.mrc"], [tiny / "t.csv"], tmp_path, epochs=3, patch=16, batch=4, widths=(4, 8, 8, 8),
                lr=3e-3, ce_weight=0.0, val_fraction=0.4, seed=5, shape_check=False, device="cpu", amp="off",
                log=lambda _: None)
    alone, shared = _tensors(tmp_path / CHECKPOINT_NAME, "model"), _tensors(tiny / "torchrun" / CHECKPOINT_NAME, "model")
    assert all(torch.allclose(alone[name], shared[name], atol=1e-5) for name in alone)
    assert [float(row["train_loss"]) for row in _history(tmp_path)] == pytest.approx(
        [float(row["train_loss"]) for row in _history(tiny / "torchrun")], rel=1e-5)


def test_an_interrupted_two_process_run_resumes_to_the_uninterrupted_ones_weights(tiny, tiny_runs, tmp_path):
    inputs = ("--tomos", tiny / "t.mrc", "--coords", tiny / "t.csv")
    command = [str(word) for word in (*TORCHRUN, "-m", "etpicker.core", "train", *inputs, "--out", tmp_path / "parts",
                                      *_tiny(), "--device", "cpu")]
    run = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env=_environment(), start_new_session=True)
    try:
        for line in run.stdout:
            if line.startswith("epoch 1/3 "):  # logged once the epoch's checkpoint is written
                break
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # torchrun and both of its processes
        run.wait()
    assert [row["epoch"] for row in _history(tmp_path / "parts")] == ["1"]
    resumed = _torchrun_train(*inputs, "--out", tmp_path / "parts", *_tiny(), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    whole = tiny / "torchrun"
    assert _same_tensors(_tensors(whole / CHECKPOINT_NAME, "model"), _tensors(tmp_path / "parts" / CHECKPOINT_NAME,
                                                                             "model"))
    assert [row["train_loss"] for row in _history(whole)] == [row["train_loss"] for row in _history(tmp_path / "parts")]


def test_the_time_budget_stops_both_processes_after_the_same_epoch(tiny, tmp_path):
    # 50 epochs would take minutes: the budget stops the main process, and the other with it
    # (were it to go on, it would wait for the main process forever, and the run time out)
    result = _torchrun_train("--tomos", tiny / "t.mrc", "--coords", tiny / "t.csv", "--out", tmp_path, *_tiny(50),
                             "--max-minutes", 0.1, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    stops = [line for line in result.stdout.splitlines() if line.startswith("time budget of 0.1 min reached")]
    assert len(stops) == 1, result.stdout
    epochs = int(stops[0].split("after epoch ")[1].split(";")[0])
    assert 1 <= epochs < 50 and len(_history(tmp_path)) == epochs


GRADIENTS = """
import sys
import torch
from etpicker.core import distributed
from etpicker.core.losses import dice_ce_loss, soft_target
from etpicker.core.model import ResUNet3D

with distributed.started("cpu") as processes:
    torch.manual_seed(0)
    model, alone = ResUNet3D(2, (4, 8, 8, 8)), ResUNet3D(2, (4, 8, 8, 8))
    alone.load_state_dict(model.state_dict())
    images = torch.randn(4, 1, 16, 16, 16)
    target = soft_target(torch.randint(0, 3, (4, 16, 16, 16)), torch.ones(4, 16, 16, 16), 3)
    mine = slice(processes.rank, None, processes.world)
    network = processes.wrap(model, torch.device("cpu"))  # kept: its hooks average the gradients
    dice_ce_loss(network(images[mine]), target[mine], 1.0, processes.summed).backward()
    if processes.is_main:
        dice_ce_loss(alone(images), target, 1.0).backward()
        print(max((p.grad - q.grad).abs().max().item() for p, q in zip(model.parameters(), alone.parameters()))
              / max(q.grad.abs().max().item() for q in alone.parameters()))
"""


def test_two_processes_compute_the_gradient_one_process_computes_on_all_their_patches(tmp_path):
    # the Dice loss sums over every process's patches (a Dice of each half would differ by ~2e-3)
    (tmp_path / "gradients.py").write_text(GRADIENTS)
    result = _run(*TORCHRUN, tmp_path / "gradients.py", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-4


def test_a_process_other_than_the_main_one_writes_and_logs_nothing(tiny, tmp_path):
    lines = []
    summary = train.train([tiny / "t.mrc"], [tiny / "t.csv"], tmp_path / "model", processes=Processes(rank=1, world=2),
                          log=lines.append, epochs=1, patch=16, batch=4, widths=(4, 8, 8, 8), val_fraction=0.4,
                          device="cpu")
    assert summary["epochs_done"] == 1 and summary["best_epoch"] is None
    assert lines == [] and not (tmp_path / "model").exists()


def test_each_process_takes_a_disjoint_share_of_the_plan_and_as_many_steps():
    plan = list(range(11))
    shares = [Processes(rank=rank, world=3).share(plan) for rank in range(3)]
    assert [len(share) for share in shares] == [4, 4, 4]  # 11 patches padded to 12
    assert sorted(sum(shares, [])) == sorted(plan + [0])  # every patch once, the first again as padding
    assert shares[0] == [0, 3, 6, 9] and Processes(rank=0, world=3).share(plan) == shares[0]
    # a step of 2 patches per process is a run of 6 of the plan, as one process with batch 6 takes them
    assert sorted(shares[0][:2] + shares[1][:2] + shares[2][:2]) == plan[:6]
    assert Processes(world=3).batch(4) == 2 and Processes(world=2).batch(4) == 2
    # a patch is augmented alike on any process: its stream follows its place in the plan
    first = [stream.initial_seed() for stream in train_loop.augmentation_streams(0, 1, shares[1])]
    again = [stream.initial_seed() for stream in train_loop.augmentation_streams(0, 1, range(11))]
    assert first == [again[i] for i in shares[1]] and len(set(again)) == 11
    assert train_loop.augmentation_streams(0, 2, [1])[0].initial_seed() != again[1]


def test_gpus_launches_one_process_per_gpu_with_train_words_less_its_own(tiny, tmp_path, monkeypatch, capsys):
    launched = []
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.subprocess, "run",
                        lambda command, env: launched.append((command, env)) or subprocess.CompletedProcess(command, 0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    words = ["train", "--tomos", str(tiny / "t.mrc"), "--coords", str(tiny / "t.csv"), "--out", str(tmp_path)]
    assert main(words + ["--gpu=2,3", "--epochs", "2"]) == 0  # argparse takes abbreviations
    (command, env), = launched
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       "-m", "etpicker.core", *words, "--epochs", "2", "--device", "cuda"]
    cores = len(os.sched_getaffinity(0))
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert "launching 2 processes on GPUs 2,3: CUDA_VISIBLE_DEVICES=2,3" in capsys.readouterr().out
    # what cannot work is refused before anything starts
    assert main(words + ["--gpus", "0", "--device", "cpu"]) == 2
    assert main(words + ["--gpus", "0", "--processes", "2"]) == 2
    assert main(words + ["--gpus", "0,0"]) == 2
    assert main(words + ["--processes", "2", "--device", "cuda"]) == 2
    assert main(words + ["--processes", "2", "--batch", "0"]) == 2  # the settings are checked first
    assert len(launched) == 1
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    assert main(words + ["--gpus", "0,1"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and len(launched) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpus_train_over_nccl(tiny, tmp_path):
    gpus = ",".join(map(str, range(min(2, torch.cuda.device_count()))))
    result = _run(sys.executable, "-m", "etpicker.core", "train", "--tomos", tiny / "t.mrc", "--coords", tiny / "t.csv",
                  "--out", tmp_path, *_tiny(), "--gpus", gpus)
    assert result.returncode == 0, result.stderr[-3000:]
    n = len(gpus.split(","))
    assert (f"{n} processes (DDP over nccl)" if n > 1 else "; 1 process") in result.stdout
    assert "device cuda:0" in result.stdout and len(_history(tmp_path)) == 3
