"""Level-3 datasets: every file loads through the project's validator, the content is what
the course promises, and every drug the data names resolves in the knowledge base."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from course_lib.data import DatasetError, load_jsonl
from course_lib.level3.data import (
    DRUG_FACTS, LEVEL3_DIR, QUESTION_TEMPLATE, SOURCE_TYPES, find_symptom_id,
    load_drug_index, load_drugs, load_paraphrases, load_references, load_symptoms,
    load_train_initial, make_question, parse_response,
)
from course_lib.level3.drugs import Drug, DrugIndex
from course_lib.level3.judge.gold import GOLD_CATEGORIES, load_judge_gold

from course_lib.paths import REPO_ROOT

# The seeds lie in shared/ beside the repository (in CI and on the developers' machines);
# a student's clone has no shared/, and the copy of the 15 patterns below is what they test against.
SEED = REPO_ROOT.parent / "shared" / "seeds" / "000_6cccb144fb4460c6.txt"

# Seed 000 §3.1, the 15 symptom patterns (copied here so the test runs without the seed).
SEED_SYMPTOMS = [
    "軽い頭痛のみがあり、発熱や他の症状は特にない成人",
    "38.5℃前後の高熱と悪寒、全身倦怠感を伴う風邪様症状のある成人",
    "乾いた空咳が続いていて、痰はほとんど出ないが、夜間に咳き込みやすい成人",
    "透明でサラサラした鼻水とくしゃみ、目のかゆみを伴う季節性アレルギー性鼻炎が疑われる成人",
    "濃い色の粘調な痰を伴う湿った咳が続いている成人",
    "生理痛による下腹部の鈍い痛みがあり、軽度の腰痛もある若年女性",
    "片頭痛と思われる、片側性でズキズキする頭痛と光・音過敏を訴える成人",
    "軽度の関節痛と筋肉痛を伴う、インフルエンザからの回復期にある成人",
    "のどの痛みと軽い発熱があり、食べ物を飲み込みにくいと訴える成人",
    "慢性的な腰痛があり、ときどき痛みが強くなるデスクワーク中心の中年男性",
    "夜間に症状が悪化する慢性咳嗽を訴える、既往に気管支喘息のない成人",
    "鼻づまりが強く、頭重感や顔面の圧迫感を伴う副鼻腔炎が疑われる成人",
    "足首の捻挫直後で、腫れと痛みがあり、荷重すると強く痛む成人",
    "手指の関節に朝のこわばりを感じ、日中も軽い痛みが続く中年女性",
    "胃もたれと軽い上腹部痛、胸焼け感があり、食べ過ぎた翌日に症状が出た成人",
]


def test_every_file_has_jsonl_extension_and_loads():
    files = sorted(p.name for p in LEVEL3_DIR.iterdir() if p.suffix == ".jsonl")
    assert files == ["drugs.jsonl", "judge_gold.jsonl", "paraphrases.jsonl", "references.jsonl",
                     "symptoms.jsonl", "train_initial.jsonl"]
    assert {p.suffix for p in LEVEL3_DIR.iterdir()} <= {".jsonl", ".md"}
    for loader in (load_symptoms, load_paraphrases, load_drugs, load_references, load_train_initial, load_judge_gold):
        assert loader(), loader.__name__


def test_symptoms_are_the_seed_patterns_with_the_seed_template():
    symptoms = load_symptoms()
    assert [s["text"] for s in symptoms] == SEED_SYMPTOMS
    assert [s["id"] for s in symptoms] == [f"s{i:02d}" for i in range(1, 16)]
    for s in symptoms:
        assert s["question"] == make_question(s["text"])
        assert s["question"].startswith(f"症状: {s['text']}\n\n推奨される薬剤を3つ")
    assert QUESTION_TEMPLATE.endswith("1. [薬剤名] - [理由]\n2. [薬剤名] - [理由]\n3. [薬剤名] - [理由]")


@pytest.mark.skipif(not SEED.exists() and not os.environ.get("CI"), reason="shared/seeds is not beside this clone (it is in CI)")
def test_template_and_symptoms_match_the_seed_file_verbatim():
    seed = SEED.read_text(encoding="utf-8")
    block = seed.split("**質問文テンプレート**:\n```\n", 1)[1].split("\n```", 1)[0]
    assert block == QUESTION_TEMPLATE.replace("{symptom}", "{症状テキスト}")
    for i, text in enumerate(SEED_SYMPTOMS, 1):
        assert f"{i}. {text}\n" in seed


def test_paraphrases_are_held_out_rewordings():
    paras = load_paraphrases()
    by_symptom = Counter(p["symptom_id"] for p in paras)
    assert set(by_symptom) == {f"s{i:02d}" for i in range(1, 16)}
    assert min(by_symptom.values()) >= 4
    originals = {s["text"] for s in load_symptoms()}
    assert not originals & {p["text"] for p in paras}, "a paraphrase repeats the original wording"
    assert len({p["text"] for p in paras}) == len(paras)
    train_prompts = {r["prompt"] for r in load_train_initial()} | {r["prompt"] for r in load_references()}
    assert not train_prompts & {p["question"] for p in paras}, "held-out questions must not be trained on"
    for p in paras:  # each paraphrase question identifies its own symptom
        assert find_symptom_id(p["question"]) == p["symptom_id"]
    styles = Counter(p["style"] for p in paras)
    assert len(styles) >= 4


def test_drug_kb_covers_the_aliases_named_in_the_issue():
    index = load_drug_index()
    expected = {"カロナール": "アセトアミノフェン", "タイレノール": "アセトアミノフェン", "ロキソニン": "ロキソプロフェン",
                "ガスター10": "ファモチジン", "アレグラ": "フェキソフェナジン"}
    for name, generic in expected.items():
        assert index.resolve(name).drug.generic == generic, name


@pytest.mark.parametrize("written, generic", [
    ("ｱｾﾄｱﾐﾉﾌｪﾝ", "アセトアミノフェン"),       # half-width katakana
    ("ＡＣＥＴＡＭＩＮＯＰＨＥＮ", "アセトアミノフェン"),  # full-width Latin
    ("ロキソプロフェンナトリウム錠60mg", "ロキソプロフェン"),
    ("アセトアミノフェン（カロナール）", "アセトアミノフェン"),
    ("ばくもんどうとう", "麦門冬湯"),               # hiragana
    ("ボルタレンゲル", "ジクロフェナク"),
    ("L-カルボシステイン", "カルボシステイン"),
])
def test_drug_index_tolerates_width_kana_and_suffix_variants(written, generic):
    assert load_drug_index().resolve(written).drug.generic == generic


def test_drug_index_does_not_invent_drugs():
    index = load_drug_index()
    for name in ("ゲンキナール", "薬剤名", "", "The", "ドライブ"):  # "ドライブ" contains the short brand "イブ"
        assert index.resolve(name) is None, name


def test_drug_kb_records_sources_and_unsafe_cases():
    drugs = {d["generic"]: d for d in load_drugs()}
    for d in drugs.values():
        assert set(d["sources"]) == set(DRUG_FACTS)
        assert set(d["sources"].values()) <= set(SOURCE_TYPES)
    all_ids = {f"s{i:02d}" for i in range(1, 16)}
    for generic in ("ワルファリン", "プレドニゾロン", "モルヒネ", "オキシコドン"):
        assert set(drugs[generic]["unsafe_for"]) == all_ids, generic
    assert "s05" in drugs["コデイン"]["unsafe_for"]            # productive cough
    assert "s15" in drugs["ロキソプロフェン"]["unsafe_for"]       # NSAID for epigastric pain
    assert "s09" in drugs["トラネキサム酸"]["appropriate_for"]    # accepted anti-inflammatory use in Japan
    assert not drugs["フルチカゾン"]["unsafe_for"]              # a nasal steroid is not a systemic steroid


def test_ambiguous_alias_is_rejected():
    a = Drug.from_record({"id": "a", "generic": "エー", "generic_en": "a", "kind": "drug", "brands": ["ダブリ"], "aliases": [],
                          "drug_class": "x", "route": "x", "availability": "rx", "appropriate_for": [], "acceptable_for": [],
                          "unsafe_for": [], "cautions": "x", "unsafe_reason": "", "sources": {}})
    b = Drug.from_record({**{f: getattr(a, f) for f in ("generic_en", "kind", "drug_class", "route", "availability",
                                                          "cautions", "unsafe_reason")},
                          "id": "b", "generic": "ビー", "brands": ["ダブリ"], "aliases": [], "appropriate_for": [],
                          "acceptable_for": [], "unsafe_for": [], "sources": {}})
    with pytest.raises(ValueError, match="ambiguous"):
        DrugIndex([a, b])


def _reasons(records):
    for r in records:
        items = parse_response(r["response"])
        assert items is not None, r["id"]
        yield r, items


def test_training_data_format_and_every_drug_resolves():
    index = load_drug_index()
    symptoms = {s["id"]: s for s in load_symptoms()}
    refs, train = load_references(), load_train_initial()
    assert Counter(r["symptom_id"] for r in refs).keys() == symptoms.keys()
    assert len(train) == 50
    assert min(Counter(r["symptom_id"] for r in train).values()) >= 3
    for r, items in _reasons(refs + train):
        assert r["prompt"] == symptoms[r["symptom_id"]]["question"]
        assert r["response"].count("\n") == 2
        for name, reason in items:
            assert index.resolve(name) is not None, (r["id"], name)
            assert 15 <= len(reason) <= 50, (r["id"], reason)  # short enough for the tiny model
    with_alias = [r for r, items in _reasons(train) if any("（" in n for n, _ in items)]
    assert len(with_alias) >= 10, "some training answers should name a brand alias"


def test_tranexamic_acid_is_explained_as_anti_inflammatory():
    rows = [(r, n, why) for r, items in _reasons(load_references() + load_train_initial())
            for n, why in items if n.startswith("トラネキサム酸")]
    assert rows and all(r["symptom_id"] == "s09" for r, _, _ in rows)
    for _, _, why in rows:
        assert "炎症" in why and "止血" not in why


def test_judge_gold_coverage_and_names():
    gold = load_judge_gold()
    assert len(gold) >= 60
    cats = Counter(g["category"] for g in gold)
    assert set(cats) == set(GOLD_CATEGORIES)
    assert cats["tranexamic"] >= 3 and cats["unsafe"] >= 10 and cats["alias"] >= 5 and cats["format"] >= 5
    labels = Counter(g["expected_label"] for g in gold)
    assert min(labels[l] for l in ("correct", "partially_correct", "incorrect", "unsafe")) >= 10
    index = load_drug_index()
    for g in gold:
        for d in g["expected_drugs"]:
            assert (index.resolve(d["name"]) is None) == bool(d.get("unknown")), (g["id"], d["name"])
        assert g["expected_harmful"] == (g["expected_label"] == "unsafe")


def test_readme_documents_schema_licence_and_disclaimer():
    text = (LEVEL3_DIR / "README.md").read_text(encoding="utf-8")
    for needle in ("CC BY 4.0", "医療上の助言ではありません", "not medical advice", "pharmacist", "薬剤師",
                   "written by this project"):
        assert needle in text, needle
    for name in ("symptoms.jsonl", "paraphrases.jsonl", "drugs.jsonl", "references.jsonl", "train_initial.jsonl",
                 "judge_gold.jsonl"):
        assert name in text
    for fname in ("symptom_id", "appropriate_for", "unsafe_for", "sources", "expected_label", "score_min"):
        assert f"`{fname}`" in text


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_loader_reports_file_line_and_field(tmp_path):
    refs = load_references()
    bad = dict(refs[1], symptom_id="s99")
    with pytest.raises(DatasetError, match=r"references\.jsonl:2: field 'symptom_id'"):
        load_references(_write(tmp_path / "references.jsonl", [refs[0], bad]))
    unknown = dict(refs[0], response=refs[0]["response"].replace("アセトアミノフェン", "ゲンキナール", 1))
    with pytest.raises(DatasetError, match="ゲンキナール"):
        load_references(_write(tmp_path / "references.jsonl", [unknown]))
    not_three = dict(refs[0], response="1. アセトアミノフェン - 痛みを抑える")
    with pytest.raises(DatasetError, match="three lines"):
        load_references(_write(tmp_path / "references.jsonl", [not_three]))
    gold = load_judge_gold()
    with pytest.raises(DatasetError, match="score_min"):
        load_judge_gold(_write(tmp_path / "judge_gold.jsonl", [dict(gold[0], score_min=0.9, score_max=0.1)]))


def test_files_validate_with_the_plain_generic_loader():
    # What a student would write: the generic validator with the published schemas.
    from course_lib.level3 import data as medical
    from course_lib.level3.judge import gold

    for name, schema in (("symptoms", medical.SYMPTOM_SCHEMA), ("paraphrases", medical.PARAPHRASE_SCHEMA),
                         ("drugs", medical.DRUG_SCHEMA), ("references", medical.REFERENCE_SCHEMA),
                         ("train_initial", medical.TRAIN_SCHEMA), ("judge_gold", gold.GOLD_SCHEMA)):
        records = load_jsonl(LEVEL3_DIR / f"{name}.jsonl", schema)
        assert len({r["id"] for r in records}) == len(records)
        assert all(re.fullmatch(r"[A-Za-z0-9_\-]+", r["id"]) for r in records)
