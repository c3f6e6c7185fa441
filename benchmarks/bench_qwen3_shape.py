"""What Qwen3-0.6B costs in the lessons, measured on a model of its exact shape with random weights.

No download: the model is built locally from the public Qwen/Qwen3-0.6B configuration values
(``QWEN3_0_6B_CONFIG`` below) with random weights. Step time, memory and sampling speed depend on
the shapes, not on the weight values, so these are the real model's costs for the same settings
(what random weights cannot tell is how long real answers are: sampling here always runs to
``max_new_tokens``, the worst case the loop allows).

Measured, for the lessons' Qwen3-0.6B settings:

* LoRA training step (r=16, alpha=32, dropout 0.05, the seven projections, AdamW through the
  course's own ``course_lib.train.train``): seconds per optimizer step and peak memory, at level 3's
  batch (4) and level 1/2's batch (8), each at the longest chat-formatted example of that lesson's
  training set (batches are padded to their longest example). Lengths are counted with the course's
  tiny tokenizer, a byte-level BPE trained on Japanese, as a proxy for Qwen's tokenizer (not
  downloadable here); ``token_lengths`` in the JSON records them.
* Sampling (temperature 0.7, top-p 0.9, the ``qwen3-0.6b`` loop settings): tokens per second at
  level 3's generation batch (64) and ``max_new_tokens`` (192) on CUDA; a smaller batch on CPU.
* Checks of the real path's configuration logic: the configuration against level 2's shapes,
  LoRA parameter counts against level 2's arithmetic (630,784 x r for the seven projections), the
  chat template with thinking disabled, and the dtype each device gets.

``--full-step-count`` adds whole-lesson estimates: optimizer steps (level 1; level 3's first SFT,
its iterations and the control) times the measured step time, plus level 3's sampling.

    .venv/bin/python benchmarks/bench_qwen3_shape.py --out benchmarks/results/qwen3_shape_cpu.json --full-step-count
    python3 benchmarks/bench_qwen3_shape.py --device cuda --dtype auto,float16 --full-step-count --out $OUT/qwen3_shape_cuda.json

On CUDA the default dtype is the course's choice (bf16 where the GPU has it natively, else fp16);
``--dtype auto,float16`` also measures fp16, the dtype a Colab T4 gets. The tokenizer is the
course's tiny model's (``.cache/models``; built first if missing, about a minute).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Qwen/Qwen3-0.6B's config.json on the Hugging Face hub (https://huggingface.co/Qwen/Qwen3-0.6B, not
# downloaded here), the values that change the computation. transformers' own Qwen3Config defaults are
# Qwen3-8B's (its docstring: checkpoint "Qwen/Qwen3-8B"; hidden_size 4096, intermediate_size 22016,
# 32 layers, 32 + 32 heads, max_position_embeddings 32768, untied embeddings): they share only
# vocab_size, head_dim and rms_norm_eps with 0.6B, so every value is set here explicitly.
# (The same shapes as course_lib.level2.cost.QWEN3_0_6B, which level 2 uses without weights.)
QWEN3_0_6B_CONFIG = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},  # config.json: "rope_theta": 1000000
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    use_sliding_window=False,
    max_window_layers=28,
    bos_token_id=151643,
    eos_token_id=151645,
)
QWEN3_0_6B_PARAMETERS = 596_049_920  # level 2's number (tied embeddings counted once)
LORA_PER_LAYER_PER_R = 22_528  # level 2: r * (in + out) summed over the seven projections of one layer

# The tail of Qwen3's chat template (the hub's tokenizer_config.json, not downloaded here): with
# enable_thinking=False the generation prompt ends with an empty thinking block.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
EMPTY_THINK = "<think>\n\n</think>\n\n"

# The lessons' Qwen3-0.6B settings (sources in comments) that decide the cost.
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.05)  # level 1 PROFILE_SETTINGS, level 3 PROFILE_DEFAULTS
LEVEL1 = dict(batch=8, epochs=3, quick_epochs=2, train_file="level1/train.jsonl")  # notebooks/level1_basics.py
LEVEL2_BATCH = 8  # notebooks/level2_parameters.py SETTINGS["qwen3-0.6b"]
# course_lib/level3/config.py: PROFILE_DEFAULTS["qwen3-0.6b"] over LoopConfig's defaults
LEVEL3 = dict(batch=4, epochs_initial=100, epochs_iter=30, iterations=2, n_samples=30, n_paraphrase=10,
              gen_batch_size=64, max_new_tokens=192, temperature=0.7, top_p=0.9,
              train_file="level3/train_initial.jsonl", references_file="level3/references.jsonl",
              symptoms_file="level3/symptoms.jsonl", paraphrases_file="level3/paraphrases.jsonl")

# How much to measure. CPU: a 0.6B step takes about a minute on 2 shared cores, so two steps (the first pays
# little one-time cost on CPU: 21.3 s then 22.7 s in a 2-layer trial), level 3's batch only, and a short sample.
PLAN = {
    "cpu": dict(warmup_steps=0, timed_steps=2, gen_batch=4, gen_new_tokens=8, train_batches=(4,)),
    "cuda": dict(warmup_steps=3, timed_steps=10, gen_batch=LEVEL3["gen_batch_size"],
                 gen_new_tokens=LEVEL3["max_new_tokens"], train_batches=(4, 8), full_finetune=True),
}


# --- pure parts (unit-tested) ---------------------------------------------------------------------

def qwen3_config(**overrides):
    """A ``Qwen3Config`` with Qwen3-0.6B's values (``overrides`` shrink it for tests)."""
    from transformers import Qwen3Config

    values = {**QWEN3_0_6B_CONFIG, **overrides}
    values["max_window_layers"] = min(values["max_window_layers"], values["num_hidden_layers"])
    return Qwen3Config(**values)


