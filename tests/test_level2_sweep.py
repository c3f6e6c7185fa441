"""Level 2, ``course_lib.level2.sweep`` and ``.tables``: the parameter counts the sweep reports,
and the sweep itself (base model restored exactly, reproducible, cached, guarded)."""
from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from course_lib.level2.sweep import (MODULE_SETS, dataset_loss, example_losses, make_spec, run_sweep,
                                     worker_model_folder)
from course_lib.level2.tables import japanese_table
from course_lib.lora import (ALL_PROJ_MODULES, ATTENTION_MODULES, MLP_MODULES, attach_lora, lora_parameter_count,
                             lora_parameter_table)

# every test of this module on one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

PEFT_LINE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)")


def _peft_numbers(text: str) -> tuple[int, int, str]:
    match = PEFT_LINE.search(text)
    assert match, f"no print_trainable_parameters line in {text!r}"
    return int(match[1].replace(",", "")), int(match[2].replace(",", "")), match[3]


# --------------------------------------------------------------------------- the counts in the table

@pytest.mark.parametrize("r", [1, 4, 16])
@pytest.mark.parametrize("modules", [ALL_PROJ_MODULES, ATTENTION_MODULES, MLP_MODULES, MODULE_SETS["q,v"]],
                         ids=["all7", "attention", "mlp", "qv"])
def test_parameter_count_matches_print_trainable_parameters(tiny, capsys, r, modules):
    model, _ = tiny
    predicted = lora_parameter_count(model, r, modules)
    peft_model = attach_lora(model, lora_r=r, lora_alpha=2 * r, target_modules=modules)
    try:
        capsys.readouterr()
        peft_model.print_trainable_parameters()
        printed = capsys.readouterr().out
        # the arithmetic also works on the wrapped model (it looks through the LoRA layers)
        assert lora_parameter_count(peft_model, r, modules) == predicted
    finally:
        peft_model.unload()
    trainable, total, pct = _peft_numbers(printed)
    assert (trainable, total) == (predicted.trainable, predicted.total)
    assert pct == f"{predicted.percent:.4f}"
    assert printed.strip() == str(predicted)


def test_parameter_count_is_r_times_in_plus_out(tiny):
    model, _ = tiny
    table = lora_parameter_table(model, 8, ALL_PROJ_MODULES)
    # tiny: hidden 128, 4 heads x 32, 2 KV heads x 32, intermediate 384, 3 layers
    shapes = dict(zip(table["module"], zip(table["in_features"], table["out_features"])))
    assert shapes == {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64), "o_proj": (128, 128),
                      "gate_proj": (128, 384), "up_proj": (128, 384), "down_proj": (384, 128)}
    assert lora_parameter_count(model, 8).trainable == 3 * 8 * sum(i + o for i, o in shapes.values())
    with pytest.raises(ValueError, match="no Linear layer"):
        lora_parameter_count(model, 8, ["not_a_module"])


# --------------------------------------------------------------------------- configs

def test_make_spec_uses_peft_and_trainer_names():
    spec = make_spec(dict(lora_r=4, learning_rate=1e-3, num_train_epochs=2, lr_scheduler_type="cosine"),
                     defaults=dict(lora_dropout=0.1, per_device_train_batch_size=2), seed=7)
    assert (spec.lora_r, spec.lora_alpha, spec.lora_dropout) == (4, 8.0, 0.1), "lora_alpha defaults to 2 * lora_r"
    assert spec.target_modules == ALL_PROJ_MODULES
    assert (spec.train.learning_rate, spec.train.num_train_epochs, spec.train.lr_scheduler_type) == (1e-3, 2.0, "cosine")
    assert spec.train.per_device_train_batch_size == 2 and spec.train.seed == 7
    assert spec.name == "r=4, α=8, all7"
    with pytest.raises(ValueError, match="'lr' is now 'learning_rate'"):
        make_spec(dict(lr=1e-3))
    with pytest.raises(ValueError, match="unknown setting"):
        make_spec(dict(not_a_setting=1))


