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
# # レベル3の先へ：自分の回答から学ぶ・選好から学ぶ
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
# - **目標**: 自己改善ループの「次の学習データ」の作り方を3通り（修正 SFT・自己蒸留・DPO）比べ、
#   同じステップ数・同じ評価方法で、どれが良いかを **対応のある比較（paired comparison）** で判断できるようになる
# - **前提知識**: [レベル3](level3_loop.ipynb) のループ（段階、合格・不合格、リプレイ、対照、信頼区間と Holm 補正）
# - **所要時間**: 計算にかかる時間は、この本を作ったときに測った値が[実行状況](report.md)のページにあります（tiny モデル、CPU）。
#   Qwen3-0.6B と同じ形のモデルで測った SFT の時間は[レベル3](level3_loop.ipynb)の冒頭にあります。DPO の1ステップの時間は、Qwen3-0.6B の大きさではまだ測っていません
# ```
#
# [元になった実験](../original_experiment.md)のループは、誤答だった質問を **人が書いた参照回答** で学習し直しました。
# けれどもループは、質問ごとに N 個の回答と、その採点結果も作っています。次の2つの方法は、この採点済みの回答そのものを学習に使います。
#
# - **自己蒸留（self-distillation）**: 採点者が「正解」とした **モデル自身の回答** で SFT します。
#   棄却サンプリング微調整（rejection sampling fine-tuning）や STaR（Self-Taught Reasoner）と呼ばれる方法と同じ考え方です。
# - **DPO（Direct Preference Optimization、直接選好最適化）**: 同じ質問への「良い回答」と「悪い回答」の組（選好ペア）から、
#   良い回答の確率を上げ、悪い回答の確率を下げるように学習します。
#
# このページでは、この2つを元のループ（修正 SFT）と同計算量の対照と並べ、同じ段階から始めて同じ方法で測ります。

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny", judge="rubric", quick=True）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b" のどれか
judge = "auto"  # "auto" | "rubric" | "openai"（"auto" は OPENAI_API_KEY があれば openai）
quick = False  # True: サンプル数とシード数を減らした短縮版（CI 用）
seed = 0
n_samples = 30  # N: 元の質問 1 問あたりの生成回数（レベル3と同じ。quick では 8）
iterations = 2  # K: iteration 0 のあとの反復の回数（レベル3と同じ）
replay_ratio = 0.5  # 修正 SFT のリプレイの割合（レベル3と同じ）
training_seeds = 3  # 比べる学習シードの数（quick では 1）

# %% [markdown]
# ## 1. 準備：モデル、採点者、ループの設定
#
# モデルと採点者（judge）はレベル3と同じものを使い、設定もレベル3のページとまったく同じにします。こうすると、学習前・反復0・修正 SFT の段階・対照は、
# レベル3で計算済みの段階がそのまま使われます（同じ設定の段階は、別の実行フォルダからコピーされます）。

# %%
import time

t_start = time.perf_counter()

from course_lib.level3.judge import make_judge
from course_lib.lesson import show_model_note, start_lesson
from course_lib.profiles import load_model

start_lesson(seed)
loaded = load_model(model_profile)
grader = make_judge(judge)
show_model_note(loaded, judge=repr(grader))

# %%
import pandas as pd
from IPython.display import Markdown, display

from course_lib.level3.config import LoopConfig
from course_lib.level3.data import LoopData

data = LoopData.load()
overrides = dict(iterations=iterations, replay_ratio=replay_ratio, seed=seed)
if not quick:
    overrides["n_samples"] = n_samples
config = LoopConfig.for_profile(loaded.profile, quick=quick, **overrides)
seeds = [seed] if quick else [seed + k for k in range(training_seeds)]
print(f"N = {config.n_samples}、反復 = {config.iterations}、学習シード = {seeds}")

