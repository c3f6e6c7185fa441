import subprocess
import sys

import pytest
import torch

from course_lib import profiles
from course_lib.device import pick_device


def test_device_choice_on_this_machine():
    choice = pick_device()
    if torch.cuda.is_available():
        assert choice.device == "cuda"
    else:
        assert choice.device in ("mps", "cpu")
    if choice.device == "cpu":
        assert choice.dtype == torch.float32
    assert pick_device("cpu").device == "cpu"


# Where a 24 MiB block (a training step's activations) comes from: glibc's default maps it on its own and unmaps
# it when freed (the next step faults it in again); kept memory takes it from the heap, which stays.
BLOCK_SOURCE = """
import sys, torch
from course_lib.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
address = torch.empty(6 << 20).data_ptr()
with open("/proc/self/maps") as fh:
    (heap,) = [line for line in fh if line.rstrip().endswith("[heap]")]
low, high = (int(x, 16) for x in heap.split()[0].split("-"))
print("heap" if low <= address < high else "mapped")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings exist on Linux only")
def test_a_training_sized_block_comes_from_the_kept_heap_instead_of_its_own_mapping():
    def source(mode: str) -> str:
        out = subprocess.run([sys.executable, "-c", BLOCK_SOURCE, mode], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    assert source("default") == "mapped"  # glibc's default above its mmap threshold
    assert source("keep") == "heap"


def test_keeping_freed_memory_is_a_no_op_off_linux(monkeypatch):
    from course_lib import device

    monkeypatch.setattr(device.sys, "platform", "darwin")
    assert device.keep_freed_memory() is False


def test_the_tiny_model_on_the_cpu_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(profiles, "keep_freed_memory", lambda: calls.append("kept") or True)
    loaded = profiles.load_model("tiny", device="cpu", verbose=False)
    assert loaded.profile == "tiny" and calls == ["kept"]


@pytest.mark.parametrize("gpu, native_bf16, dtype", [("NVIDIA H200", True, torch.bfloat16),
                                                     ("Tesla T4", False, torch.float16)])
def test_cuda_dtype_is_bf16_where_native_else_fp16(monkeypatch, gpu, native_bf16, dtype):
    # A T4 (Colab's free GPU) only emulates bf16: torch's default answer would be True there.
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native_bf16 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: gpu)
    choice = pick_device()
    assert (choice.device, choice.dtype) == ("cuda", dtype) and gpu in choice.why
    assert asked == {"including_emulation": False}


@pytest.mark.parametrize("dtype, flags", [(torch.float16, (False, True)), (torch.bfloat16, (True, False)),
                                          (torch.float32, (False, False))])
def test_train_turns_on_the_mixed_precision_of_the_model_dtype(monkeypatch, dtype, flags):
    from course_lib import train as train_mod

    class Stop(Exception):
        pass

    def capture(*args, bf16, fp16, **kwargs):
        raise Stop((bf16, fp16))

    monkeypatch.setattr(train_mod, "training_arguments", capture)
    model = torch.nn.Linear(2, 2).to(dtype)

    class Tok:
        pad_token_id = 0

    monkeypatch.setattr(train_mod, "encode_dataset", lambda *a, **k: [])
    with pytest.raises(Stop) as stop:
        train_mod.train(model, Tok(), [{"prompt": "p", "response": "r"}])
    assert stop.value.args[0] == flags


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model profile 'gpt5'.*auto, tiny, qwen3-0.6b"):
        profiles.resolve_profile("gpt5")


def test_auto_falls_back_to_tiny_offline(monkeypatch):
    monkeypatch.delenv("COURSE_QWEN_PATH", raising=False)
    monkeypatch.setattr(profiles, "_qwen_in_local_cache", lambda: False)
    monkeypatch.setattr(profiles, "_hub_reachable", lambda timeout=2.0: False)
    r = profiles.resolve_profile("auto")
    assert r.profile == "tiny" and "接続できない" in r.why


def test_auto_prefers_qwen_when_hub_is_reachable(monkeypatch):
    monkeypatch.delenv("COURSE_QWEN_PATH", raising=False)
    monkeypatch.setattr(profiles, "_qwen_in_local_cache", lambda: False)
    monkeypatch.setattr(profiles, "_hub_reachable", lambda timeout=2.0: True)
    r = profiles.resolve_profile("auto")
    assert (r.profile, r.source) == ("qwen3-0.6b", "Qwen/Qwen3-0.6B")


def test_hub_check_does_not_hang_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert profiles._hub_reachable() is False


def test_real_path_loads_a_local_qwen3_folder(monkeypatch, small_model_dir, capsys):
    """The qwen3-0.6b profile goes through from_pretrained on a local folder (COURSE_QWEN_PATH).

    Here the folder holds a small Qwen3 built by the course: same code path as the real weights.
    """
    monkeypatch.setenv("COURSE_QWEN_PATH", str(small_model_dir))
    loaded = profiles.load_model("qwen3-0.6b")
    assert loaded.profile == "qwen3-0.6b" and loaded.source == str(small_model_dir)
    assert type(loaded.model).__name__ == "Qwen3ForCausalLM"
    banner = capsys.readouterr().out
    assert "Qwen/Qwen3-0.6B" in banner and "デバイス" in banner and loaded.device.device in banner


def test_bad_local_path_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_QWEN_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="COURSE_QWEN_PATH=.*no config.json"):
        profiles.resolve_profile("qwen3-0.6b")


def test_qwen_requested_offline_fails_fast_with_the_ways_forward(monkeypatch):
    import time

    monkeypatch.delenv("COURSE_QWEN_PATH", raising=False)
    monkeypatch.setattr(profiles, "_qwen_in_local_cache", lambda: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what an offline machine reports; no hub retries follow
    start = time.perf_counter()
    with pytest.raises(profiles.ModelUnavailableError) as info:
        profiles.load_model("qwen3-0.6b", verbose=False)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    for needle in ("COURSE_QWEN_PATH", 'model_profile="tiny"', "hf download Qwen/Qwen3-0.6B", "読み込めません", "unreachable"):
        assert needle in message


def test_qwen_requested_uses_the_local_cache_before_the_hub(monkeypatch):
    monkeypatch.delenv("COURSE_QWEN_PATH", raising=False)
    monkeypatch.setattr(profiles, "_qwen_in_local_cache", lambda: True)
    monkeypatch.setattr(profiles, "_hub_reachable", lambda timeout=2.0: pytest.fail("the cache hit needs no network"))
    assert "キャッシュ" in profiles.resolve_profile("qwen3-0.6b").why


def test_the_test_session_cannot_reach_the_internet():
    """The test command blocks every socket except loopback (pytest-socket, see pyproject.toml)."""
    import socket

    with pytest.raises(Exception) as info:
        socket.create_connection(("93.184.216.34", 443), timeout=1)
    assert type(info.value).__name__ == "SocketConnectBlockedError", info.value