def test_japanese_table_labels_and_rounding():
    table = pd.DataFrame({"lora_r": [8], "learning_rate": [0.0001], "val_loss": [1.23456], "trainable_pct": [4.97355],
                          "gap": [0.12345]})
    shown = japanese_table(table, ["lora_r", "learning_rate", "val_loss", "trainable_pct", "gap"],
                           labels={"gap": "差"})
    assert list(shown.columns) == ["r", "学習率", "検証損失", "割合(%)", "差"]
    assert shown.iloc[0].tolist() == [8, 0.0001, 1.235, 4.974, 0.123], "the learning rate is never rounded away"


# --------------------------------------------------------------------------- the sweep

def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sweep_restores_base_weights_exactly_and_is_reproducible(tiny, records):
    model, tok = tiny
    before = _state(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    configs = [dict(lora_r=2, lora_alpha=4),
               dict(lora_r=8, lora_alpha=16, lora_dropout=0.1, target_modules=ATTENTION_MODULES)]
    common = dict(max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2)
    # serial: the runs attach to and detach from THIS model (workers would train their own copies)
    table = run_sweep(model, tok, configs, records[:8], records[8:12], progress=False, defaults=common, workers=1)

    after = model.state_dict()
    assert set(after) == set(before), "the adapter's tensors must be gone"
    assert all(torch.equal(before[k], after[k]) for k in before), "base weights changed"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not hasattr(model, "peft_config")

    assert list(table["lora_r"]) == [2, 8]
    assert list(table["lora_dropout"]) == [0.0, 0.1] and list(table["target_modules"]) == ["all7", "attention"]
    assert list(table["trainable_params"]) == [lora_parameter_count(model, 2).trainable,
                                              lora_parameter_count(model, 8, ATTENTION_MODULES).trainable]
    assert sorted(table.histories["run"].unique()) == [0, 1]
    assert len(table.history(1).dropna(subset=["loss"])) == 2
    assert table["val_loss"].notna().all() and (table["steps"] == 2).all()

    again = run_sweep(model, tok, configs, records[:8], records[8:12], progress=False, defaults=common, workers=1)
    assert list(again["val_loss"]) == list(table["val_loss"]), "same seed, same table"


MEASURED_HERE = ("seconds", "peak_memory_mb")  # what each run measures of its own process and moment


def test_sweep_in_two_workers_equals_the_serial_sweep(tiny, records):
    from course_lib import timing

    model, tok = tiny
    before = _state(model)
    configs = [dict(lora_r=2, lora_alpha=4), dict(lora_r=4, target_modules=ATTENTION_MODULES),
               dict(lora_r=2, lora_dropout=0.1, learning_rate=3e-3)]
    common = dict(max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2)
    serial = run_sweep(model, tok, configs, records[:8], records[8:12], progress=False, defaults=common, workers=1)
    timing.reset()
    parallel = run_sweep(model, tok, configs, records[:8], records[8:12], progress=False, defaults=common, workers=2)
    assert timing.breakdown()["in_workers"] > 0, "the runs were trained in worker processes"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "this model was not trained"
    columns = [c for c in serial.columns if c not in MEASURED_HERE]
    assert list(parallel.columns) == list(serial.columns)
    pd.testing.assert_frame_equal(pd.DataFrame(parallel[columns]), pd.DataFrame(serial[columns]), check_exact=True)
    pd.testing.assert_frame_equal(parallel.histories, serial.histories, check_exact=True)


def test_workers_refuse_a_base_model_changed_after_loading(tiny, records):
    model, tok = tiny
    weight = model.get_input_embeddings().weight
    original = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] += 1.0  # this model no longer equals the folder the workers load
        with pytest.raises(RuntimeError, match="differs from this one"):
            run_sweep(model, tok, [dict(lora_r=2), dict(lora_r=4)], records[:4], None, progress=False,
                      defaults=dict(max_steps=1, per_device_train_batch_size=4), workers=2)
    finally:
        with torch.no_grad():
            weight.copy_(original)