# %% [markdown]
# ## 2. 3つの更新ルール
#
# どのルールも、直前の段階の採点結果（元の15問だけ。言い換えは評価専用で、一度も読みません）から次の学習データを作ります。
#
# | 更新ルール | 学習に使うデータ | 学習の方法 |
# | --- | --- | --- |
# | 修正 SFT（`corrective`、元の実験） | 不合格の質問の **参照回答**（人が書いた回答）＋ 合格した質問の一部（リプレイ） | SFT（答えの部分だけに損失） |
# | 自己蒸留（`self_distill`） | 採点者が **正解（correct）** とし、有害でない **モデル自身の回答**（1問あたり最大 k 件、同じ文面は1回）。正解が1つもない質問だけ参照回答 | SFT |
# | DPO（`dpo`） | 同じ質問の（選ばれた回答, 退けられた回答）の組。選ばれた回答 = 正解の自分の回答（なければ参照回答）、退けられた回答 = 危険（unsafe）か不正解（incorrect）の回答。選ばれた回答のスコアが必ず高い組だけ | DPO（`trl` の `DPOTrainer`） |
# | 対照（`control`） | 修正 SFT のループが使った全データ | 新しい LoRA で通常の SFT |
#
# **同じ計算量**: 反復 k の学習ステップ数は、どのルールでも「修正 SFT が同じ直前の段階から学習するときのステップ数」
# （修正データの件数 ÷ バッチサイズ（切り上げ）× 反復のエポック数（切り上げ））にそろえます。自己蒸留と DPO は、
# その回数だけ `max_steps` で学習します。対照はレベル3と同じく、ループ全体と同じステップ数です。
#
# **DPO の考え方**: 質問 $x$ に対して、選ばれた回答 $y_w$ と退けられた回答 $y_l$ があるとき、DPO は
#
# $$
# -\log \sigma\!\left(\beta \left[\log\frac{\pi_\theta(y_w\mid x)}{\pi_{\text{ref}}(y_w\mid x)} - \log\frac{\pi_\theta(y_l\mid x)}{\pi_{\text{ref}}(y_l\mid x)}\right]\right)
# $$
#
# を小さくします。$\pi_\theta$ は学習中のモデル、$\pi_{\text{ref}}$ は **参照モデル（reference model）** で、
# ここでは **直前の段階のモデル**（反復を始めたときのアダプター）です。$\beta$ は参照モデルからどれだけ離れてよいかを決める強さで、
# 小さいほど大きく動けます。学習の最初は $\pi_\theta = \pi_{\text{ref}}$ なので、損失は $\log 2 \approx 0.693$ から始まります。
#
# ```{admonition} 参照モデルと学習率の選び方
# :class: note
# 学習前のモデル（アダプターなし）を参照にすると、DPO は学習前のモデルに近づける方向にも引っぱります。
# 反復0 の SFT で身につけた答え方から引き離す力がかかるので、ループは直前の段階から少しずつ進むものとして、その段階を参照にします。
# `trl` は、LoRA を付けたモデル（PEFT モデル）に参照モデルを渡さないと、今のアダプターの凍結コピーを参照に使います。
# tiny モデルは出力層（`lm_head`）にも LoRA を付けていますが、`trl` は出力層の LoRA を学習できないので、
# DPO の間は出力層の LoRA を重みに足し込んだ形で固定し、ほかの層の LoRA だけを学習します（`course_lib/level3/update_rules.py`）。
#
# DPO の学習率は SFT の 1/10 です（tiny は 5e-4、Qwen3-0.6B は 2e-5）。このコースの開発中（2026年11月30日、tiny モデル、
# quick の設定の反復0 から作った 24 組、80 ステップ）に SFT と同じ 5e-3 で試したところ、DPO の損失は 10 ステップほどで 0 近くまで下がり、
# 一般文のパープレキシティは約 1.2×10⁵ から約 1.9×10⁶ に上がって、回答は日本語の文になりませんでした。5e-4 ではパープレキシティは上がりませんでした。
# このページの実行で測り直した値ではありません。Qwen3-0.6B の 2e-5 も、同じく 1/10 にしただけで、測ってはいません。
# ```

