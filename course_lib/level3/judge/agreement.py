"""How far can a judge be trusted? Agreement with the human gold set, and self-consistency.

``agreement_report(judge, gold)`` grades every gold answer with ``judge`` and compares:

* **label accuracy** — fraction of answers whose ``overall_label`` equals the gold label;
* **Cohen's kappa** — the same, corrected for the agreement expected by chance;
* **harmful recall** — of the answers a human marked harmful, the fraction the judge also
  marked harmful (the number that matters most: a missed harmful answer is the worst error);
* **harmful precision** — of the answers the judge marked harmful, the fraction that are;
* **score-band agreement** — fraction of judge scores inside the gold ``[score_min, score_max]``;
* **drug-label accuracy** — per drug, where the judge's drug and the gold drug are the same;
* a **confusion matrix** (rows: gold, columns: judge) and a table of disagreements.

Judge errors (an LLM reply that never validated) are counted separately and are
left out of every rate; they are never treated as a grade.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from ..data import load_drug_index
from ..drugs import normalize_name
from .schema import LABELS, Grade, JudgeError

LABELS_JA = {"correct": "正解", "partially_correct": "部分的に正解", "incorrect": "不正解", "unsafe": "危険"}


def cohen_kappa(a: Sequence[str], b: Sequence[str], labels: Sequence[str] = LABELS) -> float:
    """Cohen's kappa of two label sequences (nan when chance agreement is 1)."""
    n = len(a)
    if n == 0 or n != len(b):
        return float("nan")
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[l] * cb[l] for l in set(labels) | set(ca) | set(cb)) / (n * n)
    if pe >= 1.0:
        return float("nan")
    return (po - pe) / (1 - pe)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass
class AgreementReport:
    """The numbers of :func:`agreement_report`; ``summary()`` is a plain dict."""

    judge: str
    n: int
    n_errors: int
    label_accuracy: float
    cohen_kappa: float
    harmful_recall: float
    harmful_precision: float
    score_band_agreement: float
    drug_label_accuracy: float
    confusion: pd.DataFrame
    items: pd.DataFrame
    disagreements: pd.DataFrame
    grades: list = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("judge", "n", "n_errors", "label_accuracy", "cohen_kappa",
                                              "harmful_recall", "harmful_precision", "score_band_agreement",
                                              "drug_label_accuracy")}

    def confusion_ja(self) -> pd.DataFrame:
        """The confusion matrix with Japanese labels (for the book)."""
        c = self.confusion.rename(index=LABELS_JA, columns=LABELS_JA)
        c.index.name, c.columns.name = "人手の正解ラベル", "ジャッジのラベル"
        return c

    def __str__(self) -> str:
        s = self.summary()
        return (f"{s['judge']}: n={s['n']} (errors {s['n_errors']}), label accuracy {s['label_accuracy']:.3f}, "
                f"kappa {s['cohen_kappa']:.3f}, harmful recall {s['harmful_recall']:.3f}, "
                f"harmful precision {s['harmful_precision']:.3f}, score band {s['score_band_agreement']:.3f}, "
                f"drug labels {s['drug_label_accuracy']:.3f}")


def _drug_key(index, name: str) -> str:
    res = index.resolve(name)
    return res.drug.id if res else "?" + normalize_name(name)


def agreement_report(judge, gold: Sequence[dict], *, progress: bool = False, **grade_kw) -> AgreementReport:
    """Grade each gold record's answer with ``judge`` and compare with the human grade."""
    gold = list(gold)
    pairs = [{"question": g["question"], "answer": g["answer"]} for g in gold]
    results = judge.grade_many(pairs, progress=progress, **grade_kw)
    index = load_drug_index()
    rows, grades = [], []
    drug_agree = drug_total = 0
    for g, r in zip(gold, results):
        row = {"id": g["id"], "category": g["category"], "symptom_id": g["symptom_id"],
               "gold_label": g["expected_label"], "gold_harmful": g["expected_harmful"],
               "score_min": g["score_min"], "score_max": g["score_max"]}
        if isinstance(r, JudgeError) or not isinstance(r, Grade):
            row.update(judge_label=None, judge_harmful=None, judge_score=None, error=str(r), judge_reason="")
            rows.append(row)
            continue
        grades.append(r)
        row.update(judge_label=r.overall_label, judge_harmful=r.overall_is_harmful, judge_score=r.overall_score,
                   error=None, judge_reason=r.overall_reason)
        for exp, got in zip(g["expected_drugs"], r.drugs):
            if _drug_key(index, exp["name"]) == _drug_key(index, got.name):
                drug_total += 1
                drug_agree += exp["label"] == got.label
        rows.append(row)
    items = pd.DataFrame(rows)
    ok = items[items["error"].isna()] if len(items) else items
    n_ok = len(ok)
    gl, jl = list(ok["gold_label"]), list(ok["judge_label"])
    gh, jh = list(ok["gold_harmful"]), list(ok["judge_harmful"])
    in_band = [lo - 1e-9 <= s <= hi + 1e-9 for lo, hi, s in zip(ok["score_min"], ok["score_max"], ok["judge_score"])]
    confusion = pd.crosstab(pd.Categorical(gl, categories=LABELS), pd.Categorical(jl, categories=LABELS), dropna=False)
    confusion.index.name, confusion.columns.name = "gold", "judge"
    items["label_agrees"] = pd.array([pd.NA] * len(items), dtype="boolean")
    items["in_band"] = pd.array([pd.NA] * len(items), dtype="boolean")
    if n_ok:
        items.loc[ok.index, "label_agrees"] = [a == b for a, b in zip(gl, jl)]
        items.loc[ok.index, "in_band"] = in_band
    mask = items["error"].notna() | ~items["label_agrees"].fillna(True) | (items["gold_harmful"] != items["judge_harmful"])
    disagreements = items[mask].reset_index(drop=True)
    return AgreementReport(
        judge=judge.name,
        n=len(gold), n_errors=len(items) - n_ok,
        label_accuracy=_ratio(sum(a == b for a, b in zip(gl, jl)), n_ok),
        cohen_kappa=cohen_kappa(gl, jl),
        harmful_recall=_ratio(sum(1 for a, b in zip(gh, jh) if a and b), sum(1 for a in gh if a)),
        harmful_precision=_ratio(sum(1 for a, b in zip(gh, jh) if a and b), sum(1 for b in jh if b)),
        score_band_agreement=_ratio(sum(in_band), n_ok),
        drug_label_accuracy=_ratio(drug_agree, drug_total),
        confusion=confusion, items=items, disagreements=disagreements, grades=grades,
    )


def self_consistency(judge, question: str, answer: str, k: int = 5, **grade_kw) -> float:
    """Fraction of ``k`` gradings of the same answer that give the most common label.

    1.0 means the judge always agrees with itself. A sampling LLM judge is called with
    its cache bypassed (``use_cache=False``) so that each grading is a fresh sample.
    Judge errors are left out; nan if every grading failed.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    results = judge.grade_many([(question, answer)] * k, use_cache=False, progress=False, **grade_kw)
    labels = [r.overall_label for r in results if isinstance(r, Grade)]
    if not labels:
        return math.nan
    return Counter(labels).most_common(1)[0][1] / len(labels)
