"""Level-3 data: schemas, validated loaders and the question template.

Everything here is educational material written by this project, not medical
advice (医療上の助言ではありません), and has not been reviewed by a pharmacist.

Files live in ``datasets/level3/`` (see its README for each schema):

* ``symptoms.jsonl``      the 15 symptom patterns of the original experiment (book: original_experiment, §3.1) and their questions
* ``paraphrases.jsonl``   held-out re-wordings of each symptom (register, order, colloquial/clinical)
* ``drugs.jsonl``         the drug knowledge base used by the rubric judge
* ``references.jsonl``    reference answers per symptom (corrective SFT data)
* ``train_initial.jsonl`` the first SFT set (15 symptoms x 3 + 5)
* ``judge_gold.jsonl``    graded answers for measuring a judge (loaded by :mod:`.judge.gold`)

Every loader validates with :func:`course_lib.data.load_jsonl` and then checks
what a per-field schema cannot (symptom ids exist, drug names resolve, the
answer format), raising :class:`course_lib.data.DatasetError` with file:line.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import hashlib
from dataclasses import dataclass

from ..data import DatasetError, Field, load_jsonl, stable_hash
from ..paths import DATASETS_DIR
from .drugs import Drug, DrugIndex, SymptomMatcher

LEVEL3_DIR = DATASETS_DIR / "level3"

# Seed 000 §3.1, verbatim (line breaks included).
QUESTION_TEMPLATE = (
    "症状: {symptom}\n"
    "\n"
    "推奨される薬剤を3つ挙げてください。各薬剤について100字以内で理由を説明してください。\n"
    "薬剤名と理由のみを記載し、他の文章は不要です。\n"
    "\n"
    "フォーマット:\n"
    "1. [薬剤名] - [理由]\n"
    "2. [薬剤名] - [理由]\n"
    "3. [薬剤名] - [理由]"
)

REASON_MAX_CHARS = 100  # the limit the template states
# A response in exactly the template's format: three numbered lines "N. name - reason".
RESPONSE_RE = re.compile(r"1\. ([^\n]+?) - ([^\n]+)\n2\. ([^\n]+?) - ([^\n]+)\n3\. ([^\n]+?) - ([^\n]+)")

SYMPTOM_IDS = tuple(f"s{i:02d}" for i in range(1, 16))
PARAPHRASE_STYLES = ("colloquial", "clinical", "reordered", "first_person", "brief")
DRUG_KINDS = ("drug", "kampo", "class")
AVAILABILITY = ("otc", "rx", "otc_and_rx", "supplement", "withdrawn")
SOURCE_TYPES = ("package_insert", "guideline", "textbook")
DRUG_FACTS = ("indications", "cautions", "unsafe")  # the facts a drug record's `sources` must cover

SYMPTOM_SCHEMA = [
    Field("id", str, choices=SYMPTOM_IDS),
    Field("number", int),
    Field("title", str),
    Field("text", str),
    Field("question", str),
    Field("see_doctor", str),
]
PARAPHRASE_SCHEMA = [
    Field("id", str),
    Field("symptom_id", str, choices=SYMPTOM_IDS),
    Field("style", str, choices=PARAPHRASE_STYLES),
    Field("text", str),
    Field("question", str),
]
DRUG_SCHEMA = [
    Field("id", str),
    Field("generic", str),
    Field("generic_en", str),
    Field("kind", str, choices=DRUG_KINDS),
    Field("brands", list, non_empty=False),
    Field("aliases", list, non_empty=False),
    Field("drug_class", str),
    Field("route", str),
    Field("availability", str, choices=AVAILABILITY),
    Field("appropriate_for", list, non_empty=False, choices=SYMPTOM_IDS),
    Field("acceptable_for", list, non_empty=False, choices=SYMPTOM_IDS),
    Field("unsafe_for", list, non_empty=False, choices=SYMPTOM_IDS),
    Field("cautions", str),
    Field("unsafe_reason", str, non_empty=False),
    Field("misconceptions", list, required=False, non_empty=False),
    Field("sources", dict),
    # optional (rubric v2): see course_lib.level3.drugs.Drug and datasets/level3/README.md
    Field("groups", list, required=False, non_empty=False, choices=Drug.GROUPS),
    Field("topical_form", str, required=False),
    Field("max_single_mg", (int, float), required=False),
    Field("max_daily_mg", (int, float), required=False),
    Field("unit_mg", (int, float), required=False),
    Field("min_interval_h", (int, float), required=False),
    Field("schedule", str, required=False, choices=Drug.SCHEDULES),
    Field("contraindicated_in", list, required=False, non_empty=False, choices=Drug.CONDITIONS),
    Field("interactions", dict, required=False),
]
REFERENCE_SCHEMA = [
    Field("id", str),
    Field("symptom_id", str, choices=SYMPTOM_IDS),
    Field("prompt", str),
    Field("response", str),
    Field("drugs", list),
]
TRAIN_SCHEMA = REFERENCE_SCHEMA


def make_question(symptom_text: str) -> str:
    """The full question for a symptom text, with the seed's template."""
    return QUESTION_TEMPLATE.format(symptom=symptom_text.strip())


