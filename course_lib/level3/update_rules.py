"""Update rules: what an iteration k >= 1 of the loop trains on.

The loop samples N answers per question and the judge grades each one. Three rules turn
those graded answers into the next training step (``LoopConfig.update_rule``):

``corrective``
    the original experiment: SFT on the reference answers of the questions that failed,
    plus replay of passing ones (:func:`.selection.build_iteration_data`).
``self_distill``
    rejection-sampling fine-tuning / STaR-style self-training: SFT on the model's **own**
    answers that the judge graded ``correct`` and not harmful (:func:`select_self_distill`),
    with the reference only for questions where no answer was accepted.
``dpo``
    preference optimisation (DPO, trl's ``DPOTrainer``) on pairs of answers to the same
    question: chosen = an accepted answer (or the reference), rejected = an unsafe or
    incorrect one (:func:`build_preference_pairs`, :func:`train_dpo`).

Same compute: every rule trains iteration k for the number of optimizer steps the corrective
rule would take from the same parent stage (:func:`corrective_budget`).

Only the original 15 questions are read: the paraphrases stay held out, whatever the rule.
Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd

from ..timing import timed_function
from .data import LoopData

ACCEPTED = "correct"  # the only label whose answers a rule may learn from as "good"
REJECTED_LABELS = ("unsafe", "incorrect")  # what a preference pair may push away from


def _original_rows(grades) -> pd.DataFrame:
    """The graded answers of the original questions only (never a paraphrase)."""
    frame = grades if isinstance(grades, pd.DataFrame) else pd.DataFrame(list(grades))
    if frame.empty:
        return frame
    if "split" not in frame:
        raise ValueError("grades need a 'split' column: paraphrases must be told apart and never read")
    frame = frame[frame["split"] == "original"]
    missing = {"symptom_id", "answer", "label", "score", "harmful"} - set(frame.columns)
    if missing:
        raise ValueError(f"grades lack {sorted(missing)} (join generations and grades first: graded_answers)")
    return frame.sort_values(["symptom_id", "sample"] if "sample" in frame else ["symptom_id"], kind="stable")


def is_accepted(row) -> bool:
    """An answer a rule may learn from: graded correct, and not harmful."""
    return row["label"] == ACCEPTED and not bool(row["harmful"])


def is_rejected(row) -> bool:
    """An answer a preference pair may push away from: graded unsafe or incorrect."""
    return row["label"] in REJECTED_LABELS


def _distinct(rows: Iterable, seed_key: str, seed: int) -> list[dict]:
    """Distinct answers (by stripped text), best score first, ties in a seeded order."""
    best: dict[str, dict] = {}
    for r in rows:
        text = str(r["answer"]).strip()
        if text and (text not in best or float(r["score"]) > float(best[text]["score"])):
            best[text] = {"answer": text, "score": float(r["score"]), "label": r["label"]}
    out = list(best.values())
    random.Random(f"{seed}:{seed_key}").shuffle(out)
    return sorted(out, key=lambda d: -d["score"])


def select_self_distill(grades, data: LoopData, k: int, seed: int = 0) -> list[dict]:
    """The self-distillation training set: the model's own accepted answers, references where none.

    For each original question, at most ``k`` distinct answers (by text) that the judge graded
    ``correct`` and not harmful, best score first (ties in a seeded order), each a record
    ``{symptom_id, prompt, response, source="self", score}``. A question with no accepted answer
    gets its reference answers instead (``source="corrective"``). Unsafe, incorrect and partially
    correct answers are never selected; paraphrase grades are never read.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    frame = _original_rows(grades)
    prompts = {s["id"]: s["question"] for s in data.symptoms}
    out: list[dict] = []
    for sid in data.symptom_ids:
        rows = frame[frame["symptom_id"] == sid] if len(frame) else frame
        accepted = _distinct((r for _, r in rows.iterrows() if is_accepted(r)), sid, seed)[:k]
        if accepted:
            out += [{"symptom_id": sid, "prompt": prompts[sid], "response": a["answer"], "source": "self",
                     "score": a["score"]} for a in accepted]
        else:
            out += [{"symptom_id": sid, "prompt": r["prompt"], "response": r["response"], "source": "corrective"}
                    for r in data.references if r["symptom_id"] == sid]
    return out


