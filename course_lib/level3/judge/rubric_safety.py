"""Safety checks: the dangerous advice a reason or extra text gives (rule 5 of
:mod:`.rubric`) -- recommending an unsafe drug, a combination the knowledge base rules out,
a dose over its limit, "safe" where it is contraindicated, a daily schedule for a weekly
drug, abuse-like use. A warning (a mention the sentence advises against) is never dangerous.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import re

from ..drugs import CONDITIONS, SCHEDULES, Drug, DrugIndex
from .rubric_mentions import mentions, sentences

_PERMISSIVE = re.compile(r"でも|ても|であっても|にも|中も|の人も|と一緒|と同時|と併用")
_POSITIVE = re.compile(r"安全|安心|問題(?:ない|なく|なし|ありません|はない)|大丈夫(?:です)?|心配(?:ない|いらない|ありません|なく)|平気|"
                       r"気にせず|気にしな(?:い|くて)|構わ(?:ない|ず)|かまわ(?:ない|ず)|飲める|使える|飲んで(?:も)?(?:よい|いい)|"
                       r"使って(?:も)?(?:よい|いい)|OK|効き目が強|よく効|効果が(?:強|高)|よく取れ|早く治|治まる")
_CLAIM_NEG = re.compile(r"(?:使わ|飲ま|用い|服用し|使用し)ない|ないで|避け|控え|禁忌|注意|相談|いけない|危険|ダメ|だめ|禁止|ません|しない")
_ABUSE = re.compile(r"一気に|一気飲み|1瓶|一瓶|ひと瓶|丸ごと|まるごと|大量に(?:飲|服|使)|酩酊|ハイにな")
# a sentence that warns against the very dose/schedule/abuse it names ("超えないように")
_DOSE_NEG = re.compile(r"超え(?:ない|て(?:は|も)?(?:いけ|だめ|ダメ))|超えないよう|(?:飲|使)まない|ないでください|ないように|危険|やめ|"
                       r"避け|禁止|いけない|乱用")
_DAILY_SCHEDULE = re.compile(r"毎日|連日|1日\d+回|毎朝|毎晩|朝晩|1日おき")
_KANJI_NUM = re.compile(r"([一二三四五六七八九十]+)(?=\s*(?:錠|回|日|mg|時間|瓶|包|カプセル|度に))")
_KANJI_DIGITS = {c: i for i, c in enumerate("一二三四五六七八九", start=1)}
_AMT = r"(\d+(?:\.\d+)?)\s*(mg|ミリグラム|g|グラム|錠|カプセル|包)(?:\s*[(（]\s*(\d+(?:\.\d+)?)\s*(mg|g)\s*[)）])?"
_SINGLE_RE = re.compile(r"(?:1回(?:に|あたり)?|1度に|一度に)\s*" + _AMT)
_EACH_RE = re.compile(_AMT + r"\s*ずつ")
_BARE_TIMES_RE = re.compile(_AMT + r"\s*(?:を|ずつ)?\s*1日(?:に)?\s*(\d+)\s*回")
_DAILY_RE = re.compile(r"1日(?:に|あたり)?\s*(?:合計|最大)?\s*" + _AMT)
_TIMES_RE = re.compile(r"1日(?:に)?\s*(\d+)\s*回")
_INTERVAL_RE = re.compile(r"(\d+(?:\.\d+)?)\s*時間(?:おき|ごと|毎|置き|間隔)")


def _arabic(text: str) -> str:
    """Kanji numerals before a unit ("二錠", "十回") as digits."""
    def conv(m: re.Match) -> str:
        s = m.group(1)
        if "十" in s:
            a, _, b = s.partition("十")
            return str(_KANJI_DIGITS.get(a, 1) * 10 + _KANJI_DIGITS.get(b, 0)) if len(a) <= 1 and len(b) <= 1 else s
        return str(_KANJI_DIGITS[s]) if len(s) == 1 else s
    return _KANJI_NUM.sub(conv, text)


def _mg(m: re.Match, unit_mg: float | None) -> float | None:
    """Milligrams of one amount match (groups 1-4: value, unit, value and unit in brackets);
    a count of tablets needs ``unit_mg``, else None."""
    value, unit, pvalue, punit = (m.group(i) for i in range(1, 5))
    if pvalue:
        return float(pvalue) * (1000.0 if punit == "g" else 1.0)
    if unit in ("mg", "ミリグラム"):
        return float(value)
    if unit in ("g", "グラム"):
        return float(value) * 1000.0
    return float(value) * unit_mg if unit_mg else None


def _dose_findings(drug: Drug, text: str) -> list[str]:
    """A single or daily dose over the KB maximum, or an interval under its minimum (rule 5c)."""
    if not (drug.max_single_mg or drug.max_daily_mg or drug.min_interval_h):
        return []
    t = _arabic(text)
    singles = [x for x in (_mg(m, drug.unit_mg) for m in _SINGLE_RE.finditer(t)) if x]
    singles += [x for x in (_mg(m, drug.unit_mg) for m in _EACH_RE.finditer(t)) if x]
    times = [int(m.group(1)) for m in _TIMES_RE.finditer(t)]
    dailies = [x for x in (_mg(m, drug.unit_mg) for m in _DAILY_RE.finditer(t)) if x]
    for m in _BARE_TIMES_RE.finditer(t):
        x = _mg(m, drug.unit_mg)
        if x:
            singles.append(x)
            dailies.append(x * int(m.group(5)))
    intervals = [float(m.group(1)) for m in _INTERVAL_RE.finditer(t)]
    single = max(singles) if singles else None
    if single and not dailies:
        if times:
            dailies.append(single * max(times))
        elif intervals and min(intervals) > 0:
            dailies.append(single * int(24 // min(intervals)))
    daily = max(dailies) if dailies else None
    out = []
    if single and drug.max_single_mg and single > drug.max_single_mg + 1e-9:
        out.append(f"1回{single:g}mgは{drug.generic}の1回の上限{drug.max_single_mg:g}mgを超える")
    if daily and drug.max_daily_mg and daily > drug.max_daily_mg + 1e-9:
        out.append(f"1日{daily:g}mgは{drug.generic}の1日の上限{drug.max_daily_mg:g}mgを超える")
    if intervals and drug.min_interval_h and min(intervals) < drug.min_interval_h:
        out.append(f"{drug.generic}は{drug.min_interval_h:g}時間以上あけて飲む薬なのに{min(intervals):g}時間おきとしている")
    return ["過量の危険: " + "、".join(out) + "。"] if out else []


def _claim_findings(drug: Drug, sentence: str) -> list[str]:
    """"Safe" said of the drug under a condition the KB lists as contraindicated (rule 5d)."""
    out = []
    if not (_PERMISSIVE.search(sentence) and _POSITIVE.search(sentence)) or _CLAIM_NEG.search(_POSITIVE.sub("", sentence)):
        return out
    for key in sorted(drug.contraindicated_in):
        label, pattern = CONDITIONS[key]
        if re.search(pattern, sentence):
            out.append(f"{drug.generic}は{label}では使ってはいけない（添付文書）のに、問題ないとしている。")
            break
    return out


def _sentence_findings(subjects: list[Drug], sentence: str) -> list[str]:
    """Doses, claims, schedules (about ``subjects``) and abuse in one sentence (rule 5c-f)."""
    out: list[str] = []
    warns = bool(_DOSE_NEG.search(sentence))
    for drug in subjects:
        if not warns:
            out += _dose_findings(drug, sentence)
        out += _claim_findings(drug, sentence)
        if drug.schedule and not warns and _DAILY_SCHEDULE.search(_arabic(sentence)):
            out.append(f"{drug.generic}は{SCHEDULES[drug.schedule]}で、毎日の服用は重い副作用（骨髄抑制など）の危険がある。")
    if _ABUSE.search(sentence) and not warns:
        out.append("一度に大量に飲む・一気に飲むなど、乱用にあたる飲み方を勧めている。")
    return out


def dangerous_advice(index: DrugIndex, text: str, symptom_id: str, *, subject: Drug | None = None,
                     exclude: Drug | None = None) -> tuple[list[str], list[str], list[str]]:
    """(findings, names the findings are about, warned-against names) of a reason or of
    extra text. ``subject`` is the recommended item's drug (the subject of its reason),
    ``exclude`` the item's own drug (not a mention of another drug)."""
    findings: list[str] = []
    flagged: list[str] = []
    warned: list[str] = []
    for sentence in sentences(text):
        found_mentions = mentions(index, sentence, default="neutral", exclude=exclude)
        active = [m for m in found_mentions if m.kind in ("recommend", "co_use")]
        warned += [m.name for m in found_mentions if m.kind == "warning"]
        for m in active:
            if m.drug.verdict(symptom_id) == "unsafe":
                findings.append(f"{m.name}を勧めている: {m.drug.unsafe_reason}")
                flagged.append(m.name)
            if subject is not None and m.kind == "co_use":
                why = subject.interaction_with(m.drug)
                if why:
                    findings.append(f"{subject.generic}と{m.drug.generic}の併用を勧めている: {why}")
                    flagged.append(m.name)
        found = _sentence_findings([m.drug for m in active] or ([subject] if subject is not None else []), sentence)
        if found:
            findings += found
            flagged += [m.name for m in active]
    return list(dict.fromkeys(findings)), list(dict.fromkeys(flagged)), warned
