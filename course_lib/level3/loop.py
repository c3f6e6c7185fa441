"""The level-3 self-improvement loop, measured properly and resumable on disk.

Stages, in order (see :meth:`.config.LoopConfig.plan`)::

    baseline   the untrained model (the original experiment skipped it)
    iter0      LoRA SFT on ``train_initial``
    iter1..K   corrective SFT on the questions the previous stage failed (+ replay);
               which questions and which data: :mod:`.selection`, the idea of the lesson.
               ``update_rule`` swaps in self-distillation or DPO (:mod:`.update_rules`)
    control    plain SFT: a fresh LoRA on all the data the loop used, for the same number
               of optimizer steps as the whole loop

Every stage is evaluated the same way (:mod:`.evaluate`) and lives in its own folder of
the run (:mod:`.runs`), so a rerun resumes where it stopped and pays no judge call twice.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import paths
from ..data import write_json, write_jsonl
from ..lora import attach_lora, load_adapter, quiet_peft, save_adapter
from ..progress import progress_bar
from ..train import TrainConfig, train
from .config import BASELINE, CONTROL, ITERATION, LoopConfig, Stage
from .data import LoopData
from .evaluate import Grader, evaluate_stage
from .metrics import summarise
from .runs import LoopResult, Run, StageDir, iteration_content_key, load_result, run_identity
from .selection import IterationData, build_iteration_data, union_records
from .update_rules import (build_preference_pairs, corrective_budget, graded_answers, select_self_distill,
                           train_dpo)

# DPO: at most this many (chosen, rejected) pairs per question and iteration
DPO_PAIRS_PER_QUESTION = 4


class StageModels:
    """The pristine base model and the model of the last stage, kept in memory between stages."""

    def __init__(self, loaded, run: Run, config: LoopConfig):
        self.loaded, self.run, self.config = loaded, run, config
        self._base = None
        self._current: tuple[str, object] | None = None  # (stage, model holding that stage's adapter)

    def base(self):
        if self._base is None:  # a copy: ``loaded.model`` itself is never modified
            self._base = copy.deepcopy(self.loaded.model).eval()
        return self._base

    def after(self, stage: str, trainable: bool = True):
        """The model holding ``stage``'s adapter (kept in memory, else loaded from disk)."""
        if stage == BASELINE:
            return self.base()
        if self._current is not None and self._current[0] == stage:
            return self._current[1]
        model = load_adapter(copy.deepcopy(self.base()), self.run.stage_dir(stage).adapter, trainable=trainable)
        self.keep(stage, model)
        return model

    def fresh_lora(self):
        import torch

        torch.manual_seed(self.config.seed)  # the adapter's random initialisation repeats
        c = self.config
        return attach_lora(copy.deepcopy(self.base()), c.lora_r, c.lora_alpha, c.lora_dropout, c.target_modules)

    def keep(self, stage: str, model) -> None:
        self._current = (stage, model)


def save_adapter_atomically(model, sd: StageDir) -> None:
    """Write the stage's adapter under a temporary name, then rename: an interrupted
    save never leaves a half-written adapter where a rerun would reuse it."""
    tmp = sd.path / "adapter.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_adapter(model, tmp)
    if sd.adapter.exists():
        shutil.rmtree(sd.adapter)
    tmp.rename(sd.adapter)


def _progress_callback(desc: str, enabled: bool):
    from transformers import TrainerCallback

    class TqdmSteps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.bar = progress_bar(total=state.max_steps, desc=desc, unit="step", enabled=enabled)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return TqdmSteps()


def stage_train_config(config: LoopConfig, n_examples: int, epochs: float | None = None,
                       max_steps: int = -1) -> TrainConfig:
    """The TrainConfig of one stage: epochs (or a step budget), warmup as a share of its steps."""
    steps = max_steps if max_steps > 0 else math.ceil(
        math.ceil(n_examples / config.per_device_train_batch_size) * (epochs or 1))
    return TrainConfig(num_train_epochs=epochs or 1.0, learning_rate=config.learning_rate,
                       per_device_train_batch_size=config.per_device_train_batch_size,
                       warmup_steps=int(round(config.warmup_ratio * steps)), lr_scheduler_type=config.lr_scheduler_type,
                       max_length=config.max_length, max_steps=max_steps, seed=config.seed)


def train_on(sd: StageDir, model, tokenizer, records: list[dict], info: dict, config: LoopConfig, progress: bool,
             epochs: float | None = None, max_steps: int = -1):
    """Train ``model`` on ``records``, save its adapter, then ``train.json`` (both present = training done)."""
    tc = stage_train_config(config, len(records), epochs, max_steps)
    res = train(model, tokenizer, records, config=tc, callbacks=[_progress_callback(f"{sd.name}: training", progress)])
    save_adapter_atomically(model, sd)
    info.update({"steps": int(res.steps), "seconds": round(res.seconds, 2), "final_loss": res.final_loss,
                 "examples": len(records), "epochs": epochs, "max_steps": max_steps,
                 "train_config": res.config, "history": res.train_loss.to_dict(orient="records")})
    write_json(sd.file("train.json"), info)
    return model


