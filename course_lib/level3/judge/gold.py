"""The judge gold set and the judge red-team set: model-style answers with a human-written
expected grade.

The gold set was written from the course's own knowledge base, so a judge's agreement with
it measures *consistency* with that knowledge base, not medical correctness. The red-team
set (``judge_redteam.jsonl``) was written before the rubric's v2 rules, from outside the
knowledge base, to measure robustness; it is for measuring a judge only, never for
training, selection or tuning.
"""
from __future__ import annotations

from pathlib import Path

from ...data import DatasetError, Field, load_jsonl
from ..data import SYMPTOM_IDS, dataset_path, load_drug_index, load_symptoms
from .schema import DRUG_LABELS, LABELS

GOLD_CATEGORIES = ("correct", "partially_correct", "incorrect", "unsafe", "alias", "format", "tranexamic", "garbage")
NUM = (int, float)

GOLD_SCHEMA = [
    Field("id", str),
    Field("symptom_id", str, choices=SYMPTOM_IDS),
    Field("category", str, choices=GOLD_CATEGORIES),
    Field("question", str),
    Field("answer", str, non_empty=False),
    Field("expected_label", str, choices=LABELS),
    Field("expected_harmful", bool),
    Field("score_min", NUM),
    Field("score_max", NUM),
    Field("expected_drugs", list, non_empty=False),
    Field("note", str),
]


def load_judge_gold(path: Path | str | None = None) -> list[dict]:
    """Model-style answers with a human-written expected grade."""
    p = dataset_path("judge_gold", path)
    numbered = load_jsonl(p, GOLD_SCHEMA, with_lines=True)
    records = [r for _, r in numbered]
    index = load_drug_index()
    for i, r in numbered:
        if not 0.0 <= r["score_min"] <= r["score_max"] <= 1.0:
            raise DatasetError(p, i, "score_min", "need 0 <= score_min <= score_max <= 1")
        if r["expected_label"] == "unsafe" and not r["expected_harmful"]:
            raise DatasetError(p, i, "expected_harmful", "an unsafe answer must be harmful")
        for d in r["expected_drugs"]:
            if not (isinstance(d, dict) and {"name", "label"} <= set(d) and set(d) <= {"name", "label", "unknown"}):
                raise DatasetError(p, i, "expected_drugs", "each item is {name, label[, unknown]}")
            if d["label"] not in DRUG_LABELS:
                raise DatasetError(p, i, "expected_drugs", f"{d['label']!r} is not one of {list(DRUG_LABELS)}")
            resolved = index.resolve(d["name"])
            if d.get("unknown"):
                if resolved is not None:
                    raise DatasetError(p, i, "expected_drugs", f"{d['name']!r} is marked unknown but resolves to {resolved.drug.generic!r}")
            elif resolved is None:
                raise DatasetError(p, i, "expected_drugs", f"drug {d['name']!r} is not in drugs.jsonl")
    return records


REDTEAM_CATEGORIES = ("dangerous_reason", "unknown_dangerous_name", "mention_in_reason", "warning_not_recommendation",
                      "format", "names_routes", "control")

REDTEAM_SCHEMA = [
    Field("id", str),
    Field("category", str, choices=REDTEAM_CATEGORIES),
    Field("symptom_id", str, choices=SYMPTOM_IDS),
    Field("question", str),
    Field("answer", str, non_empty=False),
    Field("expected_label", str, choices=LABELS),
    Field("expected_harmful", bool),
    Field("why", str),
]


def load_judge_redteam(path: Path | str | None = None) -> list[dict]:
    """Red-team answers with a human-written expected label, for measuring a judge only.

    Checks beyond the schema: ``question`` is exactly the question of ``symptom_id`` in
    ``symptoms.jsonl``, and ``expected_harmful`` is true exactly when ``expected_label`` is
    ``unsafe``. Names in the answers need not resolve (many are chosen because they do not);
    there is no score band and no per-drug grade.
    """
    p = dataset_path("judge_redteam", path)
    numbered = load_jsonl(p, REDTEAM_SCHEMA, with_lines=True)
    questions = {s["id"]: s["question"] for s in load_symptoms()}
    for i, r in numbered:
        if r["question"] != questions[r["symptom_id"]]:
            raise DatasetError(p, i, "question", f"must be exactly the question of {r['symptom_id']} in symptoms.jsonl")
        if r["expected_label"] == "unsafe" and not r["expected_harmful"]:
            raise DatasetError(p, i, "expected_harmful", "an unsafe answer must be harmful")
        if r["expected_harmful"] and r["expected_label"] != "unsafe":
            raise DatasetError(p, i, "expected_label", "a harmful answer must be labelled unsafe")
    return [r for _, r in numbered]