def lora_params_per_layer_per_r(hidden_size: int, intermediate_size: int, num_attention_heads: int,
                                num_key_value_heads: int, head_dim: int) -> int:
    """sum of (in + out) over q, k, v, o, gate, up, down: LoRA adds r * (in + out) per projection."""
    q, kv = num_attention_heads * head_dim, num_key_value_heads * head_dim
    attention = (hidden_size + q) + 2 * (hidden_size + kv) + (q + hidden_size)
    mlp = 3 * (hidden_size + intermediate_size)
    return attention + mlp


def lora_parameters(r: int, config: dict = QWEN3_0_6B_CONFIG) -> int:
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    return r * config["num_hidden_layers"] * lora_params_per_layer_per_r(*(config[k] for k in keys))


def steps_per_epoch(n_examples: int, batch: int) -> int:
    return math.ceil(n_examples / batch)


def lesson_step_counts(n_level1_train: int, n_level3_train: int, n_level3_references: int,
                       n_symptoms: int, n_paraphrases: int) -> dict:
    """Optimizer steps and sampling batches of the lessons at their Qwen3-0.6B settings.

    Level 3's iterations train on the failing questions' references plus as many replayed
    examples (course_lib.level3.selection): from 0 steps (nothing failed) to every reference
    (``n_level3_references``) at most; the control trains as many steps as the whole loop
    (first SFT + iterations). Each of its stages (baseline, iter0..iterK, control) samples
    ``n_samples`` answers per question and ``n_paraphrase`` per paraphrase, in batches of
    ``gen_batch_size``, original and paraphrase questions in separate calls.
    """
    l1_epoch = steps_per_epoch(n_level1_train, LEVEL1["batch"])
    initial = math.ceil(steps_per_epoch(n_level3_train, LEVEL3["batch"]) * LEVEL3["epochs_initial"])
    iter_max = math.ceil(steps_per_epoch(n_level3_references, LEVEL3["batch"]) * LEVEL3["epochs_iter"])
    loop_min, loop_max = initial, initial + LEVEL3["iterations"] * iter_max
    stages = 1 + 1 + LEVEL3["iterations"] + 1  # baseline, iter0, iter1..K, control
    b = LEVEL3["gen_batch_size"]
    batches_per_stage = (math.ceil(n_symptoms * LEVEL3["n_samples"] / b)
                         + math.ceil(n_paraphrases * LEVEL3["n_paraphrase"] / b))
    answers_per_stage = n_symptoms * LEVEL3["n_samples"] + n_paraphrases * LEVEL3["n_paraphrase"]
    return {
        "level1": {"batch": LEVEL1["batch"], "steps": l1_epoch * LEVEL1["epochs"],
                   "steps_quick": l1_epoch * LEVEL1["quick_epochs"]},
        "level3": {"batch": LEVEL3["batch"], "iter0_steps": initial, "iteration_steps_max": iter_max,
                   "train_steps_min": 2 * loop_min, "train_steps_max": 2 * loop_max,
                   "stages": stages, "sampling_batches": stages * batches_per_stage,
                   "answers": stages * answers_per_stage, "max_new_tokens": LEVEL3["max_new_tokens"]},
    }