class LoopStages:
    """How each kind of stage gets its model: the three training rules of the loop."""

    def __init__(self, run: Run, models: StageModels, data: LoopData, tokenizer, progress: bool):
        self.run, self.models, self.data, self.tok, self.progress = run, models, data, tokenizer, progress
        self.config = run.config

    def iter0(self, st: Stage, sd: StageDir):
        records = [dict(r, source="train_initial") for r in self.data.train_initial]
        write_jsonl(sd.file("train_data.jsonl"), records)
        model = self.models.fresh_lora()
        return train_on(sd, model, self.tok, records, {"stage": st.name}, self.config, self.progress,
                        epochs=self.config.epochs_initial)

    def selection(self, st: Stage) -> IterationData:
        """Iteration k's selection from its parent's grades on the original questions: which questions
        failed, passed and are replayed, and the corrective rule's records."""
        frame = pd.DataFrame(self.run.grades(st.parent))
        per_q = summarise(frame[frame["split"] == "original"], n_boot=1).per_question
        return build_iteration_data(per_q, self.data, self.config.replay_ratio, self.config.pass_accuracy,
                                    seed=self.config.seed + st.k)

    def content_key(self, st: Stage) -> str | None:
        """Iteration k >= 1's content key (:func:`.runs.iteration_content_key`), once its parent is finished;
        None for the other stages, whose fingerprint already determines them."""
        if st.kind != ITERATION or st.k == 0:
            return None
        return iteration_content_key(self.config, st, self.run.content_key(st.parent), self.selection(st))

    def iteration(self, st: Stage, sd: StageDir):
        """Iteration k >= 1: the parent's graded answers become training data, by ``config.update_rule``.

        The corrective rule's data (the parent's failures + replay) is built for every rule: it is
        the corrective rule's training set and, for the others, the step budget (:func:`.update_rules.corrective_budget`).
        """
        it = self.selection(st)
        info = {"stage": st.name, "update_rule": self.config.update_rule, "failed": it.failed, "passed": it.passed,
                "replayed": it.replayed, "n_corrective": len(it.corrective), "n_replay": len(it.replay),
                "n_self": 0, "n_pairs": 0}
        model = self.models.after(st.parent, trainable=True)
        if not it.corrective:
            # every question passes: nothing to correct, so no training under any rule (the adapter stays as it was)
            write_jsonl(sd.file("train_data.jsonl"), it.records if self.config.update_rule == "corrective" else [])
            return self._skip(sd, model, info, "no failing question")
        budget = corrective_budget(len(it.records), self.config.per_device_train_batch_size, self.config.epochs_iter)
        rule = self.config.update_rule
        if rule == "corrective":
            write_jsonl(sd.file("train_data.jsonl"), it.records)
            return train_on(sd, model, self.tok, it.records, info, self.config, self.progress,
                            epochs=self.config.epochs_iter)
        answers = graded_answers(self.run, st.parent)
        info.update({"budget": budget, "n_corrective": 0, "n_replay": 0, "replayed": []})
        if rule == "self_distill":
            records = select_self_distill(answers, self.data, self.config.self_distill_k, seed=self.config.seed + st.k)
            info.update({"n_self": sum(r["source"] == "self" for r in records),
                         "n_corrective": sum(r["source"] == "corrective" for r in records),
                         "self_distill_k": self.config.self_distill_k})
            write_jsonl(sd.file("train_data.jsonl"), records)
            return train_on(sd, model, self.tok, records, info, self.config, self.progress, max_steps=budget)
        pairs = build_preference_pairs(answers, self.data, seed=self.config.seed + st.k,
                                       max_pairs_per_question=DPO_PAIRS_PER_QUESTION)
        write_jsonl(sd.file("pairs.jsonl"), pairs)
        write_jsonl(sd.file("train_data.jsonl"), [])  # no SFT example: DPO learns from pairs.jsonl
        info.update({"n_pairs": len(pairs), "n_self": sum(p["chosen_source"] == "self" for p in pairs),
                     "n_corrective": sum(p["chosen_source"] == "reference" for p in pairs),
                     "dpo_beta": self.config.dpo_beta, "dpo_learning_rate": self.config.dpo_learning_rate})
        if not pairs:
            return self._skip(sd, model, info, "no preference pair (no unsafe or incorrect answer)")
        return self._train_dpo(sd, model, pairs, info, budget)

    def _train_dpo(self, sd: StageDir, model, pairs: list[dict], info: dict, budget: int):
        c = self.config
        res = train_dpo(model, self.tok, pairs, beta=c.dpo_beta, max_steps=budget, learning_rate=c.dpo_learning_rate,
                        per_device_train_batch_size=c.per_device_train_batch_size,
                        warmup_steps=int(round(c.warmup_ratio * budget)), lr_scheduler_type=c.lr_scheduler_type,
                        max_length=c.max_length, seed=c.seed,
                        callbacks=[_progress_callback(f"{sd.name}: DPO", self.progress)])
        save_adapter_atomically(model, sd)
        info.update({"steps": res.steps, "seconds": round(res.seconds, 2), "final_loss": res.final_loss,
                     "examples": len(pairs), "epochs": None, "max_steps": budget, "train_config": res.config,
                     "history": res.history.to_dict(orient="records")})
        write_json(sd.file("train.json"), info)
        return model

    def _skip(self, sd: StageDir, model, info: dict, why: str):
        save_adapter_atomically(model, sd)
        info.update({"steps": 0, "seconds": 0.0, "final_loss": None, "examples": 0, "history": [], "skipped": why})
        write_json(sd.file("train.json"), info)
        return model

    def control(self, st: Stage, sd: StageDir):
        """A fresh LoRA on the union of the loop's training data, for as many steps as the whole loop took."""
        names = self.config.iteration_stages
        records = union_records(self.run.train_data(s) for s in names)
        steps = sum(self.run.train_info(s).get("steps", 0) for s in names)
        write_jsonl(sd.file("train_data.jsonl"), records)
        model = self.models.fresh_lora()
        return train_on(sd, model, self.tok, records, {"stage": st.name, "loop_steps": steps}, self.config,
                        self.progress, max_steps=max(1, steps))

    def model_for(self, st: Stage, sd: StageDir):
        """The model to evaluate for ``st``: trained now, or found on disk from an interrupted run."""
        if st.kind == BASELINE:
            return self.models.base()
        if sd.has_adapter():
            self.run.log(f"[{st.name}] adapter found: training skipped")
            return self.models.after(st.name)
        train_rule = {CONTROL: self.control}.get(st.kind) or (self.iter0 if st.k == 0 else self.iteration)
        model = train_rule(st, sd)
        self.models.keep(st.name, model)
        return model


