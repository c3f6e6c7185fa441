"""Level-3 medical data: schemas, validated loaders, the question template, and a
drug-name index that resolves generic names, brand names and aliases.

Everything here is educational material written by this project, not medical
advice (医療上の助言ではありません), and has not been reviewed by a pharmacist.

Files live in ``datasets/level3/`` (see its README for each schema):

* ``symptoms.jsonl``      the 15 symptom patterns of seed 000 §3.1 and their questions
* ``paraphrases.jsonl``   held-out re-wordings of each symptom (register, order, colloquial/clinical)
* ``drugs.jsonl``         the drug knowledge base used by the rubric judge
* ``references.jsonl``    reference answers per symptom (corrective SFT data)
* ``train_initial.jsonl`` the first SFT set (15 symptoms x 3 + 5)
* ``judge_gold.jsonl``    model-style answers with a human-written expected grade

Every loader validates with :func:`course_lib.data.load_jsonl` and then checks
what a per-field schema cannot (symptom ids exist, drug names resolve, the
answer format), raising :class:`course_lib.data.DatasetError` with file:line.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from .data import DATASETS_DIR, DatasetError, Field, load_jsonl

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
LABELS = ("correct", "partially_correct", "incorrect", "unsafe")
DRUG_LABELS = ("correct", "incorrect", "unsafe")
GOLD_CATEGORIES = ("correct", "partially_correct", "incorrect", "unsafe", "alias", "format", "tranexamic", "garbage")

NUM = (int, float)

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
]
REFERENCE_SCHEMA = [
    Field("id", str),
    Field("symptom_id", str, choices=SYMPTOM_IDS),
    Field("prompt", str),
    Field("response", str),
    Field("drugs", list),
]
TRAIN_SCHEMA = REFERENCE_SCHEMA
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


# --------------------------------------------------------------------------- normalisation

_SMALL_KANA = str.maketrans("ァィゥェォッャュョヮヵヶヴヂヅ", "アイウエオツヤユヨワカケブジズ")
_DROP = re.compile(r"[\s・･·\-‐‑‒–—―ー~〜_'\"`*]+")


def normalize_name(text: str) -> str:
    """Fold the ways one drug name gets written into one key.

    NFKC (full-width/half-width), lower case, hiragana -> katakana, small kana ->
    large kana, and no spaces, middle dots, dashes or long-vowel marks.
    """
    s = unicodedata.normalize("NFKC", text).lower()
    s = "".join(chr(ord(c) + 0x60) if "ぁ" <= c <= "ゖ" else c for c in s)
    s = s.translate(_SMALL_KANA)
    return _DROP.sub("", s)


# Dosage forms and salt names that may follow a drug name ("ロキソプロフェンナトリウム錠").
_SUFFIXES = [normalize_name(s) for s in (
    "ナトリウム水和物", "ナトリウム", "塩酸塩", "リン酸塩", "水和物", "カプセル", "ドライシロップ", "シロップ",
    "テープ", "パップ", "ゲル", "クリーム", "ローション", "軟膏", "点鼻薬", "点鼻液", "点鼻", "スプレー",
    "点眼薬", "点眼液", "点眼", "うがい薬", "うがい液", "トローチ", "内服薬", "内服", "外用薬", "外用",
    "錠剤", "錠", "細粒", "顆粒", "液", "製剤", "系", "薬")]
_SUFFIXES.sort(key=len, reverse=True)
_DOSE = re.compile(r"\d+(?:\.\d+)?(?:mg|g|ml|μg|mcg|%|錠|包|回|日)?")
_BRACKETS = re.compile(r"[\[\]【】「」『』〔〕<>《》]")
_PAREN = re.compile(r"^(.*?)[(（](.*?)[)）](.*)$")


@dataclass(frozen=True)
class Drug:
    """One knowledge-base entry (a drug, a Kampo formula, or a drug class)."""

    id: str
    generic: str
    generic_en: str
    kind: str
    brands: tuple[str, ...]
    aliases: tuple[str, ...]
    drug_class: str
    route: str
    availability: str
    appropriate_for: frozenset[str]
    acceptable_for: frozenset[str]
    unsafe_for: frozenset[str]
    cautions: str
    unsafe_reason: str
    misconceptions: tuple[dict, ...] = field(default=(), compare=False, hash=False)
    sources: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_record(cls, r: dict) -> "Drug":
        return cls(
            id=r["id"], generic=r["generic"], generic_en=r["generic_en"], kind=r["kind"],
            brands=tuple(r["brands"]), aliases=tuple(r["aliases"]), drug_class=r["drug_class"],
            route=r["route"], availability=r["availability"],
            appropriate_for=frozenset(r["appropriate_for"]), acceptable_for=frozenset(r["acceptable_for"]),
            unsafe_for=frozenset(r["unsafe_for"]), cautions=r["cautions"], unsafe_reason=r["unsafe_reason"],
            misconceptions=tuple(r.get("misconceptions", [])), sources=dict(r["sources"]),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return (self.generic, self.generic_en, *self.brands, *self.aliases)

    def verdict(self, symptom_id: str) -> str:
        """'unsafe', 'appropriate', 'acceptable' or 'not_indicated' for this symptom."""
        if symptom_id in self.unsafe_for:
            return "unsafe"
        if symptom_id in self.appropriate_for:
            return "appropriate"
        if symptom_id in self.acceptable_for:
            return "acceptable"
        return "not_indicated"


@dataclass(frozen=True)
class Resolution:
    """How a written name was matched: ``method`` is exact, paren, suffix, contains or fuzzy."""

    drug: Drug
    written: str
    key: str
    method: str

    @property
    def is_alias(self) -> bool:
        return normalize_name(self.written) != normalize_name(self.drug.generic)


class DrugIndex:
    """Resolve written drug names (generic, brand, alias; any width or kana) to KB entries."""

    MIN_SCAN_KEY = 3  # shorter keys ("イブ") only match a whole name, never inside text

    def __init__(self, drugs: Iterable[Drug]):
        self.drugs: dict[str, Drug] = {}
        self._keys: dict[str, str] = {}
        for d in drugs:
            if d.id in self.drugs:
                raise ValueError(f"duplicate drug id {d.id!r}")
            self.drugs[d.id] = d
            for name in (d.id, *d.names):
                k = normalize_name(name)
                if not k:
                    continue
                other = self._keys.get(k)
                if other is not None and other != d.id:
                    raise ValueError(f"name {name!r} is ambiguous: it names both {other!r} and {d.id!r}")
                self._keys[k] = d.id
        scan = sorted((k for k in self._keys if len(k) >= self.MIN_SCAN_KEY), key=len, reverse=True)
        self._scan_re = re.compile("|".join(re.escape(k) for k in scan))
        self._fuzzy_keys = [k for k in self._keys if len(k) >= 5]
        self.resolve = lru_cache(maxsize=65536)(self._resolve)

    def __len__(self) -> int:
        return len(self.drugs)

    def __iter__(self):
        return iter(self.drugs.values())

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) is not None

    def get(self, drug_id: str) -> Drug:
        return self.drugs[drug_id]

    def _exact(self, key: str) -> str | None:
        if key in self._keys:
            return self._keys[key]
        k = key
        for _ in range(3):  # "ロキソプロフェンナトリウム錠" -> "ロキソプロフェン"
            for suf in _SUFFIXES:
                if k.endswith(suf) and len(k) > len(suf):
                    k = k[: -len(suf)]
                    if k in self._keys:
                        return self._keys[k]
                    break
            else:
                break
        return None

    def _resolve(self, name: str) -> Resolution | None:
        """The entry a written name refers to, or None.

        Tries, in order: the whole name; its parts around a parenthesis
        ("アセトアミノフェン（カロナール）"); with dosage-form/salt suffixes removed;
        a known name inside it; a close spelling (difflib, ratio >= 0.85).
        """
        if not isinstance(name, str):
            return None
        text = _BRACKETS.sub("", unicodedata.normalize("NFKC", name)).strip()
        if not text:
            return None
        for candidate in (text, _DOSE.sub("", text).strip()):  # "ガスター10" is a brand; "200mg" is not
            key = normalize_name(candidate)
            hit = self._exact(key) if key else None
            if hit:
                method = "exact" if key in self._keys else "suffix"
                return Resolution(self.drugs[hit], name, key, method)
        text = _DOSE.sub("", text).strip() or text
        key = normalize_name(text)
        m = _PAREN.match(text)
        if m:
            for part in (m.group(1), m.group(2), m.group(3)):
                pk = normalize_name(part)
                hit = self._exact(pk) if pk else None
                if hit:
                    return Resolution(self.drugs[hit], name, pk, "paren")
        if not key:
            return None
        found = self._scan_re.search(key)
        if found:
            return Resolution(self.drugs[self._keys[found.group(0)]], name, found.group(0), "contains")
        if len(key) >= 5 and len(key) <= 30:
            import difflib

            close = difflib.get_close_matches(key, self._fuzzy_keys, n=1, cutoff=0.85)
            if close:
                return Resolution(self.drugs[self._keys[close[0]]], name, close[0], "fuzzy")
        return None

    def find_all(self, text: str) -> list[Drug]:
        """Entries named anywhere in ``text``, in order of appearance (keys of 3+ characters)."""
        key = normalize_name(text)
        return [self.drugs[self._keys[m.group(0)]] for m in self._scan_re.finditer(key)]

    def strip_names(self, text: str) -> str:
        """``text`` normalised, with every known drug name removed (to see if anything else is left)."""
        return self._scan_re.sub("", normalize_name(text))


# --------------------------------------------------------------------------- loaders


def _path(name: str, path: Path | str | None) -> Path:
    return Path(path) if path is not None else LEVEL3_DIR / f"{name}.jsonl"


def _check_symptom(path: Path, line: int, sid: str, known: set[str]) -> None:
    if sid not in known:
        raise DatasetError(path, line, "symptom_id", f"unknown symptom id {sid!r}")


def load_symptoms(path: Path | str | None = None) -> list[dict]:
    """The 15 symptom patterns (seed 000 §3.1), each with its full question."""
    p = _path("symptoms", path)
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
    p = _path("paraphrases", path)
    numbered = load_jsonl(p, PARAPHRASE_SCHEMA, with_lines=True)
    records = [r for _, r in numbered]
    for i, r in numbered:
        if r["question"] != make_question(r["text"]):
            raise DatasetError(p, i, "question", "must equal make_question(text)")
    return records


def _check_sources(p: Path, line: int, sources: dict) -> None:
    for fact in DRUG_FACTS:
        if fact not in sources:
            raise DatasetError(p, line, "sources", f"missing source type for {fact!r}")
    for fact, kind in sources.items():
        if fact not in DRUG_FACTS:
            raise DatasetError(p, line, "sources", f"unknown fact {fact!r} (expected {list(DRUG_FACTS)})")
        if kind not in SOURCE_TYPES:
            raise DatasetError(p, line, "sources", f"{fact}: {kind!r} is not one of {list(SOURCE_TYPES)}")


def load_drugs(path: Path | str | None = None) -> list[dict]:
    """The drug knowledge base (records as dicts); see :func:`load_drug_index` for lookups."""
    p = _path("drugs", path)
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
    return _index_for(str(_path("drugs", path)))


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
    p = _path(name, path)
    numbered = load_jsonl(p, schema, with_lines=True)
    _check_training(p, numbered, load_drug_index(), {s["id"]: s for s in load_symptoms()})
    return [r for _, r in numbered]


def load_references(path: Path | str | None = None) -> list[dict]:
    """Reference answers per symptom (the corrective SFT data; seed: SAMPLE_MEDICAL_DATA)."""
    return _load_training("references", REFERENCE_SCHEMA, path)


def load_train_initial(path: Path | str | None = None) -> list[dict]:
    """The first SFT set (seed: 50 examples, 15 symptoms x 3 + 5)."""
    return _load_training("train_initial", TRAIN_SCHEMA, path)


def load_judge_gold(path: Path | str | None = None) -> list[dict]:
    """Model-style answers with a human-written expected grade."""
    p = _path("judge_gold", path)
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


# --------------------------------------------------------------------------- symptom identification

_SYMPTOM_LINE = re.compile(r"症状\s*[:：]\s*([^\n]+)")


def _text_key(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _bigrams(text: str) -> set[str]:
    t = _text_key(text)
    t = re.sub(r"[、。,.!?！？「」()（）:：]", "", t)
    return {t[i:i + 2] for i in range(len(t) - 1)}


class SymptomMatcher:
    """Find the symptom id of a question: exact match against the 15 questions and every
    paraphrase question (or their bare symptom texts), else the best character-bigram
    overlap with the symptom texts and paraphrases (None below ``min_overlap``)."""

    def __init__(self, symptoms: Sequence[dict], paraphrases: Sequence[dict] = (), min_overlap: float = 0.12):
        self.min_overlap = min_overlap
        self._exact: dict[str, str] = {}
        self._grams: list[tuple[str, set[str]]] = []
        for s in symptoms:
            self._add(s["id"], s["text"], s["question"])
        for p in paraphrases:
            self._add(p["symptom_id"], p["text"], p["question"])
        self.identify = lru_cache(maxsize=4096)(self._identify)

    def _add(self, sid: str, text: str, question: str) -> None:
        self._exact[_text_key(text)] = sid
        self._exact[_text_key(question)] = sid
        self._grams.append((sid, _bigrams(text)))

    def _identify(self, question: str) -> tuple[str | None, str]:
        """``(symptom_id, method)``; method is exact, symptom_line, overlap or none."""
        key = _text_key(question)
        if key in self._exact:
            return self._exact[key], "exact"
        m = _SYMPTOM_LINE.search(unicodedata.normalize("NFKC", question))
        text = m.group(1) if m else question
        if m and _text_key(text) in self._exact:
            return self._exact[_text_key(text)], "symptom_line"
        grams = _bigrams(text)
        if not grams:
            return None, "none"
        best, best_score = None, 0.0
        for sid, g in self._grams:
            score = len(grams & g) / len(grams | g)
            if score > best_score:
                best, best_score = sid, score
        if best_score < self.min_overlap:
            return None, "none"
        return best, "overlap"


@lru_cache(maxsize=1)
def default_symptom_matcher() -> SymptomMatcher:
    return SymptomMatcher(load_symptoms(), load_paraphrases())


def find_symptom_id(question: str) -> str | None:
    """The symptom id a question is about (see :class:`SymptomMatcher`), or None."""
    return default_symptom_matcher().identify(question)[0]


__all__ = [
    "LEVEL3_DIR", "QUESTION_TEMPLATE", "SYMPTOM_IDS", "LABELS", "DRUG_LABELS",
    "make_question", "parse_response", "normalize_name",
    "Drug", "DrugIndex", "Resolution", "SymptomMatcher",
    "load_symptoms", "load_paraphrases", "load_drugs", "load_drug_index", "load_references",
    "load_train_initial", "load_judge_gold", "find_symptom_id", "default_symptom_matcher",
]
