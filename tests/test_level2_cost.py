"""Level 2, ``course_lib.level2.cost``: Qwen3-0.6B's shapes without weights, and the cost table."""
from __future__ import annotations

import pytest
import torch

from course_lib.level2.cost import StepTimer, long_records, measure_cost, qwen3_0_6b_skeleton
from course_lib.lora import attach_lora, lora_parameter_count


def test_qwen3_0_6b_arithmetic_matches_peft_on_meta_model(capsys):
    qwen = qwen3_0_6b_skeleton()
    assert sum(p.numel() for p in qwen.parameters()) == 596_049_920
    predicted = lora_parameter_count(qwen, 16)
    assert predicted.trainable == 16 * 28 * 22_528 == 10_092_544
    peft_model = attach_lora(qwen, lora_r=16, lora_alpha=32)
    capsys.readouterr()
    peft_model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == str(predicted)


def test_step_timer_median_leaves_out_the_first_step():
    timer = StepTimer()
    timer.durations = [5.0, 1.0, 2.0, 3.0]
    assert timer.median() == 2.0
    timer.durations = [4.0]
    assert timer.median() == 4.0


def test_measure_cost_table_has_one_row_per_rank_and_length(tiny):
    from course_lib.level1 import load_level1_split

    model, tok = tiny
    records = load_level1_split("train")[:4]
    data = long_records(tok, records, 40, n=3)
    assert len(data) == 3 and all(len(tok(r["response"])["input_ids"]) >= 40 for r in data)
    cost = measure_cost(model, tok, records, ranks=[1, 4], seq_lengths=[16, 32], steps=2, batch_size=2,
                        progress=False)
    assert list(cost.columns) == ["lora_r", "seq_len", "tokens_per_step", "trainable_params", "seconds",
                                  "sec_per_step", "peak_memory_mb"]
    assert list(zip(cost["lora_r"], cost["seq_len"])) == [(1, 16), (1, 32), (4, 16), (4, 32)]
    assert list(cost["tokens_per_step"]) == [32, 64, 32, 64]
    assert list(cost["trainable_params"]) == [lora_parameter_count(model, r).trainable for r in (1, 1, 4, 4)]
    assert (cost["sec_per_step"] > 0).all()