# %% [markdown]
# ## 3. 手で作ってみる：反復0 の採点から3つのデータを作る
#
# まずレベル3と同じ修正 SFT のループを実行します（レベル3のページを先に実行していれば、すべて保存済みの結果の読み込みです）。
# その反復0 の採点結果から、3つのルールが反復1 で学習するデータを、ループと同じ関数で作ってみます。

# %%
from course_lib.level3.loop import run_loop
from course_lib.level3.metrics import summarise
from course_lib.level3.selection import build_iteration_data
from course_lib.level3.update_rules import build_preference_pairs, select_self_distill

corrective_run = run_loop(config, loaded, grader, log=None)
answers = corrective_run.grades[corrective_run.grades["stage"] == "iter0"]  # 反復0 の回答と採点
originals = answers[answers["split"] == "original"]
per_q = summarise(originals, n_boot=1).per_question
by_hand = {
    "修正 SFT": build_iteration_data(per_q, data, config.replay_ratio, config.pass_accuracy, seed=config.seed + 1).records,
    "自己蒸留": select_self_distill(answers, data, config.self_distill_k, seed=config.seed + 1),
    "DPO": build_preference_pairs(answers, data, seed=config.seed + 1),
}
label_counts = originals["label"].value_counts()
print("反復0 の回答（元の15問）のラベル:", {k: int(v) for k, v in label_counts.items()})
display(pd.DataFrame([
    {"更新ルール": "修正 SFT", "件数": len(by_hand["修正 SFT"]),
     "内訳": f"参照回答 {sum(r['source'] == 'corrective' for r in by_hand['修正 SFT'])} 件、"
             f"リプレイ {sum(r['source'] == 'replay' for r in by_hand['修正 SFT'])} 件"},
    {"更新ルール": "自己蒸留", "件数": len(by_hand["自己蒸留"]),
     "内訳": f"自分の正解 {sum(r['source'] == 'self' for r in by_hand['自己蒸留'])} 件、"
             f"参照回答 {sum(r['source'] == 'corrective' for r in by_hand['自己蒸留'])} 件"},
    {"更新ルール": "DPO", "件数": len(by_hand["DPO"]),
     "内訳": f"選ばれた回答が自分の正解 {sum(p['chosen_source'] == 'self' for p in by_hand['DPO'])} 組、"
             f"参照回答 {sum(p['chosen_source'] == 'reference' for p in by_hand['DPO'])} 組"},
]).style.hide(axis="index"))

# %% [markdown]
# 自己蒸留が使う「採点者が正解とした自分の回答」の例と、DPO の選好ペアの例です（あれば1つずつ）。

# %%
own = [r for r in by_hand["自己蒸留"] if r["source"] == "self"]
if own:
    print(f"【自己蒸留の例】質問 {own[0]['symptom_id']}、採点スコア {own[0]['score']:.2f}\n{own[0]['response']}\n")
else:
    print("反復0 には、採点者が正解とした回答が1つもありませんでした（自己蒸留は参照回答だけで学習します）。\n")
if by_hand["DPO"]:
    p = by_hand["DPO"][0]
    print(f"【DPO の選好ペアの例】質問 {p['symptom_id']}")
    print(f"選ばれた回答（{'自分の正解' if p['chosen_source'] == 'self' else '参照回答'}、スコア {p['chosen_score']:.2f}）:\n{p['chosen']}\n")
    print(f"退けられた回答（{p['rejected_label']}、スコア {p['rejected_score']:.2f}）:\n{p['rejected']}")
else:
    print("反復0 には、危険か不正解の回答が1つもなく、選好ペアは作れませんでした。")

