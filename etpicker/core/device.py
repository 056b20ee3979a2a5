"""Where the network runs (CPU or a CUDA GPU), in which floating-point precision, and how
the process keeps the memory of its CPU tensors."""
import ctypes
import ctypes.util
import sys
from contextlib import contextmanager, nullcontext

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
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536  # their defaults


def _glibc():
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def freed_memory_kept():
    """While it is open, glibc keeps freed memory for reuse instead of returning it to the
    system; it yields whether that applies (Linux with glibc).

    glibc maps every block over 32 MB on its own and unmaps it when freed, so each layer of a
    large tile's forward pass faulted all its pages in again: 40 % of the CPU time went to
    the kernel (bench/README.md). On leaving, glibc's defaults come back and the memory kept
    goes back to the system, so what runs next (MP-NMS over the whole class map) does not
    stack on it: kept for a whole pick, a 300×1024×1024 tomogram's peaked at 3.25 GB."""
    libc = _glibc()
    kept = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    try:
        yield kept
    finally:
        if kept:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
