"""Names: normalising drug names, resolving them to the knowledge base, and telling
which of the 15 symptoms a question is about. Pure classes; the loaders live in
:mod:`course_lib.level3.data`.

Educational material written by this project, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence


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