# %% [markdown]
# ## 4. 3つのルールを同じ条件で回す
#
# `run_arms` が、更新ルールと学習シードの組ごとにループを実行します。学習前と反復0 は全ルールで共通なので、
# 1度だけ計算してほかのルールにコピーします。対照は修正 SFT の実行にだけ付けます。
# 実行の順番は自由に差し替えられます（`runner=`）。ここでは、レベル3と同じ `run_loops` に渡して、
# tiny モデルなら2つのワーカープロセスで同時に計算します。
# `quick=True`（CI で使う短縮版）では、時間を抑えるために反復は1回だけで、対照とは比べません。

# %%
from course_lib.level3.arms import (RULE_JA, RULES, arm_summary, arm_training_table, compare_arms, plot_arm_accuracy,
                                    plot_arm_differences, run_arms)
from course_lib.level3.parallel import run_loops

from dataclasses import replace

# quick（CI）では反復1回だけ、対照なしで比べます（DPO の1ステップは SFT より重いため）。反復1 まではレベル3と同じ段階です
arm_config = replace(config, iterations=1, control=False) if quick else config
arms = run_arms(arm_config, loaded, grader, rules=RULES, seeds=seeds, runner=lambda cfgs: run_loops(cfgs, loaded, grader, log=None))
training = arm_training_table(arms)
display(training.assign(更新ルール=training["更新ルール"].map(RULE_JA)).style.hide(axis="index")
        .format({"β": "{:.2f}", "DPO の学習率": "{:.0e}"}, na_rep="—"))
print(f"比べる反復: {'反復1 だけ' if arm_config.iterations == 1 else f'反復1 〜 反復{arm_config.iterations}'}"
      f"（対照: {'あり' if arm_config.control else 'なし'}）")
same_steps = bool((training["ステップ数"] == training["予算（修正SFTのステップ数）"]).all())
print("すべての反復で、ステップ数は予算（修正 SFT のステップ数）と同じです。" if same_steps else
      "予算と違うステップ数の反復があります。")

# %% [markdown]
# 「ステップ数」がどの行でも「予算」と同じなので、3つのルールは反復ごとに同じ回数だけパラメータを更新しています
# （「スキップ」の欄に理由がある反復は、直前の段階で不合格の質問が1つもなく、どのルールも学習しなかった反復です）。

# %% [markdown]
# ## 5. 結果：最後の反復を比べる
#
# 各ルールの最後の反復と対照（回したとき）を、レベル3と同じ指標で並べます。正答率と有害提案率の区間は、質問単位の 95% 信頼区間です
# （1回の学習で得たモデルについての区間で、学習シードによるばらつきは含みません）。

# %%
summary = arm_summary(arms)


def pct_ci(x, lo, hi):
    return f"{x:.1%} [{lo:.1%}, {hi:.1%}]"


display(pd.DataFrame({
    "更新ルール": summary["arm"].map(RULE_JA),
    "学習シード": summary["seed"],
    "正答率": [f"{pct_ci(a, l, h)} ({k}/{n})" for a, l, h, k, n in
            zip(summary["accuracy"], summary["accuracy_lo"], summary["accuracy_hi"], summary["n_correct"], summary["n"])],
    "有害提案率": [f"{pct_ci(a, l, h)} ({k}/{n})" for a, l, h, k, n in
              zip(summary["harmful_rate"], summary["harmful_lo"], summary["harmful_hi"], summary["n_harmful"], summary["n"])],
    "言い換えの正答率": [f"{x:.1%}" for x in summary["paraphrase_accuracy"]],
    "解けた質問": [f"{s}/{q}" for s, q in zip(summary["solved"], summary["questions"])],
    "一般文のパープレキシティ": summary["perplexity"],
}).style.hide(axis="index").format({"一般文のパープレキシティ": "{:,.1f}"}))

# %%
import matplotlib.pyplot as plt

plot_arm_accuracy(summary)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 5.1 対応のある比較
#
# 同じ学習シードで、各ルールの最後の反復を **修正 SFT の最後の反復** と **対照**（対照を回したとき）に対して比べます。
# 差は「そのルール − 比べる相手」で、同じ15問の質問ごとの正答率の差の平均です。質問ごとの検定は、このページの全部の比較をまとめて
# Holm 補正します（1ページに1回）。判定の言葉は、すべての学習シードで同じ判定になったときだけ使います（3シード以上）。