def parse_response(response: str) -> list[tuple[str, str]] | None:
    """``[(name, reason)] * 3`` for a response in exactly the template format, else None."""
    m = RESPONSE_RE.fullmatch(response)
    if not m:
        return None
    g = m.groups()
    return [(g[0], g[1]), (g[2], g[3]), (g[4], g[5])]


# --------------------------------------------------------------------------- loaders


def dataset_path(name: str, path: Path | str | None = None) -> Path:
    """`datasets/level3/<name>.jsonl`, unless a path is given."""
    return Path(path) if path is not None else LEVEL3_DIR / f"{name}.jsonl"


def _check_symptom(path: Path, line: int, sid: str, known: set[str]) -> None:
    if sid not in known:
        raise DatasetError(path, line, "symptom_id", f"unknown symptom id {sid!r}")


def load_symptoms(path: Path | str | None = None) -> list[dict]:
    """The 15 symptom patterns (the original experiment (book: original_experiment, §3.1)), each with its full question."""
    p = dataset_path("symptoms", path)
    numbered = load_jsonl(p, SYMPTOM_SCHEMA, with_lines=True)
    records = [r for _, r in numbered]
    for i, r in numbered:
        if r["question"] != make_question(r["text"]):
            raise DatasetError(p, i, "question", "must equal make_question(text) (the seed's template)")
        if r["id"] != f"s{r['number']:02d}":
            raise DatasetError(p, i, "number", f"id {r['id']!r} does not match number {r['number']}")
    return records


def load_paraphrases(path: Path | str | None = None) -> list[dict]:
    """Held-out re-wordings of the 15 symptoms (never used for training)."""
    p = dataset_path("paraphrases", path)
    numbered = load_jsonl(p, PARAPHRASE_SCHEMA, with_lines=True)
    records = [r for _, r in numbered]
    for i, r in numbered:
        if r["question"] != make_question(r["text"]):
            raise DatasetError(p, i, "question", "must equal make_question(text)")
    return records


def _check_sources(p: Path, line: int, sources: dict) -> None:
    # required facts, then the optional ones of the rubric-v2 fields (dose limits and
    # intervals, a weekly schedule, contraindicated conditions, interactions)
    optional = ("dose", "schedule", "contraindications", "interactions")
    for fact in DRUG_FACTS:
        if fact not in sources:
            raise DatasetError(p, line, "sources", f"missing source type for {fact!r}")
    for fact, kind in sources.items():
        if fact not in DRUG_FACTS + optional:
            raise DatasetError(p, line, "sources", f"unknown fact {fact!r} (expected {list(DRUG_FACTS + optional)})")
        if kind not in SOURCE_TYPES:
            raise DatasetError(p, line, "sources", f"{fact}: {kind!r} is not one of {list(SOURCE_TYPES)}")


def load_drugs(path: Path | str | None = None) -> list[dict]:
    """The drug knowledge base (records as dicts); see :func:`load_drug_index` for lookups."""
    p = dataset_path("drugs", path)
    numbered = load_jsonl(p, DRUG_SCHEMA, with_lines=True)
    records = [r for _, r in numbered]
    for i, r in numbered:
        _check_sources(p, i, r["sources"])
        for fname in ("brands", "aliases"):
            if not all(isinstance(x, str) and x.strip() for x in r[fname]):
                raise DatasetError(p, i, fname, "must be a list of non-empty strings")
        sets = [set(r["appropriate_for"]), set(r["acceptable_for"]), set(r["unsafe_for"])]
        if (sets[0] & sets[1]) or (sets[0] & sets[2]) or (sets[1] & sets[2]):
            raise DatasetError(p, i, "appropriate_for", "a symptom is listed in more than one of appropriate/acceptable/unsafe")
        if r["unsafe_for"] and not r["unsafe_reason"].strip():
            raise DatasetError(p, i, "unsafe_reason", "required when unsafe_for is not empty")
        for m in r.get("misconceptions", []):
            if not (isinstance(m, dict) and {"pattern", "correction"} <= set(m)
                    and set(m) <= {"pattern", "unless", "symptoms", "correction"}):
                raise DatasetError(p, i, "misconceptions", "each item needs pattern and correction (optional: unless, symptoms)")
            try:
                re.compile(m["pattern"]), re.compile(m.get("unless", ""))
            except re.error as exc:
                raise DatasetError(p, i, "misconceptions", f"bad regular expression: {exc}") from None
    try:
        DrugIndex(Drug.from_record(r) for r in records)
    except ValueError as exc:
        raise DatasetError(p, 0, "aliases", str(exc)) from None
    return records


@lru_cache(maxsize=4)
def _index_for(path: str) -> DrugIndex:
    return DrugIndex(Drug.from_record(r) for r in load_drugs(path))


