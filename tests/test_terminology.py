"""One Japanese term per concept in everything a learner reads as prose.

Scans the Markdown cells of the lessons (``notebooks/*.py``, jupytext percent format) and the book's
prose pages (``book/*.md``). Code cells, generated pages and outputs are not scanned, and neither
are inline code spans (`iter0`, `judge="rubric"`), fenced code blocks or glue references: code keeps
its identifiers. The chosen terms are listed in ``book/glossary.md`` (section 「このコースの用語の決まり」).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_lib.paths import REPO_ROOT

# (banned pattern, the term to use instead)
BANNED: list[tuple[str, str]] = [
    (r"ジャッジ", "採点者（judge）"),
    (r"採点器", "採点者（judge）"),
    (r"ルーブリック採点(?!者)", "ルーブリック採点者（rubric judge）"),
    (r"rubric ?採点者", "ルーブリック採点者（rubric judge）"),
    (r"有害率", "有害提案率（harmful rate）"),
    (r"イテレーション", "反復（iteration）"),
    (r"\b[Ii]teration ?\d", "反復0, 反復1, …（反復 = iteration）"),
    (r"\biter\d|\biterK\b", "反復0, 反復1, …（コードの段階名 `iter0` は `` で囲む）"),
    (r"評価用|評価データ", "検証用（validation）またはテスト用（test）。「評価」は測るという行為だけに使う"),
    (r"ホールドアウト", "検証用（validation）またはテスト用（test）"),
    (r"基盤モデル", "ベースモデル（base model）"),
    (r"学習するパラメータ|訓練可能|学習対象のパラメータ", "学習可能パラメータ（trainable parameters）"),
    (r"（完全一致）|が完全一致|完全一致の割合", "完全一致は「答えが見本と一字一句同じ」だけに使う。形式は「形式どおり」、κ は「判定がすべて一致」"),
    (r"貪欲デコード", "貪欲法（greedy decoding）"),
]

FENCE = re.compile(r"^\s*(```+|~~~+)\s*(\S*)")
INLINE_CODE = re.compile(r"(`+)[^`]*?\1")
RULES_HEADING = "## このコースの用語の決まり"


def _markdown_lines(path: Path):
    """(line number, text) of the prose a learner reads: Markdown cells of a lesson, or a book page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".md":
        yield from enumerate(lines, 1)
        return
    in_markdown = False
    for number, line in enumerate(lines, 1):
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
        elif in_markdown and line.startswith("#"):
            yield number, line[2:] if line.startswith("# ") else line[1:]


def _prose(path: Path):
    """The lines outside fenced code. MyST directive fences (```{admonition} …) hold prose and are read;
    a code fence (```python, ~~~, ```text) hides everything up to its closing marker."""
    fences: list[tuple[str, int, bool]] = []  # (marker character, length, is a directive)
    for number, line in _markdown_lines(path):
        m = FENCE.match(line)
        if m:
            marker, info = m.group(1), m.group(2)
            if fences and fences[-1][0] == marker[0] and len(marker) >= fences[-1][1] and not info:
                fences.pop()
                continue
            if not fences or fences[-1][2]:  # in prose: this fence opens a block
                fences.append((marker[0], len(marker), info.startswith("{")))
                continue
        if fences and not fences[-1][2]:
            continue  # inside a code block
        yield number, INLINE_CODE.sub(" ", line)


def _scanned(path: Path):
    """The prose of a page, less the glossary's table of the rules (it names the banned variants on purpose)."""
    in_rules = False
    for number, text in _prose(path):
        if text.startswith("## "):
            in_rules = path.name == "glossary.md" and text.strip() == RULES_HEADING
        if not in_rules:
            yield number, text


def _pages() -> list[Path]:
    lessons = sorted((REPO_ROOT / "notebooks").glob("*.py"))
    pages = sorted((REPO_ROOT / "book").glob("*.md"))  # book/executed/ (generated) is a subfolder: not read
    return lessons + pages


def test_the_scanner_reads_prose_and_skips_code():
    sample = REPO_ROOT / "notebooks" / "level3_loop.py"
    prose = "\n".join(text for _, text in _prose(sample))
    assert "採点者" in prose  # Markdown cells are read
    assert "import pandas" not in prose  # code cells are not
    assert "run_loop(replace(config" not in prose  # nor a fenced code block inside an admonition


@pytest.mark.parametrize("path", _pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_banned_term_variant(path):
    found = []
    for number, text in _scanned(path):
        for pattern, preferred in BANNED:
            m = re.search(pattern, text)
            if m:
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: 「{m.group(0)}」→ {preferred}")
    assert not found, "用語を統一してください（book/glossary.md の「このコースの用語の決まり」）:\n" + "\n".join(found)


def test_the_glossary_lists_the_chosen_terms():
    glossary = (REPO_ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    section = glossary.split(RULES_HEADING, 1)
    assert len(section) == 2, "book/glossary.md に「このコースの用語の決まり」の節がない"
    for term in ("採点者", "ルーブリック採点者", "有害提案率", "段階", "反復", "検証用", "テスト用", "評価",
                 "完全一致", "ベースモデル", "学習可能パラメータ", "貪欲法"):
        assert f"| {term}" in section[1], f"用語の決まりの表に「{term}」の行がない"