def lesson_estimates(counts: dict, sec_per_step: dict, sec_per_sampling_batch: float | None) -> dict:
    """Seconds: steps x measured seconds per step (per batch size), plus level 3's sampling batches.

    ``sec_per_step`` maps batch size -> seconds; a missing batch size gives None.
    ``sec_per_sampling_batch``: one batch of ``gen_batch_size`` answers run to ``max_new_tokens``.
    """
    def mul(steps, batch):
        s = sec_per_step.get(batch)
        return None if s is None else steps * s

    l1, l3 = counts["level1"], counts["level3"]
    sampling = None if sec_per_sampling_batch is None else l3["sampling_batches"] * sec_per_sampling_batch
    train_min, train_max = mul(l3["train_steps_min"], l3["batch"]), mul(l3["train_steps_max"], l3["batch"])
    total = (None if None in (train_min, sampling) else [train_min + sampling, train_max + sampling])
    return {"level1_train_s": mul(l1["steps"], l1["batch"]), "level1_train_quick_s": mul(l1["steps_quick"], l1["batch"]),
            "level3_train_s": [train_min, train_max], "level3_sampling_s": sampling, "level3_total_s": total}


def hardware_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- measurements -----------------------------------------------------------------------------------

def _read_jsonl(name: str) -> list[dict]:
    from course_lib.paths import DATASETS_DIR

    with open(DATASETS_DIR / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def token_lengths(tokenizer, records) -> list[int]:
    from course_lib.sft import encode_example

    return [len(encode_example(tokenizer, r["prompt"], r["response"], max_length=10**6)["input_ids"]) for r in records]


def build_model(config, device: str, dtype):
    """Random weights straight on ``device`` in ``dtype`` (no fp32 copy on the CPU first)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def _loadavg() -> list[float] | None:
    """1, 5 and 15-minute load averages: on a shared machine, how many others wanted the cores."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _sync(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def checks(model, tokenizer, device_choice) -> dict:
    """The real path's configuration logic, checked on this model and tokenizer."""
    from course_lib.level2.cost import QWEN3_0_6B, qwen3_0_6b_skeleton
    from course_lib.lora import lora_parameter_count
    from course_lib.sft import chat_prompt

    out = {}
    shape_keys = {k: QWEN3_0_6B_CONFIG[k] for k in QWEN3_0_6B}
    out["config_matches_level2_shapes"] = shape_keys == QWEN3_0_6B
    n_params = sum(p.numel() for p in model.parameters())
    out["parameters"] = n_params
    out["parameters_match_level2"] = n_params == QWEN3_0_6B_PARAMETERS
    skeleton = qwen3_0_6b_skeleton()
    by_r = {r: lora_parameter_count(skeleton, r).trainable for r in (1, 4, 8, 16, 32, 64)}
    out["lora_arithmetic_matches_630784_r"] = all(v == 630_784 * r == lora_parameters(r) for r, v in by_r.items())
    # chat template: the course passes enable_thinking=False; Qwen3's template then closes an empty
    # thinking block, the tiny model's ChatML template ignores the flag.
    tiny_prompt = chat_prompt(tokenizer, "質問")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = QWEN3_TEMPLATE
        qwen_prompt = chat_prompt(tokenizer, "質問")
        thinking = tokenizer.apply_chat_template([{"role": "user", "content": "質問"}], tokenize=False,
                                                 add_generation_prompt=True, enable_thinking=True)
    finally:
        tokenizer.chat_template = original
    out["chat_template_thinking_disabled"] = (qwen_prompt.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
                                              and "<think>" not in thinking
                                              and tiny_prompt.endswith("<|im_start|>assistant\n")
                                              and "<think>" not in tiny_prompt)
    out["qwen_generation_prompt_tail"] = qwen_prompt[qwen_prompt.rindex("<|im_start|>"):]
    out["dtype_choice"] = {"device": device_choice.device, "dtype": device_choice.dtype_name, "why": device_choice.why}
    return out


def measure_train(model, tokenizer, records, batch: int, seq_len: int, warmup: int, timed: int, device: str) -> dict:
    import torch

    from course_lib.level2.cost import StepTimer, long_records
    from course_lib.lora import attach_lora, count_parameters
    from course_lib.train import TrainConfig, train

    peft_model = attach_lora(model, **LORA)
    trainable, _ = count_parameters(peft_model)
    adapter_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in peft_model.parameters() if p.requires_grad})
    steps = warmup + timed
    data = long_records(tokenizer, records, seq_len, n=batch * steps)
    timer = StepTimer()
    if device == "cuda":
        torch.cuda.empty_cache()
    res = train(peft_model, tokenizer, data, config=TrainConfig(max_steps=steps, per_device_train_batch_size=batch,
                                                                learning_rate=2e-4, max_length=seq_len, seed=0),
                callbacks=[timer])
    reserved = torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else None
    timed_durations = timer.durations[warmup:]
    peft_model.unload()  # the base model back, without adapters, for the next measurement
    losses = res.train_loss["loss"].tolist()
    return {"batch": batch, "seq_len": seq_len, "tokens_per_step": batch * seq_len, "lora_trainable": trainable,
            "adapter_dtypes": adapter_dtypes, "warmup_steps": warmup, "timed_steps": len(timed_durations),
            "sec_per_step": statistics.median(timed_durations), "step_durations_s": [round(d, 4) for d in timer.durations],
            "peak_memory_mib": round(res.peak_memory_mb, 1),
            "peak_memory_kind": "CUDA max allocated" if device == "cuda" else "process RSS growth during training",
            "cuda_max_reserved_mib": None if reserved is None else round(reserved, 1),
            "losses_finite": all(math.isfinite(x) for x in losses)}