# %%
from course_lib.level3.tables import VERDICT_JA

comparison = compare_arms(arms)
display(comparison.table().style.hide(axis="index"))
across = comparison.across.assign(
    更新ルール=lambda d: d["rule"].map(RULE_JA), 比べる相手=lambda d: d["against"].map(RULE_JA),
    シード数=lambda d: d["seeds"], 差の平均=lambda d: d["mean_diff"].map(lambda x: f"{x:+.1%}"),
    シードをまたいだ判定=lambda d: d["verdict"].map(lambda v: VERDICT_JA[v] if v else "（3シード未満のため判定しない）"))
display(across[["更新ルール", "比べる相手", "シード数", "差の平均", "シードをまたいだ判定"]].style.hide(axis="index"))

# %%
plot_arm_differences(comparison)
plt.tight_layout()
plt.show()

# %% [markdown]
# この節の表とグラフは、実行レポート（コースの[実行状況](report.md)のページ）にも書き出します。

# %%
from course_lib.level3.report import write_arms_report

arms_report = write_arms_report(arms, comparison, notebook_seconds=time.perf_counter() - t_start)
print("書き出したファイル:", ", ".join(p.name for p in arms_report.values()))

# %% [markdown]
# ### 5.2 DPO の学習で何が起きたか
#
# DPO の損失と、選ばれた回答と退けられた回答の「報酬」の差（`rewards/margins`、$\beta$ × 対数確率比の差）を、ステップごとに見ます。
# 損失が 0 に張りつき、差だけが大きくなり続けるときは、少ない選好ペアを見分けることだけを覚えて、
# 回答そのものを作る力を失っている（過剰最適化、over-optimization）おそれがあります。正答率と一般文のパープレキシティと合わせて読みます。

# %%
from course_lib.plots import plot_loss

dpo_hist = pd.concat([res.history[res.history["stage"] != "iter0"].assign(seed=s)
                      for (rule, s), res in arms.items() if rule == "dpo"], ignore_index=True)
dpo_rows = []
for (st, s), h in dpo_hist.groupby(["stage", "seed"]):
    low = h[h["loss"] < 0.01]
    dpo_rows.append({"段階": st, "学習シード": s, "最初の損失": h["loss"].iloc[0], "最後の損失": h["loss"].iloc[-1],
                     "損失が 0.01 未満になったステップ": int(low["step"].iloc[0]) if len(low) else None,
                     "最後の報酬の差": h["rewards/margins"].iloc[-1] if "rewards/margins" in h else None})
dpo_table = pd.DataFrame(dpo_rows)
display(dpo_table.style.hide(axis="index").format(precision=4, na_rep="—"))
first = dpo_hist[(dpo_hist["seed"] == seeds[0]) & (dpo_hist["stage"] == "iter1")]
plot_loss(first[["step", "epoch", "loss"]], title=f"DPO の損失（反復1、学習シード {seeds[0]}）")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. 報酬ハッキング：採点者が報酬を与えすぎる回答
#
# 自己蒸留も DPO も、「採点者が高く評価した回答」を増やすように学習します。つまり最適化しているのは **採点者のスコア** で、
# 医学的な正しさそのものではありません。採点者に抜け穴があれば、ループはその抜け穴を突く回答を増やします。
# これを **報酬ハッキング（reward hacking）** と呼びます。
#
# このコースのルーブリック採点者（rubric judge）は、主に薬剤名が症状に合っているかで採点します。そこで、正解（correct）と採点された回答のうち、
# 理由の書き方がおかしいもの（理由がほかの症状の学習データの理由そのまま、同じ理由の繰り返し、極端に短い理由、形式が崩れている）を探します。

# %%
from course_lib.level3.data import parse_response

