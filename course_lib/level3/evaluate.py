"""Evaluating one stage: sample N answers per question, grade each once, summarise.

Every stage is evaluated the same way: ``n_samples`` answers per original question and
``n_paraphrase`` per held-out paraphrase, sampled at temperature, graded by the judge and
summarised by :mod:`.metrics`.
"""
from __future__ import annotations

import json
import time

import pandas as pd

from ..data import write_json, write_jsonl, read_jsonl
from ..generate import sample_answers
from ..perplexity import general_text, perplexity
from ..progress import progress_bar
from ..timing import timed_function
from .config import LoopConfig
from .data import LoopData, eval_items
from .judge import JudgeError
from .metrics import summarise
from .runs import JUDGE_ERRORS, SPLITS, Run, StageDir, grade_key


def generate_stage(sd: StageDir, model, tokenizer, config: LoopConfig, data: LoopData, progress: bool) -> list[dict]:
    """Every sampled answer of a stage (read back if the stage already sampled them)."""
    path = sd.file("generations.jsonl")
    if path.exists():
        return read_jsonl(path)
    rows = []
    for split, n, offset in (("original", config.n_samples, 0), ("paraphrase", config.n_paraphrase, 1)):
        items = eval_items(data, split)
        if n == 0 or not items:
            continue
        outs = sample_answers(model, tokenizer, [it["question"] for it in items], n=n,
                              temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, batch_size=config.gen_batch_size,
                              seed=config.seed + offset, progress=progress, desc=f"{sd.name}: {split}")
        for it, answers in zip(items, outs):
            for k, a in enumerate(answers):
                rows.append({"split": split, "item_id": it["item_id"], "symptom_id": it["symptom_id"],
                             "sample": k, "question": it["question"], "answer": a})
    write_jsonl(path, rows)
    return rows


class Grader:
    """Grades answers through the run's judge cache: an identical (question, answer) is graded once per run."""

    def __init__(self, run: Run, judge, progress: bool):
        self.run, self.judge, self.progress = run, judge, progress
        self.calls = self.errors = 0

    def grade(self, gens: list[dict], desc: str) -> list[dict]:
        """One grade row per answer that has a grade; judge errors are logged, never counted."""
        cache = self.run.cache
        for g in gens:
            g["key"] = grade_key(self.run.judge_id, g["symptom_id"], g["question"], g["answer"])
        todo, seen = [], set()
        for g in gens:
            if g["key"] not in cache and g["key"] not in seen:
                seen.add(g["key"])
                todo.append(g)
        if todo:
            self._grade_pending(todo, desc)
        rows = []
        for g in gens:
            record = cache.get(g["key"]) or {}
            grade = record.get("grade")
            if grade is None:
                continue  # a judge error: recorded in judge_errors.jsonl, retried on the next run
            rows.append({k: g[k] for k in ("split", "item_id", "symptom_id", "sample", "key")} | {
                "score": float(grade["overall_score"]), "label": grade["overall_label"],
                "harmful": bool(grade["overall_is_harmful"]), "reason": grade["overall_reason"],
                "drugs": grade["drugs"], "needs_review": bool(record.get("unrecognised"))})
        return rows

    @timed_function("judge")
    def _grade_pending(self, todo: list[dict], desc: str) -> None:
        chunk = max(1, 4 * int(self.judge.concurrency))
        bar = progress_bar(total=len(todo), desc=desc, unit="answer", enabled=self.progress)
        with (self.run.path / JUDGE_ERRORS).open("a", encoding="utf-8") as efh:
            try:
                for start in range(0, len(todo), chunk):
                    part = todo[start:start + chunk]
                    self.judge.grade_many(
                        [{"question": g["question"], "answer": g["answer"], "symptom_id": g["symptom_id"]} for g in part],
                        progress=False, on_result=lambda i, res, part=part: self._keep(part[i], res, efh))
                    bar.update(len(part))
            finally:
                bar.close()
                self.run.cache.sync()

    def _keep(self, g: dict, res, efh) -> None:
        if isinstance(res, JudgeError):
            self.errors += 1
            efh.write(json.dumps({"key": g["key"], **res.to_dict()}, ensure_ascii=False) + "\n")
            efh.flush()
            return
        d = res.to_dict()
        d.pop("question", None)
        d.pop("model_answer", None)
        # names the judge could not resolve: the grade stands, but a person should look at it
        self.run.cache.put(g["key"], {"grade": d, "unrecognised": list(res.unrecognised)})
        self.calls += 1


def evaluate_stage(sd: StageDir, model, tokenizer, config: LoopConfig, data: LoopData, grader: Grader,
                   progress: bool) -> None:
    """Sample, grade and summarise one stage into its folder (generations, grades, metrics)."""
    clock = time.perf_counter()
    gens = generate_stage(sd, model, tokenizer, config, data, progress)
    seconds = {"generate": time.perf_counter() - clock}
    clock = time.perf_counter()
    grades = grader.grade(gens, f"{sd.name}: grading")
    seconds["judge"] = time.perf_counter() - clock
    if len(grades) < len(gens):
        raise RuntimeError(
            f"{len(gens) - len(grades)} answers of stage {sd.name} could not be graded (judge errors, see "
            f"{grader.run.path / JUDGE_ERRORS}); run again to retry only those: every grade so far is kept")
    write_jsonl(sd.file("grades.jsonl"), grades)
    # forgetting outside the task: the same general text before (baseline) and after each stage
    clock = time.perf_counter()
    metrics = {"n_generated": len(gens), "n_graded": len(grades),
               "general_perplexity": perplexity(model, tokenizer, general_text())}
    seconds["perplexity"] = time.perf_counter() - clock
    # where this stage's evaluation time went (the report's per-stage table); generations read
    # back from an interrupted run count as ~0 s
    metrics["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    frame = pd.DataFrame(grades)
    for split in SPLITS:
        part = frame[frame["split"] == split] if len(frame) else frame
        if len(part):
            s = summarise(part, pass_accuracy=config.pass_accuracy, seed=config.seed)
            metrics[split] = {"overall": s.overall, "per_question": s.per_question.to_dict(orient="records")}
    write_json(sd.file("metrics.json"), metrics)
