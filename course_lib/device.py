"""Pick the compute device and a dtype that suits it; keep freed memory for reuse on the CPU."""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda" | "mps" | "cpu"
    dtype: torch.dtype
    why: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")


def pick_device(prefer: str | None = None) -> DeviceChoice:
    """cuda > mps > cpu; on CUDA bf16 where supported, else fp16 (a T4, Colab's free GPU); fp32 elsewhere.

    ``prefer`` forces a device ("cpu" is handy for reproducible CPU runs on a GPU box).
    """
    if prefer == "cpu":
        return DeviceChoice("cpu", torch.float32, "呼び出し側が CPU を指定")
    if (prefer in (None, "cuda")) and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        # Native bf16 only (compute capability 8.0+): by default torch also answers True for a GPU
        # that only emulates it (a T4), where bf16 would run slowly.
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return DeviceChoice("cuda", torch.bfloat16, f"{name} は bfloat16 に対応")
        # Half the memory of fp32 and the tensor cores of older GPUs; train() turns on fp16
        # mixed precision (loss scaling), and PEFT keeps the LoRA weights themselves in fp32.
        return DeviceChoice("cuda", torch.float16, f"{name} は bfloat16 に非対応なので float16")
    if (prefer in (None, "mps")) and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        # bf16 on MPS depends on the macOS version; fp32 is the safe choice for lessons.
        return DeviceChoice("mps", torch.float32, "Apple の GPU（MPS）。安定のため float32")
    if prefer not in (None, "cpu"):
        raise RuntimeError(f"device {prefer!r} was requested but is not available; use prefer=None to pick automatically")
    return DeviceChoice("cpu", torch.float32, "GPU が見つからないので、CPU で float32")


KEY_PACKAGES = ("torch", "transformers", "peft", "papermill", "jupyter-book", "openai")


def environment_info(packages: tuple[str, ...] = KEY_PACKAGES) -> dict:
    """Python, platform, torch threads and the versions of ``packages`` (None when not installed)."""
    import importlib.metadata as md
    import platform

    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "torch_threads": torch.get_num_threads()}


# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold_mb: int = 32, trim_threshold_mb: int = 1024) -> bool:
    """Let glibc keep freed memory in the process for the next allocation (Linux; elsewhere a no-op).

    By default glibc returns a freed block above 128 KiB to the kernel, so the next training step maps
    it again and takes a page fault on every page it touches. Measured 2026-11-30 on the 2-core machine,
    39 optimizer steps of level 3's first training on the tiny model in a fresh process: 8.9-10.3 s
    alone and 9.0-9.2 s with two at once (0.5-0.9 million page faults, 0.9-1.5 s in the kernel); with
    these settings 7.0-8.3 s and 7.4-7.6 s (0.06-0.07 million, 0.2 s); the same loss. glibc raises its
    limits by itself after freeing large blocks, so a process that has already generated text gains
    less (level 3's workers: no change measurable in a whole quick run). Blocks up to
    ``mmap_threshold_mb`` (32 MiB, glibc's upper limit) now come from the heap, and up to
    ``trim_threshold_mb`` of free heap is kept.
    Returns True when the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold_mb << 20)) and \
        bool(mallopt(M_TRIM_THRESHOLD, trim_threshold_mb << 20))