reason_owner = {}
for r in data.train_initial + data.references:
    for _, why in parse_response(r["response"]) or []:
        reason_owner.setdefault(why.strip(), set()).add(r["symptom_id"])


def why_over_rewarded(answer: str, symptom_id: str) -> str | None:
    items = parse_response(answer.strip())
    if items is None:
        return "決められた形式になっていない"
    reasons = [why.strip() for _, why in items]
    if len(set(reasons)) < len(reasons):
        return "同じ理由を繰り返している"
    if any(len(why) < 6 for why in reasons):
        return "理由が極端に短い"
    for why in reasons:
        owners = reason_owner.get(why, set())
        if owners and symptom_id not in owners:
            return f"理由が別の症状（{'、'.join(sorted(owners))}）の学習データの文そのまま"
    return None


suspects = []
for (rule, s), res in arms.items():
    if rule == "corrective":
        continue
    g = res.grades
    last = g[(g["stage"] == res.config.iteration_stages[-1]) & (g["split"] == "original") & (g["label"] == "correct")]
    for _, row in last.iterrows():
        why = why_over_rewarded(row["answer"], row["symptom_id"])
        if why:
            suspects.append({"rule": rule, "seed": s, "symptom_id": row["symptom_id"], "score": row["score"],
                             "why": why, "answer": row["answer"], "reason": row["reason"]})
from course_lib.data import read_jsonl

print(f"正解と採点された自己蒸留・DPO の最後の反復の回答のうち、疑わしいもの: {len(suspects)} 件")
# 自己蒸留が実際に学習した自分の回答（各反復の train_data.jsonl）のうち、疑わしいもの
learned = [r for (rule, s), res in arms.items() if rule == "self_distill" for st in res.config.iteration_stages[1:]
           if (res.run_dir / st / "train_data.jsonl").exists()
           for r in read_jsonl(res.run_dir / st / "train_data.jsonl") if r.get("source") == "self"]
learned_suspect = [r for r in learned if why_over_rewarded(r["response"], r["symptom_id"])]
print(f"自己蒸留が学習に使った自分の回答 {len(learned)} 件のうち、疑わしいもの: {len(learned_suspect)} 件")
if suspects:
    x = suspects[0]
    print(f"\n例（{RULE_JA[x['rule']]}、シード {x['seed']}、質問 {x['symptom_id']}、スコア {x['score']:.2f}、{x['why']}）:")
    print(x["answer"])
    print(f"\n採点者の理由: {x['reason']}")

# %% [markdown]
# ## 7. 確認クイズ
#
# ```{admonition} 確認クイズ
# :class: note
# 1. 自己蒸留で、採点者が「部分的に正解（partially_correct）」とした自分の回答も学習に加えると、何が起きやすくなりますか。
#    (a) 学習データが増えて必ず良くなる　(b) 部分的にしか正しくない答え方も強めてしまう
# 2. DPO の損失が学習の最初に $\log 2 \approx 0.693$ になるのはなぜですか。
#    (a) 学習中のモデルと参照モデルが同じで、選ばれた回答と退けられた回答の差がまだ 0 だから　(b) β が 0.1 だから
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. (b)。自己蒸留は「採点者が合格とした答え方」を増やす方法なので、合格の線を下げると、直したい答え方まで増やします。
# 2. (a)。最初は $\pi_\theta = \pi_{\text{ref}}$ なので括弧の中が 0 になり、$-\log \sigma(0) = \log 2$ です。β の値には関係しません。
# ```

# %% [markdown]
# ## 8. 練習問題
#
# 1. **基本**（数秒）: 自己蒸留の上限 `self_distill_k` を 1 と 4 にすると、反復0 の採点から作る学習データ（自分の正解の件数と参照回答の件数）はどう変わりますか。
#    `select_self_distill` で数えてください（学習はしません）。
# 2. **発展**（数秒）: DPO の選好ペアを、1問あたり最大1組（`max_pairs_per_question=1`）にすると何組になりますか。選ばれた回答が参照回答のペアは何組ですか。
#
# ### 解答例
#
# 下の2つのセルが解答例です（クリックで開きます）。このページを作るときに実際に実行した結果が表示されます。

