"""Judges for the level-3 loop: one grade schema (the original experiment (book: original_experiment, §4.2)), two judges, and a way
to measure how far a judge can be trusted.

* :class:`RubricJudge` — deterministic, offline, built on ``datasets/level3/drugs.jsonl``.
* :class:`OpenAIJudge` — an LLM (``gpt-4.1-mini`` by default) through the ``openai`` client;
  any OpenAI-compatible server via ``base_url`` / ``OPENAI_BASE_URL``.
* :func:`make_judge` — ``"rubric"``, ``"openai"`` or ``"auto"`` (openai when a key is set).
* :class:`Judge` — the contract both implement (``name``, ``version``, ``concurrency``, ``grade``, ``grade_many``).
* :func:`agreement_report` / :func:`self_consistency` — the judge against the human gold set.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import os

from .agreement import AgreementReport, agreement_report, cohen_kappa, self_consistency
from .base import GradeRequest, Judge, as_request
from .cache import JudgeCache, cache_key
from .gold import load_judge_gold, load_judge_redteam
from .openai_judge import DEFAULT_MODEL, MISSING_KEY_MESSAGE, PROMPT_VERSION, SYSTEM_PROMPT, OpenAIJudge, Usage
from .rubric import RUBRIC_VERSION, RubricJudge
from .schema import (
    ACCURACY_THRESHOLD, DRUG_LABELS, GRADE_JSON_SCHEMA, LABELS, REPLY_JSON_SCHEMA, DrugGrade, Grade,
    GradeValidationError, JudgeConfigError, JudgeError, validate_grade_dict,
)

JUDGES = ("rubric", "openai", "auto")


def make_judge(name: str = "auto", *, verbose: bool = True, **kw):
    """Build a judge by name.

    ``"rubric"``: :class:`RubricJudge` (``kw`` go to it). ``"openai"``: :class:`OpenAIJudge`
    (``kw``: model, api_key, base_url, cache_dir, concurrency, ...); raises
    :class:`JudgeConfigError` with instructions when no API key is set. ``"auto"``: openai
    when ``api_key=`` or ``OPENAI_API_KEY`` is set, else rubric; prints which and why.
    """
    name = (name or "auto").lower()
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {list(JUDGES)}")
    if name == "rubric":
        return RubricJudge(**kw)
    if name == "openai":
        return OpenAIJudge(**kw)
    if kw.get("api_key") or os.environ.get("OPENAI_API_KEY"):
        judge = OpenAIJudge(**kw)
        why = f"an API key is set; model {judge.model}" + (f" at {judge.base_url}" if judge.base_url else "")
    else:
        judge = RubricJudge()
        why = "no OPENAI_API_KEY is set, so the offline rubric judge is used"
    judge.selected_because = why
    if verbose:
        print(f"judge: auto -> {judge.name} ({why})")
    return judge


__all__ = [
    "make_judge", "JUDGES", "RubricJudge", "OpenAIJudge", "Grade", "DrugGrade", "JudgeError", "JudgeConfigError",
    "GradeValidationError", "validate_grade_dict", "GRADE_JSON_SCHEMA", "REPLY_JSON_SCHEMA", "LABELS", "DRUG_LABELS",
    "ACCURACY_THRESHOLD", "agreement_report", "AgreementReport", "self_consistency", "cohen_kappa", "JudgeCache",
    "cache_key", "Judge", "GradeRequest", "as_request", "load_judge_gold", "load_judge_redteam", "DEFAULT_MODEL", "PROMPT_VERSION", "SYSTEM_PROMPT", "MISSING_KEY_MESSAGE",
    "RUBRIC_VERSION", "Usage",
]
