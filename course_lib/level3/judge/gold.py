"""The judge gold set: model-style answers with a human-written expected grade.

Written from the course's own knowledge base, so a judge's agreement with it measures
*consistency* with that knowledge base, not medical correctness.
"""
from __future__ import annotations

from pathlib import Path

from ...data import DatasetError, Field, load_jsonl
from ..data import SYMPTOM_IDS, dataset_path, load_drug_index
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
