"""The level-1 answer format (【結論】/【理由】): loading its dataset and checking answers.

The rule is the one in ``datasets/level1/README.md``: exactly two lines, the
first starting with 【結論】, the second with 【理由】, each line 10-60
characters long (labels included). The length bound matters for generated
text: an answer that never stops is cut off at ``max_new_tokens`` and would
otherwise still match the regular expression.

The dataset has three splits: ``train`` (learned from), ``heldout`` (the
validation split: validation loss, early stopping, choosing settings) and
``test`` (looked at once, at the end; no choice may depend on it).

:func:`perplexity` measures how well a model predicts plain text; level 1 uses
it on a fixed slice of ``datasets/pretrain`` to see what fine-tuning forgets.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .data import DatasetError, Field, load_jsonl
from .paths import DATASETS_DIR

LEVEL1_DIR = DATASETS_DIR / "level1"
LEVEL1_SCHEMA = [Field("id", str), Field("prompt", str), Field("response", str)]
LEVEL1_FORMAT = re.compile(r"^【結論】[^\n]+\n【理由】[^\n]+$")
LINE_CHARS = (10, 60)  # shortest and longest allowed line, labels included
SPLITS = ("train", "heldout", "test")


def follows_format(text: str, line_chars: tuple[int, int] = LINE_CHARS) -> bool:
    """True when ``text`` is two lines in the 【結論】/【理由】 format, each of allowed length."""
    if not isinstance(text, str) or not LEVEL1_FORMAT.fullmatch(text):
        return False
    low, high = line_chars
    return all(low <= len(line) <= high for line in text.split("\n"))


def format_match_rate(answers: Sequence[str], line_chars: tuple[int, int] = LINE_CHARS) -> float:
    """Fraction of answers that follow the format (0.0 to 1.0)."""
    if isinstance(answers, str):
        raise TypeError("format_match_rate expects a list of answers, not a single string")
    if len(answers) == 0:
        raise ValueError("format_match_rate needs at least one answer")
    return sum(follows_format(a, line_chars) for a in answers) / len(answers)


def format_steps(answers: Sequence[str], line_chars: tuple[int, int] = LINE_CHARS) -> dict:
    """The format in three steps, as counts out of ``n`` and as rates.

    ``line1_ok``: the first line starts with 【結論】; ``line2_ok``: there is a second line and it starts
    with 【理由】; ``format_ok``: the whole answer follows the rule (:func:`follows_format`). Each count
    has its ``*_rate`` (count / ``n``); a report quotes the count, never a count rebuilt from a rate.
    """
    if isinstance(answers, str):
        raise TypeError("format_steps expects a list of answers, not a single string")
    if len(answers) == 0:
        raise ValueError("format_steps needs at least one answer")
    lines = [a.split("\n") for a in answers]
    counts = {"line1_ok": sum(ls[0].startswith("【結論】") for ls in lines),
              "line2_ok": sum(len(ls) > 1 and ls[1].startswith("【理由】") for ls in lines),
              "format_ok": sum(follows_format(a, line_chars) for a in answers)}
    n = len(answers)
    return {"n": n, **counts, **{k.replace("_ok", "_rate"): v / n for k, v in counts.items()}}


def load_level1_split(split: str, folder: Path | str = LEVEL1_DIR) -> list[dict]:
    """One split ("train", "heldout" or "test"), validated: schema, id pattern, response format."""
    return [record for _, record in _load_numbered_split(split, folder)]


def _load_numbered_split(split: str, folder: Path | str) -> list[tuple[int, dict]]:
    if split not in SPLITS:
        raise ValueError(f"unknown level-1 split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(folder) / f"{split}.jsonl"
    numbered = load_jsonl(path, LEVEL1_SCHEMA, with_lines=True)
    id_pattern = re.compile(rf"l1-{split}-\d{{3}}")
    for line, record in numbered:
        if not id_pattern.fullmatch(record["id"]):
            raise DatasetError(path, line, "id", f"{record['id']!r} does not look like 'l1-{split}-NNN'")
        if not follows_format(record["response"]):
            raise DatasetError(path, line, "response", "not two lines '【結論】…\\n【理由】…' of 10-60 characters each")
    return numbered


def load_level1(folder: Path | str = LEVEL1_DIR) -> tuple[list[dict], list[dict]]:
    """(train, heldout) records of the level-1 dataset, validated; prompts must not overlap."""
    train = load_level1_split("train", folder)
    heldout = _load_numbered_split("heldout", folder)
    seen = {r["prompt"] for r in train}
    path = Path(folder) / "heldout.jsonl"
    for line, record in heldout:
        if record["prompt"] in seen:
            raise DatasetError(path, line, "prompt", "also appears in train.jsonl (held-out questions must be new)")
    return train, [record for _, record in heldout]


def load_level1_test(folder: Path | str = LEVEL1_DIR) -> list[dict]:
    """The test split, validated; its prompts must not appear in train or heldout.

    Kept out of :func:`load_level1` on purpose: code that chooses settings or
    stops training early reads (train, heldout) and never sees the test split.
    """
    train, heldout = load_level1(folder)
    test = _load_numbered_split("test", folder)
    seen = {r["prompt"]: split for split, records in (("train", train), ("heldout", heldout)) for r in records}
    path = Path(folder) / "test.jsonl"
    for line, record in test:
        if record["prompt"] in seen:
            raise DatasetError(path, line, "prompt", f"also appears in {seen[record['prompt']]}.jsonl (test questions must be new)")
    return [record for _, record in test]


