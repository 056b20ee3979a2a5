"""Training on several processes (torch DistributedDataParallel): which one this process is,
what the processes agree on, and the launcher that starts them.

`torchrun --nproc_per_node N -m etpicker.core train ...` starts N processes (`train --gpus`
and `train --processes` run torchrun for the user). Each joins a process group in `started`:
NCCL on GPUs, one GPU per process (its LOCAL_RANK), gloo on CPUs. Outside torchrun `started`
gives SINGLE, one process, and nothing is communicated.
"""
import math
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .device import resolve_device
from .errors import InputError

# The others wait while the main process validates an epoch (picks the validation regions):
# on a large validation set longer than torch's default timeout of 10 (NCCL) or 30 minutes.
WAIT = timedelta(hours=6)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
CORE_MODULE = __package__  # etpicker.core


def _device(name, local_rank, world):
    """The device a process trains on: `name` (auto, cpu, cuda[:N]); among several processes
    a GPU is the one of the process's LOCAL_RANK."""
    device = resolve_device(name)
    if device.type != "cuda" or world == 1:
        return device
    if ":" in str(name):
        raise InputError(f"--device {name}: with {world} processes each takes the GPU of its LOCAL_RANK; give "
                         "--device cuda (or auto) and choose the GPUs with --gpus or CUDA_VISIBLE_DEVICES")
    if local_rank >= torch.cuda.device_count():
        raise InputError(f"process {local_rank} of {world} has no GPU: only {torch.cuda.device_count()} are visible")
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Processes:
    """This process among the `world` training processes. Rank 0, the main one, alone
    validates, writes the model folder and logs; the others train with it and follow its
    decisions."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = None  # "nccl" or "gloo"; None: one process, no process group

    @property
    def is_main(self):
        return self.rank == 0

    def device(self, name):
        return _device(name, self.local_rank, self.world)

    def _tensor(self, value):
        where = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        return torch.tensor([float(value)], dtype=torch.float64, device=where)

    def from_main(self, value):
        """The main process's `value` (a number), on every process."""
        if self.backend is None:
            return value
        tensor = self._tensor(value)
        dist.broadcast(tensor, 0)
        return tensor.item()

    def mean(self, value):
        """The mean over the processes of each one's own `value` (a number, e.g. its loss)."""
        if self.backend is None:
            return value
        tensor = self._tensor(value)
        dist.all_reduce(tensor)
        return tensor.item() / self.world

    def summed(self, tensor):
        """`tensor` summed over the processes, its gradient flowing back to every process's
        part (a loss's sums over all processes' patches, see _Summed)."""
        return tensor if self.backend is None else _Summed.apply(tensor)

    def batch(self, batch):
        """Patches per process and step, `batch` being those of a step over all processes
        (rounded up: every process takes as many)."""
        return math.ceil(batch / self.world)

    def share(self, plan):
        """This process's share of an epoch's plan, which every process draws alike: every
        world-th item from its rank on, so that each optimiser step's patches are a run of
        the plan. The plan is first repeated from its start to a multiple of the processes:
        each must take as many steps (DDP gathers all of them at every step)."""
        if self.world == 1:
            return plan
        whole = [plan[i % len(plan)] for i in range(self.world * math.ceil(len(plan) / self.world))]
        return whole[self.rank::self.world]

    def wrap(self, model, device):
        """The network that training calls: `model` itself, or `model` in
        DistributedDataParallel, which starts every process from the main one's weights and
        averages the gradients of all in each backward pass."""
        if self.backend is None:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


SINGLE = Processes()


class _Summed(torch.autograd.Function):
    """All-reduce (sum) that gradients pass back through, summed as well. Every process's
    loss L is then one function of the sums S, and the gradient reaching each process's part
    of S is that of the world's total loss, world x dL/dS; DistributedDataParallel averages
    the parameters' gradients over the world, which leaves exactly the gradient one process
    would compute on all the patches."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, gradient):
        gradient = gradient.clone()
        dist.all_reduce(gradient)
        return gradient


@contextmanager
def started(device_name="auto"):
    """The Processes of this run, joined in a process group until the block ends: from
    torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK), else SINGLE."""
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        yield SINGLE
        return
    rank, world, local_rank = (int(os.environ[name]) for name in TORCHRUN_VARIABLES)
    device = _device(device_name, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=WAIT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=WAIT)
    try:
        yield Processes(rank, world, local_rank, dist.get_backend())
    finally:
        # No barrier: the others leave once training ends while the main process fits the
        # shape checks, which can outlast any timeout.
        dist.destroy_process_group()


def torchrun_command(n_processes, arguments):
    """The command that runs `python -m etpicker.core <arguments>` on `n_processes` processes
    of this machine through torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_processes),
            "-m", CORE_MODULE, *map(str, arguments)]


def launch_environment(n_processes, gpus=None, environ=os.environ):
    """The variables the launched processes get on top of `environ`: the GPUs they see
    (CUDA_VISIBLE_DEVICES, in that order), and the CPU cores shared among them as threads
    unless OMP_NUM_THREADS is set (torchrun would give each one thread)."""
    variables = {}
    if gpus is not None:
        variables["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    if "OMP_NUM_THREADS" not in environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        variables["OMP_NUM_THREADS"] = str(max(1, cores // n_processes))
    return variables


def launch(arguments, n_processes, gpus=None, log=print):
    """Run `python -m etpicker.core <arguments>` on `n_processes` processes through torchrun,
    on the given GPUs (one each) or on CPUs; returns torchrun's exit status."""
    if gpus and not torch.cuda.is_available():
        raise InputError(f"--gpus {','.join(map(str, gpus))}: no CUDA GPU is available here (--processes N trains "
                         "on N CPU processes)")
    command = torchrun_command(n_processes, arguments)
    variables = launch_environment(n_processes, gpus)
    log(f"launching {n_processes} processes{' on GPUs ' + ','.join(map(str, gpus)) if gpus else ' on CPUs'}: "
        + " ".join(f"{name}={value}" for name, value in variables.items()) + " " + shlex.join(command))
    sys.stdout.flush()
    return subprocess.run(command, env={**os.environ, **variables}).returncode
