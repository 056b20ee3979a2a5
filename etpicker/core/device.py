"""Where the network runs (CPU or a CUDA GPU), in which floating-point precision, and how
the process keeps the memory of its CPU tensors."""
import ctypes
import ctypes.util
import sys
from contextlib import nullcontext

import torch

from .errors import InputError
from .settings import AMP_MODES


def resolve_device(name="auto"):
    """'auto' (first GPU when there is one, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name} requested but no CUDA GPU is available")
        if (device.index or 0) >= torch.cuda.device_count():
            raise InputError(f"device {name} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise InputError(f"unsupported device {name!r}; use auto, cpu or cuda:N")
    return device


def cpu_has_native_bfloat16():
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast_dtype(device, amp="auto"):
    """The reduced precision the network runs in under autocast, or None for float32.

    amp 'off': float32. 'auto': on a GPU bfloat16 (float16 where bfloat16 is unsupported); on a CPU bfloat16
    only where it has native bfloat16 instructions (AVX512-BF16, AMX), which about halve the
    time of the 3-D convolutions; emulated bfloat16 would be slower than float32."""
    if amp not in AMP_MODES:
        raise InputError(f"unknown mixed-precision mode {amp!r}; use {' or '.join(AMP_MODES)}")
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bfloat16() else None


def dtype_name(amp_dtype):
    """How logs name the precision autocast_dtype chose."""
    return "float32" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")


def autocast(device, dtype):
    """A context running the network in `dtype` (from autocast_dtype), or nothing for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory():
    """Have glibc keep freed memory for reuse instead of returning it to the system.

    It maps every block over 32 MB on its own and unmaps it when freed, so each layer of a
    large tile's forward pass faulted all its pages in again: 40 % of the CPU time went to
    the kernel (bench/README.md). Kept in the heap, they are reused. True where applied
    (Linux with glibc); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