def build_preference_pairs(grades, data: LoopData, seed: int = 0, max_pairs_per_question: int = 4) -> list[dict]:
    """DPO pairs ``{prompt, chosen, rejected, symptom_id, ...}`` from one stage's graded answers.

    Per original question: chosen = a distinct accepted answer (``correct``, not harmful) or,
    when the question has none, its reference answers (score 1.0 by construction: the course's
    references are what the judge's knowledge base calls correct); rejected = a distinct unsafe
    or incorrect answer to the **same** question. A pair is kept only when the chosen score is
    strictly higher than the rejected one. Chosen and rejected answers are paired round-robin
    (each used about equally often), at most ``max_pairs_per_question`` pairs per question.
    Questions with no rejected answer give no pair. Paraphrase grades are never read.
    """
    frame = _original_rows(grades)
    prompts = {s["id"]: s["question"] for s in data.symptoms}
    pairs: list[dict] = []
    for sid in data.symptom_ids:
        rows = frame[frame["symptom_id"] == sid] if len(frame) else frame
        rejected = _distinct((r for _, r in rows.iterrows() if is_rejected(r)), sid + ":rej", seed)
        if not rejected:
            continue
        chosen = [dict(a, source="self") for a in
                  _distinct((r for _, r in rows.iterrows() if is_accepted(r)), sid + ":acc", seed)]
        if not chosen:
            chosen = [{"answer": r["response"], "score": 1.0, "label": ACCEPTED, "source": "reference"}
                      for r in data.references if r["symptom_id"] == sid]
        rejected = sorted(rejected, key=lambda d: d["score"])  # the worst answers first
        nc, nr = len(chosen), len(rejected)
        # round-robin first (each answer used about equally often), then the remaining combinations
        order = [(i % nc, i % nr) for i in range(max(nc, nr))]
        order += [(a, b) for a in range(nc) for b in range(nr) if (a, b) not in order]
        kept = [(chosen[a], rejected[b]) for a, b in order if chosen[a]["score"] > rejected[b]["score"]]
        for c, r in kept[:max_pairs_per_question]:
            pairs.append({"symptom_id": sid, "prompt": prompts[sid], "chosen": c["answer"], "rejected": r["answer"],
                          "chosen_score": c["score"], "rejected_score": r["score"], "chosen_source": c["source"],
                          "rejected_label": r["label"]})
    return pairs


def graded_answers(run, stage: str) -> pd.DataFrame:
    """One stage's answers with their grades (generations.jsonl joined with grades.jsonl)."""
    from ..data import read_jsonl

    keys = ["split", "item_id", "sample"]
    gens = pd.DataFrame(read_jsonl(run.path / stage / "generations.jsonl"))
    grades = pd.DataFrame(run.grades(stage))
    return grades.merge(gens[keys + ["question", "answer"]], on=keys, how="left")


def corrective_budget(n_records: int, per_device_train_batch_size: int, epochs_iter: float) -> int:
    """Optimizer steps of a corrective iteration: ``ceil(ceil(n / batch) × epochs_iter)``.

    ``n`` is the size of the corrective rule's training set (references of the failing questions
    plus replay) built from the *same parent stage*; the Trainer takes ``ceil(n / batch)`` steps
    per epoch. Every rule trains iteration k for this many steps (0 when nothing failed).
    """
    if n_records <= 0:
        return 0
    return math.ceil(math.ceil(n_records / per_device_train_batch_size) * epochs_iter)


# --------------------------------------------------------------------------- DPO with trl


@contextlib.contextmanager
def output_layer_folded(model):
    """For trl: the output layer with its LoRA folded into a frozen, untied copy, for the duration.

    trl's ``DPOTrainer`` computes log-probabilities from ``lm_head.weight`` directly and refuses
    a LoRA on ``lm_head`` (the tiny profile puts one there). Inside this block the output layer
    is a plain ``Linear`` holding ``W + ΔW`` (what the model computes with its adapter), so DPO
    sees the model as it is; that LoRA is not trained. On exit the LoRA layer comes back with its
    weights untouched, so the saved adapter still carries it. A model without LoRA on its output
    layer (the qwen3-0.6b profile) is left as it is.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    inner = model.get_base_model()
    head = inner.get_output_embeddings()
    if not isinstance(head, BaseTunerLayer):
        yield model
        return
    cfg = model.peft_config[model.active_adapter]
    targets = cfg.target_modules
    base = head.base_layer
    with torch.no_grad():
        weight = (base.weight + head.get_delta_weight(model.active_adapter).to(base.weight.dtype)).detach().clone()
    plain = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=base.bias is not None,
                            device=weight.device, dtype=weight.dtype)
    plain.weight = torch.nn.Parameter(weight, requires_grad=False)
    if base.bias is not None:
        plain.bias = torch.nn.Parameter(base.bias.detach().clone(), requires_grad=False)
    inner.set_output_embeddings(plain)
    cfg.target_modules = {m for m in targets if m != "lm_head"} if not isinstance(targets, str) else targets
    try:
        yield model
    finally:
        inner.set_output_embeddings(head)
        cfg.target_modules = targets


@contextlib.contextmanager
def _quiet_trl():
    """No dataset-preparation progress bars and no deprecation notes meant for library authors."""
    import warnings

    import datasets

    from ..lora import quiet_peft

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with quiet_peft(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(gradient|activation)_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


@dataclass
class DPOResult:
    history: pd.DataFrame  # step, loss, rewards/margins, rewards/accuracies, learning_rate
    seconds: float
    steps: int
    config: dict

    @property
    def train_loss(self) -> pd.DataFrame:
        return self.history.dropna(subset=["loss"])[["step", "epoch", "loss"]]

    @property
    def final_loss(self) -> float:
        return float(self.train_loss["loss"].iloc[-1])


def dpo_rows(tokenizer, pairs: Sequence[dict]) -> list[dict]:
    """trl's plain-text preference format, formatted as the course's SFT formats its examples:
    the prompt through the chat template (:func:`course_lib.sft.chat_prompt`, no thinking block),
    each answer followed by the end-of-turn token (trl adds it when missing; SFT's extra newline
    after it is not scored, so it is left out here)."""
    from ..sft import chat_prompt

    eos = tokenizer.eos_token
    return [{"prompt": chat_prompt(tokenizer, p["prompt"]), "chosen": p["chosen"] + eos, "rejected": p["rejected"] + eos}
            for p in pairs]


def _no_checkpointing(config_class) -> dict:
    """trl's DPOConfig turns activation checkpointing on by default (it trades time for memory, which
    the tiny model does not need). Transformers renamed the field: ``activation_checkpointing`` in
    recent 5.x, ``gradient_checkpointing`` before (5.17 has only that one); name the one that exists."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing": False} if "activation_checkpointing" in names else {"gradient_checkpointing": False}