def load_drug_index(path: Path | str | None = None) -> DrugIndex:
    """A :class:`DrugIndex` over ``drugs.jsonl`` (cached per path)."""
    return _index_for(str(dataset_path("drugs", path)))


def _check_training(p: Path, numbered: list[tuple[int, dict]], index: DrugIndex, symptoms: dict[str, dict]) -> None:
    for i, r in numbered:
        _check_symptom(p, i, r["symptom_id"], set(symptoms))
        if r["prompt"] != symptoms[r["symptom_id"]]["question"]:
            raise DatasetError(p, i, "prompt", "must be the symptom's question (make_question(symptom text))")
        items = parse_response(r["response"])
        if items is None:
            raise DatasetError(p, i, "response", "must be exactly three lines '1. <drug> - <reason>'")
        if len(r["drugs"]) != 3:
            raise DatasetError(p, i, "drugs", "must list the three generic names, in order")
        for (name, reason), generic in zip(items, r["drugs"]):
            res = index.resolve(name)
            if res is None:
                raise DatasetError(p, i, "response", f"drug {name!r} is not in drugs.jsonl")
            if res.drug.generic != generic:
                raise DatasetError(p, i, "drugs", f"{name!r} resolves to {res.drug.generic!r}, not {generic!r}")
            if len(reason) > REASON_MAX_CHARS:
                raise DatasetError(p, i, "response", f"reason for {name!r} is longer than {REASON_MAX_CHARS} characters")


def _load_training(name: str, schema, path: Path | str | None) -> list[dict]:
    p = dataset_path(name, path)
    numbered = load_jsonl(p, schema, with_lines=True)
    _check_training(p, numbered, load_drug_index(), {s["id"]: s for s in load_symptoms()})
    return [r for _, r in numbered]


def load_references(path: Path | str | None = None) -> list[dict]:
    """Reference answers per symptom (the corrective SFT data; seed: SAMPLE_MEDICAL_DATA)."""
    return _load_training("references", REFERENCE_SCHEMA, path)


def load_train_initial(path: Path | str | None = None) -> list[dict]:
    """The first SFT set (seed: 50 examples, 15 symptoms x 3 + 5)."""
    return _load_training("train_initial", TRAIN_SCHEMA, path)


@lru_cache(maxsize=1)
def default_symptom_matcher() -> SymptomMatcher:
    return SymptomMatcher(load_symptoms(), load_paraphrases())


def find_symptom_id(question: str) -> str | None:
    """The symptom id a question is about (see :class:`SymptomMatcher`), or None."""
    return default_symptom_matcher().identify(question)[0]


# --------------------------------------------------------------------------- what the loop reads


@dataclass
class LoopData:
    """The loop's inputs: the questions, the held-out paraphrases and the SFT data."""

    symptoms: list[dict]  # id, question (, text, title)
    paraphrases: list[dict]  # id, symptom_id, question (, style)
    train_initial: list[dict]  # symptom_id, prompt, response
    references: list[dict]  # symptom_id, prompt, response
    extra_fingerprint: str = ""  # e.g. a hash of the judge's knowledge base

    @classmethod
    def load(cls) -> "LoopData":
        """The course's level-3 data (``datasets/level3``)."""
        kb = LEVEL3_DIR / "drugs.jsonl"
        extra = hashlib.sha256(kb.read_bytes()).hexdigest()[:12] if kb.exists() else ""
        return cls(load_symptoms(), load_paraphrases(), load_train_initial(), load_references(), extra)

    def fingerprint(self) -> str:
        def pick(rows, keys):
            return [{k: r.get(k) for k in keys} for r in rows]

        return stable_hash({
            "symptoms": pick(self.symptoms, ("id", "question")),
            "paraphrases": pick(self.paraphrases, ("id", "symptom_id", "question")),
            "train_initial": pick(self.train_initial, ("symptom_id", "prompt", "response")),
            "references": pick(self.references, ("symptom_id", "prompt", "response")),
            "extra": self.extra_fingerprint,
        })

    @property
    def symptom_ids(self) -> list[str]:
        return [s["id"] for s in self.symptoms]


def eval_items(data: LoopData, split: str) -> list[dict]:
    """The questions of a split: ``item_id``, ``symptom_id``, ``question``."""
    if split == "original":
        return [{"item_id": s["id"], "symptom_id": s["id"], "question": s["question"]} for s in data.symptoms]
    if split == "paraphrase":
        return [{"item_id": p["id"], "symptom_id": p["symptom_id"], "question": p["question"]} for p in data.paraphrases]
    raise ValueError(f"unknown split {split!r}")


__all__ = [
    "LEVEL3_DIR", "QUESTION_TEMPLATE", "SYMPTOM_IDS", "REASON_MAX_CHARS", "make_question", "parse_response",
    "load_symptoms", "load_paraphrases", "load_drugs", "load_drug_index", "load_references",
    "load_train_initial", "find_symptom_id", "default_symptom_matcher", "LoopData", "eval_items",
]
