# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # レベル3：自己改善ループを測って確かめる
#
# ```{admonition} 医療上の助言ではありません
# :class: warning
# このページは、言語モデルの学習方法を学ぶための**教育用の実験**です。
# 出てくる薬剤名・理由・スコアは、どれも医療上の助言ではありません。
# 教材のデータは薬剤師・医師の確認を受けていません。薬の使用や症状については、必ず医師・薬剤師に相談してください。
# ```
#
# ```{admonition} このページで学ぶこと
# :class: tip
# - **目標**: 「学習 → 生成 → 採点 → 誤答の抽出 → 追加学習」という自己改善ループ（self-improvement loop）を動かし、
#   その効果を **信頼区間（confidence interval）と検定** つきで測る。ループが効く場面と効かない場面を、数値から判断できるようになる
# - **前提知識**: [レベル1](level1_basics.ipynb) の LoRA 学習の流れ（学習・生成・アダプターの保存）、
#   [レベル2](level2_parameters.ipynb) の学習率・エポック数・過学習の考え方、平均と標準偏差（信頼区間や検定は 8.1 節で説明します）
# - **所要時間**: 計算にかかる時間は、この本を作ったときに測った値が[実行状況](report.md)のページにあります（tiny モデル、CPU）。
#   Qwen3-0.6B では、同じ形のモデル（重みは乱数）で測った LoRA の学習1ステップ（バッチ 4・259 トークン）が CPU
#   （Intel Xeon 2コアをほかの作業と共用、float32、2026-11-29 測定）で約150秒なので、このページの学習（2,600〜3,560 ステップ）だけで
#   107〜146 時間かかります。これに回答の生成（6,000 件、1件最大 192 トークン）が加わります。
#   NVIDIA H200（bfloat16、2026-11-30 測定）では、学習1ステップが 0.21 秒（ピークメモリ 5,513 MiB）、生成がバッチ 64 で毎秒 722 トークンだったので、
#   ステップ数と生成件数から計算すると、学習は 9〜13 分、生成は約 28 分です。
#   ただし生成の速度は Transformers の `model.generate` で測った値で、この教材の生成ループ（`course_lib.generate`。
#   書き終えた回答をバッチから外します）では、GPU ではまだ測っていません
# ```
#
# ## この実験の出発点
#
# [元になった実験](../original_experiment.md)は、Qwen3-0.6B を LoRA で学習し、GPT-4.1-mini に回答を JSON で採点させ、
# 誤答だった質問だけを追加学習する、というループを2回まわしました。15問の正答率は
# 反復0（最初の学習のあと）で 73.3%（11/15）、反復1 と 2 で 80.0%（12/15）でした。
# ただし、その実験には次の制約がありました（レポート自身が §6.6・§9.2・§11 で挙げています）。
#
# | 元の実験の制約 | このページでの扱い |
# | --- | --- |
# | 学習前（ベースライン）を評価していない | 学習前のモデルも同じ方法で評価する |
# | 各質問 1 回だけ生成（N = 1） | 各質問 N 回（既定 30 回）温度つきで生成し、平均と信頼区間を出す |
# | 15問の固定文面だけで評価 | 学習に使わない **言い換え（paraphrase）** でも評価する |
# | 誤答だけを追加学習（忘却の心配） | 正解済みの質問も一定割合で混ぜる **リプレイ（replay）** を入れ、なしの場合と比べる |
# | 「ループは多エポック学習より良いのか」が未検証 | 同じデータ・同じステップ数の **通常 SFT（対照、control）** と比べる |
# | 採点者（GPT）の誤りが疑われた | 人手の正解ラベルで採点者の信頼性を測る |
#
# 各節の終わりには、短い **確認クイズ** があります。答えは「答え」をクリックすると開きます。

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny", judge="rubric", quick=True）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b" のどれか
judge = "auto"  # "auto" | "rubric" | "openai"（"auto" は OPENAI_API_KEY があれば openai）
quick = False  # True: サンプル数を減らした短縮版（CI 用）
seed = 0
n_samples = 30  # N: 元の質問 1 問あたりの生成回数（元の実験 §6.6 の推奨値。quick では 8）
iterations = 2  # K: iteration 0 のあとの反復学習の回数（元の実験と同じ 2 回）
replay_ratio = 0.5  # 正解済みの質問を混ぜ戻す割合（0 でリプレイなし）
training_seeds = 3  # ループと対照の比較を繰り返す学習シードの数（quick では 1）

# %% [markdown]
# ## 1. 準備：モデルと採点者
#
# 採点者（judge）は2種類あります。
#
# - **rubric**（ルーブリック採点者）: コースの薬剤知識ベース（`datasets/level3/drugs.jsonl`）に基づいて、決まった規則で採点します。オフラインで無料、何千件でも一瞬で採点できます。
# - **openai**: 元の実験と同じく LLM（既定 `gpt-4.1-mini`）に JSON 形式で採点させます。API キーが必要で、採点ごとに料金がかかります。
#
# どちらも 元の実験 §4.2 と同じ JSON 形式の採点結果を返します。

# %%
import time

t_start = time.perf_counter()

from course_lib.level3.judge import RubricJudge, make_judge
from course_lib.lesson import show_model_note, start_lesson
from course_lib.profiles import load_model

start_lesson(seed)
loaded = load_model(model_profile)
grader = make_judge(judge)
show_model_note(loaded, judge=repr(grader))

# %% [markdown]
# ## 2. 課題とデータ
#
# 課題は「症状の説明から、推奨される薬剤を3つと理由を答える」ことです。質問文は 元の実験 §3.1 のテンプレートそのままです。

# %%
import pandas as pd
from IPython.display import Markdown, display

from course_lib.level3.data import LoopData

data = LoopData.load()
print(data.symptoms[0]["question"])

# %% [markdown]
# 学習データは2種類あります。**初回学習データ**（`train_initial`、50件）は反復0（最初の学習）で使い、
# **参照回答**（`references`、各症状2件）は誤答だった質問の修正用（元の実験の `SAMPLE_MEDICAL_DATA` にあたる）に使います。
# 回答は `1. [薬剤名] - [理由]` の形式です。

# %%
print(data.references[0]["response"])
counts = pd.DataFrame({
    "データ": ["質問（症状）", "言い換え", "初回学習データ", "参照回答"],
    "件数": [len(data.symptoms), len(data.paraphrases), len(data.train_initial), len(data.references)],
    "用途": ["評価", "評価のみ（学習には使わない）", "反復0 の学習", "誤答の修正・リプレイ"],
})
display(counts.style.hide(axis="index"))

# %% [markdown]
# 言い換えは、同じ症状を別の言い方（くだけた言い方、専門的な言い方、語順の入れ替え、本人の言葉、短い言い方）で書いたものです。
# 学習には一度も使わないので、「文面を覚えただけ」か「症状と薬の対応を学んだ」かを見分ける手がかりになります。

# %%
from course_lib.level3.tables import PARAPHRASE_STYLES_JA

