"""The final test: the setting the level-2 page recommends, trained once and scored once on the test split.

Every choice on the page (rank, α, modules, learning rate, epochs, schedule, dropout, early stopping)
is made on validation data. The test split (``course_lib.level1.load_level1_test``) is read only at
the end, for one score of the chosen setting. Two small pieces keep that promise checkable:

- :func:`watch_records` wraps the page's sweep function and remembers the id of every record it
  handed to a run (training and validation), so the page can show that no test id was among them;
- :func:`split_scorer` is a sweep ``evaluate`` callback that measures the trained adapter on named
  splits: answer-only loss (as the sweep measures validation loss) and format-match rate of greedy
  answers (the level-1 rule in three steps, :func:`course_lib.level1.format_steps`).
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

from ..level1 import format_steps
from .sweep import loss_pass

# answer(model, tokenizer, prompts) -> one answer per prompt, in order
Answerer = Callable[[object, object, list], Sequence[str]]
# loss(model, tokenizer, records) -> (mean loss, one loss per record)
LossFn = Callable[[object, object, Sequence[dict]], tuple]


def watch_records(sweep: Callable) -> Callable:
    """``sweep`` wrapped so that it remembers the ids of the records it is given.

    The wrapper is called like ``sweep(configs, train, val, **kwargs)`` (as ``run_seeds`` and the
    page call it). Its attribute ``seen_ids`` is the set of ids of every training and validation
    record any call received so far; ``seen_ids`` grows before the run starts, so a run that fails
    is counted too.
    """
    seen: set[str] = set()

    @functools.wraps(sweep)
    def watched(configs, train, val=None, *args, **kwargs):
        seen.update(r["id"] for r in train)
        seen.update(r["id"] for r in val or ())
        return sweep(configs, train, val, *args, **kwargs)

    watched.seen_ids = seen
    return watched


def score_split(model, tokenizer, records: Sequence[dict], answer: Answerer, loss: LossFn = loss_pass) -> dict:
    """Loss and format-match rate of ``model`` on one split.

    Returns ``ids`` (the records measured, in order), ``loss`` (the answer-only loss, averaged like
    ``Trainer.evaluate``), the format in three steps as the lesson's A/B comparison measures it
    (:func:`course_lib.level1.format_steps`: ``n``, ``line1_ok``/``line1_rate`` (first line starts with
    【結論】), ``line2_ok``/``line2_rate`` (second line starts with 【理由】), ``format_ok``/``format_rate``
    (the whole answer follows the level-1 rule)), and the ``answers``.
    """
    if not records:
        raise ValueError("score_split needs at least one record")
    mean_loss, _ = loss(model, tokenizer, records)
    answers = list(answer(model, tokenizer, [r["prompt"] for r in records]))
    if len(answers) != len(records):
        raise ValueError(f"{len(answers)} answers for {len(records)} prompts")
    return {"ids": tuple(r["id"] for r in records), "loss": float(mean_loss), **format_steps(answers),
            "answers": answers}


def split_scorer(splits: Mapping[str, Sequence[dict]], answer: Answerer, loss: LossFn = loss_pass) -> Callable:
    """A sweep ``evaluate`` callback that scores the trained adapter on each named split.

    Columns are ``<name>_<key>`` for the keys of :func:`score_split`, e.g. ``test_loss`` and
    ``test_format_rate`` for ``splits={"test": test_records}``. Each split is read only when the
    callback runs, i.e. once per trained run. The names ``train`` and ``val`` are refused: their
    columns would overwrite the sweep's own ``train_loss`` and ``val_loss``.
    """
    clash = sorted(set(splits) & {"train", "val"})
    if clash:
        raise ValueError(f"split name(s) {clash} would overwrite the sweep's own columns; choose other names")

    def evaluate(model, tokenizer) -> dict:
        row = {}
        for name, records in splits.items():
            row.update({f"{name}_{k}": v for k, v in score_split(model, tokenizer, records, answer, loss).items()})
        return row

    return evaluate