def run_loop(config: LoopConfig, loaded, judge, progress: bool = True, data: LoopData | None = None,
             runs_dir: Path | str | None = None, reuse: bool = True,
             log: Callable[[str], None] | None = print) -> LoopResult:
    """Run (or resume) the loop for ``config`` with ``loaded`` (a profiles.LoadedModel) and ``judge``.

    Reads as the stage sequence: for each stage of ``config.plan()`` (baseline → iter0 →
    iter1..K → control), ``run.stage`` keeps it if done, copies an identical finished stage
    from another run (the same fingerprint, or for an iteration the same parent and data), or
    trains (:class:`LoopStages`) and evaluates it (:func:`evaluate_stage`).
    """
    data = data or LoopData.load()
    progress = progress and not paths.headless()
    run = Run(config, run_identity(loaded, judge, data), Path(runs_dir) if runs_dir else paths.runs_dir(), reuse, log)
    stages = LoopStages(run, StageModels(loaded, run, config), data, loaded.tokenizer, progress)
    grader = Grader(run, judge, progress)
    with quiet_peft():
        for st in progress_bar(config.plan(), enabled=progress, desc="level-3 loop", unit="stage"):
            run.stage(st, lambda sd, st=st: evaluate_stage(sd, stages.model_for(st, sd), loaded.tokenizer,
                                                           config, data, grader, progress),
                      content_key=lambda st=st: stages.content_key(st))
    return load_result(run.path, calls=grader.calls, errors=grader.errors, seconds=run.seconds, reused=run.status)


def judge_budget(config: LoopConfig, judge, data: LoopData | None = None) -> dict:
    """Dry run before any model work: the most judge calls the run can need (every answer
    distinct), and the judge's own estimate of tokens and dollars for them."""
    data = data or LoopData.load()
    per_stage = len(data.symptoms) * config.n_samples + len(data.paraphrases) * config.n_paraphrase
    n_stages = len(config.stages)
    out = {"judge": judge.name, "answers_per_stage": per_stage, "stages": n_stages, "max_calls": per_stage * n_stages}
    ref = data.references[0]
    est = judge.estimate([(ref["prompt"], ref["response"])], use_cache=False)
    out["est_tokens"] = (est["est_prompt_tokens"] + est["est_completion_tokens"]) * out["max_calls"]
    out["est_usd"] = None if est["est_usd"] is None else est["est_usd"] * out["max_calls"]
    return out