def measure_full_finetune(tokenizer, records, batch: int, seq_len: int, warmup: int, timed: int, device: str,
                          shrink: dict | None = None) -> dict:
    """Level 1, section 11: every weight trained, in float32 (the lesson calls ``.float()``), AdamW, while
    the LoRA model of section 8 stays loaded: its weights are counted on top by the caller's context."""
    import torch

    from course_lib.level2.cost import StepTimer, long_records
    from course_lib.train import TrainConfig, train

    model = build_model(qwen3_config(**shrink), device, torch.float32)
    steps = warmup + timed
    timer = StepTimer()
    if device == "cuda":
        torch.cuda.empty_cache()
    res = train(model, tokenizer, long_records(tokenizer, records, seq_len, n=batch * steps),
                config=TrainConfig(max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-5,
                                   max_length=seq_len, seed=0), callbacks=[timer])
    reserved = torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else None
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"batch": batch, "seq_len": seq_len, "dtype": "float32", "warmup_steps": warmup,
            "sec_per_step": statistics.median(timer.durations[warmup:]),
            "step_durations_s": [round(d, 4) for d in timer.durations],
            "peak_memory_mib": round(res.peak_memory_mb, 1),
            "cuda_max_reserved_mib": None if reserved is None else round(reserved, 1),
            "peak_memory_kind": "CUDA max allocated, with the LoRA model of this run still on the GPU"}