para = pd.DataFrame(data.paraphrases)
sample_para = para[para["symptom_id"] == data.symptoms[0]["id"]][["id", "style", "text"]]
sample_para = sample_para.assign(style=sample_para["style"].map(PARAPHRASE_STYLES_JA))
display(pd.concat([pd.DataFrame([{"id": data.symptoms[0]["id"], "style": "（元の文面）", "text": data.symptoms[0]["text"]}]),
                   sample_para]).rename(columns={"id": "ID", "style": "言い方", "text": "文面"}).style.hide(axis="index"))

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 言い換え（paraphrase）の質問を、学習に一度も使わないのはなぜですか。
# 2. 参照回答（`references`）は、ループのどこで使われますか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. モデルが「学習した文面を覚えただけ」なのか、「症状と薬の対応を学んだ」のかを見分けるためです。学習に使うと、言い換えでの正答も丸暗記で出せてしまいます。
# 2. 反復1 からの追加学習です。直前の段階で不合格だった質問の参照回答を、修正データとして学習します（合格した質問の一部は、リプレイとして混ぜます）。
# ```

# %% [markdown]
# ## 3. ループの設定
#
# 設定は `LoopConfig` にまとまっています。既定値はモデルごとに違います。
#
# | 設定 | qwen3-0.6b（元の実験 §5 と同じ） | tiny（このコースで測って決めた値） |
# | --- | --- | --- |
# | LoRA | r = 16, α = 32, dropout 0.05, 7つの射影層 | r = 16, α = 32, dropout 0.05, 7つの射影層 **+ 出力層（lm_head）** |
# | 学習率 | 2e-4 | 5e-3 |
# | エポック数 | 初回 100、反復 30 | 初回 20、反復 10 |
# | バッチサイズ / 最大長 | 4 / 512 | 4 / 512 |
# | サンプル数 | 元の質問 N = 30、言い換え各 10 | 元の質問 N = 30、言い換え各 4 |
# | 生成 | 温度 0.7、top_p 0.9 | 温度 0.7（top_p なし） |
#
# tiny モデルは隠れ層の幅が小さく、出力層が事前学習の少ない埋め込みと共有されています。
# このコースの開発中（2026年11月、tiny モデル、ルーブリック採点者、以前のデータ）に試したときは、7つの射影層だけに LoRA をかけると
# 学習損失が下がりきらず、生成した回答は意味をなしませんでした。出力層にも LoRA をかけると、正答率が測れる回答になりました。
# また、top_p による絞り込みは毎ステップ語彙全体を並べ替えるので CPU では時間がかかるため、tiny では温度だけでサンプリングします。
# どれも当時の測定で、このページの実行で測り直したものではありません。設定を変えて確かめるのは練習問題にできます。

# %%
from course_lib.level3.config import LoopConfig
from course_lib.level3.loop import judge_budget

overrides = dict(iterations=iterations, replay_ratio=replay_ratio, seed=seed)
if not quick:
    overrides["n_samples"] = n_samples
config = LoopConfig.for_profile(loaded.profile, quick=quick, **overrides)
display(pd.DataFrame([config.to_dict()]).T.rename(columns={0: "値"}))

# %% [markdown]
# 採点の前に、採点回数（と LLM 採点者なら費用の目安）を確かめます。同じ回答は一度しか採点しないので、実際の回数はこれより少なくなります。
# 元の実験が学習前の評価を省いた理由は費用でしたが、ルーブリック採点者なら費用はかかりません。

# %%
budget = judge_budget(config, grader, data)
print(f"1段階あたりの回答数: {budget['answers_per_stage']}、段階数: {budget['stages']}、採点回数の上限: {budget['max_calls']}")
print("費用の目安:", "無料（rubric）" if budget["est_usd"] == 0 else
      (f"約 ${budget['est_usd']:.2f}" if budget["est_usd"] is not None else "単価が不明なため計算できません"))

# %% [markdown]
# ## 4. ループを実行する
#
# このページでは、2つの言葉を区別して使います。
#
# - **段階（stage）**: 評価するモデル1つ1つです。学習前・反復0・反復1…・対照の順に並び、表の「段階」の列やグラフの横軸に出てきます。
# - **反復（iteration）**: ループの1回分の学習です。反復0 は初回の学習（SFT）、反復1 からが誤答をもとにした追加学習です。
#   反復も段階の一つですが、学習前と対照は反復ではありません。
#
# `run_loop` は次の段階を順に実行します（括弧の中はコードでの段階名です）。
#
# 1. **学習前**（`baseline`）: 学習前のモデルを評価します。
# 2. **反復0**（`iter0`）: 初回学習データで LoRA を学習して評価します。
# 3. **反復1 … 反復K**（`iter1` … `iterK`）: 直前の段階で **不合格** だった質問について、参照回答を集めた **修正データ** に、
#    合格した質問の一部（リプレイ）を混ぜて追加学習し、評価します。
#    不合格とは、N 回のうち正答が 80% 未満か、危険な回答が1つでもあることです。正答とは、スコアが 0.8 以上の回答です。
# 4. **対照**（`control`）: ループが使った全データで、ループ全体と **同じステップ数** だけ新しい LoRA を通常どおり学習して評価します。
#
# 各段階の結果（設定、アダプター、生成文、採点、指標）は `runs/level3/<設定のハッシュ>/` に段階ごとに保存されます。
# 途中で止まっても、もう一度実行すれば終わった段階は読み込むだけで、採点済みの回答を採点し直すこともありません。
# 設定を変えると別のフォルダになります。
#
# このページでは、このループのほかに、8.2 節で使うリプレイなしのループと、8.3 節で使う学習シード違いのループも回します。
# どれも互いに独立なので、`run_loops` が2つの **ワーカープロセス**（worker process）に分けて同時に計算し、結果を同じように保存します。
# 学習前と反復0 が同じになる実行どうしは、その段階を一度だけ計算して共有します。
# 反復1 以降も、直前の段階と学習データがまったく同じなら（たとえば合格した質問がなく、リプレイで混ぜるものがなかったとき）、同じように共有します。
# tiny モデルは1つの CPU コアで動くので、2コアのマシンなら2つの実行を同時に進められます。
# Qwen3-0.6B や OpenAI の採点者のときは、`run_loops` は設定を1つずつ順に `run_loop` に渡します。

# %%
from dataclasses import replace

from course_lib.level3.parallel import run_loops
from course_lib.level3.tables import stage_names, training_table
from course_lib.paths import display_path

other_ratio = 0.0 if config.replay_ratio > 0 else 0.5  # 8.2 節: リプレイあり・なしを比べる相手
seed_configs = ([replace(config, seed=config.seed + extra) for extra in range(1, training_seeds)]
                if not quick and config.replay_ratio > 0 and config.control else [])  # 8.3 節: 学習シード違い
planned = [config, *seed_configs, replace(config, replay_ratio=other_ratio, control=False)]
planned_results = run_loops(planned, loaded, grader)
result = planned_results[0]


def state_ja(state: str) -> str:
    if state == "computed":
        return "この実行で計算"
    if state == "done":
        return "保存済みの結果を読み込み"
    return state.replace("copied from", "同じ内容の段階を別の実行からコピー:")


status = pd.DataFrame({"段階": [stage_names(config).get(s, s) for s in result.stages],
                       "状態": [state_ja(result.reused.get(s, "")) for s in result.stages],
                       "この実行での秒数": [result.seconds.get(s, 0.0) for s in result.stages]})
display(status.style.hide(axis="index").format(precision=1))
where = result.run_dir
print(f"保存先: {display_path(where)}")
print(f"この実行での採点回数: {result.judge_calls}（採点エラー {result.judge_errors} 件）")

