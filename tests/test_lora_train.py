import re

import pytest
import torch

from course_lib.generate import sample_answers
from course_lib.lora import (ALL_PROJ_MODULES, ATTENTION_MODULES, attach_lora, count_parameters,
                             load_adapter, lora_parameter_count, merge_adapter, save_adapter)
from course_lib.train import TrainConfig, train

RECORDS = [{"prompt": f"質問{i}：季節は？", "response": "【結論】春です。\n【理由】暖かいからです。"} for i in range(8)]


@pytest.mark.parametrize("r, modules", [(1, ATTENTION_MODULES), (4, ("q_proj", "v_proj")), (16, ALL_PROJ_MODULES)])
def test_trainable_parameters_match_peft_and_arithmetic(small_model, capsys, r, modules):
    model, _ = small_model
    expected = lora_parameter_count(model, r, modules)
    peft_model = attach_lora(model, lora_r=r, target_modules=modules)
    trainable, total = count_parameters(peft_model)
    assert trainable == expected.trainable > 0 and total == expected.total
    peft_model.print_trainable_parameters()
    printed = re.search(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)", capsys.readouterr().out)
    assert (int(printed[1].replace(",", "")), int(printed[2].replace(",", ""))) == (trainable, total)


def test_short_training_lowers_loss_and_adapter_round_trips(fresh_course_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = fresh_course_model
    peft_model = attach_lora(model, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    result = train(peft_model, tok, RECORDS[:6], RECORDS[6:],
                   TrainConfig(num_train_epochs=8, learning_rate=2e-3, per_device_train_batch_size=2))
    losses = result.train_loss["loss"].tolist()
    assert len(losses) == result.steps == 24
    assert losses[-1] < 0.5 * losses[0]
    assert len(result.eval_loss) == 8  # one evaluation per epoch

    prompts = ["質問1：季節は？", "別の質問"]
    before = sample_answers(peft_model, tok, prompts, temperature=0, max_new_tokens=12, progress=False)
    save_adapter(peft_model, tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(model.name_or_path)
    reloaded = load_adapter(base, tmp_path / "adapter")
    assert sample_answers(reloaded, tok, prompts, temperature=0, max_new_tokens=12, progress=False) == before
    merged = merge_adapter(reloaded)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert sample_answers(merged, tok, prompts, temperature=0, max_new_tokens=12, progress=False) == before


def test_early_stopping_needs_validation(small_model):
    model, tok = small_model
    with pytest.raises(ValueError, match="val_records"):
        train(attach_lora(model), tok, RECORDS, None, TrainConfig(early_stopping_patience=1))
