"""Items: what one parsed item names -- a drug of the knowledge base (by name, by the
ingredient its reason states, or as the drug's skin-applied form), a placeholder, something
that is not a medicine, or an unknown name -- and whether it recommends its drug or warns
against it. Rules 3 and 6 of :mod:`.rubric`.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..drugs import Drug, DrugIndex, Resolution, normalize_name
from .rubric_mentions import CLAUSE_SPLIT, COMPARE, COUSE, WARN, mentions, sentences
from .rubric_parse import NAME_LABEL, NAME_STRIP, AnswerItem, split_name_reason

_REASON_STRIP = re.compile(r"^[\s\[\]【】「」『』\"'*(（]+|[\s\[\]【】「」『』\"'*)）]+$")
_PAREN_TAIL = re.compile(r"^(.+?)\s*[(（]([^()（）]+)[)）]\s*$")
_WORDISH = re.compile(r"[\W_]+")
_PLACEHOLDER_NAMES = {normalize_name(x) for x in ("薬剤名", "薬剤", "薬の名前", "薬名", "name", "drug", "drugname")}
_PLACEHOLDER_REASONS = {normalize_name(x) for x in ("理由", "説明", "reason", "")}
# a class word that describes the item itself ("医療用の強い鎮痛薬で", "医療用麻薬なので")
_DESCRIBES = re.compile("^(?:" + "|".join(re.escape(normalize_name(x)) for x in (
    "なので", "なため", "のため", "だが", "であり", "だから", "です", "で")) + ")")
_SELF_AVOID = re.compile(
    r"(?:使わ|飲ま|用い|服用し|使用し|続け)ない|(?:使わ|飲ま)ず|使いません|飲みません|使ってはいけない|飲んではいけない|"
    r"勧めません|勧められない|推奨しない|推奨されない|不要|禁忌|避け(?:て(?:ください)?|る(?:べき|こと)?|ましょう)$|"
    r"向かない|適さない|適していない|使えない|べきで(?:は)?ない|(?:の|は)危険(?:です|だ)?$|ものではない")
# a group of people or a time the avoidance is limited to: a caution, not a warning item
_LIMITER = re.compile(r"(?:人|方|時|とき|場合|中|未満|以上|以下|間)(?:は|には|では|を|も)|空腹時|食前|妊娠|授乳|長期|連用|続けて|"
                      r"長く|日以上|週間以上|ヶ月|か月|飲みすぎ|使いすぎ|過量|大量")
_EFFECT = re.compile(r"抑え|和らげ|やわらげ|効|鎮め|しずめ|下げ|治|改善|楽に|止め|出しやすく|切れやすく|薄め|守|助け|整え|潤|"
                     r"鎮痛|解熱|炎症|痛みを|使える|使いやすい|おすすめ|適し|向いて|第一選択|よい|良い|中和|殺菌|負担が少な|"
                     r"やさしい|優しい")
# a reason cut off after a particle ("痛みを") is not a reason
_TRUNCATED = re.compile(r"^.{0,6}[をがはでとのや]$")
_DECLARED_AFTER = re.compile("^(?:" + "|".join(re.escape(normalize_name(x)) for x in (
    "を含む", "を含有", "が入った", "が入っている", "入り", "配合", "の市販薬", "の商品名", "の製品", "の製剤", "を主成分",
    "が主成分", "が成分", "成分")) + ")")
_DECLARED_BEFORE = re.compile("(?:" + "|".join(re.escape(normalize_name(x)) for x in ("成分は", "成分が", "主成分は")) + ")$")
_NONDRUG = re.compile(
    r"水分|補給|休む|休息|安静|温め|冷や|冷却|アイシング|マスク|加湿|ストレッチ|運動|体操|食事|栄養|はちみつ|蜂蜜|ハチミツ|飴|白湯|"
    r"おかゆ|お粥|包帯|圧迫|固定|カイロ|タオル|うがいをする|入浴|禁煙|部屋|受診|病院|医師に相談|生活|睡眠をとる|よく眠る|ビタミン|"
    r"サプリ|ドリンク|マッサージ|姿勢|湿度|換気|ヨーグルト|生姜|しょうが|お茶|ガム")
_TOPICAL_REASON = re.compile(r"貼(?:っ|る|り|付)|塗(?:っ|る|り|布)|(?:ゲル|ジェル|テープ|パップ|クリーム|軟膏|ローション|湿布|外用薬?|外用剤)"
                             r"(?:で|として|を|の|剤)")
_ORAL_REASON = re.compile(r"内服|飲み薬|飲んで|飲む|錠剤|服用")


@dataclass
class ItemRead:
    """One item as read: its written name, reason, drug, and what kind of item it is."""

    written: str
    reason: str
    res: Resolution | None
    kind: str  # drug, warning, nondrug, unknown, placeholder
    unrecognised: bool = False
    declared: bool = False


def _name_and_reason(item: AnswerItem) -> tuple[str, str]:
    """The item's name and its whole reason (continuation lines included), unlabelled."""
    if item.name is not None:
        name, reason = item.name, item.reason or ""
    else:
        name, reason = split_name_reason(item.text)
    name = NAME_STRIP.sub("", NAME_LABEL.sub("", name))
    reason = " ".join([_REASON_STRIP.sub("", reason)] + [_REASON_STRIP.sub("", r) for r in item.extra_reason]).strip()
    if normalize_name(reason) in _PLACEHOLDER_REASONS:
        reason = ""
    return name, reason