def test_only_a_small_model_loaded_from_a_local_folder_goes_to_workers(tiny, monkeypatch):
    import copy

    from transformers import AutoModelForCausalLM

    import course_lib.level2.sweep as sweep_module

    model, _ = tiny
    assert (worker_model_folder(model) / "config.json").is_file()
    config = copy.deepcopy(model.config)
    config._name_or_path = ""
    assert worker_model_folder(AutoModelForCausalLM.from_config(config)) is None  # built in memory: nothing to load
    monkeypatch.setattr(sweep_module.BaseSnapshot, "EXACT_LIMIT", 1000)
    assert worker_model_folder(model) is None  # too large for a second copy


def test_sweep_final_val_loss_matches_trainer_eval_loss(tiny, records):
    model, tok = tiny
    config = dict(lora_r=4, num_train_epochs=1, per_device_train_batch_size=4, learning_rate=1e-2)
    table = run_sweep(model, tok, [config], records[:8], records[8:13], progress=False)
    assert table.iloc[0]["val_loss"] == pytest.approx(table.iloc[0]["best_val_loss"], abs=1e-5)


def _hf_loss(model, tok, records) -> float:
    """The loss the model itself computes for a batch (what Trainer averages)."""
    from course_lib.sft import AnswerOnlyCollator, encode_dataset

    with torch.no_grad():
        return float(model(**AnswerOnlyCollator(tok.pad_token_id)(encode_dataset(tok, records))).loss)


def test_example_losses_are_each_examples_own_answer_only_loss(tiny, records):
    model, tok = tiny
    some = records[:6]
    alone = [_hf_loss(model, tok, [r]) for r in some]
    assert example_losses(model, tok, some, batch_size=1) == pytest.approx(alone, abs=1e-5)
    # padding a batch to its longest example changes no example's loss
    assert example_losses(model, tok, some, batch_size=4) == pytest.approx(alone, abs=1e-4)
    # dataset_loss: each batch's own (token-mean) loss, weighted by batch size, as Trainer.evaluate does
    expected = (_hf_loss(model, tok, some[:4]) * 4 + _hf_loss(model, tok, some[4:]) * 2) / 6
    assert dataset_loss(model, tok, some, batch_size=4) == pytest.approx(expected, abs=1e-5)


def test_sweep_rows_carry_one_loss_per_example(tiny, records):
    model, tok = tiny
    table = run_sweep(model, tok, [dict(lora_r=2, max_steps=1, per_device_train_batch_size=4)], records[:8],
                      records[8:13], progress=False)
    row = table.iloc[0]
    assert len(row["train_example_losses"]) == 8 and len(row["val_example_losses"]) == 5
    # the examples are weighted equally here; dataset_loss weights batches (one batch of 5: token-weighted)
    assert sum(row["val_example_losses"]) / 5 == pytest.approx(row["val_loss"], rel=0.05)


def test_sweep_cache_skips_identical_runs(tiny, records, monkeypatch):
    import course_lib.level2.sweep as sweep_module

    model, tok = tiny
    calls = []
    real_train = sweep_module.train_model
    monkeypatch.setattr(sweep_module, "train_model", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    cache = {}
    common = dict(max_steps=1, per_device_train_batch_size=4)
    first = run_sweep(model, tok, [dict(lora_r=2)], records[:4], None, progress=False, defaults=common, cache=cache)
    second = run_sweep(model, tok, [dict(lora_r=2, num_train_epochs=3.0, name="same run")], records[:4], None,
                       progress=False, defaults=common, cache=cache)
    assert len(calls) == 1
    assert second.iloc[0]["name"] == "same run" and second.iloc[0]["train_loss"] == first.iloc[0]["train_loss"]


def test_sweep_notices_a_changed_base(tiny, records):
    model, tok = tiny
    weight = model.get_input_embeddings().weight
    original = weight.detach().clone()

    def vandal(peft_model, tokenizer):
        with torch.no_grad():
            weight[0, 0] += 1.0
        return {}

    try:
        with pytest.raises(RuntimeError, match="changed the base model"):
            run_sweep(model, tok, [dict(lora_r=2, max_steps=1, per_device_train_batch_size=4)], records[:4], None,
                      progress=False, evaluate=vandal)
    finally:
        with torch.no_grad():
            weight.copy_(original)