def measure_sampling(model, tokenizer, prompts, batch: int, new_tokens: int, device: str) -> dict:
    import torch

    from course_lib.sft import chat_prompt
    from course_lib.train import PeakMemory

    texts = [chat_prompt(tokenizer, prompts[i % len(prompts)]) for i in range(batch)]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    tokenizer.padding_side = old_side
    kwargs = dict(do_sample=True, temperature=LEVEL3["temperature"], top_p=LEVEL3["top_p"], top_k=0,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.no_grad():
        model.generate(**{k: v[:2] for k, v in enc.items()}, max_new_tokens=2, min_new_tokens=2, **kwargs)  # warm-up
        if device == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        _sync(device)
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            _sync(device)
            seconds = time.perf_counter() - start
    generated = int(out.shape[1] - enc["input_ids"].shape[1])
    return {"batch": batch, "prompt_tokens": int(enc["input_ids"].shape[1]), "new_tokens": generated,
            "seconds": round(seconds, 3), "tokens_per_s": round(batch * generated / seconds, 1),
            "peak_memory_mib": round(mem.peak_mb, 1) if device == "cuda" else None}


class MeasurementError(RuntimeError):
    """A measurement failed after others of the same dtype succeeded: ``partial`` keeps those."""

    def __init__(self, partial: dict, what: str, exc: Exception):
        super().__init__(f"{what}: {type(exc).__name__}: {exc}")
        self.partial = partial


def run_dtype(dtype_name: str, args, plan: dict, tokenizer, lengths: dict, prompts: list[str]) -> dict:
    import torch

    from course_lib.device import pick_device

    choice = pick_device(args.device)
    dtype = choice.dtype if dtype_name == "auto" else getattr(torch, dtype_name)
    start = time.perf_counter()
    model = build_model(qwen3_config(**args.shrink), args.device, dtype)
    build_s = time.perf_counter() - start
    result = {"dtype": str(dtype).replace("torch.", ""), "requested": dtype_name, "build_s": round(build_s, 1),
              "weights_mib": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1)}
    if dtype_name == "auto" or args.device == "cpu":
        result["checks"] = checks(model, tokenizer, choice)
    result["train"] = []
    records = {4: _read_jsonl(LEVEL3["train_file"]), 8: _read_jsonl(LEVEL1["train_file"])}
    seq = {4: lengths["level3_train_max"], 8: lengths["level1_train_max"]}
    for batch in plan["train_batches"]:
        row = measure_train(model, tokenizer, records[batch], batch, seq[batch], plan["warmup_steps"],
                            plan["timed_steps"], args.device)
        row["setting"] = "level 3 (batch 4)" if batch == 4 else "levels 1-2 (batch 8)"
        result["train"].append(row)
        print(f"  [{result['dtype']}] train batch {batch} x {seq[batch]} tokens: {row['sec_per_step']:.3f} s/step, "
              f"peak {row['peak_memory_mib']:.0f} MiB", flush=True)
    if plan.get("full_finetune") and dtype_name == "auto":
        result["full_finetune"] = measure_full_finetune(tokenizer, records[8], 8, seq[8], plan["warmup_steps"],
                                                        plan.get("full_finetune_steps", 5), args.device, args.shrink)
        f = result["full_finetune"]
        print(f"  full fine-tuning (float32) batch 8 x {seq[8]} tokens: {f['sec_per_step']:.3f} s/step, "
              f"peak {f['peak_memory_mib']:.0f} MiB", flush=True)
    try:
        result["sampling"] = measure_sampling(model, tokenizer, prompts, plan["gen_batch"], plan["gen_new_tokens"],
                                              args.device)
    except Exception as exc:  # keep this dtype's training numbers
        raise MeasurementError(result, "sampling", exc) from exc
    s = result["sampling"]
    print(f"  [{result['dtype']}] sampling batch {s['batch']} x {s['new_tokens']} new tokens: {s['tokens_per_s']} tokens/s, "
          f"{s['seconds']} s", flush=True)
    if args.device == "cpu":
        import resource

        # the whole process's peak (weights, training step, sampling), as the operating system counts it
        result["process_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return result


def print_table(report: dict):
    print(f"\nQwen3-0.6B-shaped model (random weights) on {report['hardware']} ({report['device']}), "
          f"torch {report['torch']}, {report['date']}")
    print(f"{'dtype':9} {'measurement':34} {'value':>14}  {'peak MiB':>9}")
    for r in report["runs"]:
        if "error" in r:
            print(f"{r['requested']:9} FAILED: {r['error']}")
            continue
        for t in r["train"]:
            print(f"{r['dtype']:9} {'LoRA step, ' + t['setting']:34} {t['sec_per_step']:>10.3f} s/st  {t['peak_memory_mib']:>9.0f}")
        s = r["sampling"]
        label = f"sampling, batch {s['batch']} x {s['new_tokens']} tokens"
        peak = "-" if s["peak_memory_mib"] is None else f"{s['peak_memory_mib']:.0f}"
        print(f"{r['dtype']:9} {label:34} {s['tokens_per_s']:>10.1f} tok/s {peak:>9}")
        if r.get("full_finetune"):
            f = r["full_finetune"]
            print(f"{'float32':9} {'full fine-tuning, level 1 (batch 8)':34} {f['sec_per_step']:>10.3f} s/st  "
                  f"{f['peak_memory_mib']:>9.0f}")
        if r.get("process_peak_rss_mib"):
            print(f"{r['dtype']:9} {'process peak RSS (all of the above)':34} {'':>14}  {r['process_peak_rss_mib']:>9.0f}")
        est = r.get("estimates")
        if est:
            def fmt(x):
                if x is None:
                    return "-"
                if isinstance(x, list):
                    return " to ".join(fmt(v) for v in x)
                return f"{x / 60:.1f} min" if x < 3 * 3600 else f"{x / 3600:.1f} h"
            print(f"{'':9} estimate: level 1 training {fmt(est['level1_train_s'])}; level 3 training "
                  f"{fmt(est['level3_train_s'])}, sampling {fmt(est['level3_sampling_s'])}")
    for r in report["runs"]:
        if "checks" in r:
            c = r["checks"]
            print(f"checks: config = level 2 shapes {c['config_matches_level2_shapes']}, parameters {c['parameters']:,} "
                  f"(= level 2: {c['parameters_match_level2']}), LoRA 630,784 x r {c['lora_arithmetic_matches_630784_r']}, "
                  f"thinking disabled {c['chat_template_thinking_disabled']}, dtype {c['dtype_choice']['dtype']} "
                  f"({c['dtype_choice']['why']})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="auto",
                   help="comma-separated: auto (the course's choice for the device), bfloat16, float16, float32")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--full-step-count", action="store_true",
                   help="estimate whole-lesson times from the lessons' step counts and the measured step time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--train-batches", default=None,
                   help="comma-separated batch sizes to time (4 = level 3, 8 = levels 1-2); default: 4 on CPU, 4,8 on CUDA")
    p.add_argument("--layers", type=int, default=None,
                   help="a smoke test: this many layers instead of 28 (not Qwen3-0.6B's cost; marked in the JSON)")
    p.add_argument("--smoke", action="store_true",
                   help="a quick run of every code path on a 1-layer model with a 4096-token vocabulary, one step each "
                        "(not Qwen3-0.6B's cost; marked in the JSON)")
    args = p.parse_args(argv)
    args.shrink = {}
    if args.layers:
        args.shrink["num_hidden_layers"] = args.layers
    if args.smoke:
        args.shrink.update(num_hidden_layers=1, vocab_size=4096, bos_token_id=1, eos_token_id=2)

    import torch

    from course_lib.tiny_model import ensure_tiny_model
    from transformers import AutoTokenizer

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model(progress=False))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    l1, l3 = token_lengths(tokenizer, _read_jsonl(LEVEL1["train_file"])), token_lengths(tokenizer, _read_jsonl(LEVEL3["train_file"]))
    lengths = {"tokenizer": "course tiny model (byte-level BPE on Japanese, a proxy for Qwen's)",
               "level1_train_median": int(statistics.median(l1)), "level1_train_max": max(l1),
               "level3_train_median": int(statistics.median(l3)), "level3_train_max": max(l3)}
    prompts = [r["question"] for r in _read_jsonl(LEVEL3["symptoms_file"])]
    plan = dict(PLAN[args.device])
    if args.smoke:
        plan.update(warmup_steps=1, timed_steps=1, gen_batch=2, gen_new_tokens=4, train_batches=(4, 8),
                    full_finetune=True, full_finetune_steps=1)
    if args.train_batches:
        plan["train_batches"] = tuple(int(b) for b in args.train_batches.split(","))
        if not set(plan["train_batches"]) <= {4, 8}:
            p.error("--train-batches: 4 (level 3) and/or 8 (levels 1-2)")
    import transformers
    import peft

    report = {"what": "Qwen3-0.6B-shaped model, random weights, built locally (benchmarks/bench_qwen3_shape.py)",
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "hardware": hardware_name(args.device), "device": args.device,
              "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
              "torch_threads": torch.get_num_threads() if args.device == "cpu" else None,
              "load_average_at_start": _loadavg(),
              "shrunk": args.shrink or None,
              "smoke_test": bool(args.shrink) and args.shrink != {"num_hidden_layers": 28},
              "settings": {"lora": LORA, "target_modules": "q,k,v,o,gate,up,down", "level3": LEVEL3,
                           "level1": LEVEL1, "level2_batch": LEVEL2_BATCH, "plan": plan},
              "token_lengths": lengths, "runs": []}
    print(f"{report['hardware']} ({args.device}), torch {torch.__version__}; sequence lengths (tiny tokenizer): "
          f"level 1 max {lengths['level1_train_max']}, level 3 max {lengths['level3_train_max']}", flush=True)
    counts = lesson_step_counts(len(_read_jsonl(LEVEL1["train_file"])), len(_read_jsonl(LEVEL3["train_file"])),
                                len(_read_jsonl(LEVEL3["references_file"])), len(prompts),
                                len(_read_jsonl(LEVEL3["paraphrases_file"])))
    if args.full_step_count:
        report["step_counts"] = counts
    if args.device == "cuda":
        report["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.dtype.split(","):
        try:
            run = run_dtype(name.strip(), args, plan, tokenizer, lengths, prompts)
        except Exception as exc:  # record it and go on: one dtype failing must not lose the others' numbers
            import traceback

            traceback.print_exc()
            partial = getattr(exc, "partial", {})
            report["runs"].append({**partial, "requested": name.strip(), "error": f"{type(exc).__name__}: {exc}"})
            args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            continue
        if args.full_step_count:
            s = run["sampling"]
            # seconds for one of level 3's sampling batches (gen_batch_size answers x max_new_tokens), where that
            # batch was measured (CUDA). Not from a smaller batch: its tokens/s include the prompt's processing
            # and a bigger batch makes more tokens per second, so scaling would mislead.
            full = (s["batch"], s["new_tokens"]) == (LEVEL3["gen_batch_size"], LEVEL3["max_new_tokens"])
            per_batch = s["seconds"] if full else None
            run["estimates"] = lesson_estimates(counts, {t["batch"]: t["sec_per_step"] for t in run["train"]}, per_batch)
            run["estimates"]["sampling_batch_s"] = per_batch
        report["runs"].append(run)
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")  # so far
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["load_average_at_end"] = _loadavg()
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwrote {args.out} ({report['wall_s']} s)")
    failed = [k for r in report["runs"] for k, v in r.get("checks", {}).items()
              if v is False and not (report["smoke_test"] and k == "parameters_match_level2")]
    failed += [f"{r['dtype']} loss not finite" for r in report["runs"] for t in r.get("train", []) if not t["losses_finite"]]
    failed += [f"{r['requested']}: {r['error']}" for r in report["runs"] if "error" in r]
    if failed:
        print("FAILED checks:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
