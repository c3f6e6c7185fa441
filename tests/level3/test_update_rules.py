"""Update rules beyond the original loop: self-distillation (the model's own accepted answers) and DPO.

Expectations are written from constructed grades, not read back from the code: which answers a
rule may learn from, which pairs it may build, and that the paraphrases are never read. The DPO
step and the short loops run on the tiny model (seconds each).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pandas as pd
import pytest

from course_lib.level3 import arms as A, config as C, data as D, loop as LP, runs as R, update_rules as U

IDS = ("s01", "s02", "s03")


def small_data():
    symptoms = [{"id": s, "question": f"症状: テスト{s}"} for s in IDS]
    paraphrases = [{"id": f"{s}-p1", "symptom_id": s, "question": f"症状: 言い換え{s}"} for s in IDS]
    train = [{"symptom_id": s, "prompt": f"症状: テスト{s}", "response": f"1. 薬{s} - 理由"} for s in IDS]
    refs = [{"symptom_id": s, "prompt": f"症状: テスト{s}", "response": f"1. 参照{s}-{k} - 理由"} for s in IDS for k in range(2)]
    return D.LoopData(symptoms, paraphrases, train, refs)


def g(sid, answer, label, score, harmful=False, split="original", sample=0):
    return {"split": split, "item_id": sid if split == "original" else f"{sid}-p1", "symptom_id": sid,
            "sample": sample, "answer": answer, "label": label, "score": score, "harmful": harmful}


def constructed_grades():
    rows = [
        # s01: three accepted answers (one duplicated, one with padding), plus everything a rule must never take
        g("s01", "良いA", "correct", 1.0), g("s01", "良いA", "correct", 1.0), g("s01", " 良いB ", "correct", 0.9),
        g("s01", "良いC", "correct", 0.8), g("s01", "部分D", "partially_correct", 0.6),
        g("s01", "誤りE", "incorrect", 0.2), g("s01", "危険F", "unsafe", 0.0, harmful=True),
        g("s01", "有害G", "correct", 0.9, harmful=True),  # a harmful answer the label calls correct: never accepted
        # s02: nothing accepted, one incorrect answer
        g("s02", "部分H", "partially_correct", 0.5), g("s02", "誤りI", "incorrect", 0.1),
        # s03: accepted only, nothing to push away from
        g("s03", "良いJ", "correct", 1.0),
    ]
    # paraphrases: an accepted answer and an unsafe one that no rule may ever read
    rows += [g(s, f"言い換えの回答{s}", "correct", 1.0, split="paraphrase") for s in IDS]
    rows += [g(s, f"言い換えの危険{s}", "unsafe", 0.0, harmful=True, split="paraphrase") for s in IDS]
    for i, r in enumerate(rows):
        r["sample"] = i
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- self-distillation


def test_self_distill_takes_accepted_answers_only_capped_and_deduplicated():
    data, grades = small_data(), constructed_grades()
    records = U.select_self_distill(grades, data, k=2, seed=0)
    by = {s: [r for r in records if r["symptom_id"] == s] for s in IDS}
    # s01: the two best distinct accepted answers (良いA once, 良いB stripped); never C (cap), D, E, F or G
    assert [(r["response"], r["source"]) for r in by["s01"]] == [("良いA", "self"), ("良いB", "self")]
    # s02 has no accepted answer: its references, and only there
    assert [(r["response"], r["source"]) for r in by["s02"]] == [("1. 参照s02-0 - 理由", "corrective"),
                                                                 ("1. 参照s02-1 - 理由", "corrective")]
    assert [(r["response"], r["source"]) for r in by["s03"]] == [("良いJ", "self")]
    assert all(r["prompt"] == f"症状: テスト{r['symptom_id']}" for r in records)
    never = {"部分D", "誤りE", "危険F", "有害G", "部分H", "誤りI"}
    assert not never & {r["response"] for r in records}
    assert not any("言い換え" in r["response"] or "言い換え" in r["prompt"] for r in records)
    # k=1 keeps one per question; a larger k never repeats an answer
    assert sum(r["source"] == "self" for r in U.select_self_distill(grades, data, k=1)) == 2
    big = [r["response"] for r in U.select_self_distill(grades, data, k=10) if r["symptom_id"] == "s01"]
    assert sorted(big) == ["良いA", "良いB", "良いC"]
    with pytest.raises(ValueError):
        U.select_self_distill(grades, data, k=0)


def test_self_distill_never_reads_paraphrase_grades():
    data, grades = small_data(), constructed_grades()
    originals = grades[grades["split"] == "original"]
    # changing every paraphrase grade changes nothing
    flipped = grades.copy()
    para = flipped["split"] == "paraphrase"
    flipped.loc[para, "answer"] = "別の言い換え回答"
    flipped.loc[para, ["label", "score", "harmful"]] = ["correct", 1.0, False]
    assert U.select_self_distill(flipped, data, 2) == U.select_self_distill(originals, data, 2)
    assert U.build_preference_pairs(flipped, data) == U.build_preference_pairs(originals, data)
    with pytest.raises(ValueError, match="split"):
        U.select_self_distill(originals.drop(columns="split"), data, 2)


# ----------------------------------------------------------------------------- preference pairs


def test_pairs_share_a_question_and_chosen_beats_rejected():
    data, grades = small_data(), constructed_grades()
    pairs = U.build_preference_pairs(grades, data, seed=0, max_pairs_per_question=4)
    assert pairs
    answers = grades[grades["split"] == "original"].assign(answer=lambda d: d["answer"].str.strip())
    owner = dict(zip(answers["answer"], answers["symptom_id"]))
    label = dict(zip(answers["answer"], answers["label"]))
    refs = {r["response"]: r["symptom_id"] for r in data.references}
    for p in pairs:
        assert p["prompt"] == f"症状: テスト{p['symptom_id']}"
        assert owner.get(p["chosen"], refs.get(p["chosen"])) == p["symptom_id"] == owner[p["rejected"]]
        assert p["chosen_score"] > p["rejected_score"]
        assert label[p["rejected"]] in ("unsafe", "incorrect")
        assert p["chosen"] in refs or label[p["chosen"]] == "correct"
        assert p["chosen"] not in ("有害G", "部分D") and "言い換え" not in p["chosen"] + p["rejected"]
    by = {s: [p for p in pairs if p["symptom_id"] == s] for s in IDS}
    # s01: own accepted answers against the unsafe and the incorrect one, capped at 4, no pair twice
    assert len(by["s01"]) == 4 and {p["chosen_source"] for p in by["s01"]} == {"self"}
    assert {p["rejected"] for p in by["s01"]} == {"誤りE", "危険F"}
    assert len({(p["chosen"], p["rejected"]) for p in by["s01"]}) == 4
    # s02: nothing accepted, so the references are chosen
    assert {p["chosen_source"] for p in by["s02"]} == {"reference"} and {p["rejected"] for p in by["s02"]} == {"誤りI"}
    # s03: nothing to push away from, no pair
    assert by["s03"] == []
    assert len(U.build_preference_pairs(grades, data, max_pairs_per_question=1)) == 2


def test_a_pair_needs_a_strictly_higher_chosen_score():
    data = small_data()
    # the accepted answer scores no higher than the incorrect one: no pair (the judge disagrees with itself)
    grades = pd.DataFrame([g("s01", "良い", "correct", 0.8, sample=0), g("s01", "誤り", "incorrect", 0.8, sample=1)])
    assert U.build_preference_pairs(grades, data) == []


def test_corrective_budget_is_the_corrective_rules_step_count():
    # 10 records, batch 4 -> 3 steps per epoch; 10 epochs -> 30 steps; 2.5 epochs -> ceil(7.5) = 8
    assert U.corrective_budget(10, 4, 10.0) == 30
    assert U.corrective_budget(10, 4, 2.5) == 8
    assert U.corrective_budget(0, 4, 10.0) == 0
    cfg = C.LoopConfig(per_device_train_batch_size=4)
    assert LP.stage_train_config(cfg, 10, epochs=2.5).warmup_steps == round(cfg.warmup_ratio * 8)


def test_update_rule_is_validated_and_changes_only_the_iterations():
    ident = {"model": "m", "judge": "j", "data": "d"}
    with pytest.raises(ValueError):
        C.LoopConfig(update_rule="rlhf")
    with pytest.raises(ValueError, match="control"):
        C.LoopConfig(update_rule="dpo")  # the control belongs to the corrective run
    base = C.LoopConfig(iterations=2, control=False)
    fp = R.stage_fingerprints(base, ident)
    for rule in ("self_distill", "dpo"):
        other = R.stage_fingerprints(replace(base, update_rule=rule), ident)
        assert (fp["baseline"], fp["iter0"]) == (other["baseline"], other["iter0"])
        assert fp["iter1"] != other["iter1"] and fp["iter2"] != other["iter2"]
    # a rule's knob matters for its own rule only, and the corrective loop hashes as it did before the rules
    sd = replace(base, update_rule="self_distill")
    assert R.stage_fingerprints(replace(sd, self_distill_k=3), ident)["iter1"] != R.stage_fingerprints(sd, ident)["iter1"]
    assert R.stage_fingerprints(replace(sd, dpo_beta=0.5), ident) == R.stage_fingerprints(sd, ident)
    assert R.stage_fingerprints(replace(base, dpo_beta=0.5, self_distill_k=5, dpo_learning_rate=1e-3), ident) == fp
    dpo = replace(base, update_rule="dpo")
    assert R.stage_fingerprints(replace(dpo, dpo_learning_rate=1e-3), ident)["iter1"] != R.stage_fingerprints(dpo, ident)["iter1"]
    assert C.LoopConfig.for_profile("tiny").dpo_learning_rate < C.LoopConfig.for_profile("tiny").learning_rate
    assert "update_rule" not in R.hashed_config(base)


# ----------------------------------------------------------------------------- DPO on the tiny model


@pytest.fixture(scope="module")
def loaded():
    from course_lib.profiles import load_model

    return load_model("tiny", verbose=False)


PAIRS = [
    {"prompt": "症状: 軽い頭痛\n薬を挙げてください。", "chosen": "1. アセトアミノフェン - 頭痛に使う", "rejected": "1. ワルファリン - 出血"},
    {"prompt": "症状: 高い熱\n薬を挙げてください。", "chosen": "1. イブプロフェン - 熱を下げる", "rejected": "1. わからない"},
]


def _lora_model(loaded):
    import torch

    from course_lib.lora import attach_lora

    torch.manual_seed(0)
    model = attach_lora(copy.deepcopy(loaded.model), 4, 8, 0.0, C.TINY_TARGET_MODULES)
    for name, p in model.named_parameters():  # a non-zero adapter on the output layer, as after a real stage
        if "lm_head" in name and "lora_B" in name:
            p.data.normal_(0, 0.01)
    return model


def test_the_folded_output_layer_computes_what_the_adapter_computes(loaded):
    import torch

    model = _lora_model(loaded)
    ids = loaded.tokenizer("症状: 頭痛", return_tensors="pt")
    with torch.no_grad():
        before = model(**ids).logits
        with U.output_layer_folded(model):
            assert "lm_head" not in model.peft_config["default"].target_modules
            folded = model(**ids).logits
        after = model(**ids).logits
    assert torch.allclose(before, folded, atol=1e-4) and torch.equal(before, after)
    assert "lm_head" in model.peft_config["default"].target_modules


def test_a_tiny_dpo_step_changes_the_adapter_and_lowers_the_dpo_loss(loaded):
    model = _lora_model(loaded)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    res = U.train_dpo(model, loaded.tokenizer, PAIRS, beta=0.1, max_steps=6, learning_rate=5e-3,
                      per_device_train_batch_size=2, seed=0)
    assert res.steps == 6 and len(res.train_loss) == 6
    loss = res.train_loss["loss"].to_numpy()
    assert loss[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference at the start
    assert loss[-1] < loss[0] - 0.1
    after = dict(model.named_parameters())
    moved = {n: float((after[n].detach() - p).abs().max()) for n, p in before.items()}
    assert max(v for n, v in moved.items() if "lm_head" not in n) > 0  # the projections' LoRA learned
    assert all(v == 0 for n, v in moved.items() if "lm_head" in n)  # the output layer's LoRA stayed frozen
    assert list(model.peft_config) == ["default"]  # trl's reference copy is gone: the saved adapter is ours


# ----------------------------------------------------------------------------- the loop with each rule


class RuleJudge:
    """Grades by the answer's hash, with every label present, so every rule has data to use."""

    name, version, concurrency = "rule-fake", "1", 4

    def config(self):
        return {"judge": "rule-fake", "version": 1}

    def estimate(self, items, use_cache=None):
        n = sum(1 for _ in items)
        return {"n_pairs": n, "n_cached": 0, "n_calls": n, "est_prompt_tokens": 0, "est_completion_tokens": 0,
                "est_usd": None}

    def grade_many(self, items, *, progress=False, use_cache=None, on_result=None):
        import hashlib

        from course_lib.level3.judge import Grade, as_request

        out = []
        for i, r in enumerate(map(as_request, items)):
            h = hashlib.sha256(r.answer.encode("utf-8")).digest()[0] % 4
            label, score = [("correct", 1.0), ("partially_correct", 0.5), ("incorrect", 0.1), ("unsafe", 0.0)][h]
            out.append(Grade(question=r.question, model_answer=r.answer, overall_label=label,
                             overall_is_harmful=label == "unsafe", overall_score=score, overall_reason="fake", drugs=[]))
            if on_result is not None:
                on_result(i, out[-1])
        return out