# %% [markdown]
# 学習した段階ごとの内訳です。「不合格だった質問」は直前の評価で不合格だった質問の数、「修正データ」と「リプレイ」はその件数です。
# 対照のステップ数は、反復0 から最後の反復までの合計と同じです。

# %%
display(training_table(result.training, config).style.hide(axis="index").format(precision=3, na_rep="—"))

# %%
import matplotlib.pyplot as plt

from course_lib.level3.plots import plot_training_loss

plot_training_loss(result)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 4.1 ループを1回だけ手で回す
#
# `run_loop` の中身は、1回の反復ごとに「生成 → 採点 → 集計 → 不合格の質問の選択 → 修正データとリプレイの作成」を繰り返すだけです。
# ここでは反復0 のアダプターを読み込み、同じ手順を手で1回たどります。
# 時間を節約するため、生成は各質問 `hand_n` 回だけにします。

# %%
import copy
import inspect

from course_lib.generate import sample_answers
from course_lib.level3.metrics import summarise
from course_lib.level3.selection import build_iteration_data, question_status
from course_lib.lora import load_adapter

hand_n = 4
model_iter0 = load_adapter(copy.deepcopy(loaded.model), result.adapter_path("iter0"))
questions = [s["question"] for s in data.symptoms]
# 1. 生成：質問ごとに hand_n 個の回答
hand_answers = sample_answers(model_iter0, loaded.tokenizer, questions, n=hand_n, temperature=config.temperature,
                              top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=config.seed, progress=False)
requests = [{"question": q, "answer": a, "symptom_id": s["id"]}
            for s, q, outs in zip(data.symptoms, questions, hand_answers) for a in outs]
# 2. 採点：回答ごとに JSON の採点結果
hand_grades = grader.grade_many(requests)
# 3. 集計：質問ごとの正答率と危険な回答の数
hand_frame = pd.DataFrame({"symptom_id": [r["symptom_id"] for r in requests],
                           "score": [g.overall_score for g in hand_grades],
                           "label": [g.overall_label for g in hand_grades],
                           "harmful": [g.overall_is_harmful for g in hand_grades]})
hand_per_q = summarise(hand_frame, n_boot=1).per_question
# 4. 選択と 5. データ作成
hand_iteration = build_iteration_data(hand_per_q, data, config.replay_ratio, config.pass_accuracy, seed=config.seed + 1)
selection = pd.DataFrame({
    "質問": hand_per_q["symptom_id"],
    "正答率": hand_per_q["accuracy"].map("{:.0%}".format),
    "危険な回答": hand_per_q["unsafe"],
    "判定": question_status(hand_per_q, config.pass_accuracy).map({"pass": "合格", "fail": "不合格"}).to_numpy(),
    "リプレイに選ばれた": hand_per_q["symptom_id"].isin(hand_iteration.replayed).map({True: "はい", False: ""}),
})
display(selection.style.hide(axis="index"))
print(f"修正データ {len(hand_iteration.corrective)} 件、リプレイ {len(hand_iteration.replay)} 件")

# %% [markdown]
# 選択と学習データ作りは、次の関数がすべてです。
# 不合格の質問には参照回答を、合格した質問の一部には反復0 で学んだ例を、同じ重みで混ぜています。

# %%
print(inspect.getsource(build_iteration_data))

# %% [markdown]
# `run_loop` は、これと同じ手順を N 個の回答で各段階に行い、結果をディスクに保存して再開や再利用をできるようにしています。
# 実際に、`run_loop` が保存した反復0 の採点結果に同じ関数を当てると、反復1 で選ばれた不合格の質問と一致します。

# %%
run_frame = result.stage_grades("iter0")
same_selection = build_iteration_data(summarise(run_frame, n_boot=1).per_question, data, config.replay_ratio,
                                      config.pass_accuracy, seed=config.seed + 1)
if "iter1" in result.stage_info:
    assert same_selection.failed == result.stage_info["iter1"]["failed"], "run_loop の選択と一致しません"
    assert same_selection.replayed == result.stage_info["iter1"]["replayed"], "リプレイの選択が一致しません"
    print(f"iter1 の不合格 {len(same_selection.failed)} 問とリプレイ {len(same_selection.replayed)} 問は、run_loop の選択と同じです。")
    hand_failed, run_failed = set(hand_iteration.failed), set(same_selection.failed)
    print(f"手で回した選択（N = {hand_n}）との一致: 不合格 {len(hand_failed & run_failed)} 問が共通、"
          f"手だけ {len(hand_failed - run_failed)} 問、run_loop だけ {len(run_failed - hand_failed)} 問"
          f"（N = {config.n_samples} で測った run_loop のほうが、合否の判定が安定します）。")

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 学習前・反復0・反復1・反復2・対照のうち、「段階」はどれで、「反復」はどれですか。
# 2. ある質問で、N = 30 回のうち正答が 25 回（約83%）、危険な回答が 1 回でした。この質問は合格ですか。
# 3. 対照（control）の学習のステップ数は、何と同じにしてありますか。それはなぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 5つすべてが段階（評価するモデル）です。反復はループの学習の回で、反復0・反復1・反復2 の3つです。
# 2. 不合格です。正答は 80% 以上ですが、危険な回答が1つでもあれば不合格です。
# 3. 反復0 から最後の反復までの学習ステップの合計と同じです。ループの効果と、単に学習量が増えた効果を区別するためです。
# ```

# %% [markdown]
# ## 5. 回答と採点結果を見る
#
# 指標を見る前に、実際の回答を見ましょう。反復0 の正答率が半分くらいの質問を1つ選び、
# 学習前と反復0 の回答、そして採点結果の JSON（元の実験 §4.2 の形式）を表示します。

# %%
import json

from course_lib.level3.metrics import LABELS_JA

pq0 = result.per_question("original")
pq0 = pq0[pq0["stage"] == "iter0"]
example_id = pq0.iloc[(pq0["accuracy"] - 0.5).abs().argsort()].iloc[0]["symptom_id"]
texts = {s["id"]: s["text"] for s in data.symptoms}
print(f"例に使う質問: {example_id}「{texts[example_id]}」\n")

g = result.grades
for stage in ("baseline", "iter0"):
    rows = g[(g["stage"] == stage) & (g["split"] == "original") & (g["item_id"] == example_id)]
    print(f"===== {stage_names(config)[stage]}: {len(rows)} 回の生成のうち最初の2つ =====")
    for _, r in rows.head(2).iterrows():
        print(f"--- {r['sample'] + 1} 回目（スコア {r['score']:.2f}、{LABELS_JA.get(r['label'], r['label'])}）")
        print(r["answer"][:300])
    print()

# %% [markdown]
# 次は反復0 の回答のうち、正答と判定されたもの・されなかったものの採点 JSON です。
# `drugs` の各要素が薬剤ごとの判定、`overall_score` が回答全体のスコアです。

# %%
rows = g[(g["stage"] == "iter0") & (g["split"] == "original") & (g["item_id"] == example_id)]
picks = [rows[rows["score"] >= 0.8].head(1), rows[rows["score"] < 0.8].head(1)]
for pick in picks:
    if len(pick):
        grade = result.grade_json("iter0", example_id, int(pick.iloc[0]["sample"]))
        grade["question"] = grade["question"].split("\n")[0] + " …（以下テンプレート）"
        print(json.dumps(grade, ensure_ascii=False, indent=2))

