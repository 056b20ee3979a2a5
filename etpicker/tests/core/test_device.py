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