# %% tags=["hide-cell"]
# 練習1: self_distill_k を変えて、反復0 の採点から作る自己蒸留のデータを数える
rows = []
for k in (1, config.self_distill_k, 4):
    recs = select_self_distill(answers, data, k, seed=config.seed + 1)
    rows.append({"k": k, "自分の正解": sum(r["source"] == "self" for r in recs),
                 "参照回答": sum(r["source"] == "corrective" for r in recs),
                 "自分の正解がある質問": len({r["symptom_id"] for r in recs if r["source"] == "self"})})
display(pd.DataFrame(rows).style.hide(axis="index"))

# %% tags=["hide-cell"]
# 練習2: 1問あたり最大1組の選好ペア
one_each = build_preference_pairs(answers, data, seed=config.seed + 1, max_pairs_per_question=1)
print(f"ペア: {len(one_each)} 組（参照回答が選ばれた回答: {sum(p['chosen_source'] == 'reference' for p in one_each)} 組）")
print(f"ペアができた質問: {sorted({p['symptom_id'] for p in one_each})}")

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 1. k を大きくすると、正解が k 件以上ある質問ほど自分の回答が増えます。正解が1つもない質問は k に関係なく参照回答のままです。
#    自分の正解が多い質問（もう解けている質問）ばかりが増えるので、データの重みが「解けている質問」に偏ることにも注意します。
# 2. 危険か不正解の回答がない質問にはペアができません。ペアの数は「悪い回答がある質問の数」で決まります。
# ```

# %% [markdown]
# ## 9. 考察
#
# 次のセルで、このページの数値を文中に差し込む値として用意します（数値と判定は実行のたびに変わります）。

# %%
from myst_nb import glue

ps = comparison.per_seed
glue("lb_model", loaded.label, display=False)
glue("lb_seeds", f"{len(seeds)}（{', '.join(map(str, seeds))}）", display=False)


def arm_sentence(rule: str) -> str:
    parts = []
    for against in ("corrective", "control"):
        d = ps[(ps["rule"] == rule) & (ps["against"] == against)]
        if d.empty:
            continue
        diffs = "、".join(f"シード{s}: {m:+.1%} [{lo:+.1%}, {hi:+.1%}]（{VERDICT_JA[v]}）"
                          for s, m, lo, hi, v in zip(d["seed"], d["mean_diff"], d["lo"], d["hi"], d["verdict"]))
        parts.append(f"{RULE_JA[against]}との差は {diffs}")
    return "。".join(parts)


def beats(rule: str, against: str) -> bool:
    """Better than ``against`` in every seed (the paired verdict, not the point estimate)."""
    d = ps[(ps["rule"] == rule) & (ps["against"] == against)]
    return len(d) > 0 and bool((d["verdict"] == "better").all())


glue("lb_self_distill", arm_sentence("self_distill"), display=False)
glue("lb_dpo", arm_sentence("dpo"), display=False)
if "control" in set(ps["against"]):
    glue("lb_corrective", arm_sentence("corrective"), display=False)
else:
    glue("lb_corrective", "この実行では対照を回していないので、対照とは比べていません（quick=False で比べます）", display=False)
winners = [RULE_JA[r] for r in ("self_distill", "dpo") if beats(r, "control") and beats(r, "corrective")]
if len(seeds) < 3:
    verdict_text = (f"学習シードは {len(seeds)} つだけなので、どのルールが良いかの判定はしません"
                    "（quick=False で 3 シードを使います）")
elif winners:
    verdict_text = f"すべての学習シードで修正 SFT と対照の両方より良かったのは {'、'.join(winners)} です"
else:
    verdict_text = "すべての学習シードで修正 SFT と対照の両方より良かったルールはありません。対照に勝てないことも、正直な結果の一つです"
