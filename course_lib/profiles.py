"""Model profiles: which model a lesson runs on, loaded the same way in every case.

- ``qwen3-0.6b``: ``Qwen/Qwen3-0.6B`` from the Hugging Face hub, or a local copy
  named by the environment variable ``COURSE_QWEN_PATH``.
- ``tiny``: the course's own Qwen3-architecture model, built offline (see
  :mod:`course_lib.tiny_model`).
- ``auto``: ``qwen3-0.6b`` when it can be loaded (local copy, local hub cache,
  or a reachable hub), else ``tiny``. It never waits long on a dead network.

Both real and tiny go through ``AutoModelForCausalLM.from_pretrained``.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT, qwen_path
from .device import DeviceChoice, keep_freed_memory, pick_device

QWEN_ID = "Qwen/Qwen3-0.6B"
PROFILES = ("auto", "tiny", "qwen3-0.6b")
# The model's name next to every result on the (Japanese) pages.
LABELS = {"tiny": "tiny（コースが作る Qwen3 型の小さなモデル）", "qwen3-0.6b": "Qwen/Qwen3-0.6B"}
# The name stored in level-3 run identities: kept as it was, so existing run folders keep their hashes.
IDENTITY_LABELS = {"tiny": "tiny (course-built Qwen3-architecture model)", "qwen3-0.6b": "Qwen/Qwen3-0.6B"}


@dataclass
class Resolved:
    profile: str  # "tiny" | "qwen3-0.6b"
    source: str  # hub id or local folder
    why: str


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    profile: str
    source: str
    device: DeviceChoice
    why: str
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name to print next to any result this model produced."""
        return LABELS[self.profile]

    def banner(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        source = self.source
        try:  # a path inside the repository is shown relative to it (no machine paths on pages)
            source = str(Path(source).resolve().relative_to(REPO_ROOT))
        except ValueError:
            pass
        return (
            f"モデル      : {self.label}  [{source}]\n"
            f"パラメータ数: {n:,}\n"
            f"デバイス    : {self.device.device}（{self.device.dtype_name}。{self.device.why}）\n"
            f"選んだ理由  : {self.why}"
        )


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except Exception:  # no route, no DNS, a sandbox that forbids sockets: all mean "not reachable"
        return False


class ModelUnavailableError(RuntimeError):
    """The requested model cannot be loaded here; the message says what was tried and what to do."""


def _qwen_unavailable_message() -> str:
    return (
        "Qwen3-0.6B を読み込めません（Qwen3-0.6B is not available here）。\n"
        "試したこと / tried: COURSE_QWEN_PATH（未設定 / not set）、Hugging Face のローカルキャッシュ"
        "（見つからない / not cached）、Hugging Face hub（接続できない / unreachable）。\n"
        "次のどれかを選んでください / ways forward:\n"
        "  1. model_profile=\"tiny\" で、コース内蔵の小さなモデルを使う（オフラインで動きます）\n"
        "     use the course's embedded model: model_profile=\"tiny\" (works offline)\n"
        "  2. ダウンロード済みのフォルダを COURSE_QWEN_PATH で指定する / point COURSE_QWEN_PATH at a local copy\n"
        "  3. ネットにつながる環境で一度ダウンロードする / download it once on a connected machine:\n"
        "     hf download Qwen/Qwen3-0.6B --local-dir <folder>  (then set COURSE_QWEN_PATH=<folder>)")


def _qwen_in_local_cache() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(QWEN_ID, "config.json")
        return isinstance(hit, str)
    except Exception:  # an old or missing hub client: treat as not cached
        return False


def resolve_profile(profile: str = "auto") -> Resolved:
    """Decide which model to load, and say why."""
    if profile not in PROFILES:
        raise ValueError(f"unknown model profile {profile!r}; choose one of {', '.join(PROFILES)}")
    local = qwen_path()
    if profile == "tiny":
        from .tiny_model import tiny_model_dir

        return Resolved("tiny", str(tiny_model_dir()), "指定どおり tiny を使います（model_profile='tiny'）")
    if profile == "qwen3-0.6b":
        if local:
            if not Path(local, "config.json").exists():
                raise FileNotFoundError(f"COURSE_QWEN_PATH={local} has no config.json; point it at a Qwen3-0.6B folder or unset it")
            return Resolved("qwen3-0.6b", local, "指定どおり Qwen3-0.6B を使います（COURSE_QWEN_PATH のローカルコピー）")
        if _qwen_in_local_cache():
            return Resolved("qwen3-0.6b", QWEN_ID, "指定どおり Qwen3-0.6B を使います（Hugging Face のローカルキャッシュ）")
        if not _hub_reachable():  # fail in seconds instead of a minute of hub retries
            raise ModelUnavailableError(_qwen_unavailable_message())
        return Resolved("qwen3-0.6b", QWEN_ID, "指定どおり Qwen3-0.6B を使います（Hugging Face Hub からダウンロード）")
    # auto
    if local and Path(local, "config.json").exists():
        return Resolved("qwen3-0.6b", local, "auto: COURSE_QWEN_PATH が Qwen3-0.6B のフォルダを指しています")
    if _qwen_in_local_cache():
        return Resolved("qwen3-0.6b", QWEN_ID, "auto: Hugging Face のローカルキャッシュに Qwen3-0.6B があります")
    if _hub_reachable():
        return Resolved("qwen3-0.6b", QWEN_ID, "auto: Hugging Face Hub に接続できます")
    from .tiny_model import tiny_model_dir

    return Resolved("tiny", str(tiny_model_dir()), "auto: Qwen3-0.6B が手元になく、Hugging Face Hub にも接続できないので、内蔵の tiny モデルを使います")


def load_model(profile: str = "auto", device: str | None = None, verbose: bool = True) -> LoadedModel:
    """Load tokenizer and model for a profile, move it to the best device, print a banner."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_profile(profile)
    if resolved.profile == "tiny":
        from .tiny_model import ensure_tiny_model

        ensure_tiny_model(progress=verbose)
    choice = pick_device(device)
    if resolved.profile == "tiny" and choice.device == "cpu":
        import torch

        # Tiny matrices: handing work between threads costs more than it saves,
        # and on a busy machine it made runs 10-40x slower (measured here).
        torch.set_num_threads(1)
        keep_freed_memory()  # small tensors freed and allocated at every step: no page faults for them
    tokenizer = AutoTokenizer.from_pretrained(resolved.source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=choice.dtype)
    model.to(choice.device)
    model.eval()
    loaded = LoadedModel(model, tokenizer, resolved.profile, resolved.source, choice, resolved.why)
    if verbose:
        print(loaded.banner())
    return loaded