# %% [markdown]
# ## 6. 段階ごとの指標
#
# 元の実験 §6.1 と同じ形の表です。ただし1問1回ではなく、各質問 N 回の回答すべてを数えています。
#
# - **平均スコア**: `overall_score` の平均
# - **正答率（スコア≥0.8）**: スコア 0.8 以上の回答の割合と、その **95% 信頼区間（confidence interval）**、括弧内は回答数です。
# - **有害提案率**: 危険な薬剤をすすめた回答の割合と、その 95% 信頼区間です。
# - **解けた質問**: N 回のうち 8 割以上が正答で、危険な回答が1つもない質問の数です。
#   反復で追加学習する質問を選ぶときも、まったく同じ基準を使います。
#
# ```{admonition} この信頼区間がカバーするもの・しないもの
# :class: note
# 同じ質問への N 個の回答は独立ではありません。解けない質問は、N 回とも間違えやすいからです。
# そこで区間は、**質問を単位**にして計算しています（質問ごとのばらつきで実効的な回答数を減らした Wilson 区間）。
# この区間がカバーするのは「どの回答が生成されたか」と「質問ごとの難しさの違い」です。
# **学習をやり直したときのばらつき（学習シード、training seed）はカバーしません。**
# それを見るには、シードを変えて学習し直す必要があります（8.3 節）。0 件の割合でも、区間の上端は 0% になりません。
# ```

# %%
from course_lib.level3.tables import VERDICT_JA, comparison_table, stage_names

names = stage_names(config)
display(Markdown(f"**元の質問（{len(data.symptoms)}問 × N = {config.n_samples}）**"))
display(result.table("original", stage_names=names).style.hide(axis="index"))
display(Markdown(f"**言い換え（{len(data.paraphrases)}文 × {config.n_paraphrase}、学習に未使用）**"))
display(result.table("paraphrase", stage_names=names).style.hide(axis="index"))

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 正答率の信頼区間を、回答1つ1つではなく「質問」を単位にして求めるのはなぜですか。
# 2. この信頼区間に含まれていないばらつきは何ですか。
# 3. 450 回答のうち有害な回答が 0 件でした。有害提案率の95%区間の上端は 0% ですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 同じ質問への N 個の回答は独立ではないからです。解けない質問は N 回とも間違えやすいので、回答を独立に数えると区間が狭くなりすぎます。
# 2. 学習をやり直したときのばらつき（学習シードによるばらつき）です。8.3 節のように、学習シードを変えて学習し直さないと見えません。
# 3. いいえ。0 件でも、本当の割合が 0 より大きい可能性は残るので、区間の上端は 0% より大きくなります（Wilson 区間）。
# ```

# %% [markdown]
# ## 7. グラフで見る
#
# ### 7.1 スコアの分布
#
# 平均だけでは、全部が中くらいなのか、良い回答と悪い回答が混ざっているのかが分かりません。分布を見ます。

# %%
from course_lib.level3.plots import (
    plot_accuracy, plot_loop_vs_control, plot_paraphrase_gap, plot_question_heatmap, plot_score_distribution,
)

plot_score_distribution(result)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 7.2 質問ごとの変化
#
# 行が質問、列が段階です。どの質問がどの段階で良くなり、どこで悪くなったかが一目で分かります。

# %%
plot_question_heatmap(result)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 7.3 正答率と信頼区間
#
# エラーバーは質問単位の 95% 信頼区間です。
# 2つの段階に差があるかどうかは、エラーバーが重なるかどうかでは判断しません。
# 同じ質問どうしで差をとり、その差の信頼区間で判断します（8 章）。

# %%
plot_accuracy(result)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 7.4 言い換えとのギャップ
#
# 横軸が元の文面、縦軸が言い換えでの平均スコアです。点が対角線より下にあるほど、言い換えに弱い質問です。
# 結果がどうであれ、そのまま示します。

# %%
plot_paraphrase_gap(result)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 7.5 ループ vs 同じ計算量の通常 SFT
#
# 元の実験の最後の論点「計算資源があれば多エポック学習のほうが効率が良いのでは」を確かめます。
# 対照は、ループが使ったすべての学習データ（初回学習データ＋修正データ＋リプレイ）で、新しい LoRA を
# ループ全体と同じステップ数だけ学習したものです。

# %% [markdown]
# ループが「新しい情報」を学べるかどうかは、データの作り方で決まります。このコースのデータでは、
# 参照回答（修正データ）は初回学習データに1件も含まれていません。さらに一部の症状では、初回学習データの答え方が
# 第二選択の薬ばかりで手薄にしてあり、参照回答が第一選択の薬と理由を足します（`datasets/level3/README.md`）。
# 採点者で確かめると、症状ごとの「初回学習データの中で一番良い答え」と「参照回答」の点数は次のとおりです。

# %%
train_keys = {(r["prompt"], r["response"]) for r in data.train_initial}
in_train = sum((r["prompt"], r["response"]) in train_keys for r in data.references)
rubric_for_data = RubricJudge()
best_initial = {}
for r in data.train_initial:
    score = rubric_for_data.grade(r["prompt"], r["response"], symptom_id=r["symptom_id"]).overall_score
    best_initial[r["symptom_id"]] = max(best_initial.get(r["symptom_id"], 0.0), score)
reference_score = {}
for r in data.references:
    score = rubric_for_data.grade(r["prompt"], r["response"], symptom_id=r["symptom_id"]).overall_score
    reference_score[r["symptom_id"]] = min(reference_score.get(r["symptom_id"], 1.0), score)
data_design = pd.DataFrame({"質問": [f"{s['id']} {s['title']}" for s in data.symptoms],
                            "初回学習データの最高点": [best_initial[s["id"]] for s in data.symptoms],
                            "参照回答の最低点": [reference_score[s["id"]] for s in data.symptoms]})
data_design["初回学習データは手薄"] = (data_design["初回学習データの最高点"] < 0.8).map({True: "はい", False: ""})
display(data_design.style.hide(axis="index").format(precision=2))
print(f"参照回答 {len(data.references)} 件のうち、初回学習データにも含まれるもの: {in_train} 件")
if "control" in result.stages:
    ctrl = result.stage_info["control"]
    print(f"対照の学習データ: {ctrl['examples']} 件（重複を除く）、{ctrl['steps']} ステップ（ループの合計 {ctrl['loop_steps']} ステップ）")

# %% [markdown]
# 対照は、ループが使ったのと同じ例（初回学習データ＋参照回答＋リプレイ）を、全質問に均等に、同じステップ数だけ学習します。
# ですから「ループ vs 対照」で比べているのは、修正データの中身ではなく、**採点結果に合わせて学習の順番と的を絞ること**の効果です。

# %%
if "control" in result.stages:
    plot_loop_vs_control(result)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 2つの段階のエラーバーが重なっていました。「2つの段階に差はない」と言えますか。
# 2. ループと対照の比較で確かめているのは、次のどちらですか。
#    (a) 参照回答（修正データ）の中身の効果　(b) 採点結果に合わせて、学習する質問と順番を絞ることの効果
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 言えません。重なりは判定に使いません。同じ質問どうしで差をとり、その差の信頼区間で判断します（8 章）。
# 2. (b) です。対照は、ループが使ったのと同じ例を、同じステップ数だけ学習しています。違いは、採点結果に合わせて的を絞るかどうかだけです。
# ```

