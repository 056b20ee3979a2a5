import subprocess
import sys

import pytest
import torch

from etpicker.core.device import autocast, autocast_dtype, cpu_has_native_bfloat16, resolve_device
from etpicker.core.errors import InputError


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda:0")


def test_mixed_precision_only_where_it_pays_and_never_when_off():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "off") is None
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_native_bfloat16() else None)
    with pytest.raises(InputError, match="mixed-precision"):
        autocast_dtype(cpu, "fp8")
    layer = torch.nn.Linear(4, 4)
    with autocast(cpu, torch.bfloat16):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast(cpu, None):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


FAULTS_OF_A_SECOND_FORWARD_PASS = """import contextlib, resource, sys, torch
from etpicker.core.device import freed_memory_kept
from etpicker.core.model import ResUNet3D
torch.set_num_threads(1)
model = ResUNet3D(1, widths=(16, 16, 16, 16), coordconv=False).eval()
tile = torch.randn(1, 1, 64, 104, 128)  # 16 channels of it are 54 MB: glibc maps such blocks alone
with (freed_memory_kept() if sys.argv[1] == "keep" else contextlib.nullcontext(False)) as applied, torch.no_grad():
    model(tile)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(tile)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

# What picking does after segmenting (MP-NMS over the whole class map) must not stack on
# the memory kept for the network: leaving freed_memory_kept gives it back.
RESIDENT_AFTER_LEAVING = """import torch
from etpicker.core.device import freed_memory_kept
def resident_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2 ** 20
with freed_memory_kept() as applied:
    blocks = [torch.ones(64, 2 ** 20) for _ in range(8)]  # 8 x 256 MB, written
    del blocks
    kept = resident_mb()
print(applied, round(kept), round(resident_mb()))
"""


def run_child(code, *args):
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_forward_pass_reuses_freed_memory_instead_of_faulting_its_pages_in_again():
    _, plain = run_child(FAULTS_OF_A_SECOND_FORWARD_PASS, "plain")
    applied, kept = run_child(FAULTS_OF_A_SECOND_FORWARD_PASS, "keep")
    assert int(plain) >= 100_000  # every layer's 54 MB output faulted in page by page (4 kB)
    assert applied == "True" and int(kept) < int(plain) / 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_memory_kept_for_the_network_goes_back_to_the_system_afterwards():
    applied, kept, after = run_child(RESIDENT_AFTER_LEAVING)
    assert applied == "True"
    # Inside, glibc mostly keeps the 2 GB (reuse is the page-fault test's): in one CI run its
    # heap could not grow and it mapped the blocks on their own, freeing them at once.
    assert int(after) < 600 and int(after) <= int(kept)  # the 2 GB are not resident after leaving
