"""Answer parsing: an answer's text split into items (numbered, bulleted, table rows, loose
``name - reason`` lines, or the drugs a prose answer recommends), the reason lines that
continue them, and the extra text around them. Rule 2 of :mod:`.rubric`; nothing raises.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from ..drugs import DrugIndex, normalize_name
from .rubric_mentions import mentions, sentences

_CIRCLED = {c: f"{i}. " for i, c in enumerate("①②③④⑤⑥⑦⑧⑨", start=1)}
_NUM_RE = re.compile(r"^\s*(?:[#>]+\s*)?[(\[【]?\s*(\d{1,2})(?:\s*[.)\]】:、,]|\s)\s*(?!\d)")
_BULLET_RE = re.compile(r"^\s*[・•●◦○■□\-*+]\s*(?=\S)")
_INLINE_RE = re.compile(r"(?:(?<=\s)|(?<=[。、]))(\d{1,2})\s*[.)]\s*(?!\d)")
_SEP_RES = (
    re.compile(r"\s*(?:理由|説明)\s*:\s*"),  # "1. 薬剤名: X 理由: Y"
    re.compile(r"\s+[-–—―ー~〜=]+>?\s+"),  # " - " and its look-alikes, spaced
    re.compile(r"\s*:\s*"),  # "：" becomes ":" under NFKC
    re.compile(r"(?<![A-Za-z])[-–—―]+(?!\d)"),  # unspaced dash, but not "L-カルボシステイン"
    re.compile(r"\s*[→⇒]\s*"),
)
NAME_LABEL = re.compile(r"^\s*(?:薬剤名|薬剤|薬の名前|薬名|一般名|商品名)\s*:\s*")
_REASON_LABEL = re.compile(r"^\s*(?:理由|説明)\s*:\s*")
NAME_STRIP = re.compile(r"^[\s\[\]【】「」『』\"'*]+|[\s\[\]【】「」『』\"'*]+$")
_NOT_CONTINUATION = re.compile(r"^(?:※|注|なお|以上|ただし|参考|\*|#)")
_TABLE_HEADER = re.compile(r"^(?:薬剤名?|薬の名前|名前|一般名|商品名|理由|説明|name|drug|reason|番号|No\.?)$", re.I)


@dataclass
class AnswerItem:
    number: int | None
    text: str
    inline: bool = False
    extra_reason: list[str] = field(default_factory=list)
    name: str | None = None  # set directly for table rows and prose
    reason: str | None = None


@dataclass
class ParsedAnswer:
    """What the parser saw: items in order, the extra text, and the format observations."""

    items: list[AnswerItem] = field(default_factory=list)
    extra_lines: int = 0
    numbered: int = 0
    inline: bool = False
    extra_texts: list[str] = field(default_factory=list)
    prose: bool = False

    def add_extra(self, line: str) -> None:
        self.extra_lines += 1
        self.extra_texts.append(line)


def _prepare(answer: str) -> str:
    s = answer if isinstance(answer, str) else ("" if answer is None else str(answer))
    for k, v in _CIRCLED.items():
        s = s.replace(k, v)
    s = unicodedata.normalize("NFKC", s).replace("\r\n", "\n").replace("\r", "\n")
    return s.replace("**", "").replace("__", "").replace("`", "")


def _split_inline(first_number: int | None, rest: str) -> list[AnswerItem]:
    """Split "A - x 2. B - y 3. C - z" into items (only on the next expected number)."""
    items: list[AnswerItem] = []
    expected = (first_number or 0) + 1
    start, number = 0, first_number
    for m in _INLINE_RE.finditer(rest):
        if int(m.group(1)) != expected:
            continue
        items.append(AnswerItem(number, rest[start:m.start()].strip(), inline=True))
        start, number, expected = m.end(), expected, expected + 1
    items.append(AnswerItem(number, rest[start:].strip(), inline=len(items) > 0))
    if len(items) == 1:
        items[0].inline = False
    return [it for it in items if it.text]


def split_name_reason(text: str) -> tuple[str, str]:
    """Name and reason of one item, split at the earliest separator; reason '' if none."""
    text = NAME_LABEL.sub("", text)
    best = None
    for pat in _SEP_RES:
        m = pat.search(text)
        if m and m.start() > 0 and (best is None or m.start() < best.start()):
            best = m
    if best is None:
        return NAME_STRIP.sub("", text), ""
    return NAME_STRIP.sub("", text[: best.start()]), text[best.end():].strip()


def _looks_like_item(index: DrugIndex, line: str) -> bool:
    """A loose line ``name - reason`` whose name is a known drug (not merely containing one)."""
    name, reason = split_name_reason(line)
    if not name or not reason:
        res = index.resolve(name) if name else None
        return res is not None and res.method != "contains" and len(normalize_name(name)) <= 30
    res = index.resolve(name)
    return res is not None and (res.method != "contains" or len(normalize_name(name)) <= 20)


def _is_continuation(index: DrugIndex, raw: str, line: str, last: AnswerItem) -> bool:
    """``line`` is more reason for the item above it (rule 2)."""
    if _REASON_LABEL.match(line):
        return True
    if _NOT_CONTINUATION.match(line) or _looks_like_item(index, line):
        return False
    if raw[:1] in (" ", "\t", "\u3000"):
        return True
    name, reason = split_name_reason(last.text) if last.name is None else (last.name, last.reason or "")
    if reason or last.extra_reason:
        return False
    own = index.resolve(name)
    others = [d for d in index.find_all(line) if own is None or d.id != own.drug.id]
    return not others


def _table_row(line: str, out: ParsedAnswer) -> list[AnswerItem]:
    """The item of a Markdown table row; none for a separator or header row."""
    cells = [c.strip() for c in line.strip("|").split("|")]
    if all(re.fullmatch(r":?-{2,}:?", c) or not c for c in cells) or all(
            _TABLE_HEADER.match(c) or not c for c in cells):
        return []
    name = NAME_STRIP.sub("", cells[0])
    number = None
    if re.fullmatch(r"\d{1,2}\.?", name) and len(cells) > 2:  # | 1 | name | reason |
        number, name, cells = int(name.rstrip(".")), NAME_STRIP.sub("", cells[1]), cells[1:]
        out.numbered += 1
    return [AnswerItem(number, line, name=name, reason=" ".join(c for c in cells[1:] if c))]


def _marked_items(line: str, out: ParsedAnswer) -> list[AnswerItem] | None:
    """The items of a table row, a numbered or bulleted line, or a line where a "1." run
    of items starts mid-line; None when the line is none of these (a loose line)."""
    if line.startswith("|") and line.count("|") >= 2:
        return _table_row(line, out)
    m = _NUM_RE.match(line)
    if m:
        parts = _split_inline(int(m.group(1)), line[m.end():])
        out.numbered += len(parts)
        return parts
    b = _BULLET_RE.match(line)
    if b:
        return [AnswerItem(None, line[b.end():].strip())]
    first = next((x for x in _INLINE_RE.finditer(line) if x.group(1) == "1"), None)
    if first is not None:
        parts = _split_inline(1, line[first.end():])
        if len(parts) > 1:
            out.numbered += len(parts)
            if line[: first.start()].strip():
                out.add_extra(line[: first.start()].strip())
            return parts
    return None


def _read_lines(index: DrugIndex, text: str, out: ParsedAnswer):
    """(marked items, loose lines), each as ``(line position, ...)``; a reason line that
    continues the item above it joins that item."""
    loose: list[tuple[int, str]] = []
    ordered: list[tuple[int, AnswerItem]] = []
    last: AnswerItem | None = None
    for pos, raw in enumerate(text.split("\n")):
        line = raw.strip()
        if not line:
            continue
        marked = _marked_items(line, out)
        if marked is not None:
            ordered += [(pos, it) for it in marked]
            last = marked[-1] if marked else last
        elif last is not None and _is_continuation(index, raw, line, last):
            last.extra_reason.append(_REASON_LABEL.sub("", line))
        else:
            last = None
            loose.append((pos, line))
    return ordered, loose


def _place_loose_lines(index: DrugIndex, out: ParsedAnswer, ordered: list, loose: list) -> list:
    """Loose lines that look like items join them; the rest is extra text, or, when there
    is no item at all, the answer is prose."""
    structured = bool(ordered)
    for pos, line in loose:
        if _looks_like_item(index, line):
            ordered.append((pos, AnswerItem(None, line)))
        elif structured:
            out.add_extra(line)
    if not ordered and loose:
        out.prose = True
        ordered = [(0, it) for it in _prose_items(index, " ".join(line for _, line in loose))]
    elif loose and not structured:
        for pos, line in loose:
            if not _looks_like_item(index, line):
                out.add_extra(line)
    return ordered


def parse_answer(index: DrugIndex, answer: str) -> ParsedAnswer:
    """Split an answer into items and extra text (never raises)."""
    out = ParsedAnswer()
    ordered, loose = _read_lines(index, _prepare(answer), out)
    ordered = _place_loose_lines(index, out, ordered, loose)
    ordered.sort(key=lambda x: x[0])
    out.items = [it for _, it in ordered]
    out.inline = any(it.inline for it in out.items)
    return out


def _prose_items(index: DrugIndex, text: str) -> list[AnswerItem]:
    """Items of an answer written as sentences: each drug a sentence recommends."""
    items: list[AnswerItem] = []
    seen: set[str] = set()
    for sentence in sentences(text):
        found = False
        for mention in mentions(index, sentence, default="recommend"):
            if mention.kind not in ("recommend", "co_use") or mention.drug.id in seen:
                continue
            seen.add(mention.drug.id)
            items.append(AnswerItem(None, sentence, name=mention.name, reason=sentence))
            found = True
        if not found and items and not index.find_all(sentence):
            items[-1].extra_reason.append(sentence)
    return items
