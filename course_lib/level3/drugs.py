"""Names: normalising drug names, resolving them to the knowledge base, and telling
which of the 15 symptoms a question is about. Pure classes; the loaders live in
:mod:`course_lib.level3.data`.

Over ~350 lines because the Drug record, the index and the symptom matcher share one name
normalisation (``normalize_name``, ``phonetic_key``); each part is short and one job (names).

Educational material written by this project, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, Iterable, Sequence


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


_PHONETIC = (("フエ", "ヘ"), ("フア", "ハ"), ("フイ", "ヒ"), ("フオ", "ホ"), ("テイ", "チ"), ("デイ", "ジ"),
             ("トウ", "ト"), ("ウイ", "イ"), ("ウエ", "エ"), ("クイ", "キ"))


def phonetic_key(text: str) -> str:
    """A looser key than :func:`normalize_name` for misspelt katakana: フェ/ヘ, ティ/チ,
    ディ/ジ... fold together ("アセトアミノヘン" and "アセトアミノフェン" share a key)."""
    s = normalize_name(text)
    for a, b in _PHONETIC:
        s = s.replace(a, b)
    return s


# Dosage forms and salt names that may follow a drug name ("ロキソプロフェンナトリウム錠").
_SUFFIXES = [normalize_name(s) for s in (
    "ナトリウム水和物", "ナトリウム", "塩酸塩", "リン酸塩", "水和物", "カプセル", "ドライシロップ", "シロップ",
    "テープ", "パップ", "ゲル", "ジェル", "クリーム", "ローション", "軟膏", "貼付剤", "湿布", "点鼻薬", "点鼻液",
    "点鼻", "スプレー", "点眼薬", "点眼液", "点眼", "うがい薬", "うがい液", "トローチ", "内服薬", "内服",
    "外用薬", "外用", "注射液", "注射", "坐剤", "錠剤", "錠", "細粒", "顆粒", "液", "製剤", "系", "薬")]
_SUFFIXES.sort(key=len, reverse=True)
# Words in a written name that say "applied to the skin" (a topical form of an oral drug).
TOPICAL_WORDS = tuple(normalize_name(w) for w in (
    "テープ", "パップ", "ゲル", "ジェル", "クリーム", "軟膏", "ローション", "貼付", "湿布", "外用", "塗り薬",
    "貼り薬", "パッチ", "tape", "gel", "cream", "ointment", "lotion", "patch", "poultice"))
_DOSE = re.compile(r"\d+(?:\.\d+)?(?:mg|g|ml|μg|mcg|%|錠|包|回|日)?")
_BRACKETS = re.compile(r"[\[\]【】「」『』〔〕<>《》]")
_PAREN = re.compile(r"^(.*?)[(（](.*?)[)）](.*)$")


# Groups a drug can belong to (``groups`` in drugs.jsonl): for class words, interactions
# ("do not combine with any drug of group G") and the class-consistency checks.
GROUPS = (
    "analgesic", "nsaid", "topical_nsaid", "triptan", "ergotamine", "maoi", "opioid", "narcotic",
    "opioid_antitussive", "benzodiazepine", "z_drug", "hypnotic", "systemic_steroid", "topical_steroid",
    "nasal_steroid", "anticoagulant", "antiplatelet", "antibiotic", "cyp3a4_inhibitor", "antihistamine",
    "cold_remedy", "expectorant", "antitussive", "antacid", "h2", "ppi",
)

# Conditions under which a package insert rules a drug out (禁忌, the OTC insert's
# 「してはいけないこと」, or an instruction not to: 運転させないこと, 授乳を避けさせること):
# ``contraindicated_in`` in drugs.jsonl. Each key has the Japanese
# label used in judge reasons and a pattern for how an answer names the condition.
CONDITIONS: dict[str, tuple[str, str]] = {
    "pregnancy": ("妊娠中（特に妊娠後期）", r"妊娠|妊婦"),
    "breastfeeding": ("授乳中", r"授乳|母乳"),
    "child_under_15": ("15歳未満の子ども", r"15歳未満|子ども|子供|小児|中学生|小学生|こども"),
    "child_under_12": ("12歳未満の子ども", r"12歳未満|子ども|子供|小児|小学生|こども"),
    "post_tonsillectomy_under_18": ("18歳未満の扁桃摘除術後", r"扁桃|アデノイド"),
    "peptic_ulcer": ("胃潰瘍・十二指腸潰瘍（消化性潰瘍）", r"潰瘍"),
    "aspirin_asthma": ("ぜんそく（アスピリン喘息）", r"ぜんそく|喘息|ぜん息"),
    "alcohol": ("飲酒", r"お酒|飲酒|アルコール|晩酌|ビール|酒"),
    "driving": ("車の運転", r"運転|車|機械の操作"),
    "glaucoma": ("緑内障", r"緑内障"),
    "prostate": ("前立腺肥大・排尿困難", r"前立腺|排尿困難|尿閉"),
    "ischemic_heart": ("狭心症・心筋梗塞（虚血性心疾患）", r"狭心症|心筋梗塞|虚血性心疾患"),
    "heart_disease": ("心臓病", r"心臓病|心疾患|心臓の病気|狭心症|心筋梗塞"),
    "hypertension": ("高血圧", r"高血圧|血圧が高"),
    "thyroid": ("甲状腺の病気", r"甲状腺"),
    "diabetes": ("糖尿病", r"糖尿病"),
    "epilepsy": ("てんかん", r"てんかん|けいれん発作"),
    "sunlight": ("日光（紫外線）への曝露", r"日光|紫外線|日に当て|日焼け|屋外"),
    "influenza": ("インフルエンザ", r"インフルエンザ"),
    "liver": ("重い肝臓病", r"肝臓|肝障害|肝機能|肝炎|肝硬変"),
}

SCHEDULES = {"weekly": "週1回（1週間単位）で飲む薬"}


@dataclass(frozen=True)
class Drug:
    """One knowledge-base entry (a drug, a Kampo formula, or a drug class).

    The fields after ``sources`` are optional in drugs.jsonl: ``groups`` (see :data:`GROUPS`),
    ``topical_form`` (the id of this ingredient's skin-applied entry), dose limits in mg
    (``max_single_mg``, ``max_daily_mg``; ``unit_mg`` = the smallest usual tablet, to turn
    "N錠" into mg), ``min_interval_h`` between doses, ``schedule`` (see :data:`SCHEDULES`),
    ``contraindicated_in`` (see :data:`CONDITIONS`) and ``interactions`` (group -> why not
    to combine).
    """

    GROUPS: ClassVar[tuple[str, ...]] = GROUPS
    CONDITIONS: ClassVar[tuple[str, ...]] = tuple(CONDITIONS)
    SCHEDULES: ClassVar[tuple[str, ...]] = tuple(SCHEDULES)

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
    groups: frozenset[str] = frozenset()
    topical_form: str = ""
    max_single_mg: float | None = None
    max_daily_mg: float | None = None
    unit_mg: float | None = None
    min_interval_h: float | None = None
    schedule: str = ""
    contraindicated_in: frozenset[str] = frozenset()
    interactions: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_record(cls, r: dict) -> "Drug":
        inter = r.get("interactions", {})
        if not isinstance(inter, dict) or not all(
                k in GROUPS and isinstance(v, str) and v.strip() for k, v in inter.items()):
            raise ValueError(f"drug {r.get('id')!r}: field 'interactions' must map a group in GROUPS "
                             f"to a non-empty reason")
        return cls(
            id=r["id"], generic=r["generic"], generic_en=r["generic_en"], kind=r["kind"],
            brands=tuple(r["brands"]), aliases=tuple(r["aliases"]), drug_class=r["drug_class"],
            route=r["route"], availability=r["availability"],
            appropriate_for=frozenset(r["appropriate_for"]), acceptable_for=frozenset(r["acceptable_for"]),
            unsafe_for=frozenset(r["unsafe_for"]), cautions=r["cautions"], unsafe_reason=r["unsafe_reason"],
            misconceptions=tuple(r.get("misconceptions", [])), sources=dict(r["sources"]),
            groups=frozenset(r.get("groups", ())), topical_form=r.get("topical_form", ""),
            max_single_mg=r.get("max_single_mg"), max_daily_mg=r.get("max_daily_mg"), unit_mg=r.get("unit_mg"),
            min_interval_h=r.get("min_interval_h"), schedule=r.get("schedule", ""),
            contraindicated_in=frozenset(r.get("contraindicated_in", ())), interactions=dict(inter),
        )

    def interaction_with(self, other: "Drug") -> str | None:
        """Why this drug and ``other`` must not be combined (either side's record), else None."""
        if other.id == self.id:
            return None
        for a, b in ((self, other), (other, self)):
            for g in sorted(b.groups):
                if g in a.interactions:
                    return a.interactions[g]
        return None

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
        for d in self.drugs.values():
            if d.topical_form and d.topical_form not in self.drugs:
                raise ValueError(f"drug {d.id!r}: topical_form {d.topical_form!r} is not an id in the knowledge base")
        self._display = {}
        for d in self.drugs.values():
            for name in (*d.names, d.id):
                self._display.setdefault(normalize_name(name), name)
        scan = sorted((k for k in self._keys if len(k) >= self.MIN_SCAN_KEY), key=len, reverse=True)
        self._scan_re = re.compile("|".join(re.escape(k) for k in scan))
        self._fuzzy_keys = [k for k in self._keys if len(k) >= 5]
        phon: dict[str, set[str]] = {}
        for k, i in self._keys.items():
            if len(k) >= 4:
                phon.setdefault(phonetic_key(k), set()).add(i)
        self._phonetic = {k: next(iter(v)) for k, v in phon.items() if len(v) == 1}
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

    def with_route(self, res: Resolution | None, text: str) -> Resolution | None:
        """``res`` moved to the drug's topical entry when ``text`` names a skin-applied form
        ("ロキソプロフェンテープ", "Voltaren gel"); unchanged otherwise."""
        if res is None or not res.drug.topical_form:
            return res
        key = normalize_name(text)
        if any(w in key for w in TOPICAL_WORDS):
            return Resolution(self.drugs[res.drug.topical_form], res.written, res.key, res.method)
        return res

    def _resolve(self, name: str) -> Resolution | None:
        """The entry a written name refers to, or None.

        Tries, in order: the whole name; its parts around a parenthesis
        ("アセトアミノフェン（カロナール）"); with dosage-form/salt suffixes removed;
        a known name inside it; a phonetic variant ("アセトアミノヘン"); a close spelling
        (difflib, ratio >= 0.85). A name that says it is a skin-applied form
        ("ロキソプロフェンテープ") resolves to the drug's topical entry.
        """
        return self.with_route(self._resolve_name(name), name) if isinstance(name, str) else None

    def _resolve_name(self, name: str) -> Resolution | None:
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
        hit = self._phonetic.get(phonetic_key(text)) if len(key) >= 4 else None
        if hit:
            return Resolution(self.drugs[hit], name, key, "fuzzy")
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

    def scan(self, text: str) -> list[tuple[Drug, int, int, str]]:
        """``(drug, start, end, name)`` for each entry named in ``text``: positions are in
        ``normalize_name(text)``, ``name`` is the knowledge-base spelling of what matched."""
        key = normalize_name(text)
        return [(self.drugs[self._keys[m.group(0)]], m.start(), m.end(), self._display.get(m.group(0), m.group(0)))
                for m in self._scan_re.finditer(key)]

    def members(self, group: str) -> list[Drug]:
        """The drugs (not classes) of a group, in knowledge-base order."""
        return [d for d in self.drugs.values() if group in d.groups and d.kind != "class"]

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
