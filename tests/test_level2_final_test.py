"""Level 2, ``course_lib.level2.final_test``: the recommended setting is scored once on the test split,
and what the scoring reads is exactly the test split (never a validation record).

The expectations are read straight from the JSONL files with ``json``, not through the course's loaders."""
from __future__ import annotations

import json

import pytest

from course_lib.level1 import load_level1, load_level1_test
from course_lib.level2.final_test import score_split, split_scorer, watch_records
from course_lib.level2.sweep import run_sweep
from course_lib.paths import DATASETS_DIR


def _file(split: str) -> list[dict]:
    with open(DATASETS_DIR / "level1" / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Recorder:
    """Fake loss and answer functions that remember what they were given."""

    def __init__(self, answers_by_prompt: dict[str, str]):
        self.loss_ids: list[list[str]] = []
        self.prompts: list[list[str]] = []
        self.answers_by_prompt = answers_by_prompt

    def loss(self, model, tokenizer, records):
        self.loss_ids.append([r["id"] for r in records])
        return 1.25, [1.25] * len(records)

    def answer(self, model, tokenizer, prompts):
        self.prompts.append(list(prompts))
        return [self.answers_by_prompt.get(p, "形式ではない答え") for p in prompts]


def test_the_test_scoring_reads_exactly_the_test_ids_and_no_validation_ids():
    test_file, heldout_file, train_file = _file("test"), _file("heldout"), _file("train")
    assert [r["id"] for r in test_file] == [f"l1-test-{i:03d}" for i in range(1, 21)]
    # the first 5 test questions get their reference answer (in the format), the other 15 do not
    recorder = Recorder({r["prompt"]: r["response"] for r in test_file[:5]})
    _, heldout = load_level1()
    evaluate = split_scorer({"test": load_level1_test()}, recorder.answer, recorder.loss)
    assert recorder.loss_ids == [] and recorder.prompts == [], "nothing is read before the run is scored"

    row = evaluate(model=None, tokenizer=None)

    assert recorder.loss_ids == [[r["id"] for r in test_file]], "the loss is measured once, on the test ids in order"
    assert recorder.prompts == [[r["prompt"] for r in test_file]], "the answers are generated once, for the test prompts"
    measured_ids = set(recorder.loss_ids[0])
    assert not measured_ids & {r["id"] for r in heldout_file + train_file}
    assert not set(recorder.prompts[0]) & {r["prompt"] for r in heldout_file + train_file + heldout}
    assert row["test_ids"] == tuple(r["id"] for r in test_file) and row["test_n"] == 20
    assert row["test_loss"] == 1.25
    assert row["test_format_rate"] == 5 / 20
    assert row["test_answers"][:5] == [r["response"] for r in test_file[:5]]
    assert row["test_line1_rate"] == row["test_line2_rate"] == 5 / 20  # the 15 others have neither label
    assert row["test_line1_ok"] == row["test_line2_ok"] == row["test_format_ok"] == 5  # counts, not rates
    assert set(row) == {f"test_{k}" for k in ("ids", "n", "loss", "line1_ok", "line2_ok", "format_ok", "line1_rate",
                                              "line2_rate", "format_rate", "answers")}


def test_the_three_format_steps_are_counted_as_the_lesson_reads_them():
    records = _file("test")[:4]
    answers = ["【結論】大豆から作られます。\n【理由】大豆をすりつぶした豆乳を固めます。",  # all three
               "【結論】大豆から作られます。\n【理由】豆乳を固めます。\n【理由】続きます。",  # a third line: not the format
               "【結論】大豆から作られます。",  # one line
               "大豆です。\n【理由】豆乳を固めます。"]  # no 【結論】
    row = score_split(None, None, records, lambda m, t, p: answers, lambda m, t, r: (0.5, [0.5] * 4))
    assert (row["line1_rate"], row["line2_rate"], row["format_rate"]) == (3 / 4, 3 / 4, 1 / 4)
    assert (row["n"], row["line1_ok"], row["line2_ok"], row["format_ok"]) == (4, 3, 3, 1)


def test_each_named_split_is_scored_on_its_own_records():
    test_file, heldout_file = _file("test"), _file("heldout")
    recorder = Recorder({r["prompt"]: r["response"] for r in heldout_file})  # every validation answer in format
    _, heldout = load_level1()
    row = split_scorer({"heldout": heldout, "test": load_level1_test()}, recorder.answer, recorder.loss)(None, None)
    assert recorder.loss_ids == [[r["id"] for r in heldout_file], [r["id"] for r in test_file]]
    assert row["heldout_format_rate"] == 1.0 and row["test_format_rate"] == 0.0
    assert row["heldout_ids"] == tuple(r["id"] for r in heldout_file)


def test_score_split_refuses_an_empty_split_and_a_wrong_number_of_answers():
    with pytest.raises(ValueError, match="at least one record"):
        score_split(None, None, [], lambda m, t, p: [], lambda m, t, r: (0.0, []))
    records = _file("test")[:3]
    with pytest.raises(ValueError, match="2 answers for 3 prompts"):
        score_split(None, None, records, lambda m, t, p: ["a", "b"], lambda m, t, r: (0.0, [0.0] * 3))


def test_watch_records_remembers_every_training_and_validation_id_and_passes_everything_through():
    calls = []

    def sweep(configs, train, val, *args, **kwargs):
        calls.append((configs, train, val, args, kwargs))
        return "table"

    watched = watch_records(sweep)
    train = [{"id": "t1"}, {"id": "t2"}]
    val = [{"id": "v1"}]
    assert watched([{"lora_r": 2}], train, val, seed=3, desc="x") == "table"
    assert calls == [([{"lora_r": 2}], train, val, (), {"seed": 3, "desc": "x"})]
    assert watched.seen_ids == {"t1", "t2", "v1"}
    watched([], [{"id": "t3"}], None)
    assert watched.seen_ids == {"t1", "t2", "v1", "t3"}


def test_a_real_run_scores_the_test_split_once_and_the_sweep_never_sees_it(tiny, records):
    """One short sweep run on the embedded tiny model, as the lesson's last section does it."""
    model, tokenizer = tiny
    _, heldout = load_level1()
    test = load_level1_test()[:4]
    asked = []

    def greedy(m, t, prompts):
        asked.append(list(prompts))
        return ["【結論】" + p for p in prompts]

    sweep = watch_records(lambda configs, train, val, **kw: run_sweep(model, tokenizer, configs, train, val,
                                                                      progress=False, **kw))
    table = sweep([dict(lora_r=2, max_steps=2, per_device_train_batch_size=4)], records[:8], heldout[:4],
                  evaluate=split_scorer({"test": test, "again": heldout[:4]}, greedy))
    row = table.iloc[0]
    assert asked == [[r["prompt"] for r in _file("test")[:4]], [r["prompt"] for r in _file("heldout")[:4]]]
    assert row["test_ids"] == tuple(f"l1-test-{i:03d}" for i in range(1, 5))
    assert row["test_format_rate"] == row["test_line2_rate"] == 0.0 and row["test_line1_rate"] == 1.0  # one line
    assert sweep.seen_ids == {r["id"] for r in records[:8] + heldout[:4]}
    assert not sweep.seen_ids & set(row["test_ids"])
    # the scorer measures the trained adapter as the sweep does: on the validation records it gives the
    # sweep's own validation loss, and on the test records another number
    assert row["again_loss"] == pytest.approx(row["val_loss"], abs=1e-6)
    assert abs(row["test_loss"] - row["val_loss"]) > 1e-3


def test_split_names_cannot_overwrite_the_sweeps_own_columns():
    with pytest.raises(ValueError, match="'val'"):
        split_scorer({"val": _file("test")}, lambda m, t, p: p)