# %% [markdown]
# ## 8. 段階を比べる
#
# ### 8.1 統計の基本
#
# ここで使う考え方を短くまとめます（用語は[用語集](../glossary.md)にもあります）。
#
# - **対応のある比較（paired comparison）**: 2つの段階は同じ15問で評価しています。
#   そこで質問ごとに「後 − 前」の差をとり、15個の差の平均を見ます。質問の難しさの違いが差し引かれるので、
#   別々の平均を比べるより敏感です。
# - **信頼区間（confidence interval）**: 平均の差の 95% 区間は、15問を **ブートストラップ（bootstrap）** で
#   引き直して求めます（質問を単位にした再標本化）。区間がまるごと 0 より上なら「良くなった」、
#   まるごと下なら「悪くなった」、0 をまたげば「はっきりした差はない」と判定します。
#   2つの段階のエラーバーが重なるかどうかは、判定に使いません。
# - **p 値（p-value）**: 本当は差がないとしたら、これ以上の差が偶然に出る確率です。小さいほど、偶然とは考えにくくなります。
# - **質問ごとの正答数の検定（Fisher の正確検定、Fisher's exact test）**: 1つの質問について、
#   前の N 回と後の N 回で正答の数が変わったかを調べます。
# - **多重比較（multiple comparisons）と Holm 法**: 15問 × 何組もの比較で検定を繰り返すと、
#   偶然「有意」になるものが出てきます。このページでは、ページ内のすべての質問ごとの検定をまとめて
#   **Holm 法** で1回だけ補正し、補正後の p < 0.05 のものだけを「有意に変化した」とします。
# - **忘却（forgetting）**: 前の段階で解けていた質問が、有意に悪くなったものです。
#   平均が上がっていても、忘却が1問でもあれば判定は「一部の質問で悪くなった」になります。

# %% [markdown]
# ### 8.2 段階ごとの比較
#
# 比較には、リプレイなし（`replay_ratio=0`）で回したループも含めます（9 章で使います）。
# 学習前と反復0 はリプレイの設定に関係しないので、保存済みの結果がそのまま使われ、再計算も再採点もされません。

# %%
from course_lib.level3.metrics import compare_stages

other = planned_results[-1]  # 4 章で一緒に計算した、リプレイの設定だけが違うループ
with_replay, without_replay = (result, other) if config.replay_ratio > 0 else (other, result)
no_replay = other if config.replay_ratio > 0 else None  # このページのループがリプレイありのときの、比べる相手（リプレイなし）

# このページのすべての比較を1回で行う（Holm 補正もこの1回だけ）
page_pairs = {("リプレイあり", a, b): (with_replay.summaries[(a, "original")], with_replay.summaries[(b, "original")])
              for a, b in with_replay.stage_pairs()}
page_pairs |= {("リプレイなし", a, b): (without_replay.summaries[(a, "original")], without_replay.summaries[(b, "original")])
               for a, b in without_replay.stage_pairs() if a != "baseline"}
page_comparisons = compare_stages(page_pairs, seed=config.seed)
replayed = {"リプレイあり": {s: i.get("replayed", []) for s, i in with_replay.stage_info.items()},
            "リプレイなし": {s: i.get("replayed", []) for s, i in without_replay.stage_info.items()}}


def comparisons_of(run_name):
    return {(a, b): c for (r, a, b), c in page_comparisons.items() if r == run_name}


display(comparison_table(comparisons_of("リプレイあり"), config, replayed["リプレイあり"]).style.hide(axis="index"))

# %% [markdown]
# 有意に変化した質問の内訳です（補正後の p 値つき）。

# %%
symptom_title = {s["id"]: s["title"] for s in data.symptoms}
changed = []
for (a, b), c in comparisons_of("リプレイあり").items():
    for _, r in c.per_question[c.per_question["change"] != "unchanged"].iterrows():
        changed.append({"比較": f"{names[a]} → {names[b]}", "質問": f"{r['symptom_id']} {symptom_title[r['symptom_id']]}",
                        "変化": "改善" if r["change"] == "improved" else "悪化",
                        "正答率": f"{r['acc_prev']:.0%} → {r['acc_curr']:.0%}",
                        "差の95%区間": f"[{r['delta_lo']:+.0%}, {r['delta_hi']:+.0%}]",
                        "補正後のp値": f"{r['p_adj']:.2g}",
                        "リプレイ": "はい" if r["symptom_id"] in replayed["リプレイあり"].get(b, []) else ""})
display(pd.DataFrame(changed).style.hide(axis="index") if changed else Markdown("有意に変化した質問はありません。"))

# %% [markdown]
# ### 8.3 学習シードを変えると？
#
# ここまでの区間は、1回の学習で得たアダプターについてのものです。学習をやり直すと（LoRA の初期値やデータの順番が変わると）、
# 結果も変わります。N を増やしても、このばらつきは見えません。
# そこで、ループの最後の段階と対照の比較を、学習シードを変えて繰り返します（quick では省略）。
# 判定の言葉は、すべてのシードで同じ判定になったときだけ使います。

# %%
from course_lib.level3.metrics import across_seeds

# 4 章で一緒に計算した、学習シードだけが違うループ（quick ではなし）
seed_results = {config.seed: with_replay} | {c.seed: r for c, r in zip(seed_configs, planned_results[1:-1])}
last = config.iteration_stages[-1]
seed_comparisons = compare_stages({s: (r.summaries[(last, "original")], r.summaries[("control", "original")])
                                   for s, r in seed_results.items() if "control" in r.stages}, seed=config.seed)
# 差は「対照 − ループ」なので、判定は対照から見た言葉になります。ループから見た言い方に直して表示します
LOOP_VS_CONTROL_JA = {"better": "対照のほうが良く、ループの優位は示されません",
                      "worse": "ループのほうが良い",
                      "worse_on_some": "一部の質問で対照のほうが悪い",
                      "no_clear_difference": "はっきりした差はありません",
                      "mixed_across_seeds": "シードによって結果が違う"}
if len(seed_comparisons) >= 3:
    seed_rows, seed_verdict = across_seeds(seed_comparisons)
    display(seed_rows.rename(columns={"seed": "学習シード", "mean_diff": "対照 − ループ（正答率の差）", "lo": "95%区間の下端",
                                      "hi": "95%区間の上端", "verdict": "判定"})
            .assign(判定=lambda d: d["判定"].map(LOOP_VS_CONTROL_JA)).style.hide(axis="index").format(precision=3))
    seed_summary = (f"{len(seed_comparisons)} つの学習シードをまとめた判定は「{LOOP_VS_CONTROL_JA[seed_verdict]}」です"
                    + ("（すべてのシードで同じ判定）" if seed_verdict != "mixed_across_seeds" else ""))
else:
    seed_verdict = None
    seed_summary = (f"学習シードは {len(seed_comparisons)} つだけなので、シードをまたいだ判定はしません"
                    "（quick=False で 3 シードを使います）")
print(seed_summary)

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 本当は差がないのに、質問ごとの検定を 60 回、補正なしで「p < 0.05 なら有意」と判定すると、平均で何回くらい「有意」が出てしまいますか。
# 2. 段階どうしを「対応のある比較」で比べると、2つの平均を別々に比べるより差を見つけやすいのはなぜですか。
# 3. 平均の正答率は上がったのに、判定が「一部の質問で悪くなった」になりました。どういうことですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 60 × 0.05 = 3 回くらいです。だからこのページでは、質問ごとの検定をまとめて Holm 法で補正します。
# 2. 同じ15問で差をとるので、質問ごとの難しさの違いが差し引かれるからです。
# 3. ほかの質問の改善で平均は上がっても、前の段階で解けていた質問のどれかが有意に悪くなった（忘却した）ということです。
# ```

