"""The pure parts of benchmarks/bench_qwen3_shape.py: the configuration, the LoRA arithmetic, the
lesson step counts and estimates. No 0.6B model is built here (a 2-layer one at most)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from course_lib.level2.cost import QWEN3_0_6B
from course_lib.level3.config import PROFILE_DEFAULTS, LoopConfig
from course_lib.paths import DATASETS_DIR, REPO_ROOT

spec = importlib.util.spec_from_file_location("bench_qwen3_shape", REPO_ROOT / "benchmarks" / "bench_qwen3_shape.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def n_lines(name: str) -> int:
    return sum(1 for line in (DATASETS_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip())


def test_config_is_qwen3_0_6b_and_agrees_with_level2():
    c = bench.QWEN3_0_6B_CONFIG
    assert {k: c[k] for k in QWEN3_0_6B} == QWEN3_0_6B
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]) == (1024, 3072, 28)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (16, 8, 128)
    assert (c["vocab_size"], c["max_position_embeddings"], c["rms_norm_eps"]) == (151936, 40960, 1e-6)
    assert c["rope_parameters"]["rope_theta"] == 1_000_000 and c["tie_word_embeddings"] is True
    config = bench.qwen3_config()
    assert config.num_hidden_layers == 28 and config.tie_word_embeddings
    assert config.rope_parameters["rope_theta"] == 1_000_000


def test_transformers_defaults_are_not_qwen3_0_6b():
    # Why every value is explicit: Qwen3Config() is Qwen3-8B-shaped.
    from transformers import Qwen3Config

    default = Qwen3Config()
    assert (default.hidden_size, default.num_hidden_layers) != (1024, 28)


def test_lora_arithmetic_matches_level2():
    assert bench.lora_params_per_layer_per_r(1024, 3072, 16, 8, 128) == bench.LORA_PER_LAYER_PER_R == 22_528
    assert bench.lora_parameters(1) == 630_784
    assert bench.lora_parameters(16) == 10_092_544  # level 2: r=16 -> 10,092,544


def test_lora_count_on_a_shrunk_model_matches_the_arithmetic():
    import torch

    from course_lib.lora import attach_lora, count_parameters

    small = dict(num_hidden_layers=2, vocab_size=512, hidden_size=64, intermediate_size=96,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = bench.build_model(bench.qwen3_config(**small), "cpu", torch.float32)
    trainable, _ = count_parameters(attach_lora(model, lora_r=4, lora_alpha=8))
    assert trainable == bench.lora_parameters(4, {**bench.QWEN3_0_6B_CONFIG, **small})


def test_settings_are_the_lessons():
    qwen = LoopConfig.for_profile("qwen3-0.6b")
    assert (qwen.lora_r, qwen.lora_alpha, qwen.lora_dropout) == tuple(bench.LORA.values())
    for key in ("epochs_initial", "epochs_iter", "iterations", "n_samples", "n_paraphrase", "gen_batch_size",
                "max_new_tokens", "temperature", "top_p"):
        assert getattr(qwen, key) == bench.LEVEL3[key], key
    assert qwen.per_device_train_batch_size == bench.LEVEL3["batch"]
    assert PROFILE_DEFAULTS["qwen3-0.6b"]["lora_r"] == 16
    level1 = (REPO_ROOT / "notebooks" / "level1_basics.py").read_text(encoding="utf-8")
    assert ('"learning_rate": 2e-4, "num_train_epochs": 3, "quick_num_train_epochs": 2,\n'
            '                   "per_device_train_batch_size": 8') in level1


def test_step_counts_follow_the_data():
    counts = bench.lesson_step_counts(n_level1_train=60, n_level3_train=50, n_level3_references=30,
                                      n_symptoms=15, n_paraphrases=75)
    assert counts["level1"] == {"batch": 8, "steps": 8 * 3, "steps_quick": 8 * 2}
    l3 = counts["level3"]
    assert l3["iter0_steps"] == 13 * 100 and l3["iteration_steps_max"] == 8 * 30
    # the control trains as many steps as the loop: twice the loop in all
    assert (l3["train_steps_min"], l3["train_steps_max"]) == (2 * 1300, 2 * (1300 + 2 * 240))
    assert l3["stages"] == 5 and l3["answers"] == 5 * (15 * 30 + 75 * 10)
    assert l3["sampling_batches"] == 5 * (8 + 12)  # ceil(450 / 64) + ceil(750 / 64) per stage


def test_step_counts_use_the_shipped_datasets():
    assert (n_lines("level1/train.jsonl"), n_lines("level3/train_initial.jsonl"),
            n_lines("level3/references.jsonl"), n_lines("level3/symptoms.jsonl")) == (60, 50, 30, 15)


def test_estimates_multiply_steps_by_the_measured_times():
    counts = bench.lesson_step_counts(60, 50, 30, 15, 75)
    est = bench.lesson_estimates(counts, {4: 0.5, 8: 1.0}, sec_per_sampling_batch=10.0)
    assert est["level1_train_s"] == 24 * 1.0 and est["level1_train_quick_s"] == 16 * 1.0
    assert est["level3_train_s"] == [2600 * 0.5, 3560 * 0.5]
    assert est["level3_sampling_s"] == 100 * 10.0
    assert est["level3_total_s"] == [1300 + 1000, 1780 + 1000]
    missing = bench.lesson_estimates(counts, {4: 0.5}, None)
    assert missing["level1_train_s"] is None and missing["level3_total_s"] is None


def test_chat_template_tail_closes_an_empty_thinking_block():
    from transformers import AutoTokenizer

    from course_lib.sft import chat_prompt
    from course_lib.tiny_model import ensure_tiny_model

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model(progress=False))
    tok.chat_template = bench.QWEN3_TEMPLATE
    assert chat_prompt(tok, "質問").endswith("<|im_start|>assistant\n" + bench.EMPTY_THINK)


@pytest.mark.parametrize("name", ["qwen3_shape_cpu.json"])
def test_the_recorded_measurement_says_where_and_when(name):
    path = REPO_ROOT / "benchmarks" / "results" / name
    if not path.exists():
        pytest.skip(f"{path} not recorded")
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["hardware"] and report["date"] and report["torch"] and not report["smoke_test"]
    (run,) = report["runs"]
    assert run["checks"]["parameters"] == bench.QWEN3_0_6B_PARAMETERS
    assert all(v for k, v in run["checks"].items() if k.endswith(("matches_level2_shapes", "match_level2",
                                                                  "630784_r", "thinking_disabled")))
    assert run["train"][0]["lora_trainable"] == bench.lora_parameters(16)