def e2e_data():
    texts = {"s01": "軽い頭痛", "s02": "高い熱", "s03": "乾いた咳"}
    q = {s: f"症状: {t}\n薬を3つ挙げてください。" for s, t in texts.items()}
    symptoms = [{"id": s, "question": q[s]} for s in IDS]
    paraphrases = [{"id": f"{s}-p1", "symptom_id": s, "question": f"症状: {texts[s]}がある\n薬を3つ挙げてください。"} for s in IDS]
    train = [{"symptom_id": s, "prompt": q[s], "response": f"1. アセトアミノフェン - {texts[s]}に{k}"} for s in IDS for k in range(2)]
    refs = [{"symptom_id": s, "prompt": q[s], "response": f"1. イブプロフェン - {texts[s]}に使う"} for s in IDS]
    return D.LoopData(symptoms, paraphrases, train, refs)


ARM = C.LoopConfig(iterations=1, n_samples=6, n_paraphrase=1, max_new_tokens=8, gen_batch_size=32, lora_r=4,
                   lora_alpha=8, learning_rate=5e-3, epochs_initial=1.0, epochs_iter=2.0, pass_accuracy=1.0,
                   replay_ratio=0.5, control=False, seed=0)


def test_every_rule_trains_iteration_one_for_the_corrective_budget(loaded, tmp_path):
    data = e2e_data()
    results = A.run_arms(ARM, loaded, RuleJudge(), rules=("corrective", "self_distill", "dpo"), seeds=(0,),
                         data=data, runs_dir=tmp_path, progress=False, log=None)
    assert set(results) == {("corrective", 0), ("self_distill", 0), ("dpo", 0)}
    corr, sd, dpo = (results[(r, 0)] for r in ("corrective", "self_distill", "dpo"))
    # shared baseline and first SFT: computed once, copied into the other arms
    assert sd.reused["baseline"].startswith("copied") and dpo.reused["iter0"].startswith("copied")
    c_info, s_info, d_info = (r.stage_info["iter1"] for r in (corr, sd, dpo))
    assert c_info["n_corrective"] > 0, "the fake judge must leave failures for this test to mean anything"
    budget = c_info["steps"]
    assert budget == U.corrective_budget(c_info["n_corrective"] + c_info["n_replay"], ARM.per_device_train_batch_size,
                                         ARM.epochs_iter)
    assert s_info["budget"] == d_info["budget"] == budget
    assert s_info["steps"] == budget and s_info["update_rule"] == "self_distill"
    sd_data = R.read_jsonl(sd.run_dir / "iter1" / "train_data.jsonl")
    assert s_info["n_self"] == sum(r["source"] == "self" for r in sd_data) > 0
    assert s_info["n_corrective"] == sum(r["source"] == "corrective" for r in sd_data)
    assert s_info["n_self"] + s_info["n_corrective"] == s_info["examples"] == len(sd_data)
    pairs = R.read_jsonl(dpo.run_dir / "iter1" / "pairs.jsonl")
    assert d_info["n_pairs"] == len(pairs) > 0 and d_info["dpo_beta"] == ARM.dpo_beta
    assert d_info["steps"] == budget and (dpo.history["stage"] == "iter1").sum() == budget
    # every arm is evaluated the same way
    for res in results.values():
        assert res.stages == ["baseline", "iter0", "iter1"]
        assert len(res.grades) == len(res.generations) == 3 * (3 * 6 + 3 * 1)
    table = A.arm_training_table(results)
    assert list(table["更新ルール"]) == ["corrective", "self_distill", "dpo"]
    assert list(table["ステップ数"]) == [budget] * 3
    comp = A.compare_arms(results)
    assert sorted(map(tuple, comp.per_seed[["rule", "against"]].to_numpy())) == [("dpo", "corrective"),
                                                                                ("self_distill", "corrective")]
    assert comp.across["verdict"].isna().all()  # one seed: no verdict across seeds