# %% [markdown]
# ## 9. リプレイの効果
#
# 誤答だけで追加学習すると、すでに解けていた質問を忘れること（破滅的忘却、catastrophic forgetting）があります。
# 元の実験 §11.4 は対策として、正解済みの質問も一定比率で再学習する **リプレイ** を挙げていました。
# 8.2 節で回したリプレイなしのループと比べます。

# %%
rows = []
for run_name, res in (("リプレイあり", with_replay), ("リプレイなし", without_replay)):
    for (a, b), c in comparisons_of(run_name).items():
        if a == "baseline" or b == "control":
            continue
        o = res.summaries[(b, "original")].overall
        rows.append({"設定": run_name, "比較": f"{names[a]} → {names[b]}", "正答率": f"{o['accuracy']:.1%}",
                     "新たに解けた質問": "、".join(c.newly_solved) or "なし",
                     "解けていたのに悪化（忘却）": "、".join(c.forgotten) or "なし",
                     "判定": VERDICT_JA[c.verdict.verdict]})
display(pd.DataFrame(rows).style.hide(axis="index"))

# %%
plot_accuracy(with_replay, extra={"リプレイなし": without_replay})
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 9.1 タスクの外での忘却
#
# 15問の外でも、学習は何かを失っているかもしれません。コースの一般的な日本語の文章（`datasets/pretrain` から一定間隔で選んだ段落。
# どの学習データにも入っていません）で、各段階のモデルの **パープレキシティ（perplexity）** を測ります。
# 次のトークンをどれくらい迷うかを表す値で、小さいほど文章をよく予測できています。学習前より大きくなっていれば、一般的な文章の予測を忘れています。

# %%
ppl = pd.DataFrame({"リプレイあり": with_replay.general_perplexity(), "リプレイなし": without_replay.general_perplexity()})
ppl = ppl.reindex(with_replay.stages)  # 段階の順に並べる（アルファベット順ではなく）
ppl.index = [names.get(s, s) for s in ppl.index]
ppl.index.name = "段階"
display(ppl.style.format(precision=1, na_rep="—"))

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. リプレイとは何ですか。何を防ぐために入れますか。
# 2. 一般的な日本語の文章でのパープレキシティが、学習前より大きくなりました。何を意味しますか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 追加学習のときに、すでに合格していた質問の例も一定の割合で混ぜて学習し直すことです。解けていた質問を忘れること（破滅的忘却）を防ぐために入れます。
# 2. 一般的な文章の次のトークンを、学習前より予測できなくなったということです。15問の外での忘却のしるしです。
# ```

# %% [markdown]
# ## 10. 採点者はどこまで信頼できるか
#
# ここまでの数値はすべて採点者の判定に依存しています。元の実験では、GPT がトラネキサム酸（のどの痛みに使われる）を
# 「不適切」と判定した例が報告されています（§6.4.2、論点2）。そこで、正解の判定が分かっている2つの回答集で採点者を採点します。
#
# - **ゴールドセット（`judge_gold`）**: コースの薬の知識ベースから書いた回答と、その正しい判定です。
#   ここでの一致率は「知識ベースとどれだけ一貫しているか」を測るもので、医学的な正しさを保証するものではありません。
# - **レッドチームセット（`judge_redteam`）**: 採点の規則を直す前に、採点者がつまずきそうな回答
#   （理由の中の危険な用量、警告の文、知識ベースにない薬の名前など）を集めて書いたものです。
#   ただし、今の規則はこの回答集を見たあとで作ったので、ここでの一致率は「開発に使ったデータでの一致率」です。
#
# 特に大事なのは **有害な回答を見逃さないか**（有害回答の再現率、harmful recall）です。
# 区間は件数から求めた正確な 95% 信頼区間（Clopper–Pearson）です。

# %%
import os

from course_lib.level3.judge import RubricJudge, agreement_report, load_judge_gold, load_judge_redteam

judge_sets = {"ゴールドセット": load_judge_gold(), "レッドチームセット": load_judge_redteam()}
judges = {"rubric": RubricJudge()}
if os.environ.get("OPENAI_API_KEY"):
    judges["openai"] = make_judge("openai")
    print(judges["openai"].grade_many([(x["question"], x["answer"]) for x in judge_sets["ゴールドセット"]], dry_run=True))
else:
    print("OPENAI_API_KEY が設定されていないため、OpenAI 採点者の評価は省略します。")
agreement_rows, reports = [], {}
for judge_name, judge_obj in judges.items():
    for set_name, records in judge_sets.items():
        r = agreement_report(judge_obj, records)
        reports[(judge_name, set_name)] = r
        agreement_rows.append({
            "採点者": judge_name, "回答集": set_name,
            "判定の一致": f"{r.n_label_agree}/{r.n - r.n_errors}（{r.label_accuracy:.1%} [{r.label_accuracy_ci[0]:.1%}, {r.label_accuracy_ci[1]:.1%}]）",
            "有害回答の再現率": f"{r.n_harmful_caught}/{r.n_harmful}（{r.harmful_recall:.1%} [{r.harmful_recall_ci[0]:.1%}, {r.harmful_recall_ci[1]:.1%}]）",
            "有害でない回答を有害と判定": f"{r.n_false_harmful}/{r.n_not_harmful}",
            "κ": f"{r.cohen_kappa:.3f}",
        })
display(pd.DataFrame(agreement_rows).style.hide(axis="index"))
rubric_agreement = reports[("rubric", "ゴールドセット")]
display(rubric_agreement.confusion_ja())

# %% [markdown]
# レッドチームセットの種類ごとの一致です。どの種類の回答で採点者が弱いかが分かります。

# %%
CATEGORY_JA = {"dangerous_reason": "理由の中の危険な内容", "unknown_dangerous_name": "知識ベースにない危険な薬",
               "mention_in_reason": "理由の中で触れただけの薬", "warning_not_recommendation": "すすめではなく警告",
               "format": "形式", "names_routes": "名前の表記・使い方（外用／内服）", "control": "ふつうの回答（対照）"}
by_category = reports[("rubric", "レッドチームセット")].by_category()
display(pd.DataFrame({
    "種類": by_category["category"].map(CATEGORY_JA),
    "判定の一致": [f"{k}/{n}" for k, n in zip(by_category["n_label_agree"], by_category["n"])],
    "95%区間": [f"[{lo:.0%}, {hi:.0%}]" for lo, hi in zip(by_category["ci_low"], by_category["ci_high"])],
    "有害回答の検出": [f"{k}/{n}" for k, n in zip(by_category["n_harmful_caught"], by_category["n_harmful"])],
}).style.hide(axis="index"))
misses = reports[("rubric", "レッドチームセット")].disagreements
print(f"一致しなかった回答: {len(misses)} 件" + ("（下の表）" if len(misses) else ""))
if len(misses):
    display(misses[["id", "category", "gold_label", "judge_label"]].head(5)
            .assign(category=lambda d: d["category"].map(CATEGORY_JA),
                    gold_label=lambda d: d["gold_label"].map(lambda v: LABELS_JA.get(v, v)),
                    judge_label=lambda d: d["judge_label"].map(lambda v: LABELS_JA.get(v, v)))
            .rename(columns={"id": "ID", "category": "種類", "gold_label": "正しい判定", "judge_label": "採点者の判定"})
            .style.hide(axis="index"))

