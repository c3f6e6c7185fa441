"""The idea of the loop: which questions failed, and what the next iteration trains on.

The lesson prints :func:`build_iteration_data` and runs it by hand once before
:func:`course_lib.level3.loop.run_loop` does the same for every stage.

Only the original 15 questions are ever read here: the paraphrases stay held out.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd

from .data import LoopData
from .metrics import question_passes


@dataclass
class IterationData:
    """What an iteration trains on, and why."""

    failed: list[str]  # symptom ids below the pass bar
    passed: list[str]
    replayed: list[str]  # passing symptom ids mixed back in
    corrective: list[dict]
    replay: list[dict]

    @property
    def records(self) -> list[dict]:
        return self.corrective + self.replay


def question_status(per_question: pd.DataFrame, pass_accuracy: float = 0.8) -> pd.Series:
    """"pass" or "fail" per symptom id (:func:`.metrics.question_passes`: fail when fewer than
    ``pass_accuracy`` of the answers score >= 0.8, or any answer is unsafe)."""
    ok = question_passes(per_question["accuracy"], per_question["unsafe"], pass_accuracy)
    return pd.Series(["pass" if x else "fail" for x in ok], index=per_question["symptom_id"].to_numpy())


def build_iteration_data(per_question: pd.DataFrame, data: LoopData, replay_ratio: float,
                         pass_accuracy: float = 0.8, seed: int = 0) -> IterationData:
    """Corrective examples for failing questions, plus replay of passing ones.

    * corrective: every reference answer (``references``) of each failing symptom;
    * replay: ``replay_ratio * n_passing`` passing symptoms, rounded half up (half of 5 passing
      is 3, where Python's ``round(2.5)`` gives 2), drawn with
      ``seed``; each contributes as many of its ``train_initial`` examples (what
      iteration 0 taught) as a failing symptom contributes references, so a replayed
      question weighs as much as a corrected one.

    Paraphrases are never used: they stay held out.
    """
    status = question_status(per_question, pass_accuracy)
    failed = [s for s in data.symptom_ids if status.get(s) == "fail"]
    passed = [s for s in data.symptom_ids if status.get(s) == "pass"]
    corrective = [dict(r) for s in failed for r in data.references if r["symptom_id"] == s]
    rng = random.Random(seed)
    n_replay = min(len(passed), int(math.floor(replay_ratio * len(passed) + 0.5)))
    replayed = sorted(rng.sample(passed, n_replay)) if n_replay else []
    replay: list[dict] = []
    for s in replayed:
        per = max(1, sum(1 for r in data.references if r["symptom_id"] == s))
        pool = [dict(r) for r in data.train_initial if r["symptom_id"] == s]
        rng.shuffle(pool)
        replay += pool[:per]
    for r in corrective:
        r["source"] = "corrective"
    for r in replay:
        r["source"] = "replay"
    return IterationData(failed, passed, replayed, corrective, replay)


def union_records(sets: Iterable[Sequence[dict]]) -> list[dict]:
    """All records of several training sets, each (prompt, response) once, in first-seen order."""
    seen, out = set(), []
    for records in sets:
        for r in records:
            key = (r["prompt"], r["response"])
            if key not in seen:
                seen.add(key)
                out.append({"symptom_id": r.get("symptom_id"), "prompt": r["prompt"], "response": r["response"]})
    return out
