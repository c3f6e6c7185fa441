"""Pick the compute device and a dtype that suits it."""
from __future__ import annotations

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
    """cuda > mps > cpu; bf16 where the accelerator supports it, else fp32.

    ``prefer`` forces a device ("cpu" is handy for reproducible CPU runs on a GPU box).
    """
    if prefer == "cpu":
        return DeviceChoice("cpu", torch.float32, "forced by the caller")
    if (prefer in (None, "cuda")) and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return DeviceChoice("cuda", torch.bfloat16, f"{torch.cuda.get_device_name(0)} supports bfloat16")
        return DeviceChoice("cuda", torch.float32, f"{torch.cuda.get_device_name(0)} lacks bfloat16, using float32")
    if (prefer in (None, "mps")) and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        # bf16 on MPS depends on the macOS version; fp32 is the safe choice for lessons.
        return DeviceChoice("mps", torch.float32, "Apple GPU (MPS), float32 for stability")
    if prefer not in (None, "cpu"):
        raise RuntimeError(f"device {prefer!r} was requested but is not available; use prefer=None to pick automatically")
    return DeviceChoice("cpu", torch.float32, "no GPU found, float32 on CPU")


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
