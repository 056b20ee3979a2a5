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


FAULTS_OF_A_SECOND_FORWARD_PASS = """import resource, sys, torch
from etpicker.core.device import keep_freed_memory
from etpicker.core.model import ResUNet3D
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.set_num_threads(1)
model = ResUNet3D(1, widths=(16, 16, 16, 16), coordconv=False).eval()
tile = torch.randn(1, 1, 64, 104, 128)  # 16 channels of it are 54 MB: glibc maps such blocks alone
with torch.no_grad():
    model(tile)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(tile)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_forward_pass_reuses_freed_memory_instead_of_faulting_its_pages_in_again():
    def faults(mode):
        done = subprocess.run([sys.executable, "-c", FAULTS_OF_A_SECOND_FORWARD_PASS, mode], capture_output=True,
                              text=True, check=True)
        applied, count = done.stdout.split()
        return applied == "True", int(count)

    _, plain = faults("plain")
    applied, kept = faults("keep")
    assert plain >= 100_000  # every layer's 54 MB output faulted in page by page (4 kB)
    assert applied and kept < plain / 10
