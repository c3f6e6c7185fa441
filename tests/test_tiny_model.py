import hashlib
from dataclasses import replace

import torch

from course_lib.tiny_model import SPECIAL_TOKENS, build_tiny_model, quick_recipe, recipe_hash


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_byte_identical(tmp_path, small_model_dir):
    again = build_tiny_model(tmp_path / "again", quick_recipe(), progress=False)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(small_model_dir / name) == digest(again / name), name


def test_recipe_hash_follows_the_recipe():
    r = quick_recipe()
    assert recipe_hash(r) == recipe_hash(r)
    assert recipe_hash(r) != recipe_hash(replace(r, steps=r.steps + 1))


def test_from_pretrained_round_trip(small_model_dir, small_model):
    from transformers import AutoModelForCausalLM

    model, tokenizer = small_model
    assert type(model).__name__ == "Qwen3ForCausalLM"
    for tok in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(tok) != tokenizer.unk_token_id
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer("日本語のテキスト", return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == "日本語のテキスト"  # byte-level BPE is lossless
    reloaded = AutoModelForCausalLM.from_pretrained(small_model_dir).eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_chat_template_is_chatml(small_model):
    _, tokenizer = small_model
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "こんにちは"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert text == "<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n"


def test_course_model_was_pretrained(course_model):
    """The embedded model must be pre-trained: LoRA cannot steer a random base."""
    import json
    from pathlib import Path

    info = json.loads((Path(course_model.source) / "course_build.json").read_text())
    assert info["final_loss"] < 0.5 * info["first_loss"]
    assert course_model.profile == "tiny" and course_model.label.startswith("tiny")
