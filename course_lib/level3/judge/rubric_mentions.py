"""Mentions: the drugs a sentence names, and what the sentence does with each one
(warns against it, co-recommends it, compares with it, recommends it, or just names it).
Rule 5 of :mod:`.rubric`; the cue words are Japanese, as the answers are.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..drugs import Drug, DrugIndex, normalize_name

SENTENCE_SPLIT = re.compile(r"[。．！？!?;；\n]+")
CLAUSE_SPLIT = re.compile(r"[、，,]")
WARN = re.compile(
    r"使わ(?:ない|ず)|使用し(?:ない|ません)|使用を(?:避け|控え)|飲ま(?:ない|ず)|服用し(?:ない|ません)|使いません|飲みません|"
    r"用いない|避け|控え|禁忌|併用(?:し(?:ない|ません)|は(?:しない|避け|禁))|不要|頼ら|いらない|必要(?:は|が)?(?:ない|ありません)|"
    r"いけない|勧め(?:ません|られない|ない)|すすめ(?:ません|られない)|推奨(?:し|され)(?:ない|ません)|相談|注意|受診|処方を受け|"
    r"医師が処方|医師の(?:指示|管理|処方|判断)|処方薬|やめ|中止|ダメ|だめ|危険|禁止|向かない|適さない|適していない|ずに|"
    r"使えない|飲めない|ないでください|ないように|ないこと|べきで(?:は)?ない|確認|問い合わせ|伝えて|申し出")
COUSE = re.compile(r"一緒に|併用|同時に|追加|加え|足す|足して|足し|合わせて|組み合わせ|とともに")
# co-use words right after a mention ("コデインも飲む", "ロキソニンと一緒に"), on normalize_name() text
COUSE_AFTER = re.compile("^(?:" + "|".join(re.escape(normalize_name(x)) for x in (
    "も飲", "も使", "も服用", "も一緒", "も併用", "も追加", "と飲", "と使", "と一緒", "と併用", "と同時", "を追加", "を加え",
    "を足", "を一緒", "を併用")) + ")")
# "ほかの/別の" before a class word: another drug of the item's own class
_OTHER_BEFORE = re.compile("(?:" + "|".join(re.escape(normalize_name(x)) for x in ("ほかの", "他の", "別の", "ほか")) + ")$")
COMPARE = re.compile(r"より|のよう|と違|とは違|とは別|別物|と比べ|に比べ|比較|代わり|による|によって起|のせい|が原因|ではなく|でなく|"
                     r"と同じ|と同様|とは異な")
RECOMMEND = re.compile(r"おすすめ|お勧め|お薦め|勧め(?:ます|る|られ)|推奨します|使えます|使える|飲める|使ってください|"
                       r"飲んでください|服用してください|(?:飲む|使う|服用する)(?:と|の(?:が|も))(?:よい|いい|良い)|飲めば|使えば|"
                       r"がよい|が良い|がいい|も効|有効|効きます|効く|効果的|"
                       r"で(?:痛み|熱|咳|症状|炎症|腫れ|鼻水|鼻づまり|こわばり)を(?:止め|取|抑え|和らげ|鎮め)")
# a verb of taking right after a mention ("プレドニンを飲む", "オキシコドンで痛みを取る"), on normalize_name() text
_TAKE_AFTER = re.compile("^(?:" + "|".join(re.escape(normalize_name(x)) for x in (
    "を飲", "を使", "を服用", "を試", "を貼", "を塗", "を内服", "を注射", "を数日", "を毎日", "を少し", "を1", "は飲", "は使",
    "で痛み", "で熱", "で咳", "で症状", "で炎症", "で腫れ", "で眠")) + ")")
# a mention that is the reader's current medicine ("ワルファリンを飲んでいる方は"), not a recommendation
_CURRENT_MED_AFTER = re.compile("^(?:" + "|".join(re.escape(normalize_name(x)) for x in (
    "を飲んでいる", "を服用している", "を服用中", "服用中", "を使っている", "を使用中", "使用中", "を内服中", "内服中",
    "を飲んでいて", "を処方されている", "などを飲んでいる", "などを服用中")) + ")")


@dataclass
class Mention:
    drug: Drug
    name: str
    kind: str  # warning, comparison, co_use, recommend, neutral, current


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT.split(text) if s.strip()]


def mentions(index: DrugIndex, text: str, *, default: str, exclude: Drug | None = None) -> list[Mention]:
    """Drugs named in ``text``, each classified by the cues of its clause (else sentence).
    ``exclude`` is the item's own drug: naming it (or its own class) is not another drug."""
    out: list[Mention] = []
    for sentence in sentences(text):
        clauses = [c for c in CLAUSE_SPLIT.split(sentence) if c.strip()]
        for clause in clauses:
            key = normalize_name(clause)
            for drug, start, end, name in index.scan(clause):
                other = bool(_OTHER_BEFORE.search(key[:start]))
                if exclude is not None and _same_or_own_class(drug, exclude, other):
                    continue
                after = key[end:]
                if _CURRENT_MED_AFTER.match(after) and not (COUSE.search(clause) or COUSE_AFTER.match(after)):
                    out.append(Mention(drug, name, "current"))
                    continue
                kind = _classify(clause, sentence, default, bool(COUSE_AFTER.match(after)))
                if kind == "neutral" and _TAKE_AFTER.match(after):
                    kind = "recommend"
                out.append(Mention(drug, name, kind))
    return out


def _same_or_own_class(drug: Drug, item: Drug, other: bool = False) -> bool:
    """The item's own drug, its other route, or its own class named to describe it
    ("胃腸障害の少ないNSAIDs" for celecoxib) -- but not "ほかのNSAIDs"."""
    if drug.id == item.id or item.topical_form == drug.id or drug.topical_form == item.id:
        return True
    return drug.kind == "class" and bool(drug.groups & item.groups) and not other


def _classify(clause: str, sentence: str, default: str, adjacent_couse: bool = False) -> str:
    """warning > co-use > comparison > explicit recommendation > ``default``, read in the
    mention's clause, then in its whole sentence."""
    for text in (clause, sentence):
        if WARN.search(text):
            return "warning"
        if adjacent_couse or COUSE.search(text):
            return "co_use"
        if COMPARE.search(text):
            return "comparison"
        if default == "neutral" and RECOMMEND.search(text):
            return "recommend"
    return default