def read_item(index: DrugIndex, item: AnswerItem) -> ItemRead:
    """Resolve the item's name to a drug (rule 3) and tell a warning item (rule 6)."""
    name, reason = _name_and_reason(item)
    if not name or normalize_name(name) in _PLACEHOLDER_NAMES:
        return ItemRead(name, reason, None, "placeholder")
    res = index.resolve(name)
    if res is not None and not reason and res.method == "paren":  # "カルボシステイン（痰を出しやすくする）"
        m = _PAREN_TAIL.match(name)
        if m and index.resolve(m.group(1)) is not None and index.resolve(m.group(2)) is None:
            name, reason = m.group(1).strip(), m.group(2).strip()
            res = index.resolve(name)
    if res is None and _NONDRUG.search(name):
        return ItemRead(name[:40], reason, None, "nondrug")
    declared = False
    if res is None or (res.drug.kind == "class" and res.method == "contains"):
        d = _declared_ingredient(index, reason) if reason else None
        if d is not None:
            res, declared = Resolution(d.drug, name, d.key, "declared"), True
    if res is not None and res.drug.topical_form and _TOPICAL_REASON.search(reason) and not _ORAL_REASON.search(reason):
        res = Resolution(index.get(res.drug.topical_form), res.written, res.key, res.method)
    written = name
    if res is not None and res.method == "contains" and len(written) > 20:
        written = res.drug.generic  # a whole sentence is not a name
    if res is None:
        return ItemRead(written[:40], reason, None, "unknown", unrecognised=True)
    kind = "warning" if _is_warning_item(index, name, reason, res.drug) else "drug"
    return ItemRead(written[:40], reason, res, kind, unrecognised=declared, declared=declared)


def has_reason(index: DrugIndex, reason: str) -> bool:
    """The reason says something beyond drug names, and is not cut off after a particle."""
    if _TRUNCATED.match(re.sub(r"[\s。、.,]+$", "", reason)):
        return False
    return len(_WORDISH.sub("", index.strip_names(reason))) >= 2


def _declared_ingredient(index: DrugIndex, reason: str) -> Resolution | None:
    """The ingredient an unresolved product name's reason states ("イブプロフェン配合"),
    in a clause that is neither a warning nor a comparison."""
    for sentence in sentences(reason):
        for clause in CLAUSE_SPLIT.split(sentence):
            if WARN.search(clause) or COMPARE.search(clause):
                continue
            key = normalize_name(clause)
            for drug, start, end, name in index.scan(clause):
                if drug.kind != "class" and (_DECLARED_AFTER.match(key[end:]) or _DECLARED_BEFORE.search(key[:start])):
                    return Resolution(drug, name, normalize_name(name), "declared")
    return None


def _is_warning_item(index: DrugIndex, name: str, reason: str, drug: Drug) -> bool:
    """The item tells the reader not to use its drug (rule 6)."""
    if _SELF_AVOID.search(name):
        return True
    avoid = positive = False
    for sentence in sentences(reason):
        s = sentence.rstrip("。.、 ")
        if _SELF_AVOID.search(s) and not _LIMITER.search(s):
            key = normalize_name(s)
            described = {d.id for d, _, end, _ in index.scan(s) if d.kind == "class" and _DESCRIBES.match(key[end:])}
            others = [m for m in mentions(index, s, default="recommend", exclude=drug) if m.drug.id not in described]
            # "Yは不要" avoids Y, not the item; "Yと一緒に使わない" avoids the combination
            if not others or any(m.kind == "co_use" for m in others) or COUSE.search(s):
                avoid = True
        elif _EFFECT.search(s) and not WARN.search(s):
            positive = True
    return avoid and not positive
