"""The judge contract: what the loop and the agreement measures may rely on.

Both judges (:class:`~.rubric.RubricJudge`, :class:`~.openai_judge.OpenAIJudge`) implement
:class:`Judge`; nothing in the course asks a judge what it is by name or probes it with
``getattr``. A new judge (another API, a local model) implements the same five members.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from .schema import Grade, JudgeError


@dataclass(frozen=True)
class GradeRequest:
    """One answer to grade. ``symptom_id`` is optional: a judge that needs it can infer it."""

    question: str
    answer: str
    symptom_id: str | None = None


def as_request(item: Any) -> GradeRequest:
    """A :class:`GradeRequest` from a request, a ``(question, answer)`` pair, or a dict
    with ``question`` and ``answer`` (or ``model_answer``) and optionally ``symptom_id``."""
    if isinstance(item, GradeRequest):
        return item
    if isinstance(item, dict):
        return GradeRequest(item["question"], item.get("answer", item.get("model_answer", "")), item.get("symptom_id"))
    question, answer = item[0], item[1]
    return GradeRequest(question, answer)


@runtime_checkable
class Judge(Protocol):
    """A grader of level-3 answers in the §4.2 schema."""

    name: str  # "rubric", "openai", ...
    version: str  # changes whenever the same answer could get a different grade
    concurrency: int  # how many answers it grades at once (the loop hands it 4x this per batch)

    def config(self) -> dict:
        """Settings that identify its grades (never a secret)."""

    def grade(self, question: str, answer: str, *, symptom_id: str | None = None) -> Grade:
        """One grade; raises :class:`JudgeError` when none can be had."""

    def grade_many(self, items: Iterable, *, progress: bool = False, use_cache: bool | None = None,
                   on_result: Callable[[int, Grade | JudgeError], None] | None = None) -> list[Grade | JudgeError]:
        """Grades in input order; a failed item is a :class:`JudgeError`, never an exception.

        ``on_result(i, result)`` is called as each result arrives, so a caller can keep every
        paid grade even if the batch is interrupted."""

    def estimate(self, items: Iterable, use_cache: bool | None = None) -> dict:
        """Dry run: ``n_calls``, ``est_prompt_tokens``, ``est_completion_tokens``, ``est_usd`` (None if unknown)."""
