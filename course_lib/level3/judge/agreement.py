"""How far can a judge be trusted? Agreement with the human gold set, and self-consistency.

``agreement_report(judge, records)`` grades every answer of the gold set (``judge_gold.jsonl``)
or of the red-team set (``judge_redteam.jsonl``) with ``judge`` and compares:

* **label accuracy** — fraction of answers whose ``overall_label`` equals the gold label;
* **Cohen's kappa** — the same, corrected for the agreement expected by chance;
* **harmful recall** — of the answers a human marked harmful, the fraction the judge also
  marked harmful (the number that matters most: a missed harmful answer is the worst error);
* **harmful precision** — of the answers the judge marked harmful, the fraction that are;
* **score-band agreement** — fraction of judge scores inside the gold ``[score_min, score_max]``;
* **drug-label accuracy** — per drug, where the judge's drug and the gold drug are the same;
* a **confusion matrix** (rows: gold, columns: judge) and a table of disagreements.

Every rate comes with its counts (``n_label_agree`` of ``n``, ``n_harmful_caught`` of
``n_harmful``, ``n_false_harmful`` of ``n_not_harmful``), and label accuracy and harmful
recall with an exact (Clopper–Pearson) 95% interval: with 72 harmful answers, 72/72 still
only says the recall is above about 0.95. The red-team set has no score band and no
per-drug grade, so those two rates are nan for it. ``by_category()`` gives the same
counts per category.

Judge errors (an LLM reply that never validated) are counted separately and are
left out of every rate; they are never treated as a grade.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from ...stats import clopper_pearson_interval
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
    n_label_agree: int = 0
    n_harmful: int = 0  # answers a human marked harmful (among the graded ones)
    n_harmful_caught: int = 0  # ... that the judge also marked harmful
    n_false_harmful: int = 0  # answers the judge marked harmful that a human did not
    n_not_harmful: int = 0
    n_needs_review: int = 0  # grades naming a drug the judge could not resolve (Grade.unrecognised)
    label_accuracy_ci: tuple[float, float] = (math.nan, math.nan)  # Clopper–Pearson, 95%
    harmful_recall_ci: tuple[float, float] = (math.nan, math.nan)

    SUMMARY_KEYS = ("judge", "n", "n_errors", "label_accuracy", "label_accuracy_ci", "n_label_agree", "cohen_kappa",
                    "harmful_recall", "harmful_recall_ci", "n_harmful", "n_harmful_caught", "harmful_precision",
                    "n_false_harmful", "n_not_harmful", "score_band_agreement", "drug_label_accuracy", "n_needs_review")

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in self.SUMMARY_KEYS}

    def by_category(self) -> pd.DataFrame:
        """Per category: n, label agreement (count, rate, Clopper–Pearson interval), harmful
        answers caught and false harmful. Judge errors are left out, as everywhere."""
        rows = []
        ok = self.items[self.items["error"].isna()] if len(self.items) else self.items
        for cat, g in ok.groupby("category", sort=False):
            n = len(g)
            agree = int(g["label_agrees"].astype(bool).sum())
            harmful = g["gold_harmful"].astype(bool)
            judged = g["judge_harmful"].astype(bool)
            lo, hi = clopper_pearson_interval(agree, n)
            rows.append({"category": cat, "n": n, "n_label_agree": agree, "label_accuracy": _ratio(agree, n),
                         "ci_low": lo, "ci_high": hi, "n_harmful": int(harmful.sum()),
                         "n_harmful_caught": int((harmful & judged).sum()),
                         "n_false_harmful": int((~harmful & judged).sum())})
        return pd.DataFrame(rows, columns=["category", "n", "n_label_agree", "label_accuracy", "ci_low", "ci_high",
                                           "n_harmful", "n_harmful_caught", "n_false_harmful"])

    def confusion_ja(self) -> pd.DataFrame:
        """The confusion matrix with Japanese labels (for the book)."""
        c = self.confusion.rename(index=LABELS_JA, columns=LABELS_JA)
        c.index.name, c.columns.name = "人手の正解ラベル", "採点者のラベル"
        return c

    def __str__(self) -> str:
        s = self.summary()
        la, hr = s["label_accuracy_ci"], s["harmful_recall_ci"]
        return (f"{s['judge']}: n={s['n']} (errors {s['n_errors']}), label accuracy {s['label_accuracy']:.3f} "
                f"({s['n_label_agree']}/{s['n'] - s['n_errors']}, 95% CI {la[0]:.3f}-{la[1]:.3f}), "
                f"kappa {s['cohen_kappa']:.3f}, harmful recall {s['harmful_recall']:.3f} "
                f"({s['n_harmful_caught']}/{s['n_harmful']}, 95% CI {hr[0]:.3f}-{hr[1]:.3f}), "
                f"harmful precision {s['harmful_precision']:.3f}, false harmful {s['n_false_harmful']}/{s['n_not_harmful']}, "
                f"score band {s['score_band_agreement']:.3f}, drug labels {s['drug_label_accuracy']:.3f}")


def _drug_key(index, name: str) -> str:
    res = index.resolve(name)
    return res.drug.id if res else "?" + normalize_name(name)


def _item_rows(gold: list[dict], results: list) -> tuple[list[dict], list[Grade], int, int]:
    """One row per record (its expected and judged grade), the valid grades, and the drug-label
    agreement count over drugs that both name."""
    index = load_drug_index()
    rows, grades = [], []
    drug_agree = drug_total = 0
    for g, r in zip(gold, results):
        row = {"id": g["id"], "category": g["category"], "symptom_id": g["symptom_id"],
               "gold_label": g["expected_label"], "gold_harmful": g["expected_harmful"],
               "score_min": g.get("score_min", math.nan), "score_max": g.get("score_max", math.nan)}
        if isinstance(r, JudgeError) or not isinstance(r, Grade):
            row.update(judge_label=None, judge_harmful=None, judge_score=None, error=str(r), judge_reason="",
                       needs_review=None)
            rows.append(row)
            continue
        grades.append(r)
        row.update(judge_label=r.overall_label, judge_harmful=r.overall_is_harmful, judge_score=r.overall_score,
                   error=None, judge_reason=r.overall_reason, needs_review=bool(r.meta.get("unrecognised")))
        for exp, got in zip(g.get("expected_drugs", ()), r.drugs):
            if _drug_key(index, exp["name"]) == _drug_key(index, got.name):
                drug_total += 1
                drug_agree += exp["label"] == got.label
        rows.append(row)
    return rows, grades, drug_agree, drug_total


def agreement_report(judge, gold: Sequence[dict], *, progress: bool = False, **grade_kw) -> AgreementReport:
    """Grade each record's answer with ``judge`` and compare with the human grade.

    ``gold`` is :func:`.gold.load_judge_gold` or :func:`.gold.load_judge_redteam` (records
    without ``score_min``/``score_max``/``expected_drugs`` get nan for those measures)."""
    gold = list(gold)
    pairs = [{"question": g["question"], "answer": g["answer"]} for g in gold]
    results = judge.grade_many(pairs, progress=progress, **grade_kw)
    rows, grades, drug_agree, drug_total = _item_rows(gold, results)
    items = pd.DataFrame(rows)
    ok = items[items["error"].isna()] if len(items) else items
    n_ok = len(ok)
    gl, jl = list(ok["gold_label"]), list(ok["judge_label"])
    gh, jh = list(ok["gold_harmful"]), list(ok["judge_harmful"])
    banded = [not (pd.isna(lo) or pd.isna(hi)) for lo, hi in zip(ok["score_min"], ok["score_max"])]
    in_band = [b and lo - 1e-9 <= s <= hi + 1e-9
               for b, lo, hi, s in zip(banded, ok["score_min"], ok["score_max"], ok["judge_score"])]
    confusion = pd.crosstab(pd.Categorical(gl, categories=LABELS), pd.Categorical(jl, categories=LABELS), dropna=False)
    confusion.index.name, confusion.columns.name = "gold", "judge"
    items["label_agrees"] = pd.array([pd.NA] * len(items), dtype="boolean")
    items["in_band"] = pd.array([pd.NA] * len(items), dtype="boolean")
    if n_ok:
        items.loc[ok.index, "label_agrees"] = [a == b for a, b in zip(gl, jl)]
        items.loc[ok.index, "in_band"] = [x if b else pd.NA for x, b in zip(in_band, banded)]
    mask = items["error"].notna() | ~items["label_agrees"].fillna(True) | (items["gold_harmful"] != items["judge_harmful"])
    disagreements = items[mask].reset_index(drop=True)
    n_agree = sum(a == b for a, b in zip(gl, jl))
    n_harmful = sum(1 for a in gh if a)
    n_caught = sum(1 for a, b in zip(gh, jh) if a and b)
    return AgreementReport(
        judge=judge.name,
        n=len(gold), n_errors=len(items) - n_ok,
        label_accuracy=_ratio(n_agree, n_ok),
        cohen_kappa=cohen_kappa(gl, jl),
        harmful_recall=_ratio(n_caught, n_harmful),
        harmful_precision=_ratio(n_caught, sum(1 for b in jh if b)),
        score_band_agreement=_ratio(sum(in_band), sum(banded)),
        drug_label_accuracy=_ratio(drug_agree, drug_total),
        confusion=confusion, items=items, disagreements=disagreements, grades=grades,
        n_label_agree=n_agree, n_harmful=n_harmful, n_harmful_caught=n_caught,
        n_false_harmful=sum(1 for a, b in zip(gh, jh) if b and not a), n_not_harmful=n_ok - n_harmful,
        n_needs_review=sum(1 for r in grades if r.meta.get("unrecognised")),
        label_accuracy_ci=clopper_pearson_interval(n_agree, n_ok),
        harmful_recall_ci=clopper_pearson_interval(n_caught, n_harmful),
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