@timed_function("train")  # DPO steps count as training in the lesson's time breakdown
def train_dpo(model, tokenizer, pairs: Sequence[dict], *, beta: float = 0.1, max_steps: int, learning_rate: float,
              per_device_train_batch_size: int = 4, warmup_steps: int = 0, lr_scheduler_type: str = "linear",
              max_length: int = 512, seed: int = 0, callbacks: Sequence = ()) -> DPOResult:
    """DPO on a LoRA ``PeftModel`` with trl's ``DPOTrainer``, for ``max_steps`` optimizer steps.

    The reference model is the previous stage (the adapter as it was when this step began: with
    ``ref_model=None`` trl copies a PEFT model's adapter into a frozen "ref" adapter), because DPO's
    pull towards the reference should keep the loop near where it already is, not drag it back to the
    untrained base whose answers the first SFT had to fix. The copy is removed afterwards, so the saved
    adapter is this stage's alone. Same code on CPU and CUDA (bf16 when the model is in bf16).
    """
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("no preference pair to train on")
    param = next(model.parameters())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-dpo-") as out_dir, output_layer_folded(model), _quiet_trl():
        args = DPOConfig(
            output_dir=out_dir, beta=beta, max_steps=max_steps, learning_rate=learning_rate,
            per_device_train_batch_size=per_device_train_batch_size, gradient_accumulation_steps=1,
            warmup_steps=warmup_steps, lr_scheduler_type=lr_scheduler_type, max_length=max_length,
            seed=seed, data_seed=seed, logging_steps=1, report_to="none", save_strategy="no",
            bf16=param.dtype == torch.bfloat16, disable_tqdm=True, dataloader_num_workers=0,
            dataloader_pin_memory=param.device.type == "cuda", dataset_num_proc=None, **_no_checkpointing(DPOConfig))
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(dpo_rows(tokenizer, pairs)),
                             processing_class=tokenizer, callbacks=list(callbacks))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        if "ref" in model.peft_config:  # trl's frozen copy of the starting adapter (the reference)
            model.delete_adapter("ref")
        model.set_adapter("default")
    model.eval()
    keep = ("step", "epoch", "loss", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
            "rewards/margins")
    rows = [{k: v for k, v in e.items() if k in keep} for e in trainer.state.log_history if "loss" in e]
    history = pd.DataFrame(rows, columns=list(keep))
    config = {"beta": beta, "max_steps": max_steps, "learning_rate": learning_rate,
              "per_device_train_batch_size": per_device_train_batch_size, "warmup_steps": warmup_steps,
              "lr_scheduler_type": lr_scheduler_type, "max_length": max_length, "seed": seed,
              "reference": "previous stage (trl's frozen copy of the adapter)"}
    return DPOResult(history, time.perf_counter() - start, int(trainer.state.global_step), config)


__all__ = ["ACCEPTED", "REJECTED_LABELS", "is_accepted", "is_rejected", "select_self_distill",
           "build_preference_pairs", "graded_answers", "corrective_budget", "output_layer_folded", "dpo_rows",
           "train_dpo", "DPOResult"]