# %% [markdown]
# ルーブリック採点者は知識ベースに書かれたことしか判定できません。知識ベースにない名前は、黙って誤判定せず
# 「要確認（未知の名前）」として数えます（6 章の表の最後の列）。
# LLM 採点者は文章の質も見られますが、判定が揺れたり、知識ベースと違う判断をしたりします。
# どちらの結果も「その採点者から見た」数値です。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. ゴールドセットでルーブリック採点者との一致率が高ければ、採点者は医学的に正しいと言えますか。
# 2. 有害回答の再現率（harmful recall）は、何の割合ですか。
# 3. レッドチームセットでの一致率が「開発に使ったデータでの一致率」なのはなぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 言えません。ゴールドセットも同じ知識ベースから書いたので、一致率が測るのは「知識ベースとどれだけ一貫しているか」だけです。
# 2. 本当に有害な回答のうち、採点者が有害と判定できた割合です。有害な回答をどれだけ見逃さないかを表します。
# 3. 採点の規則を、この回答集を見たあとで直したからです。まだ見ていない回答での一致率は、これより低いかもしれません。
# ```

# %% [markdown]
# ## 11. 考察：ループはいつ効き、いつ効かないか
#
# 次のセルで、このページの数値を文中に差し込む値として用意します（数値と判定は実行のたびに変わります）。

# %%
from myst_nb import glue

cmp_page = comparisons_of("リプレイあり")
first = cmp_page[("baseline", "iter0")]
iters = [(a, b) for (a, b) in cmp_page if a != "baseline" and b != "control"]
forgotten_all = sorted({q for k in iters for q in cmp_page[k].forgotten})
replayed_forgotten = sorted({q for (a, b) in iters for q in cmp_page[(a, b)].forgotten
                             if q in replayed["リプレイあり"].get(b, [])})
iter1_info = with_replay.stage_info.get("iter1", {})
all_failed_at_iter0 = len(iter1_info.get("failed", [])) == len(data.symptoms)
ov = with_replay.overall("original").set_index("stage")
para = with_replay.overall("paraphrase").set_index("stage")
last_loop = with_replay.loop_stages[-1]

glue("l3_model", loaded.label, display=False)
glue("l3_base_acc", f"{ov.loc['baseline', 'accuracy']:.1%}", display=False)
glue("l3_iter0_acc", f"{ov.loc['iter0', 'accuracy']:.1%}", display=False)
glue("l3_first_verdict", VERDICT_JA[first.verdict.verdict], display=False)
glue("l3_last_stage", names[last_loop], display=False)
glue("l3_last_acc", f"{ov.loc[last_loop, 'accuracy']:.1%}", display=False)
glue("l3_last_para_acc", f"{para.loc[last_loop, 'accuracy']:.1%}" if last_loop in para.index else "—", display=False)
glue("l3_iter_verdicts", "、".join(f"{names[a]} → {names[b]}: {VERDICT_JA[cmp_page[(a, b)].verdict.verdict]}"
                                    for a, b in iters) or "反復なし", display=False)
n_failed_iter0 = len(iter1_info.get("failed", []))
glue("l3_iter1_note", ("反復0 では15問すべてが不合格だったので、反復1 は全質問の参照回答で学習しました。"
                       "誤答の選び分けはまだ働いておらず、効いているのは参照回答という新しいデータです。")
     if all_failed_at_iter0 else
     (f"反復0 の不合格は {n_failed_iter0} 問で、反復1 はその質問の参照回答（とリプレイ）だけで学習しました。"
      if iter1_info else "このページの実行には反復がありません。"),
     display=False)
glue("l3_forgotten", (f"{'、'.join(f'{q}（{symptom_title[q]}）' for q in forgotten_all)} の {len(forgotten_all)} 問で、"
                     f"そのうちリプレイで学習し直していた質問は {len(replayed_forgotten)} 問でした")
     if forgotten_all else "ありませんでした", display=False)
if "control" in with_replay.stages:
    lc = cmp_page[(last_loop, "control")]
    glue("l3_control_acc", f"{ov.loc['control', 'accuracy']:.1%}", display=False)
    glue("l3_control_diff", f"{lc.overall.mean_diff:+.1%}（95%区間 {lc.overall.lo:+.1%} 〜 {lc.overall.hi:+.1%}）", display=False)
    # 差は「対照 − ループ」なので、"better" は対照のほうがループより良かったという意味
    glue("l3_control_verdict", LOOP_VS_CONTROL_JA[lc.verdict.verdict], display=False)
else:
    for key in ("l3_control_acc", "l3_control_diff", "l3_control_verdict"):
        glue(key, "（対照なし）", display=False)
glue("l3_seed_summary", seed_summary, display=False)
general = with_replay.general_perplexity()
glue("l3_ppl_base", f"{general['baseline']:.1f}", display=False)
glue("l3_ppl_last", f"{general[last_loop]:.1f}", display=False)
glue("l3_ppl_control", f"{general['control']:.1f}" if "control" in general else "（対照なし）", display=False)
glue("l3_ppl_direction", "大きくなっており、一般的な文章の予測が悪くなっています" if general[last_loop] > general["baseline"] else
     "大きくなっていません", display=False)

# %% [markdown]
# **このページの実行（モデル {glue:text}`l3_model`）で分かったこと**
#
# - **学習の効果**: 正答率は学習前の {glue:text}`l3_base_acc` から、反復0（初回 SFT）で {glue:text}`l3_iter0_acc` になりました。
#   同じ15問で対にした差の判定は「{glue:text}`l3_first_verdict`」です。
# - **反復の効果**: {glue:text}`l3_iter_verdicts`。{glue:text}`l3_iter1_note`
# - **忘却**: 前の段階で解けていたのに有意に悪化した質問は、{glue:text}`l3_forgotten`。
#   リプレイに選ばれなかった質問ほど忘れやすいかどうかを、9 章の表と見比べてください。
# - **対照との比較**: ループの最後（{glue:text}`l3_last_stage`、正答率 {glue:text}`l3_last_acc`）と、
#   同じデータ・同じステップ数の通常 SFT（対照、{glue:text}`l3_control_acc`）の差（対照 − ループ）は {glue:text}`l3_control_diff` で、
#   判定は「{glue:text}`l3_control_verdict`」です。{glue:text}`l3_seed_summary`。
# - **言い換えへの汎化**: {glue:text}`l3_last_stage` の正答率は、学習に使っていない言い換えでは {glue:text}`l3_last_para_acc` です。
# - **タスクの外での忘却**: 一般的な日本語の文章のパープレキシティは、学習前が {glue:text}`l3_ppl_base`、
#   {glue:text}`l3_last_stage` が {glue:text}`l3_ppl_last`（対照は {glue:text}`l3_ppl_control`）でした。
#   学習前より{glue:text}`l3_ppl_direction`。
#
# 自動で差し込んだ数値に加えて、どの設定でも成り立つ見方をまとめます。
#
# - **学習前の評価がないと、学習の効果の大きさは分かりません。** 元の実験はここを測らなかったため、
#   「反復0 → 反復2 で 73.3% → 80.0%」という差だけが見えていました。
# - **反復の効果は、N 回の生成と、対にした差の信頼区間がないと判断できません。** 1問1回の評価では、0.79 と 0.81 の違いで
#   正答・誤答が入れ替わります（元の実験 §12.3）。
# - **ループが通常の SFT より良いとは限りません。** 誤答の修正データが初回学習データの一部である場合、
#   ループは「一部の質問だけを追加で学習する」ことになり、同じステップ数を全データに使う通常の SFT（対照）と
#   比べないと、反復の効果なのか単に学習量が増えた効果なのかを区別できません。
#   ループが有利になりうるのは、採点が安く正確で、修正データが初回学習データにない新しい情報を含み、
#   しかも全データを学習し続ける余裕がない場合です。
# - **平均が上がっても、一部の質問を忘れていることがあります。** だから質問ごとの変化と、リプレイの有無の比較を見ます。
# - **すべての数値は採点者の判定の上に成り立っています。** 採点者の誤り（元の実験のトラネキサム酸の例）は、
#   そのまま学習データの選択に入り込みます。