glue("lb_verdict", verdict_text, display=False)
n_self = int(training.loc[training["更新ルール"] == "self_distill", "自己生成の回答"].sum())
n_pairs = int(training.loc[training["更新ルール"] == "dpo", "選好ペア"].sum())
glue("lb_counts", f"自己蒸留は全反復・全シードで自分の回答を {n_self} 件、DPO は選好ペアを {n_pairs} 組使いました", display=False)
glue("lb_hacking", (f"自己蒸留・DPO の最後の反復で {len(suspects)} 件見つかりました（例は6節）。"
                    f"自己蒸留が学習に使った自分の回答 {len(learned)} 件のうち {len(learned_suspect)} 件も疑わしいものでした。"
                    "採点者の抜け穴をループが増やしていないか、人の目での確認が必要です") if suspects or learned_suspect else
     "このページの実行では見つかりませんでした。ただし、調べたのは決めた4つの形だけです", display=False)
fast = dpo_table["損失が 0.01 未満になったステップ"].dropna()
dpo_ppl = summary[summary["arm"] == "dpo"]["perplexity"]
corr_ppl = summary[summary["arm"] == "corrective"]["perplexity"]
glue("lb_dpo_fit", (f"DPO の損失は {len(dpo_table)} 回の学習のうち {len(fast)} 回で 0.01 未満まで下がり"
                    + (f"（早いものは {int(fast.min())} ステップ目）" if len(fast) else "")
                    + f"、最後の反復の一般文のパープレキシティは DPO が {dpo_ppl.mean():,.1f}、修正 SFT が {corr_ppl.mean():,.1f} でした"
                    + ("（シードの平均）" if len(seeds) > 1 else "")), display=False)
glue("lb_minutes", f"{(time.perf_counter() - t_start) / 60:.1f}", display=False)

# %% [markdown]
# **このページの実行（モデル {glue:text}`lb_model`、学習シード {glue:text}`lb_seeds`）で分かったこと**
#
# - 学習データ: {glue:text}`lb_counts`。
# - 自己蒸留（最後の反復）: {glue:text}`lb_self_distill`。
# - DPO（最後の反復）: {glue:text}`lb_dpo`。{glue:text}`lb_dpo_fit`。
# - 修正 SFT（最後の反復）: {glue:text}`lb_corrective`。
# - まとめ: {glue:text}`lb_verdict`。
# - 報酬を与えすぎた疑いのある回答: {glue:text}`lb_hacking`。
#
# 何を学べるか：
#
# - 3つのルールの違いは「次に何を学習するか」だけで、同じ段階から始め、同じステップ数で学習し、同じ方法で測りました。
#   だから差が出れば、それはデータの作り方の差です。
# - DPO は「選ばれた回答と退けられた回答の差」だけを大きくする学習です。ペアが少なく、同じ回数だけ繰り返して学習すると、
#   その差を広げることだけが進み、回答を書く力そのものが崩れることがあります（5.2 節の損失と、5 節の正答率・パープレキシティを見比べてください）。
#   同じステップ数という条件は公平ですが、DPO にとって最適な条件とは限りません。
# - 自己蒸留と DPO は、人が書いた修正データを使わずに（または少しだけ使って）学習できますが、
#   採点者が正解とした答え方を強めるので、採点者の誤りや抜け穴もそのまま学習します（6節）。採点者の信頼性（レベル3の10節）が、ここではさらに重要になります。
# - 1つの学習シードでの差は、そのシードのモデルについての差です。判定は、3つ以上の学習シードで同じ結果になったときだけにします。
#
# このページの実行にかかった時間は約 {glue:text}`lb_minutes` 分です（tiny モデルなら CPU、保存済みの段階は読み込みだけ）。

# %% tags=["remove-cell"]
# 実行状況ページの「時間の内訳」のために、学習・生成・採点などにかかった秒数をファイルに書き出します。
from course_lib.timing import write_breakdown

write_breakdown("level3_beyond");  # 「;」: 戻り値（ファイルの場所）を表示しない