# %% [markdown]
# ## 12. 測定結果の確認
#
# このページが壊れていないことを、測った値で確かめます（CI でもこのセルが実行されます）。
# 閾値は tiny モデルで測った値に余裕を持たせたものです。

# %% tags=["remove-input"]
ov = result.overall("original").set_index("stage")
base, it0 = ov.loc["baseline"], ov.loc["iter0"]
assert (result.grades.groupby(["stage", "split"]).size() > 0).all(), "採点結果のない段階・質問の種類があります"
n_orig = result.grades[(result.grades["stage"] == "iter0") & (result.grades["split"] == "original")]
assert len(n_orig) == len(data.symptoms) * config.n_samples, "元の質問のどれかで、採点済みの回答が N 個ありません"
# tiny・rubric・seed 0 で測った値（quick: 平均スコア 0.066 → 0.420、2026-11-30）に余裕を持たせた閾値です
assert it0["mean"] - base["mean"] >= 0.2, f"平均スコアの上昇が小さすぎます: {base['mean']:.3f} -> {it0['mean']:.3f}"
# 学習前 → 反復0 の判定は、対にした差の区間から（区間の重なりではなく）
assert page_comparisons[("リプレイあり", "baseline", "iter0")].verdict.verdict == "better", "反復0 で良くなっていません"
if "control" in result.stages:
    steps = result.training.set_index("stage")["steps"]
    assert steps["control"] == steps[config.iteration_stages].sum(), "対照のステップ数がループの合計と違います"
print(f"baseline {base['accuracy']:.1%} -> iter0 {it0['accuracy']:.1%}: OK")

# %% [markdown]
# ## 13. 結果をレポートに書き出す
#
# 実行レポート（コースの「実行状況」ページ）に載せるため、表・グラフ・設定をファイルに書き出します。
# `python -m course_lib run` から実行されたときは書籍のフォルダに、手元で実行したときは実行フォルダの `report/` に保存されます。

# %%
from course_lib.level3.report import write_level3_report

report_files = write_level3_report(result, no_replay=no_replay, agreement=rubric_agreement.summary(),
                            notebook_seconds=time.perf_counter() - t_start)
print("書き出したファイル:", ", ".join(p.name for p in report_files.values()))

# %% [markdown]
# ## 練習問題
#
# **基本**（数秒）: N を 3 分の 1 に減らすと（30 → 10）、反復0 の正答率の信頼区間の幅はどう変わるでしょうか。予想してから確かめましょう。
#
# ### 解答例
#
# ループを回し直さなくても、保存済みの回答から各質問の最初の N/3 個だけを使えば、N を減らしたときの区間を計算できます。

# %% tags=["hide-cell"]
ex_grades = result.stage_grades("iter0")
ex_rows = []
for ex_n in (max(2, config.n_samples // 3), config.n_samples):
    ex_overall = summarise(ex_grades[ex_grades["sample"] < ex_n]).overall
    ex_rows.append({"N": ex_n, "正答率": f"{ex_overall['accuracy']:.1%}",
                    "質問単位の区間の幅": f"{ex_overall['accuracy_hi'] - ex_overall['accuracy_lo']:.3f}",
                    "回答だけのばらつきの区間の幅": f"{ex_overall['accuracy_within_hi'] - ex_overall['accuracy_within_lo']:.3f}"})
display(pd.DataFrame(ex_rows).style.hide(axis="index"))

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 回答だけのばらつきによる幅は、おおよそ $1/\sqrt{N}$ に比例して広がります。
# 一方、質問単位の区間には「質問ごとの難しさの違い」も入っているので、N を増やしても 15問という数で決まる幅より狭くはなりません。
# N を 3 倍にしても、質問単位の区間は 1/√3 にはならない、というのがこの問題のポイントです。
# ```
#
# **発展**（数秒 ＋ 回し直すなら数分）: 合格の基準 `pass_accuracy` を 0.8 から 0.5 に緩めると、修正データの件数はどう変わるでしょうか。
# また、反復1 の結果と対照（control）との差はどうなるでしょうか。
#
# ### 解答例
#
# 修正データの件数は、保存済みの反復0 の採点結果に選択の関数を当てるだけで分かります。

# %% tags=["hide-cell"]
ex_per_q = summarise(result.stage_grades("iter0"), n_boot=1).per_question
ex_sizes = []
for ex_bar in (0.8, 0.5):
    ex_it = build_iteration_data(ex_per_q, data, config.replay_ratio, ex_bar, seed=config.seed + 1)
    ex_sizes.append({"合格の基準（pass_accuracy）": f"{ex_bar:.1f}", "不合格の質問": len(ex_it.failed), "修正データ": len(ex_it.corrective),
                     "リプレイ": len(ex_it.replay)})
display(pd.DataFrame(ex_sizes).style.hide(axis="index"))

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 基準を緩めると不合格の質問が減り、修正データも減ります（上の表）。反復のステップ数が減るので、
# 対照も同じだけ短くなります。反復1 の正答率と対照との差がどうなるかは、ループを回し直さないと分かりません。
# 次のコードで確かめられます（tiny モデル・CPU で数分。N やシードを変えたときも同じく、ループ全体が計算し直されます）。
#
# ~~~python
# from course_lib.level3.loop import run_loop
#
# loose = run_loop(replace(config, pass_accuracy=0.5), loaded, grader)
# loose_cmp = compare_stages({(a, b): (loose.summaries[(a, "original")], loose.summaries[(b, "original")])
#                             for a, b in loose.stage_pairs()})
# display(comparison_table(loose_cmp, loose.config, {s: i.get("replayed", []) for s, i in loose.stage_info.items()}))
# ~~~
# ```
#
# ## まとめ
#
# - 自己改善ループを、学習前の評価・N 回の生成・信頼区間・検定つきで実行しました。
# - 反復の効果は、信頼区間と対照（同じ計算量の通常 SFT）と並べて初めて判断できます。
# - 言い換えでの評価と採点者の信頼性の確認は、「本当に良くなったのか」を問うための道具です。
# - 結果は段階ごとにディスクに保存され、中断しても採点費用を二重に払わずに再開できます。

# %% tags=["remove-cell"]
# 実行状況ページの「時間の内訳」のために、学習・生成・採点などにかかった秒数をファイルに書き出します。
from course_lib.timing import write_breakdown

write_breakdown("level3_loop");  # 「;」: 戻り値（ファイルの場所）を表示しない
