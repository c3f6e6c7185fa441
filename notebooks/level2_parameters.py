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
# # レベル2：パラメータを「測って」理解する
#
# ```{admonition} このページで学ぶこと
# :class: tip
# - **目標**: LoRA と学習の主なパラメータ（ランク r・α・対象モジュール・学習率・エポック数・スケジュール・早期終了・ドロップアウト）が
#   何を変えるのかを、説明を読むのではなく**自分で測って**確かめる。1回の学習の結果がどれだけ揺れるか（学習シードによるばらつき）を見たうえで、
#   測った表から出発点になる設定を選べるようになる
# - **前提知識**: レベル0（環境の確認）とレベル1（LoRA の基礎：アダプターを付けて学習し、損失曲線を読む）
# - **所要時間**: 読むのに約60分。計算では、同じ比較を学習シードを変えて繰り返すので、短い学習を何十回も行います。
#   この本を作ったときの実行では {glue:text}`l2_elapsed` でした（学習・生成などの内訳は[実行状況](report.md)のページにあります）。
#   tiny を CPU で動かすときは、1回の掃引（sweep）の学習を2つのワーカープロセス（worker process）で同時に進めます。
#   あなたの環境で実際にかかった時間は、ページの最後に表示します
# ```
#
# LoRA の解説には「ランクを上げると表現力が上がる」「ドロップアウトで過学習を防ぐ」「α は強さを決める」
# といった説明がよく出てきます。このページでは、そうした説明を**一つずつ実験で確かめます**。
# どの実験も、同じデータ・同じ基準設定から**つまみ（パラメータ）を1つだけ**動かし、結果を表とグラフにします
# （実験6の A/B 比較だけは、チュートリアルの比較をそのまま再現するので、3つのつまみを同時に動かします）。
#
# | よく言われること | このページでの確かめ方 |
# | --- | --- |
# | ランク r を上げると表現力が上がる | 実験1：r = 1〜32 でパラメータ数と損失を測る |
# | α（alpha）は適応の強さを決める。実効的な学習率は α/r で決まる | 実験2：r を固定して α を変える／α/r を固定して r を変える／α を固定して r を変える |
# | 対象モジュールを増やすほど包括的に学習できる | 実験3：注意機構だけ／MLP の一部まで／7つすべて |
# | 学習率は低めが慎重で安全。エポックを増やすと深く学習する | 実験4：学習率の掃引（sweep）と、長めの学習での検証損失 |
# | 早期終了（early stopping）とスケジュールで学習が安定する | 実験4：`EarlyStoppingCallback`、linear / cosine / constant（ウォームアップ付き） |
# | ドロップアウト（dropout）は過学習を防ぐ | 実験5：わざと小さくしたデータで、ドロップアウトと早期終了を比べる |
# | 「高表現力」設定と「効率重視」設定では効率重視が得 | 実験6：A（r=16, α=32, 5エポック）と B（r=12, α=24, 4エポック）の A/B 比較 |
#
# 最後に、これらの説明が測定と合ったかを表にまとめ、推奨の出発点を選び、計算コストが r と系列長でどう増えるかを見ます。
# 選んだ出発点は、どの選択にも使わなかった**テスト用**のデータで、最後に一度だけ測ります。
#
# 各節の終わりには、短い **確認クイズ** があります。答えは「答え」をクリックすると開きます。

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny", quick=True）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b" のどれか
quick = False  # True: 実験の格子（grid）と学習シードの数を減らして数分で終える
seed = 0

# %% [markdown]
# ## 0. 準備：モデルとデータ
#
# モデルは**1回だけ**読み込み、すべての実験で使い回します。各実験では、同じベースモデル（base model）に
# 新しい LoRA アダプターを付けて学習し、測り終わったら取り外して（`unload()`）元のベースモデルに戻します。
# 取り外したあと、ベースモデルの重みが1つも変わっていないことも毎回確認します。

# %%
import time

from course_lib.lesson import start_lesson, show_model_note
from course_lib.profiles import load_model

PAGE_START = time.perf_counter()  # ページ全体の計算時間を最後に表示するため
start_lesson(seed)
loaded = load_model(model_profile)
model, tokenizer = loaded.model, loaded.tokenizer
show_model_note(loaded)
TINY = loaded.profile == "tiny"

# %% [markdown]
# ```{admonition} CPU のスレッド数について
# :class: note
# tiny モデルの行列はとても小さいので、CPU のスレッドを増やしても速くなりません。それどころか、
# 同じ CPU をほかのプログラムと分け合っていると、スレッドどうしが待ち合わせて**何倍も遅く**なることがあります。
# 2026年11月23日、このコースを作っていたときに、ほかの作業と共有していた2コアの計算機で tiny モデルの1ステップを測ったところ、
# 1スレッドで 0.22〜0.31 秒、2スレッドで 1.3〜3.4 秒でした（その時の1回の測定で、計算機の混み具合によって変わります）。
# そこで `load_model` は、tiny を CPU で動かすときにスレッドを1つにします。大きなモデルや GPU ではこの設定はしません。
# ```

# %%
import torch

print("PyTorch のスレッド数:", torch.get_num_threads())

# %% [markdown]
# データはレベル1と同じ、「【結論】」「【理由】」の2行で答える指示データ（60件）です。
# そのうち2割を**検証データ（validation data）**として取り分け、学習には使いません。
# 検証損失（validation loss）は「学習していない質問にどれだけ当てはまるか」の目安で、
# 過学習（overfitting）を見つける手がかりになります。
# 形式が身についたかは、学習用に出てこない **別の話題の20問** で確かめます。レベル1で検証用に使った `heldout.jsonl` です。
# このページでは、この20問を設定選びには使わず、形式を測るだけにします。
# レベル1のテスト用（`test.jsonl`）は、ページの終わり近くで、選んだ設定を一度だけ測るときまで読み込みません。

# %%
from course_lib.data import train_val_split
from course_lib.level1 import load_level1

records, heldout = load_level1()  # レベル1と同じ読み込み方（形式の規則も同じものを使います）
train_set, val_set = train_val_split(records, val_fraction=0.2, seed=seed)
print(f"学習: {len(train_set)} 件 / 検証: {len(val_set)} 件 / 別の話題（レベル1の検証用）: {len(heldout)} 件")

# %% [markdown]
# ### 基準設定（reference configuration）
#
# すべての実験はこの設定から出発し、1つのつまみだけを変えます。比較をはっきりさせるため、基準設定ではドロップアウトを 0 にしています
# （ドロップアウトは実験5で調べます）。学習率はモデルによって適した値が大きく違うので、tiny モデルと Qwen3-0.6B で別の値を使います
# （モデルごとに違う設定は `PROFILE_SETTINGS` の表にまとめ、読み込んだモデルの行を `SETTINGS` として使います）。
# `quick=True` のときは、格子を小さくし、エポック数と学習シードの数を減らします。
#
# 設定の名前は、PEFT の `LoraConfig`（`lora_alpha`, `lora_dropout`, `target_modules`）と Transformers の
# `TrainingArguments`（`learning_rate`, `num_train_epochs`, `lr_scheduler_type` など）に合わせてあります
# （ランクだけは `LoraConfig` では `r` ですが、ほかの設定と並べても分かるよう `lora_r` と呼びます）。
# 表の列名も同じ名前なので、ここで覚えた名前をそのまま本物のライブラリで使えます。

# %%
import gc
from functools import partial

import pandas as pd
from myst_nb import glue

from course_lib.level2.explorer import running_in_jupyterlab
from course_lib.level2.final_test import watch_records
from course_lib.level2.figures import bars_start_at_zero, seed_labels, seed_points
from course_lib.level2.seeds import (claim_agreement, compare_across_seeds, compare_rows, losses_by_seed, run_seeds,
                                     seed_table, verdict_table)
from course_lib.level2.sweep import MODULE_SETS, run_sweep
from course_lib.level2.tables import japanese_table
from course_lib.lora import ALL_PROJ_MODULES
from course_lib.stats import BETTER, MIXED_ACROSS_SEEDS, WORSE

# モデルごとに違う設定（tiny は大きな学習率が必要。実験4で確かめます）
PROFILE_SETTINGS = {
    "tiny": {"learning_rate": 1e-2, "per_device_train_batch_size": 8},
    "qwen3-0.6b": {"learning_rate": 2e-4, "per_device_train_batch_size": 8},
}
SETTINGS = PROFILE_SETTINGS[loaded.profile]
BASE_LR = SETTINGS["learning_rate"]
REF = dict(lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=ALL_PROJ_MODULES, learning_rate=BASE_LR,
           num_train_epochs=3 if quick else 5, per_device_train_batch_size=SETTINGS["per_device_train_batch_size"])
SEEDS = [seed + i for i in range(2 if quick else 3)]  # 学習シード（アダプターの初期値と学習データの順番を決める乱数）
LONG_EPOCHS = 8 if quick else 15  # 過学習を見るための長めの学習
ALL_RANKS = [1, 2, 4, 8, 16, 32]
RANKS = [2, 8, 32] if quick else ALL_RANKS
ALPHAS = [4, 16, 64] if quick else [2, 4, 8, 16, 32, 64]
MODULE_KEYS = ["q,v", "all7"] if quick else list(MODULE_SETS)
LR_FACTORS = [0.1, 1, 3] if quick else [0.1, 0.3, 1, 3]

live = running_in_jupyterlab()  # JupyterLab で開いているときだけ進捗バーとウィジェットを出す
gc.freeze()  # 読み込み済みのライブラリとモデルを GC の見回りから外す（各学習の前の gc.collect が速くなる）
cache = {}  # 同じ設定・同じシードの学習は一度だけ（実験どうしで結果を共有）
# tiny を CPU で動かすとき、run_sweep は1回の掃引の学習を2つのワーカープロセスに分けて同時に進めます。
# 各学習は自分でシードを決めるので、表は1つずつ順に学習したとき（workers=1）と同じになります
# watch_records: 実験に渡した学習データと検証データの id を覚えておく（最後に、テスト用を一度も渡していないことを確かめる）
sweep = watch_records(partial(run_sweep, model, tokenizer, progress=live, defaults=REF, seed=seed, cache=cache))


def glue_text(key, text):
    """本文（Markdown）に差し込む文字列を登録する（{glue:text}`key` で本文に入る）。"""
    glue(key, str(text), display=False)


glue_text("l2_seeds", seed_labels(SEEDS))
glue_text("l2_n_seeds", len(SEEDS))
glue_text("l2_n_val", len(val_set))
pd.DataFrame({"値": {**{k: (", ".join(v) if isinstance(v, tuple) else v) for k, v in REF.items()},
                    "学習シード": seed_labels(SEEDS)}})

# %% [markdown]
# ### 学習シードによるばらつきと、判定のしかた
#
# 同じ設定・同じデータでも、LoRA の学習には乱数が入ります。アダプターの行列 $A$ の初期値と、学習データを並べる順番です。
# この乱数の種を**学習シード（training seed）**と呼びます。学習シードを変えるだけで検証損失は動き、その動きは
# 2つの設定の差と同じくらいの大きさになることがあります。1回の学習だけで「r = 16 のほうが良い」と読むと、偶然を読んでいるかもしれません。
#
# そこでこのページでは、比較をすべて学習シード {glue:text}`l2_seeds` の {glue:text}`l2_n_seeds` 通りで繰り返します
# （学習データと検証データの分け方は固定で、検証データはいつも同じ {glue:text}`l2_n_val` 件です）。グラフでは、
# **点が各シードの結果、線がシードの平均**です。
#
# 2つの設定（基準と、比べる設定）の判定は、次の2段階で決めます。
#
# 1. **シードごと（単位は検証データの1件1件）**：検証データの各例について「比べる設定の損失 − 基準の損失」を求め、
#    その平均と、例を選び直すブートストラップ（bootstrap）による95%区間を出します。区間全体が 0 より下なら
#    そのシードでは「良くなる」、0 より上なら「悪くなる」、0 をまたげば「はっきりした差はない」です。
#    この区間が表すのは「たまたまこの {glue:text}`l2_n_val` 件を検証に使ったこと」による揺れで、学習の乱数による揺れは含みません。
# 2. **シードをまたいで（単位はシード）**：すべてのシードが同じ判定のときだけ、その言葉（**良くなる／悪くなる／はっきりした差はない**）を使います。
#    シードによって判定が違えば「**シードによって違う**」とします。
#
# 注意：シードが数個では、シードによるばらつきの大きさをきちんと見積もることはできません。すべてのシードで同じ判定になっても、
# それは「この数のシードでは逆にならなかった」という意味です。また、検証データが少ないので、小さな差は「はっきりした差はない」になります。
# 判定の計算は `course_lib.level2.seeds.compare_across_seeds` にあり、手で計算できる入力でテストしてあります。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 3つの学習シードで比べたところ、2つのシードで「良くなる」、1つのシードで「はっきりした差はない」でした。このページの判定の言葉は何になりますか。
# 2. 各シードの判定に付く95%区間が表している揺れはどれですか。
#    (a) 学習の乱数（アダプターの初期値とデータの順番）による揺れ　(b) どの例をたまたま検証データに使ったかによる揺れ　(c) その両方
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 「シードによって違う」です。判定の言葉（良くなる／悪くなる／はっきりした差はない）は、すべてのシードで同じ判定になったときだけ使います。
# 2. (b) です。区間は検証データの例を選び直して求めるので、学習の乱数による揺れは含みません。そちらは、学習シードを変えて繰り返すことで見ます。
# ```

# %% [markdown]
# ## 実験1：ランク r
#
# LoRA は、元の重み行列 $W$（出力 $d_\text{out}$ × 入力 $d_\text{in}$）を固定したまま、
# 小さな2つの行列 $B$（$d_\text{out} \times r$）と $A$（$r \times d_\text{in}$）だけを学習します。
#
# $$W' = W + \frac{\alpha}{r} B A$$
#
# したがって、1つの層に増えるパラメータは $r \times (d_\text{in} + d_\text{out})$ 個です。**ランク（rank）r** は
# この追加行列の「幅」で、r を2倍にするとパラメータ数もちょうど2倍になります。まず、学習せずに計算だけで数えてみましょう。

# %%
from course_lib.lora import lora_parameter_count, lora_parameter_table, parameter_table_ja

print(f"r=8 のときの内訳（{loaded.label}）")
parameter_table_ja(lora_parameter_table(model, lora_r=8))

# %% [markdown]
# この計算が、PEFT ライブラリの `print_trainable_parameters()` の表示と一致するか確かめます。
# アダプターを付けて表示させ、すぐに取り外します。

# %%
import contextlib
import io

from course_lib.lora import attach_lora

for r, modules in [(8, ALL_PROJ_MODULES), (2, MODULE_SETS["q,v"])]:
    predicted = lora_parameter_count(model, r, modules)
    peft_model = attach_lora(model, lora_r=r, lora_alpha=2 * r, target_modules=modules)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        peft_model.print_trainable_parameters()
    model = peft_model.unload()  # アダプターを外して、元のベースモデルに戻す
    print(f"r={r}, {len(modules)} モジュール")
    print("  PEFT の表示:", shown.getvalue().strip())
    print("  計算        :", predicted)
    assert shown.getvalue().strip() == str(predicted), "計算と PEFT の表示が一致するはず"

# %%
counts = pd.DataFrame([{"lora_r": r, "trainable_params": lora_parameter_count(model, r).trainable,
                        "trainable_pct": lora_parameter_count(model, r).percent} for r in ALL_RANKS])
# 測った事実: パラメータ数は r に比例する（r=1 の r 倍ちょうど）
assert all(counts["trainable_params"] == counts["lora_r"] * counts["trainable_params"].iloc[0]), "r に比例するはず"
assert counts["trainable_params"].is_monotonic_increasing and counts["trainable_params"].is_unique, "r とともに増えるはず"
counts.rename(columns={"lora_r": "r", "trainable_params": "学習可能パラメータ数", "trainable_pct": "モデル全体に対する割合(%)"})

# %% [markdown]
# では実際に学習して、r によって損失がどう変わるかを測ります。α は r の2倍（α/r = 2）に揃えます。
# 「学習損失」と「検証損失」は、学習を終えたモデルで学習データ・検証データ全体の損失を測り直した値です。
# 表は検証損失をシードごとに並べ、右に平均と、シードによる幅（最大 − 最小）を付けています。

# %%
rank_seeds = run_seeds(sweep, [dict(lora_r=r, lora_alpha=2 * r) for r in RANKS], train_set, val_set, SEEDS,
                       desc="rank")
rank_view = seed_table(rank_seeds, "lora_r", "val_loss")
rank_view.insert(1, "学習損失（平均）", seed_table(rank_seeds, "lora_r", "train_loss")["平均"])
rank_view.rename(columns={"lora_r": "r"})

# %%
import matplotlib.pyplot as plt
import seaborn as sns


def loss_long(table, x):
    """各行の学習損失と検証損失を縦長の形にする（seaborn で「種類」ごとに線を引くため）。"""
    return table.melt(id_vars=[x, "seed"], value_vars=["train_loss", "val_loss"], var_name="種類",
                      value_name="損失").replace({"train_loss": "学習損失（train）", "val_loss": "検証損失（validation）"})


def log2_axis(ax, ticks, labels=None):
    """底2の対数目盛の x 軸に、指定した目盛だけを付ける（r や α は点ごとに2倍になるため）。"""
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, labels or [str(t) for t in ticks])
    ax.minorticks_off()


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
sns.lineplot(data=counts, x="lora_r", y="trainable_params", marker="o", ax=ax1)
ax1.set(yscale="log", xlabel="ランク r", ylabel="学習可能パラメータ数", title="パラメータ数は r に比例する")
log2_axis(ax1, ALL_RANKS)
seed_points(ax2, loss_long(rank_seeds, "lora_r"), "lora_r", "損失", hue="種類", jitter=0.08, log2_x=True)
ax2.set(xlabel="ランク r（α = 2r）", title="r と学習後の損失（点：各シード、線：平均）")
log2_axis(ax2, RANKS)
plt.tight_layout()
plt.show()

# %% [markdown]
# r = 8（基準設定）と比べて、検証損失がどう変わったかをシードごとに判定します。各シードの列は
# 「その r の検証損失 − r = 8 の検証損失」の、検証例での平均と95%区間です（負なら r = 8 より低い＝良い）。

# %%
RANK_REF = REF["lora_r"]
rank_verdicts = {f"r={r}（α={2 * r}）": compare_rows(rank_seeds, {"lora_r": RANK_REF}, {"lora_r": r})
                 for r in RANKS if r != RANK_REF}
# r を一番小さいものから一番大きいものへ変えたとき、学習データへの当てはまり（学習損失）はどう変わるか
rank_capacity = compare_rows(rank_seeds, {"lora_r": RANKS[0]}, {"lora_r": RANKS[-1]}, column="train_example_losses")
rank_mean = rank_seeds.groupby("lora_r")["val_loss"].mean()
best_rank = rank_mean.idxmin()

glue_text("l2_r_min", RANKS[0])
glue_text("l2_r_max", RANKS[-1])
glue_text("l2_rank_small", rank_verdicts[f"r={RANKS[0]}（α={2 * RANKS[0]}）"].describe())
glue_text("l2_rank_large", rank_verdicts[f"r={RANKS[-1]}（α={2 * RANKS[-1]}）"].describe())
glue_text("l2_rank_capacity", rank_capacity.describe())
verdict_table(rank_verdicts, "r = 8 と比べて")

# %% [markdown]
# **読み取り方**（このページの実行の値です。括弧の中はシードごとの差）：
#
# - いちばん小さい r = {glue:text}`l2_r_min` では、r = 8 と比べて検証損失が {glue:text}`l2_rank_small`。
#   追加行列の幅が小さすぎると、決められたエポック数では損失が下がりきりません。
# - いちばん大きい r = {glue:text}`l2_r_max` では、r = 8 と比べて検証損失が {glue:text}`l2_rank_large`。
# - 学習データへの当てはまり（学習損失）は、r = {glue:text}`l2_r_min` から r = {glue:text}`l2_r_max` にすると {glue:text}`l2_rank_capacity`。
#
# パラメータ数（と学習に使うメモリ）は r に比例して増えるので、「r を上げれば上げるほど良い」かどうかは、この判定と費用を並べて考えます。
# ただし、この実験では α = 2r なので、r を上げると α も一緒に大きくなります。r の効果（追加行列の幅）と α の効果（倍率）が
# 混ざっていないかを、次の実験2で調べます。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 入力の次元が 128、出力の次元が 384 の層に、r = 4 の LoRA を付けます。増える学習可能パラメータはいくつですか。
# 2. r を 8 から 16 にすると、LoRA のパラメータ数は何倍になりますか。
# 3. 実験1では α = 2r にしました。この置き方だと、「r を上げると良くなった」という結果から何が言えなくなりますか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. $r \times (d_\text{in} + d_\text{out}) = 4 \times (128 + 384) = 2{,}048$ 個です（$A$ が 4 × 128、$B$ が 384 × 4）。
# 2. ちょうど2倍です。パラメータ数は r に比例します（実験1の最初の表で確かめました）。
# 3. r を上げると α も一緒に大きくなるので、追加行列の幅（r）が効いたのか、倍率の元になる α が効いたのかを分けられません。実験2でこれを調べます。
# ```

# %% [markdown]
# ## 実験2：α と α/r のスケーリング
#
# 式 $W' = W + \frac{\alpha}{r} BA$ のとおり、**α（alpha）** は追加分 $BA$ に掛かる倍率 $\alpha/r$ を決めます。
# よく「α は適応の強さを決める」「実効的な学習率は α/r で決まる」と説明されます。これを2つの実験で確かめます。
#
# 1. r = 8 に固定して α を変える（倍率 α/r が変わる）
# 2. r を変えるとき、(a) α/r = 2 に固定する（実験1の表。α = 2r）と (b) α = 16 に固定する（倍率は 16/r）を比べる
#
# 2 の前に注意が1つあります。**r は2つのものを同時に変えます。** 追加行列の幅（容量：表せる変化の種類）と、
# α/r を通した倍率です。(a) では倍率は同じでも容量が変わり、α そのものも r と一緒に大きくなります。(b) では容量と倍率の両方が変わります。
# どちらの条件でも r の効果は1つに切り分けられていない（**交絡 confounding** している）ので、結果は「r を変えるとき、
# α/r と α のどちらを固定すると、r による違いが小さいか」という実用上の問いへの答えとして読みます。

# %%
alpha_seeds = run_seeds(sweep, [dict(lora_alpha=a) for a in ALPHAS], train_set, val_set, SEEDS, desc="alpha")
alpha_view = seed_table(alpha_seeds, "lora_alpha", "val_loss")
alpha_view.insert(1, "α/r", alpha_view["lora_alpha"] / REF["lora_r"])
alpha_view.rename(columns={"lora_alpha": "α（r = 8）"})

# %%
ALPHA_REF = REF["lora_alpha"]
alpha_verdicts = {f"α={a}（α/r={a / RANK_REF:g}）": compare_rows(alpha_seeds, {"lora_alpha": ALPHA_REF}, {"lora_alpha": a})
                  for a in ALPHAS if a != ALPHA_REF}
alpha_mean = alpha_seeds.groupby("lora_alpha")["val_loss"].mean()
best_alpha = int(alpha_mean.idxmin())
alpha_low = alpha_verdicts[f"α={min(ALPHAS)}（α/r={min(ALPHAS) / RANK_REF:g}）"]
alpha_high = alpha_verdicts[f"α={max(ALPHAS)}（α/r={max(ALPHAS) / RANK_REF:g}）"]
glue_text("l2_alpha_min", min(ALPHAS))
glue_text("l2_alpha_max", max(ALPHAS))
glue_text("l2_alpha_low", alpha_low.describe())
glue_text("l2_alpha_high", alpha_high.describe())
glue_text("l2_best_alpha", best_alpha)
verdict_table(alpha_verdicts, "α = 16 と比べて")

# %%
fixed_alpha_seeds = run_seeds(sweep, [dict(lora_r=r, lora_alpha=ALPHA_REF) for r in RANKS], train_set, val_set, SEEDS,
                              desc="fixed alpha")
RATIO_LABEL, ALPHA_LABEL = "α/r = 2 で固定（α = 2r）", f"α = {ALPHA_REF} で固定（α/r = {ALPHA_REF}/r）"
compare = pd.concat([rank_seeds.assign(条件=RATIO_LABEL), fixed_alpha_seeds.assign(条件=ALPHA_LABEL)], ignore_index=True)
compare_view = pd.concat([seed_table(rank_seeds, "lora_r").assign(条件=RATIO_LABEL),
                          seed_table(fixed_alpha_seeds, "lora_r").assign(条件=ALPHA_LABEL)], ignore_index=True)
compare_view.insert(0, "条件", compare_view.pop("条件"))
compare_view.rename(columns={"lora_r": "r"})

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
seed_points(ax1, loss_long(alpha_seeds, "lora_alpha"), "lora_alpha", "損失", hue="種類", jitter=0.08, log2_x=True)
ax1.set(xlabel="α（r = 8 で固定）", title="α を変える（点：各シード、線：平均）")
log2_axis(ax1, ALPHAS, [f"{a}\n(α/r={a / 8:g})" for a in ALPHAS])
seed_points(ax2, compare, "lora_r", "val_loss", hue="条件", jitter=0.08, log2_x=True)
ax2.set(xlabel="ランク r", ylabel="検証損失", title="r を変えるとき、何を固定するか")
log2_axis(ax2, RANKS)
plt.tight_layout()
plt.show()

# %% [markdown]
# 2つの条件の差を、r ごとにシードをまたいで判定します（各シードの列は「α 固定の検証損失 − α/r 固定の検証損失」。
# r = 8 では2つの条件がまったく同じ設定なので除きます）。あわせて、r を変えたときの検証損失の幅（最大 − 最小）をシードごとに比べます。

# %%
scale_verdicts = {f"r={r}": compare_across_seeds(losses_by_seed(rank_seeds, lora_r=r),
                                                  losses_by_seed(fixed_alpha_seeds, lora_r=r))
                  for r in RANKS if r != RANK_REF}


def spread_by_seed(table):
    """シードごとの、r を変えたときの検証損失の幅（最大 − 最小）。"""
    return table.groupby("seed")["val_loss"].agg(lambda v: v.max() - v.min())


spreads = pd.DataFrame({"α/r 固定での幅": spread_by_seed(rank_seeds), "α 固定での幅": spread_by_seed(fixed_alpha_seeds)})
spread_ratio, spread_alpha = spreads["α/r 固定での幅"].mean(), spreads["α 固定での幅"].mean()
alpha_fixed_smaller = int((spreads["α 固定での幅"] < spreads["α/r 固定での幅"]).sum())
biggest_r = max(scale_verdicts, key=lambda k: abs(scale_verdicts[k].mean_diff))
small_gap = max((abs(c.mean_diff) for k, c in scale_verdicts.items() if int(k[2:]) < RANK_REF), default=0.0)
large_gap = max((abs(c.mean_diff) for k, c in scale_verdicts.items() if int(k[2:]) > RANK_REF), default=0.0)
hidden = model.config.hidden_size

glue_text("l2_spread_ratio", f"{spread_ratio:.3f}")
glue_text("l2_spread_alpha", f"{spread_alpha:.3f}")
glue_text("l2_spread_count", f"{alpha_fixed_smaller}/{len(SEEDS)} シード")
glue_text("l2_scale_by_r", "、".join(f"{k}: {c.describe()}" for k, c in scale_verdicts.items()))
glue_text("l2_scale_biggest", f"{biggest_r}（シードの平均で {scale_verdicts[biggest_r].mean_diff:+.3f}）")
glue_text("l2_scale_where", "r による差の多くは、r = 8 より小さな r から来ています" if small_gap >= 2 * large_gap else
          ("r による差の多くは、r = 8 より大きな r から来ています" if large_gap >= 2 * small_gap else
           "差は、r = 8 より小さな r でも大きな r でも出ています"))
glue_text("l2_hidden", hidden)
glue_text("l2_r_share", f"{RANKS[-1] / hidden:.0%}")
glue_text("l2_alpha_advice_data",
          f"このページの測定でも、すべてのシード（{len(SEEDS)} 個）で α 固定のほうが r による差が小さくなりました"
          if alpha_fixed_smaller == len(SEEDS) else
          f"このページの測定では、α 固定のほうが r による差が小さかったのは {alpha_fixed_smaller}/{len(SEEDS)} シードで、"
          "すべてのシードでそうなったわけではありません")
print(spreads.round(3).rename_axis("シード").to_string())
print(f"シードの平均: α/r 固定 {spread_ratio:.3f}、α 固定 {spread_alpha:.3f}")
print(f"r=8 で平均の検証損失が最も低かった α: {best_alpha}（α/r = {best_alpha / 8:g}）")
print(f"tiny の隠れ次元 hidden_size = {hidden}、いちばん大きい r = {RANKS[-1]} はその {RANKS[-1] / hidden:.0%}")
verdict_table(scale_verdicts, "α 固定 − α/r 固定")

# %% [markdown]
# **読み取り方**（このページの実行の値です）：
#
# - r = 8 で α を変えると、いちばん小さい α = {glue:text}`l2_alpha_min` は α = 16 と比べて {glue:text}`l2_alpha_low`、
#   いちばん大きい α = {glue:text}`l2_alpha_max` は {glue:text}`l2_alpha_high`。平均でいちばん良かったのは α = {glue:text}`l2_best_alpha` です。
#   α を大きくすると、学習率を上げたときと同じように1ステップの変化が大きくなり、小さすぎても大きすぎても決められたエポック数では
#   うまく学習できません。α は「強さ」というより、**学習率と掛け合わさる倍率**だと考えると実態に合います。
# - r を変えたときの検証損失の幅は、α/r を固定すると {glue:text}`l2_spread_ratio`、α を固定すると {glue:text}`l2_spread_alpha`
#   （シードの平均）。α 固定のほうが幅が小さかったのは {glue:text}`l2_spread_count` です。
# - ただし、2つの条件の差は r によって違います。r ごとに、α 固定を α/r 固定と比べた判定は {glue:text}`l2_scale_by_r`。
#   差がいちばん大きかったのは {glue:text}`l2_scale_biggest` で、{glue:text}`l2_scale_where`。
#   小さな r では、α/r 固定（α = 2r）だと α そのものがとても小さくなります。下の「1つの見方」のように1ステップの重みの変化が
#   およそ α × 学習率 だとすると、変化が小さいうえに幅も小さいアダプターは、決められたエポック数では学習しきれません
#   （α = 16 に固定すると、小さな r では倍率 16/r が大きくなり、これを補います）。大きな r では逆に α = 2r が大きくなり、
#   上の 1 で α を大きくしすぎたときと同じことが起こりえます。
#   どちらにしても r の効果には容量との交絡があるので、この測定だけから「α/r の説明は間違い」とは言えません。
#
# ```{admonition} 倍率はなぜ r で割るのか：α/r（LoRA）と α/√r（rsLoRA）
# :class: dropdown
# - **LoRA の論文（Hu et al. 2021, §4.1）**：更新 $\Delta W x$ に $\alpha/r$ を掛け、α は r によらない定数とします。
#   Adam で学習するとき、α を調整することは（初期値の大きさを合わせれば）学習率を調整することとほぼ同じなので、
#   論文では **α を最初に試した r の値にして、そのあとは調整しません**。倍率を r で割っておくと、r を変えたときに
#   ハイパーパラメータを調べ直す手間が減る、という設計です。つまり「α を学習率と一緒に一度決め、固定したまま r を変える」のが元の使い方で、
#   「α を固定したほうが r による差が小さい」という測定は、このねらいと同じ向きの結果です。
# - **1つの見方**：Adam は勾配の大きさをならして、各パラメータをだいたい「学習率くらい」ずつ動かします。$BA$ は r 個の項の和なので、
#   r 個の項がそろって同じ向きに動けば、変化は r に比例して大きくなります。$1/r$ を掛けると、それが r によらない大きさに戻ります。
# - **rsLoRA（Kalajdzievski 2023, rank-stabilized LoRA）**：r 個の項がそろわずに足し合わさるなら、和の大きさは r ではなく $\sqrt{r}$ に比例します。
#   rsLoRA の論文は、r を大きくしたときにアダプターの出力と勾配の大きさが潰れも発散もしない倍率を解析し、それが $\alpha/\sqrt{r}$ であることを示しました。
#   $\alpha/r$ では r を大きくするほど倍率が小さくなりすぎ、**勾配が小さくなって学習が遅くなり**、大きな r の利点が出ません。
#   $\alpha/\sqrt{r}$ は r > 1 で $\alpha/r$ の $\sqrt{r}$ 倍なので、**大きな r で倍率を大きく戻して学習を取り戻す**方法です
#   （大きな更新を抑えるための方法ではありません）。PEFT では `LoraConfig(use_rslora=True)` で使えます。発展1で試せます。
# ```
#
# **実務上の結論**：α は学習率と同じように一度調べて決め（このページでは r = 8 で α を振りました）、
# **r を変えるときは α を固定したまま**にします。これは LoRA の論文のやり方で、{glue:text}`l2_alpha_advice_data`。
# 大きな r で学習が遅いと感じたら、rsLoRA（α/√r）を試すか、学習率を調べ直します。
#
# **このモデルでの注意**：tiny モデルの隠れ次元（`hidden_size`）は {glue:text}`l2_hidden` しかありません。いちばん大きい r = {glue:text}`l2_r_max` は
# その {glue:text}`l2_r_share` にもなり、もう「低ランク」とは言えません。このページの r と α の判定は、この小さなモデル・小さなデータでの結果で、
# 隠れ次元が 1024 以上ある実際のモデルにそのまま当てはまるとは限りません。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. r = 8、α = 16 のとき、追加分 $BA$ に掛かる倍率はいくつですか。α = 16 のまま r = 32 にすると、倍率はいくつになりますか。
# 2. LoRA の論文（Hu et al. 2021）では、r を変えるときに α をどう扱いますか。
# 3. rsLoRA が倍率を α/r ではなく α/√r にするのは、どんな問題を防ぐためですか。
#    (a) 大きな r で更新が大きくなりすぎて学習が発散する　(b) 大きな r で倍率が小さくなりすぎて学習が遅くなる
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. α/r = 16/8 = 2 です。r = 32 なら 16/32 = 0.5 になります。
# 2. α は最初に試した r の値にして、そのあとは調整せず固定します（α の調整は学習率の調整とほぼ同じだからです）。
# 3. (b) です。α/r では r を大きくするほど倍率が小さくなり、勾配も小さくなって学習が遅くなります。α/√r は、大きな r で倍率を大きく戻す方法です。
# ```

# %% [markdown]
# ## 実験3：対象モジュール（target modules）
#
# Qwen3 の各層には、注意機構（attention）の4つの射影 `q_proj, k_proj, v_proj, o_proj` と、
# MLP の3つの射影 `gate_proj, up_proj, down_proj` があります。どこに LoRA を付けるかを比べます。
#
# | 名前 | 対象 |
# | --- | --- |
# | `q,v` | `q_proj, v_proj`（LoRA の元の論文が使った組み合わせ） |
# | `attention` | 注意機構の4つ |
# | `attention+gate,up` | 注意機構の4つ ＋ `gate_proj, up_proj`（`down_proj` を除く6つ） |
# | `all7` | 7つすべて（コースの既定） |

# %%
module_seeds = run_seeds(sweep, [dict(target_modules=MODULE_SETS[k]) for k in MODULE_KEYS], train_set, val_set, SEEDS,
                         desc="modules")
params = module_seeds.drop_duplicates("target_modules").set_index("target_modules")["trainable_params"]
module_view = seed_table(module_seeds, "target_modules")
module_view.insert(1, "学習可能パラメータ数", module_view["target_modules"].map(params))
module_view.rename(columns={"target_modules": "対象モジュール"})

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
seed_points(ax, module_seeds, "target_modules", "val_loss")
ax.set_xticks(range(len(MODULE_KEYS)), [f"{k}\n{params[k]:,} 個" for k in MODULE_KEYS])
ax.set(xlabel="対象モジュール（下の数字は学習可能パラメータ数）", ylabel="検証損失",
       title="対象モジュールと検証損失（点：各シード、◆：平均）")
plt.tight_layout()
plt.show()

# %%
vals = module_seeds.groupby("target_modules")["val_loss"].mean()
assert params.loc[MODULE_KEYS].is_monotonic_increasing, "対象を増やすとパラメータ数も増える"
module_verdicts = {k: compare_rows(module_seeds, {"target_modules": MODULE_KEYS[0]}, {"target_modules": k})
                   for k in MODULE_KEYS[1:]}
glue_text("l2_modules", "、".join(f"{k} は {c.describe()}" for k, c in module_verdicts.items()))
verdict_table(module_verdicts, f"{MODULE_KEYS[0]} と比べて")

# %% [markdown]
# **読み取り方**：対象を増やすとパラメータ数が増えます。同じ r・同じエポック数で、`q,v` だけの場合と比べると、
# {glue:text}`l2_modules`（括弧の中はシードごとの検証損失の差）。
# MLP（`gate_proj, up_proj, down_proj`）は行列が大きいので、パラメータ数の増え方も大きくなります。
# 増えたパラメータ数に対して、損失がどれだけ下がったか（費用対効果）も表で見比べてみましょう。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 同じ r のまま、対象を `q,v` から7つすべて（`all7`）に増やします。パラメータ数が大きく増えるのは、注意機構と MLP のどちらの分ですか。それはなぜですか。
# 2. LoRA の元の論文が LoRA を付けたのは、どの射影でしたか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. MLP（`gate_proj, up_proj, down_proj`）の分です。MLP の行列は中間の次元（`intermediate_size`）が大きいので、$r \times (d_\text{in} + d_\text{out})$ も大きくなります。
# 2. 注意機構の `q_proj` と `v_proj` です（このページの `q,v`）。
# ```

# %% [markdown]
# ## 実験4：学習率・エポック数・早期終了・スケジュール
#
# ### 4-1. 学習率（learning rate）の掃引
#
# 基準の学習率の 0.1 倍〜3 倍を、同じエポック数で比べます。

# %%
lr_seeds = run_seeds(sweep, [dict(learning_rate=BASE_LR * f, name=f"×{f:g}") for f in LR_FACTORS], train_set, val_set,
                     SEEDS, desc="lr")
lr_view = seed_table(lr_seeds, "learning_rate")
lr_view.insert(1, "学習損失（平均）", seed_table(lr_seeds, "learning_rate", "train_loss")["平均"])
lr_view.rename(columns={"learning_rate": "学習率"})

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
seed_points(ax, loss_long(lr_seeds, "learning_rate"), "learning_rate", "損失", hue="種類", jitter=0.1, log2_x=True)
ax.set(xscale="log", xlabel="学習率（対数目盛）",
       title=f"学習率と損失（{REF['num_train_epochs']} エポック。点：各シード、線：平均）")
plt.tight_layout()
plt.show()

lr_mean = lr_seeds.groupby("learning_rate")["val_loss"].mean()
best_lr = lr_mean.idxmin()
lr_verdicts = {f"×{f:g}（{BASE_LR * f:g}）": compare_rows(lr_seeds, {"name": "×1"}, {"name": f"×{f:g}"})
               for f in LR_FACTORS if f != 1}
lr_low = lr_verdicts[f"×{min(LR_FACTORS):g}（{BASE_LR * min(LR_FACTORS):g}）"]
lr_high = lr_verdicts[f"×{max(LR_FACTORS):g}（{BASE_LR * max(LR_FACTORS):g}）"]
glue_text("l2_lr_low_factor", f"{min(LR_FACTORS):g}")
glue_text("l2_lr_high_factor", f"{max(LR_FACTORS):g}")
glue_text("l2_lr_low", lr_low.describe())
glue_text("l2_lr_high", lr_high.describe())
print(f"平均の検証損失が最も低かった学習率: {best_lr:g}")
verdict_table(lr_verdicts, "基準の学習率と比べて")

# %% [markdown]
# **読み取り方**：学習率を基準の {glue:text}`l2_lr_low_factor` 倍にすると、検証損失は {glue:text}`l2_lr_low`。
# {glue:text}`l2_lr_high_factor` 倍にすると {glue:text}`l2_lr_high`。
# 学習率が低すぎると、決められたエポック数では損失が下がりきりません（「慎重」というより「進まない」）。
# 高すぎると更新が大きすぎて損失が跳ね、かえって悪くなります。ちょうどよい値は**モデルとデータによって何桁も違う**ので
# （このページの設定でも、tiny は 1e-2、Qwen3-0.6B は 2e-4 から始めます）、ほかの人の設定をそのまま使わず、
# このように数点を測って確かめるのが確実です。

# %% [markdown]
# ### 4-2. エポック数と過学習：検証曲線から「止めどき」を見つける
#
# 同じ設定で長めに（`LONG_EPOCHS` エポック）学習し、エポックごとの学習損失と検証損失を並べます。
# 変化を見やすくするため、ここでは学習率を最後まで一定（constant）にします（学習率を下げていく方法は 4-4 で比べます）。
# 学習損失が下がり続けているのに検証損失が上がり始めたら、それが**過学習の始まり**です。

# %%
long_seeds = run_seeds(sweep, [dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant", name="constant")],
                       train_set, val_set, SEEDS, desc="long")
curves = long_seeds.epoch_curves()
overfit_rows = []
for s, c in curves.groupby("seed"):
    b = int(long_seeds.set_index("seed").loc[s, "best_epoch"])
    at, last = c[c["epoch"] == b].iloc[0], c.iloc[-1]
    overfit_rows.append({"seed": s, "best_epoch": b, "best_val": at["val_loss"], "final_val": last["val_loss"],
                         "train_at_best": at["train_loss"], "final_train": last["train_loss"]})
overfit = pd.DataFrame(overfit_rows).set_index("seed")
best_epoch = int(overfit.loc[seed, "best_epoch"])  # シード seed の値（練習問題で使う）

curve_long = curves.melt(id_vars=["seed", "epoch"], value_vars=["train_loss", "val_loss"], var_name="種類",
                         value_name="損失").replace({"train_loss": "学習損失（train）", "val_loss": "検証損失（validation）"})
fig, ax = plt.subplots(figsize=(8, 4))
sns.lineplot(data=curve_long, x="epoch", y="損失", hue="種類", errorbar=None, linewidth=2.5, ax=ax)
sns.scatterplot(data=curve_long, x="epoch", y="損失", hue="種類", alpha=0.4, s=20, legend=False, ax=ax)
ax.scatter(overfit["best_epoch"], overfit["best_val"], marker="v", s=80, color="black", zorder=5,
           label="検証損失が最小（各シード）")
ax.legend()
ax.set(xlabel="エポック（epoch）", ylabel="損失（loss）", title="長めの学習と過学習の始まり（点：各シード、線：平均）")
plt.tight_layout()
plt.show()

glue_text("l2_long_epochs", LONG_EPOCHS)
glue_text("l2_best_epochs", "、".join(f"シード{s}: {e}" for s, e in overfit["best_epoch"].items()))
glue_text("l2_overfit_count", f"{int((overfit['final_val'] > overfit['best_val']).sum())}/{len(SEEDS)} シード")
glue_text("l2_train_down_count", f"{int((overfit['final_train'] < overfit['train_at_best']).sum())}/{len(SEEDS)} シード")
overfit.round(3).rename(columns={"best_epoch": "検証損失が最小のエポック", "best_val": "最小の検証損失",
                                 "final_val": "最後の検証損失", "train_at_best": "そのときの学習損失",
                                 "final_train": "最後の学習損失"}).rename_axis("シード")

# %% [markdown]
# 検証損失が最小になったのは {glue:text}`l2_best_epochs` エポック目でした。そこから最後の {glue:text}`l2_long_epochs` エポック目までに、
# 検証損失が最小のときより上がっていたのは {glue:text}`l2_overfit_count`、学習損失がそのときより下がっていたのは {glue:text}`l2_train_down_count` です。
# 学習データには合わせ続けているのに、学習していない検証データには合わなくなる——これが過学習です。
# よく「エポックを増やすと深く学習する」と言われますが、小さなデータでは**増やしすぎると検証損失が悪化**することがあります。
#
# ### 4-3. 早期終了（early stopping）
#
# 検証損失が改善しなくなったら自動で止めるのが早期終了です。Hugging Face の `Trainer` では
# `EarlyStoppingCallback` を使います。ここでは `TrainConfig(early_stopping_patience=2)` を指定すると、
# コースの `train()` が中で `EarlyStoppingCallback(early_stopping_patience=2)` を付け、
# 最後に**検証損失が最良だった時点の重み**に戻します（`load_best_model_at_end=True`）。
# 「2回続けて改善しなかったら止める」という設定です。

# %%
es_seeds = run_seeds(sweep, [dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant", early_stopping_patience=2,
                                  name="早期終了あり")], train_set, val_set, SEEDS, desc="early stopping")
stopped = es_seeds.epoch_curves().groupby("seed")["epoch"].max()
for _, row in es_seeds.iterrows():
    how = (f"{stopped[row['seed']]} エポック目で停止" if row["stopped_early"] else "止まらずに最後まで学習")
    print(f"シード{row['seed']}: {LONG_EPOCHS} エポックの予定で{how}（{row['steps']} ステップ）。"
          f"戻した重みの検証損失 {row['val_loss']:.3f}（最良だった {int(row['best_epoch'])} エポック目の値）")
    assert abs(row["val_loss"] - row["best_val_loss"]) < 1e-4, "最後に最良の重みへ戻っている"
es = es_seeds[es_seeds["seed"] == seed].iloc[0]
stopped_epoch = int(stopped[seed])
es_vs_final = compare_across_seeds(losses_by_seed(long_seeds), losses_by_seed(es_seeds))
glue_text("l2_stopped", "、".join(f"シード{s}: {e}" for s, e in stopped.items()))
glue_text("l2_stopped_count", f"{int(es_seeds['stopped_early'].sum())}/{len(SEEDS)} シード")
glue_text("l2_es_vs_final", es_vs_final.describe())
verdict_table({f"早期終了 − 最後まで（{LONG_EPOCHS} エポック）": es_vs_final})

# %%
both = pd.concat([curves[curves["seed"] == seed].assign(設定=f"最後まで（{LONG_EPOCHS} エポック）"),
                  es_seeds.epoch_curves().loc[lambda t: t["seed"] == seed].assign(設定="早期終了あり（patience=2）")])
fig, ax = plt.subplots(figsize=(8, 4))
sns.lineplot(data=both, x="epoch", y="val_loss", hue="設定", style="設定", markers=True, ax=ax)
ax.axvline(stopped_epoch, color="gray", linestyle=":")
ax.set(xlabel="エポック（epoch）", ylabel="検証損失",
       title=f"早期終了は最小点の少しあとで止まり、最良の重みに戻す（シード{seed}）")
plt.tight_layout()
plt.show()

# %% [markdown]
# 早期終了は {glue:text}`l2_stopped` エポック目で止まりました（予定の {glue:text}`l2_long_epochs` エポックより前に止まったのは {glue:text}`l2_stopped_count`。
# 最良のエポックが終わり近くだと、patience=2 を待つうちに最後まで来てしまいます）。
# 最良の重みに戻したモデルを、最後まで学習したモデルと同じ検証例で比べると、
# 検証損失は {glue:text}`l2_es_vs_final` です。
# ただし、早期終了は**この検証データを見て**止めどきを選んでいるので、同じ検証データで測ったこの比較は早期終了にやや有利です。
# 本番の性能を確かめるには、止めどきの選択に使っていない別のデータ（テストデータ）で測ります。
#
# ````{admonition} Trainer で直接書くときは
# :class: dropdown
# コースの `train()` を使わずに書くと、次のようになります。早期終了には「評価のたびに保存し、最後に最良を読み込む」設定が必要です。
# ```python
# from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
#
# args = TrainingArguments(
#     output_dir="out", num_train_epochs=15, learning_rate=2e-4,
#     eval_strategy="epoch", save_strategy="epoch",       # 評価と保存を同じ間隔で
#     load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
# )
# trainer = Trainer(model=peft_model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
#                   data_collator=collator,
#                   callbacks=[EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.0)])
# trainer.train()
# ```
# `early_stopping_threshold` を 0.05 のようにすると、「0.05 未満の改善は改善とみなさない」という意味になります。
# ````

# %% [markdown]
# ### 4-4. 学習率スケジュール（learning rate schedule）
#
# 学習率を学習中にどう変えるかを比べます。
#
# - **linear**：最初から最後まで直線的に 0 まで下げる（コースの既定）
# - **cosine**：コサイン曲線に沿って 0 まで下げる（はじめはゆっくり、中盤で速く下がる。`quick=True` では省きます）
# - **constant_with_warmup**：最初の数ステップ（ウォームアップ, warmup）で 0 から上げ、あとは一定（`quick=True` では省きます）
# - **constant**：ずっと一定（4-2 の学習。比較の基準として並べます）
#
# ある学習率で数エポック、次に半分で数エポック…と段階的に下げる方法（手動のステップ減衰）も、linear や cosine に近い考え方です。

# %%
steps_per_epoch = -(-len(train_set) // REF["per_device_train_batch_size"])
schedules = [("linear", 0)] + ([] if quick else [("cosine", 0), ("constant_with_warmup", steps_per_epoch)]) + [("constant", 0)]
sched_seeds = run_seeds(sweep, [dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type=s, warmup_steps=w, name=s)
                                for s, w in schedules], train_set, val_set, SEEDS, desc="schedule")
sched_view = seed_table(sched_seeds, "lr_scheduler_type", "val_loss")
sched_view.insert(1, "最良の検証損失（平均）", seed_table(sched_seeds, "lr_scheduler_type", "best_val_loss")["平均"])
print(f"表のシードの列は、最後（{LONG_EPOCHS} エポック目）の検証損失です。")
sched_view.rename(columns={"lr_scheduler_type": "スケジュール"})

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
lrs = sched_seeds.histories.loc[lambda h: h["seed"] == seed].dropna(subset=["loss"])
sns.lineplot(data=lrs, x="step", y="learning_rate", hue="name", ax=ax1)
ax1.set(xlabel="ステップ（step）", ylabel="学習率", title=f"スケジュールごとの学習率（シード{seed}）")
ax1.legend(title="スケジュール")
seed_points(ax2, sched_seeds, "lr_scheduler_type", "val_loss")
ax2.set(xlabel="スケジュール", ylabel="最後の検証損失", title="最後の検証損失（点：各シード、◆：平均）")
plt.tight_layout()
plt.show()

# %%
lr_end = lrs.groupby("name")["learning_rate"].last()
assert all(lr_end[s] < 0.05 * BASE_LR for s in ("linear", "cosine") if s in lr_end), "linear と cosine は最後に 0 近くまで下がる"
if "constant_with_warmup" in lr_end:
    assert abs(lr_end["constant_with_warmup"] - BASE_LR) < 1e-12, "constant_with_warmup はウォームアップのあと一定"
    assert lrs[lrs["name"] == "constant_with_warmup"]["learning_rate"].iloc[0] < BASE_LR, "最初は小さい値から始まる"
sched_verdicts = {s: compare_rows(sched_seeds, {"lr_scheduler_type": "constant"}, {"lr_scheduler_type": s})
                  for s, _ in schedules if s != "constant"}
sched_best = sched_seeds.groupby("lr_scheduler_type")["best_val_loss"].mean()
sched_range = sched_best.max() - sched_best.min()
lr_range = lr_mean.max() - lr_mean.min()
final_val = sched_seeds.groupby("lr_scheduler_type")["val_loss"].mean()
glue_text("l2_sched_linear", sched_verdicts["linear"].describe())
glue_text("l2_sched_cosine", sched_verdicts["cosine"].describe() if "cosine" in sched_verdicts else "quick=True なので測っていません")
glue_text("l2_sched_warmup", f"constant_with_warmup は {sched_verdicts['constant_with_warmup'].describe()}"
          if "constant_with_warmup" in sched_verdicts else "constant_with_warmup は quick=True なので測っていません")
lowering = [c.verdict for s, c in sched_verdicts.items() if s in ("linear", "cosine")]
glue_text("l2_sched_meaning",
          "この測定では、終盤に学習率を下げると最後の検証損失がどのシードでも下がり、「過学習の進み方がゆるやかになる」という説明と合いました"
          if all(v == BETTER for v in lowering) else
          ("この測定では、むしろ一定のまま続ける constant のほうが最後の検証損失が低く、説明とは逆でした"
           if all(v == WORSE for v in lowering) else
           "「終盤に学習率を下げると過学習の進み方がゆるやかになる」という説明は、このデータの大きさとシードの数では確かめられませんでした。"
           "1つのシードだけを見ると、どちらの向きにも見えてしまうことがあります"))
glue_text("l2_sched_range", f"{sched_range:.3f}")
glue_text("l2_lr_range", f"{lr_range:.3f}")
glue_text("l2_sched_vs_lr", "ずっと小さい" if sched_range < lr_range / 5 else ("小さい" if sched_range < lr_range else "小さくはない"))
glue_text("l2_priority", "優先順位としては、まず学習率とエポック数（または早期終了）を決め、スケジュールはその次で十分です"
          if sched_range < lr_range else "この測定では、スケジュールも学習率と同じくらい効いたので、学習率と一緒に調べます")
print(f"スケジュールによる最良検証損失の差: {sched_range:.3f} ／ 学習率による検証損失の差: {lr_range:.3f}（どちらもシードの平均）")
verdict_table(sched_verdicts, "constant と比べて（最後の検証損失）")

# %% [markdown]
# **読み取り方**：学習率を 0 近くまで下げる linear と cosine は、終盤の1ステップあたりの重みの動きが小さくなります（左の図）。
# それで最後の検証損失が constant より良くなるかを、シードごとに比べました。constant と比べると、
# linear は {glue:text}`l2_sched_linear`、cosine は {glue:text}`l2_sched_cosine`。{glue:text}`l2_sched_warmup`。
# {glue:text}`l2_sched_meaning`。
# ウォームアップは、学習の最初に大きすぎる更新で損失が跳ねるのを防ぐための仕組みです（その分、立ち上がりは少し遅れます）。
#
# スケジュールによる最良の検証損失の差（{glue:text}`l2_sched_range`）は、学習率を変えたときの差（{glue:text}`l2_lr_range`）より
# {glue:text}`l2_sched_vs_lr` 値でした（どちらもシードの平均）。
# {glue:text}`l2_priority`。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 学習損失は下がり続けているのに、検証損失が途中から上がり始めました。何が起きていますか。
# 2. このページの実行で、長めの学習（{glue:text}`l2_long_epochs` エポック）の検証損失が最小になったのは何エポック目でしたか（4-2 の表で確かめてください）。
# 3. `EarlyStoppingCallback(early_stopping_patience=2)` と `load_best_model_at_end=True` で学習すると、何が起きますか。また、止めどきを選んだのと同じ検証データで測った成績が、少し良く見えるのはなぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 過学習です。学習データには合わせ続けていますが、学習していないデータには合わなくなっています。
# 2. {glue:text}`l2_best_epochs` エポック目でした。
# 3. 検証損失が2回続けて改善しなかったら学習を止め、検証損失が最良だった時点の重みに戻します。その止めどきはこの検証データを見て選んだので、同じデータでの成績はやや有利に出ます。本当の成績は、何も選ぶのに使っていないテストデータで測ります。
# ```

# %% [markdown]
# ## 実験5：ドロップアウト（dropout）
#
# LoRA のドロップアウトは、学習中に LoRA への入力の一部をランダムに 0 にして、特定の入力に頼りすぎないようにする仕組みです
# （推論時には働きません）。効果が見えやすいように、**学習データをわざと12件に減らし**、エポック数を増やして
# 過学習しやすい状況を作ります。検証データは同じ12件を使います。
# 同じ条件で「ドロップアウト 0 ＋ 早期終了」も学習し、過学習への2つの対策を比べます。

# %%
small_train = train_set[:12]
DROPOUT_EPOCHS = 10 if quick else 20
DROPOUTS = [0.0, 0.1] if quick else [0.0, 0.05, 0.1]
SMALL = {**REF, "per_device_train_batch_size": 4, "num_train_epochs": DROPOUT_EPOCHS}
dropout_seeds = run_seeds(sweep, [dict(lora_dropout=p) for p in DROPOUTS], small_train, val_set, SEEDS,
                          desc="dropout", defaults=SMALL)
dropout_seeds["gap"] = dropout_seeds["val_loss"] - dropout_seeds["train_loss"]
small_es = run_seeds(sweep, [dict(lora_dropout=0.0, early_stopping_patience=2, name="早期終了（dropout 0）")],
                     small_train, val_set, SEEDS, desc="dropout: early stopping", defaults=SMALL)
drop_view = seed_table(dropout_seeds, "lora_dropout", "val_loss")
drop_view.insert(1, "学習損失（平均）", seed_table(dropout_seeds, "lora_dropout", "train_loss")["平均"])
drop_view.insert(2, "検証−学習の差（平均）", seed_table(dropout_seeds, "lora_dropout", "gap")["平均"])
drop_view.rename(columns={"lora_dropout": "ドロップアウト"})

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
dc = dropout_seeds.epoch_curves()
dc["lora_dropout"] = dc["run"].map(dict(enumerate(DROPOUTS)))  # 各シードの run 番号は DROPOUTS の順
sns.lineplot(data=dc, x="epoch", y="val_loss", hue="lora_dropout", palette="viridis", errorbar=None, linewidth=2, ax=ax1)
sns.scatterplot(data=dc, x="epoch", y="val_loss", hue="lora_dropout", palette="viridis", alpha=0.35, s=15, legend=False,
                ax=ax1)
ax1.legend(title="ドロップアウト率")
ax1.set(xlabel="エポック（epoch）", ylabel="検証損失",
        title=f"学習データ {len(small_train)} 件での検証損失（点：各シード、線：平均）")
seed_points(ax2, dropout_seeds, "lora_dropout", "gap", jitter=0.002)
ax2.set(xlabel="ドロップアウト率", ylabel="検証損失 − 学習損失", title="学習と検証の差（過学習の度合い）")
plt.tight_layout()
plt.show()

# %%
d = dropout_seeds.groupby("lora_dropout")[["train_loss", "val_loss", "gap"]].mean()
by_seed = dropout_seeds.pivot(index="seed", columns="lora_dropout", values=["train_loss", "gap"])
top = max(DROPOUTS)
drop_vs_0 = compare_rows(dropout_seeds, {"lora_dropout": 0.0}, {"lora_dropout": top})
es_vs_0 = compare_across_seeds(losses_by_seed(dropout_seeds, lora_dropout=0.0), losses_by_seed(small_es))
drop_vs_es = compare_across_seeds(losses_by_seed(small_es), losses_by_seed(dropout_seeds, lora_dropout=top))
glue_text("l2_drop_top", f"{top:g}")
glue_text("l2_drop_train_count",
          f"{int((by_seed['train_loss'][top] > by_seed['train_loss'][0.0]).sum())}/{len(SEEDS)} シード")
glue_text("l2_drop_gap", f"{d.loc[0.0, 'gap']:.3f} → {d.loc[top, 'gap']:.3f}（シードの平均）")
glue_text("l2_drop_gap_count", f"{int((by_seed['gap'][top] < by_seed['gap'][0.0]).sum())}/{len(SEEDS)} シード")
glue_text("l2_drop_val", drop_vs_0.describe())
glue_text("l2_es_small", es_vs_0.describe())
n_last = int((small_es["best_epoch"] == DROPOUT_EPOCHS).sum())
glue_text("l2_es_small_note",
          f"検証損失が最後のエポックでいちばん低かったシード（{n_last}/{len(SEEDS)} シード）では、早期終了で戻す重みは"
          "最後まで学習した重みと同じなので、差はちょうど 0、区間の幅も 0 になります" if n_last else
          "どのシードでも、検証損失は最後のエポックより前に最小になりました")
glue_text("l2_drop_vs_es", drop_vs_es.describe())
print(f"検証−学習の差（シードの平均）: dropout=0 → {d.loc[0.0, 'gap']:.3f}, dropout={top:g} → {d.loc[top, 'gap']:.3f}")
verdict_table({f"ドロップアウト {top:g} − ドロップアウト 0": drop_vs_0,
               "早期終了 − ドロップアウト 0（最後まで）": es_vs_0,
               f"ドロップアウト {top:g} − 早期終了": drop_vs_es})

# %% [markdown]
# **読み取り方**：ドロップアウト {glue:text}`l2_drop_top` を入れると、学習損失が上がった（学習データへの当てはまりが弱まった）のは
# {glue:text}`l2_drop_train_count`、学習と検証の差が縮んだのは {glue:text}`l2_drop_gap_count` でした（差は {glue:text}`l2_drop_gap`）。
# 「過学習の度合いを小さくする」という説明と同じ向きかどうかは、この2つの数で読みます。
#
# 大事なのは検証損失そのものです。最後まで学習したモデルどうしで比べると、ドロップアウト {glue:text}`l2_drop_top` はドロップアウト 0 と比べて
# {glue:text}`l2_drop_val`。早期終了（ドロップアウト 0 のまま、最良のエポックの重みに戻す）はドロップアウト 0 と比べて
# {glue:text}`l2_es_small`。{glue:text}`l2_es_small_note`。ドロップアウト {glue:text}`l2_drop_top` を早期終了と比べると {glue:text}`l2_drop_vs_es`。
# 4-3 と同じく、早期終了はこの検証データで止めどきを選んでいるので、この比較は早期終了にやや有利です。
# どちらの対策が効くかはデータと設定によるので、このように並べて測って決めます。
# なお「学習データを増やす」効果は、このページでは測っていません。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. LoRA のドロップアウトは、学習が終わったあとの生成（推論）のときにも働きますか。
# 2. ドロップアウトを入れると、学習損失はふつう上がりますか、下がりますか。そのとき、判断に使うのはどの損失ですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 働きません。LoRA への入力の一部を 0 にするのは学習中だけです。
# 2. 上がります（学習データへの当てはまりが弱まります）。判断には検証損失を使います。学習と検証の差が縮んでも、検証損失が良くならなければ意味がありません。
# ```

# %% [markdown]
# ## 実験6：A/B 比較（高表現力の設定 A と効率重視の設定 B）
#
# ある LoRA チュートリアルでは、次の2つの設定を比べ、学習時間・資源効率・性能・汎化・メモリで選ぶよう勧めています。
#
# | 設定 | ランク r | α | エポック数 | そのほか（両方共通） |
# | --- | --- | --- | --- | --- |
# | A（高表現力） | 16 | 32 | 5 | ドロップアウト 0.1、対象は `down_proj` 以外の6モジュール |
# | B（効率重視） | 12 | 24 | 4 | 同上 |
#
# **A と B は、r・α・エポック数の3つを同時に変えています。** これは、このページの「つまみを1つだけ動かす」原則から外れた比較です。
# 差が出ても、それが r・α・エポック数のどれのせいなのかは分かりません。分かるのは「この2つの組み合わせのどちらを選ぶか」だけです
# （どのつまみが効いたのかは、実験1・2・4-2 の1つずつの比較で調べました）。
# 違いをこの3つだけにするため、学習率などはこのページの基準設定に揃えます。
#
# 出力の質は、別の話題の20問（`heldout.jsonl`）に貪欲法（greedy）で答えさせ、「【結論】…／【理由】…」の形式を
# どこまで守れたかで測ります。1行目が【結論】で始まる割合、2行目が【理由】で始まる割合、2行で過不足なく終わる割合（**形式どおり**）の3段階です。
# 形式どおりかの判定には、レベル1と同じ規則（`course_lib.level1.follows_format`：2行で、各行10〜60文字）を使います。
# 答えを生成するのは時間がかかるので、形式を測るのはシード {glue:text}`l2_ab_seed` の1回だけです。検証損失と学習時間はすべてのシードで測ります。

# %%
from IPython.display import display

from course_lib.generate import sample_answers
from course_lib.level1 import format_steps
from course_lib.stats import wilson_interval

heldout_prompts = [r["prompt"] for r in heldout]


def answer_quality(peft_model, tokenizer):
    """別の話題の質問への貪欲法の答えと、2行の形式をどこまで守れたか（3段階の件数と割合）。"""
    answers = [a[0] for a in sample_answers(peft_model, tokenizer, heldout_prompts, temperature=0,
                                            max_new_tokens=64, progress=False)]
    # line1_ok: 1行目が【結論】で始まる件数、line2_ok: 2行目が【理由】で始まる件数、format_ok: 形式どおりの件数（*_rate は割合）
    return {**format_steps(answers), "answers": answers}


A_NAME, B_NAME = "A（r=16, α=32, 5エポック）", "B（r=12, α=24, 4エポック）"
ab_common = dict(lora_dropout=0.1, target_modules=MODULE_SETS["attention+gate,up"])
ab_configs = [dict(name=A_NAME, lora_r=16, lora_alpha=32, num_train_epochs=5, **ab_common),
              dict(name=B_NAME, lora_r=12, lora_alpha=24, num_train_epochs=4, **ab_common)]
ab_table = sweep(ab_configs, train_set, val_set, evaluate=answer_quality, desc="A/B")  # シード seed：形式も測る
ab_all = pd.concat([ab_table.assign(seed=seed)]
                   # workers=1: 学習時間を比べるので、2つの学習を同時に走らせない
                   + ([run_seeds(sweep, ab_configs, train_set, val_set, SEEDS[1:], desc="A/B", workers=1)]
                      if len(SEEDS) > 1 else []),
                   ignore_index=True)
glue_text("l2_ab_seed", seed)
QUALITY = {"line1_rate": "1行目【結論】", "line2_rate": "2行目【理由】", "format_rate": "形式どおり"}
print(f"シード{seed}（形式も測った回）")
japanese_table(ab_table, ["name", "trainable_params", "seconds", "peak_memory_mb", "train_loss", "val_loss",
                          *QUALITY], labels=QUALITY)

# %%
ab_val = compare_rows(ab_all, {"name": B_NAME}, {"name": A_NAME})
seconds = ab_all.pivot(index="seed", columns="name", values="seconds")
time_ratio = seconds[A_NAME] / seconds[B_NAME]
ab_view = seed_table(ab_all, "name", "val_loss")
ab_view.insert(1, "学習時間（秒、平均）", seed_table(ab_all, "name", "seconds")["平均"])
display(ab_view.rename(columns={"name": "設定"}))
verdict_table({"A − B（検証損失）": ab_val})

# %%
metrics = {"seconds": "学習時間（秒）", "peak_memory_mb": "ピークメモリ（MB）", "val_loss": "検証損失",
           "line2_rate": f"形式：2行目が【理由】の割合（シード{seed}）"}
ab_plot = ab_all.assign(設定=ab_all["name"].str[0])
fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
for ax, (col, label) in zip(axes, metrics.items()):
    data = ab_plot[ab_plot["seed"] == seed] if col == "line2_rate" else ab_plot
    sns.barplot(data=data, x="設定", y=col, hue="設定", order=["A", "B"], errorbar=None, alpha=0.6, legend=False, ax=ax)
    sns.stripplot(data=data, x="設定", y=col, order=["A", "B"], color="black", size=4, ax=ax)
    ax.set(title=label, xlabel="", ylabel="")
axes[-1].set_ylim(0, 1)
plt.suptitle("A/B 比較（棒：シードの平均、点：各シード。低いほど良い: 時間・メモリ・検証損失／高いほど良い: 形式）")
plt.tight_layout()
bars_start_at_zero(fig)  # 棒の高さが大きさに見えるよう、縦軸は 0 から
plt.show()

# %% [markdown]
# 同じ質問への答えを並べます（tiny モデルの答えは中身が正しいとは限りません。見るのは**形式**です）。

# %%
side_by_side = pd.DataFrame({"質問": heldout_prompts[:4],
                             "A の答え": ab_table.iloc[0]["answers"][:4],
                             "B の答え": ab_table.iloc[1]["answers"][:4]})
side_by_side.style.set_properties(**{"white-space": "pre-wrap", "text-align": "left"})

# %%
a, b = ab_table.iloc[0], ab_table.iloc[1]
assert a["trainable_params"] * 12 == b["trainable_params"] * 16, "パラメータ数は r に比例（16 : 12）"


def share(k, n):
    """n 件のうち k 件を「k/n（%、Wilson の95%区間）」で表す。"""
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n}（{k / n:.0%}、95%区間 {lo:.0%}〜{hi:.0%}）"


faster = "B のほうが速い" if time_ratio.mean() > 1 else "A のほうが速い"
ab_judgement = {
    BETTER: f"A のほうが検証損失は低く、{faster}ので、時間と損失の引き換えです。「効率重視が得」かどうかは、この損失の差が時間の差に見合うか次第で、"
            "この測定だけでは決まりません",
    WORSE: f"B のほうが検証損失も低く、{faster}ので、この測定では B が得です",
    MIXED_ACROSS_SEEDS: "検証損失の差はシードによって違うので、この測定からはどちらが得とは言えません",
}.get(ab_val.verdict, f"検証損失にはっきりした差はなく、{faster}ので、"
                      + ("この測定では「効率重視 B が得」という説明と合います" if time_ratio.mean() > 1 else
                         "この測定では A を選んでも損はありません"))
glue_text("l2_ab_time", f"{time_ratio.mean():.2f} 倍（" + "、".join(f"シード{s}: {v:.2f}" for s, v in time_ratio.items()) + "）")
glue_text("l2_ab_val", ab_val.describe())
glue_text("l2_ab_line2", f"A {share(a['line2_ok'], a['n'])}、B {share(b['line2_ok'], b['n'])}")
glue_text("l2_ab_exact", f"A {a['format_rate']:.0%}、B {b['format_rate']:.0%}")
glue_text("l2_ab_judgement", ab_judgement)
print(f"A は B の {a['trainable_params'] / b['trainable_params']:.2f} 倍のパラメータ、"
      f"{a['steps']} 対 {b['steps']} ステップ。学習時間の比 A/B（シードの平均）: {time_ratio.mean():.2f}")
print(f"検証損失の差（A − B）: {ab_val.per_seed_text()}")
print(f"2行目が【理由】: A {a['line2_rate']:.0%} / B {b['line2_rate']:.0%}、形式どおり: A {a['format_rate']:.0%} / B {b['format_rate']:.0%}")

# %% [markdown]
# **読み取り方**：A はパラメータが 16/12 倍、ステップ数が 5/4 倍です。学習時間は A が B の {glue:text}`l2_ab_time` でした
# （学習時間は同じ計算機を使うほかの作業の影響を受けるので、1回の測定で数十％程度の違いは誤差の範囲と考えましょう）。
# 検証損失は、A を B と比べると {glue:text}`l2_ab_val`。
# 形式は、2行目が【理由】で始まった答えが {glue:text}`l2_ab_line2` でした。別の話題の質問が20問しかなく区間が広いうえ、
# 1つのシードだけの結果なので、形式の差は判定しません。形式どおりだった割合は {glue:text}`l2_ab_exact` でした。
#
# まとめると、{glue:text}`l2_ab_judgement`。そして、3つのつまみを同時に変えたので、この結果から「r を 12 にしたから」
# 「エポックを減らしたから」とは言えません。CPU でのピークメモリ（下の「コストの増え方」を参照）は、この程度の設定の差では
# 測定のばらつきに埋もれがちです。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. A と B で検証損失に差が出ても、「r を 12 にしたから」とは言えません。なぜですか。
# 2. 形式の割合（2行目が【理由】で始まる割合など）の差を、このページが判定しないのはなぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. A と B は r・α・エポック数の3つを同時に変えているので、差がどのつまみのせいかは分からないからです。
# 2. 別の話題の質問が20問しかなく区間が広いうえ、答えを生成したのが1つの学習シードだけだからです。
# ```

# %% [markdown]
# ## 対話型エクスプローラー（ipywidgets）
#
# JupyterLab でこのノートブックを開いていると、下にスライダーと、既定の設定で学習した結果が現れます。
# r・α・学習率・エポック数・対象モジュールを選んで「学習して描画」を押すと、短い学習を1回行い、
# 損失曲線とパラメータ数を描き直します（直前の3回分も薄く重ねて表示します）。パラメータ数はスライダーを動かすとすぐ変わります。
# 公開版の本や自動実行（papermill）では操作できないので、既定の設定で1回学習した図を代わりに表示します。

# %%
from course_lib.level2.explorer import lora_explorer

explorer = lora_explorer(model, tokenizer, train_set, val_set, interactive=live and not quick,
                         defaults=dict(lora_r=8, lora_alpha=16, learning_rate=BASE_LR,
                                       num_train_epochs=REF["num_train_epochs"], target_modules="all7"),
                         cache=cache, seed=seed)

# %% [markdown]
# ## コストの増え方：r と系列長
#
# ### この計算機で測る（tiny モデル）
#
# 1ステップあたりの学習時間とピークメモリを、r と系列長（sequence length：1例あたりのトークン数）を変えて測ります。
# 計測用に、どの例もちょうど指定の長さになるよう長い答えを作り、バッチサイズ4で数ステップだけ学習します。
#
# ```{admonition} ピークメモリの意味（CPU と GPU で違います）
# :class: note
# - **GPU**：`torch.cuda.max_memory_allocated()`、つまり学習中に PyTorch が GPU 上に確保した量の最大値です（モデルの重みも含みます）。
# - **CPU**：プロセスの常駐メモリ（RSS）を 5 ミリ秒ごとに調べ、学習開始時からの**増加分の最大値**を記録しています。
#   モデルの重みは開始前から載っているので含まれません。含まれるのは、活性化（途中の計算結果）・勾配・オプティマイザの状態・
#   一時的な作業領域などです。測る直前に解放済みのメモリを OS に返していますが、5 ミリ秒より短い山は見逃すことがあり、
#   数十 MB 程度の差はばらつきの範囲です。**大きな傾向を見る目安**として読んでください。
# ```

# %%
from course_lib.level2.cost import measure_cost

cost = measure_cost(model, tokenizer, train_set,
                    ranks=[1, 32] if quick else [1, 4, 16, 64],
                    seq_lengths=[64, 512] if quick else [64, 128, 256, 512],
                    steps=3 if quick else 5, progress=live, seed=seed)
japanese_table(cost, ["lora_r", "seq_len", "tokens_per_step", "trainable_params", "sec_per_step", "peak_memory_mb"])

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
sns.lineplot(data=cost, x="seq_len", y="sec_per_step", hue="lora_r", marker="o", palette="viridis", ax=ax1)
ax1.set(xlabel="系列長（トークン）", ylabel="1ステップの時間（秒）", title="学習時間（バッチサイズ4）")
sns.lineplot(data=cost, x="seq_len", y="peak_memory_mb", hue="lora_r", marker="o", palette="viridis", ax=ax2)
ax2.set(xlabel="系列長（トークン）", ylabel="ピークメモリ（MB）",
        title="ピークメモリ（GPU: 確保量の最大／CPU: 増加分の最大）")
for ax in (ax1, ax2):
    ax.legend(title="ランク r")
plt.tight_layout()
plt.show()

# %%
by_len = cost.groupby("seq_len")[["sec_per_step", "peak_memory_mb"]].mean()
shortest, longest = by_len.index.min(), by_len.index.max()
by_r = cost.groupby("lora_r")["sec_per_step"].mean()
len_time = by_len.loc[longest, "sec_per_step"] / by_len.loc[shortest, "sec_per_step"]
r_time = by_r.iloc[-1] / by_r.iloc[0]
print(f"系列長 {shortest} → {longest}（{longest // shortest} 倍）で、時間 {len_time:.1f} 倍、"
      f"ピークメモリ {by_len.loc[longest, 'peak_memory_mb'] / max(by_len.loc[shortest, 'peak_memory_mb'], 1):.1f} 倍")
print(f"r {by_r.index[0]} → {by_r.index[-1]}（{by_r.index[-1] // by_r.index[0]} 倍）で、時間 {r_time:.1f} 倍（系列長で平均）")
glue_text("l2_cost_len", f"系列長を {longest // shortest} 倍（{shortest} → {longest}）にすると1ステップの時間は {len_time:.1f} 倍")
glue_text("l2_cost_r", f"r を {by_r.index[-1] // by_r.index[0]} 倍（{by_r.index[0]} → {by_r.index[-1]}）にすると {r_time:.1f} 倍")
glue_text("l2_cost_r_max", by_r.index[-1])
glue_text("l2_cost_r_share", f"{by_r.index[-1] / hidden:.0%}")

# %% [markdown]
# **読み取り方**：この計算機では、{glue:text}`l2_cost_len`、{glue:text}`l2_cost_r` でした。
# 時間とメモリを大きく左右するのは、ふつう**系列長（とバッチサイズ）**です。活性化は「バッチ × 系列長」に比例して増え、
# 出力層では語彙数の分だけの確率を全トークンについて計算するからです（注意機構には系列長の2乗に比例する計算もあり、
# 系列が長くなるほどその割合が増えます）。
# ただし tiny モデルは隠れ次元が {glue:text}`l2_hidden` しかないので、r = {glue:text}`l2_cost_r_max` はその {glue:text}`l2_cost_r_share` にもなり、
# 「低ランク」とは言えないほど大きく、r の計算量の割合が実際のモデルより大きく出ます。
#
# ### Qwen3-0.6B の計算（パラメータ数は学習しなくても決まる）
#
# LoRA のパラメータ数は、各射影の入出力の次元だけで決まります。Qwen3-0.6B の設定ファイル（`config.json`）の値は次のとおりです。
# （`transformers.Qwen3Config()` の**既定値**は 8B 級の大きさなので、0.6B の値は明示して指定します。）
#
# | 設定 | 値 | LoRA への影響 |
# | --- | --- | --- |
# | `hidden_size` | 1024 | 各射影の入力（または出力）の次元 |
# | `intermediate_size` | 3072 | MLP（gate / up の出力、down の入力） |
# | `num_hidden_layers` | 28 | 同じ射影が28層ぶんある |
# | `num_attention_heads` × `head_dim` | 16 × 128 = 2048 | `q_proj` は 1024→2048、`o_proj` は 2048→1024 |
# | `num_key_value_heads` × `head_dim` | 8 × 128 = 1024 | `k_proj`, `v_proj` は 1024→1024 |
# | `vocab_size` | 151936 | 埋め込み（LoRA の対象外、入出力で共有） |
#
# 重みを読み込まずに形だけのモデル（`meta` デバイス）を作り、実験1と同じ計算をします。

# %%
from course_lib.level2.cost import QWEN3_0_6B, qwen3_0_6b_skeleton

qwen = qwen3_0_6b_skeleton()  # 形だけ（重みなし・ダウンロードなし）
qwen_table = lora_parameter_table(qwen, lora_r=16)
print(f"Qwen3-0.6B の全パラメータ: {sum(p.numel() for p in qwen.parameters()):,}")
parameter_table_ja(qwen_table)

# %%
h, m, kv, q = QWEN3_0_6B["hidden_size"], QWEN3_0_6B["intermediate_size"], 8 * 128, 16 * 128
per_layer_per_r = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + m) + (m + h)  # 順に q, k+v, o, gate+up, down の分
print(f"1層・r=1 あたり: {per_layer_per_r:,} 個（7モジュール）")
assert per_layer_per_r == 22528 and qwen_table["total"].sum() == 28 * 16 * per_layer_per_r, "手計算と表が一致するはず"
if loaded.profile == "qwen3-0.6b":  # 本物を読み込んだときは、設定の値も照合する
    assert all(getattr(model.config, k) == v for k, v in QWEN3_0_6B.items() if k != "max_position_embeddings"), \
        "読み込んだモデルの設定が QWEN3_0_6B と一致するはず"

qwen_rows = []
for r in [1, 4, 8, 16, 32, 64]:
    for key in ["q,v", "attention", "all7"]:
        c = lora_parameter_count(qwen, r, MODULE_SETS[key])
        # 学習中のアダプター: fp32 の重み 4 + 勾配 4 + AdamW の2つの状態 8 = 16 バイト/パラメータ
        qwen_rows.append({"r": r, "対象": key, "LoRA パラメータ数": c.trainable, "割合(%)": round(c.percent, 3),
                          "アダプター学習用メモリ(MiB)": round(c.trainable * 16 / 2**20, 1)})
qwen_cost = pd.DataFrame(qwen_rows)
qwen_cost.pivot(index="r", columns="対象", values="LoRA パラメータ数")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
sns.lineplot(data=qwen_cost, x="r", y="アダプター学習用メモリ(MiB)", hue="対象", marker="o", ax=ax)
ax.set(yscale="log", xlabel="ランク r", title="Qwen3-0.6B：アダプターの重み＋勾配＋AdamW 状態（計算値）")
log2_axis(ax, [1, 4, 8, 16, 32, 64])
plt.tight_layout()
plt.show()

# %% [markdown]
# 計算のまとめ（Qwen3-0.6B, 7モジュールすべて）：
#
# - 1層あたり $r \times 22{,}528$ 個、28層で $r \times 630{,}784$ 個。r=16 なら **10,092,544 個（全体の約1.7%）**です。
# - 学習中にアダプターのために要るのは、1パラメータあたり約16バイト（fp32 の重み・勾配・AdamW の2つの状態）なので、r=16 で約154 MiB。
# - 凍結したベースモデルは bf16 なら 596,049,920 × 2 バイト ≈ 1.1 GiB。これに、系列長とバッチサイズに比例する活性化が加わります。
#
# つまり、GPU 1枚で Qwen3-0.6B を LoRA 学習するとき、**r はメモリの主因ではありません**。足りなくなったら、まず
# バッチサイズや最大系列長を下げ（必要なら勾配累積 gradient accumulation で実質のバッチを保ち）ます。


# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 学習中のアダプターには、1パラメータあたり約16バイト（fp32 の重み・勾配・AdamW の2つの状態）が要るとします。学習可能パラメータが1,000万個なら、約何 MB ですか。
# 2. GPU 1枚で Qwen3-0.6B を LoRA 学習していて、メモリが足りなくなりました。まず下げるのは r ですか、それともバッチサイズや最大系列長ですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. $10{,}000{,}000 \times 16 = 1.6$ 億バイトで、約160 MB（約153 MiB）です。r = 16 の Qwen3-0.6B がちょうどこのくらいです。
# 2. バッチサイズや最大系列長です。活性化はバッチ × 系列長に比例して増え、r によるアダプターの分は小さいからです（必要なら勾配累積で実質のバッチを保ちます）。
# ```

# %% [markdown]
# ## まとめ：推奨の出発点
#
# まず、ページの最初に挙げた「よく言われること」が、このページの測定でどうだったかを表にします。数値と判定はこのページで測ったもので、
# 判定の言葉（良くなる／悪くなる／はっきりした差はない／シードによって違う）は、上の各実験と同じく学習シードをまたいで決めたものです。
# 「測定と合ったか」は、説明どおりの判定がすべてのシードで出たら「合った」、シードによって違えば「シードによって違う」、それ以外は「合わなかった」です。

# %%
final_vs_es = compare_across_seeds(losses_by_seed(es_seeds), losses_by_seed(long_seeds))  # 最後まで − 早期終了
claims = [
    ("r を上げると表現力が上がる（学習損失が下がる）",
     f"r={RANKS[0]} → r={RANKS[-1]}（α=2r）で、学習損失は {rank_capacity.describe(2)}",
     claim_agreement(rank_capacity.verdict, BETTER)),
    ("α は適応の強さを決める（小さすぎても大きすぎても悪い）",
     f"α=16 と比べて α={min(ALPHAS)} は「{alpha_low.word}」、α={max(ALPHAS)} は「{alpha_high.word}」（r=8）",
     claim_agreement([alpha_low.verdict, alpha_high.verdict], WORSE)),
    ("実効的な学習率は α/r で決まる（r を変えても α/r を保てばよい）",
     f"r による検証損失の幅は α/r 固定 {spread_ratio:.2f}、α 固定 {spread_alpha:.2f}。"
     f"α 固定のほうが小さいのは {alpha_fixed_smaller}/{len(SEEDS)} シード。差が最大なのは {biggest_r}（容量と交絡）",
     "合わなかった" if alpha_fixed_smaller == len(SEEDS) else
     ("合った" if alpha_fixed_smaller == 0 else "シードによって違う")),
    ("対象モジュールを増やすほど良い",
     f"{MODULE_KEYS[0]} と比べて {MODULE_KEYS[-1]} は {module_verdicts[MODULE_KEYS[-1]].describe(2)}",
     claim_agreement(module_verdicts[MODULE_KEYS[-1]].verdict, BETTER)),
    ("学習率は低めが慎重で安全",
     f"基準の {min(LR_FACTORS):g} 倍は、基準と比べて {lr_low.describe(2)}",
     "合わなかった" if lr_low.verdict == WORSE else ("シードによって違う" if lr_low.verdict == MIXED_ACROSS_SEEDS else "合った")),
    ("エポックを増やすほど深く学習する",
     "検証損失が最小だったのは " + "、".join(f"シード{s}: {e}" for s, e in overfit["best_epoch"].items())
     + f" エポック目で、最後（{LONG_EPOCHS} エポック目）にはそれより上がった（{int((overfit['final_val'] > overfit['best_val']).sum())}"
     f"/{len(SEEDS)} シード）。最後の重みは早期終了の重みと比べて {final_vs_es.describe(2)}",
     claim_agreement(final_vs_es.verdict, BETTER)),
    ("早期終了で過学習を避けられる（最後まで学習するより検証損失が良い）",
     f"予定より前に止まったのは {int(es_seeds['stopped_early'].sum())}/{len(SEEDS)} シード。最後まで学習した重みと比べて "
     f"{es_vs_final.describe(2)}",
     claim_agreement(es_vs_final.verdict, BETTER)),
    ("スケジュール（linear / cosine）で学習が安定する",
     "constant と比べて、最後の検証損失は " + "、".join(f"{s} が「{c.word}」" for s, c in sched_verdicts.items()
                                                  if s in ("linear", "cosine")),
     claim_agreement([c.verdict for s, c in sched_verdicts.items() if s in ("linear", "cosine")], BETTER)),
    ("ドロップアウトは過学習を防ぐ",
     f"学習と検証の差 {d.loc[0.0, 'gap']:.2f} → {d.loc[top, 'gap']:.2f}。検証損失は dropout {top:g} が 0 と比べて {drop_vs_0.describe(2)}",
     claim_agreement(drop_vs_0.verdict, BETTER)),
    ("「高表現力」A と「効率重視」B では効率重視 B が得（3つのつまみを同時に変えた比較）",
     f"A の学習時間は B の {time_ratio.mean():.2f} 倍。検証損失は A が B と比べて {ab_val.describe(2)}",
     {BETTER: "時間と損失の引き換え", WORSE: "合った", MIXED_ACROSS_SEEDS: "シードによって違う"}.get(
         ab_val.verdict, "合った" if time_ratio.mean() > 1 else "合わなかった")),
]
claims_table = pd.DataFrame([{"よく言われること": c, f"このページの測定（シード {seed_labels(SEEDS)}）": e, "測定と合ったか": ok}
                             for c, e, ok in claims])
all_comparisons = {
    **{f"実験1 {k}（r = 8 と比べて）": c for k, c in rank_verdicts.items()},
    **{f"実験2 {k}（α = 16 と比べて）": c for k, c in alpha_verdicts.items()},
    **{f"実験2 {k} で α 固定と α/r 固定": c for k, c in scale_verdicts.items()},
    **{f"実験3 {k}（{MODULE_KEYS[0]} と比べて）": c for k, c in module_verdicts.items()},
    **{f"実験4-1 学習率{k}": c for k, c in lr_verdicts.items()},
    "実験4-3 早期終了と最後まで": es_vs_final,
    **{f"実験4-4 {k}（constant と比べて）": c for k, c in sched_verdicts.items()},
    f"実験5 dropout {top:g} と 0": drop_vs_0, "実験5 早期終了と dropout 0": es_vs_0,
    f"実験5 dropout {top:g} と早期終了": drop_vs_es, "実験6 A と B": ab_val,
}
mixed = [name for name, comp in all_comparisons.items() if comp.verdict == MIXED_ACROSS_SEEDS]
glue_text("l2_mixed", "、".join(mixed) if mixed else "ありませんでした")
claims_table.style.hide(axis="index").set_properties(**{"text-align": "left"})

# %% [markdown]
# この結果から、出発点の設定を選びます。ページを実行したモデルの列は**表の値から自動で選び**、もう一方のモデルの列は
# このページの考え方と計算をもとにした出発点です（Qwen3-0.6B の列の数値は、Qwen3-0.6B で測った結果ではありません。
# tiny での判定が、隠れ次元が8倍ある Qwen3-0.6B でも成り立つとは限らないので、出発点として使い、必ず測って確かめます）。
#
# r の選び方は、1つのシードで「最良から 0.05 以内」のように選ぶと、シードによる揺れと同じ大きさの差で決まってしまいます。
# そこで、**α を固定した実験2(b) で、平均が最良の r と比べて「悪くなる」と判定されない最小の r** を選びます。

# %%
fixed_mean = fixed_alpha_seeds.groupby("lora_r")["val_loss"].mean()
best_fixed_r = int(fixed_mean.idxmin())
not_worse = [r for r in RANKS if r == best_fixed_r or compare_rows(fixed_alpha_seeds, {"lora_r": best_fixed_r},
                                                                   {"lora_r": r}).verdict != WORSE]
chosen_r = min(not_worse)
better_sched = [s for s, c in sched_verdicts.items() if c.verdict == BETTER]
sched_pick = min(better_sched, key=final_val.get) if better_sched else final_val.idxmin()
sched_choice = sched_pick if better_sched else f"{sched_pick}（どれでもよい）"
sched_reason = ("constant と比べて最後の検証損失が「良くなる」もののうち、平均が最良" if better_sched else
                "constant と比べて「良くなる」と判定されたスケジュールはなく、表示は平均が最良だったもの")
drop_pick = top if drop_vs_0.verdict == BETTER else float(d["val_loss"].idxmin())
drop_choice = drop_pick if drop_vs_0.verdict == BETTER else f"{drop_pick:g}（差ははっきりしない）"
epochs_pick = int(overfit["best_epoch"].median())

measured = {
    "ランク r": (chosen_r, f"α={ALPHA_REF} 固定で、平均が最良の r={best_fixed_r} と比べて「悪くなる」と判定されない最小の r（実験2）"),
    "α": (f"{best_alpha}（r を変えても固定）",
          "r=8 で平均の検証損失が最良だった α（実験2）"
          + (f"。α=16 と比べると「{compare_rows(alpha_seeds, {'lora_alpha': ALPHA_REF}, {'lora_alpha': best_alpha}).word}」"
             if best_alpha != ALPHA_REF else "")
          + "。r を変えるときは α を固定（Hu et al. 2021, §4.1）"),
    "対象モジュール": (vals.idxmin(), f"平均の検証損失が最良（実験3）。{MODULE_KEYS[0]} と比べて「{module_verdicts[vals.idxmin()].word}」"
                                  if vals.idxmin() != MODULE_KEYS[0] else "平均の検証損失が最良（実験3）"),
    "学習率": (f"{best_lr:g}", "平均の検証損失が最良（実験4-1）"),
    "エポック数": (f"{epochs_pick}（または早期終了 patience=2）",
              "検証損失が最小だったエポックのシードの中央値（実験4-2, 4-3）。シードごと: "
              + "、".join(str(e) for e in overfit["best_epoch"])),
    "スケジュール": (sched_choice, f"{sched_reason}（実験4-4）"),
    "ドロップアウト": (drop_choice, f"小さなデータで dropout {top:g} が 0 と比べて「{drop_vs_0.word}」（実験5）"),
}
qwen_start = {
    "ランク r": ("16", "約1000万個（1.7%）。アダプターの学習用メモリは約154 MiB で、GPU 1枚なら r は主因にならない"),
    "α": ("32（r を変えても固定）", "Hu et al. 2021, §4.1 のやり方：α は学習率と一緒に一度決め、r を変えるときは固定する"),
    "対象モジュール": ("all7", "元の実験とレベル3の設定と同じ。増えるパラメータもわずか"),
    "学習率": ("2e-4", "実験4-1の形（谷）を Qwen3-0.6B でも数点測って確かめる"),
    "エポック数": ("3〜5（早期終了 patience=2）", "小さなデータでは数エポックで検証損失が底を打ちやすい。早期終了で確かめる"),
    "スケジュール": ("linear（Transformers の既定）", "学習率とエポック数を決めてから比べる。差は小さいことが多い"),
    "ドロップアウト": ("0.05", "元の実験とレベル3の設定と同じ。データが少ないときは早期終了と並べて測る"),
}
here, other = (("tiny（CPU）", "Qwen3-0.6B（GPU 1枚）") if TINY else ("Qwen3-0.6B（GPU 1枚）", "tiny（CPU）"))
# もう一方が tiny のとき、値は tiny でこのページを実行したときの表に出る（測っていない値は書かない）
other_values = qwen_start if TINY else {k: ("—", "tiny でこのページを実行すると、測った値がこの表に入ります") for k in measured}
summary = pd.DataFrame([{"項目": k, f"{here}：測定から": v, "根拠（このページの測定）": why,
                         f"{other}：出発点": other_values[k][0], "理由": other_values[k][1]}
                        for k, (v, why) in measured.items()])
# 「測定から」の列を、そのまま学習できる設定にしたもの（最後の節で、テスト用で一度だけ測ります）
recommended = dict(lora_r=chosen_r, lora_alpha=best_alpha, target_modules=MODULE_SETS[vals.idxmin()],
                   learning_rate=best_lr, num_train_epochs=epochs_pick, lr_scheduler_type=sched_pick,
                   lora_dropout=drop_pick)
summary

# %% [markdown]
# ```{admonition} 出発点の使い方
# :class: tip
# 推奨値は「最初に試す設定」です。新しいデータやモデルでは、まず学習率を3点ほど（例：基準の 0.3 倍・1 倍・3 倍）測り、
# 次にエポック数を早期終了で決め、最後に r や対象モジュールを必要に応じて調整します（r を変えるときは α を固定します）。
# 大事な比較は、学習シードを変えて2〜3回繰り返してから判断します。
# 表とグラフを残しておけば、あとから「なぜこの設定にしたか」を説明できます。
# ```
#
# ## 最後に一度だけ：推奨の設定をテスト用で測る
#
# このページの選択は、すべて検証データで行いました。r・α・対象モジュール・学習率・エポック数・スケジュール・ドロップアウトを選んだのも、
# 早期終了が止めどきを決めたのも、学習用から取り分けた検証データ {glue:text}`l2_n_val` 件の検証損失です
# （別の話題の20問、つまりレベル1の検証用 `heldout.jsonl` は、実験6で形式を測っただけです）。
# 4-3 で見たように、選ぶのに使ったデータでの成績は実力より良く見えやすいので、選んだ設定を最後に、
# **何を選ぶのにも使っていないデータ**で測ります。レベル1と同じ**テスト用**（`test.jsonl`、学習用にも検証用にも出てこない話題の20問）です。
# このページでは、テスト用をここで初めて読み込みます。
#
# 上の表の「測定から」の列の設定（{glue:text}`l2_final_config`）で、ほかの実験と同じ学習データ・同じ学習シード
# （{glue:text}`l2_final_seed`）で1回だけ学習し、学習した直後にテスト用で損失と答えの形式（実験6と同じ3段階）を一度だけ測ります。
# 比べるために、同じモデルを検証データとレベル1の検証用でも測ります。

# %%
from course_lib.level1 import follows_format, load_level1_test
from course_lib.level2.final_test import split_scorer

test_records = load_level1_test()  # テスト用はここで初めて読み込む（学習用・検証用と同じ質問がないことも検査する）
test_ids = {r["id"] for r in test_records}
# ここまでの実験の学習と検証に渡した例（watch_records が記録）に、テスト用の例は1つもないはず
assert not test_ids & sweep.seen_ids, "テスト用の例を、設定を選ぶ実験に渡しています"


def greedy_answers(peft_model, tokenizer, prompts):
    """貪欲法の答え（実験6と同じ生成の設定）。"""
    return [a[0] for a in sample_answers(peft_model, tokenizer, prompts, temperature=0, max_new_tokens=64,
                                         progress=False)]


# 推奨の設定で1回だけ学習し、アダプターを付けたまま3つのデータで測る（テスト用を測るのはこの1回だけ）
final = sweep([dict(recommended, name="推奨の設定")], train_set, val_set, desc="final test",
              evaluate=split_scorer({"validation": val_set, "heldout": heldout, "test": test_records},
                                    greedy_answers)).iloc[0]

final_rows = [("検証データ（学習用から取り分け）", "validation", "設定選び・早期終了（検証損失）"),
              ("レベル1の検証用（heldout.jsonl）", "heldout", "実験6の形式の測定"),
              ("テスト用（test.jsonl）", "test", "この節で一度だけ")]
final_table = pd.DataFrame([{"データ": label, "件数": final[f"{key}_n"], "このページでの使い道": use,
                             "損失": final[f"{key}_loss"], "1行目【結論】": f"{final[f'{key}_line1_rate']:.0%}",
                             "2行目【理由】": f"{final[f'{key}_line2_rate']:.0%}",
                             "形式どおり": share(final[f"{key}_format_ok"], final[f"{key}_n"])}
                            for label, key, use in final_rows])
test_loss, heldout_loss, val_loss = final["test_loss"], final["heldout_loss"], final["validation_loss"]


def than(a, b):
    """損失 a が b と比べてどうだったかの文（表示する小数3桁で比べる）。"""
    diff = round(a, 3) - round(b, 3)
    return f"それより {abs(diff):.3f} {'高い' if diff > 0 else '低い'}値でした" if diff else "それと同じ値でした"


glue_text("l2_final_config", (f"r = {chosen_r}、α = {best_alpha}、対象 {vals.idxmin()}、学習率 {best_lr:g}、"
                              f"{epochs_pick} エポック、{sched_pick}、ドロップアウト {drop_pick:g}"))
glue_text("l2_final_seed", f"シード{seed}")
glue_text("l2_final_test_loss", f"{test_loss:.3f}")
glue_text("l2_final_test_line2", share(final["test_line2_ok"], final["test_n"]))
glue_text("l2_final_test_format", share(final["test_format_ok"], final["test_n"]))
# 1行目と2行目は形に合っているのに形式どおりでない答えと、そのうち3行目以降も書いた答え
test_lines = [a.split("\n") for a in final["test_answers"]]
near = [ls for ls, a in zip(test_lines, final["test_answers"])
        if len(ls) > 1 and ls[0].startswith("【結論】") and ls[1].startswith("【理由】") and not follows_format(a)]
n_more = sum(len(ls) > 2 for ls in near)
glue_text("l2_final_test_near", f"{len(near)} 問で、そのうち2行で止まらずに3行目以降も書いていた答えは {n_more} 問でした"
          if near else "ありませんでした")
glue_text("l2_final_heldout", f"損失 {heldout_loss:.3f}、形式どおり {share(final['heldout_format_ok'], final['heldout_n'])}")
glue_text("l2_final_vs_heldout", than(test_loss, heldout_loss))
glue_text("l2_final_val_loss", f"{val_loss:.3f}")
glue_text("l2_final_vs_val", than(test_loss, val_loss))
glue_text("l2_final_seen", len(sweep.seen_ids))
glue_text("l2_final_seen_ids", ",".join(sorted(sweep.seen_ids)))  # 本文には出さない（コースの自動テストが読む記録）
glue_text("l2_final_test_ids", ",".join(final["test_ids"]))
print(f"推奨の設定: {final['steps']} ステップ、学習 {final['seconds']:.1f} 秒")
final_table.style.hide(axis="index").format(precision=3).set_properties(**{"text-align": "left"})

# %% [markdown]
# **読み取り方**（このページの実行の値です）：推奨の設定のテスト用での損失は {glue:text}`l2_final_test_loss`、
# 2行目が【理由】で始まった答えは {glue:text}`l2_final_test_line2`、形式どおりだった答えは {glue:text}`l2_final_test_format` でした
# （形式どおりに数えるのは、実験6と同じく、2行で過不足なく終わり、各行が10〜60文字の答えだけです）。
# 1行目が【結論】、2行目が【理由】で始まっているのに形式どおりでなかった答えは {glue:text}`l2_final_test_near`。
# この設定の成績として報告するのは、このテスト用の数字です。
#
# - レベル1の検証用（テスト用と同じく、学習用に出てこない話題の20問）では {glue:text}`l2_final_heldout` で、
#   テスト用の損失は {glue:text}`l2_final_vs_heldout`。2つは質問が違うので、同じ例どうしを対にした比較はできません。
#   20問では形式の割合の区間も広く、学習も1つのシードの1回だけなので、この差の向きだけから結論は出しません。
# - 学習用から取り分けた検証データの損失は {glue:text}`l2_final_val_loss` で、テスト用の損失は {glue:text}`l2_final_vs_val`。
#   検証データは学習データと同じ `train.jsonl` から取り分けた質問なので、新しい話題のテスト用と同じ大きさになるとは限りません。
#
# このページの**どの設定選びも早期終了も、テスト用を見ていません**。実験の学習と検証に渡した {glue:text}`l2_final_seen` 件の例に
# テスト用の例が1件もないことは、上のセルで確かめました（`watch_records` が、実験に渡した例の id を記録しています）。
# この数字を見たあとで設定を選び直すと、テスト用も「選ぶのに使ったデータ」になってしまうので、ここで設定は変えません。

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. テスト用の形式どおりの割合が思ったより低かったので、学習率を変えて、もう一度テスト用で測って良いほうを選びたくなりました。何が問題ですか。
# 2. このページで、エポック数や早期終了の止めどきを決めるのに使ったのはどのデータですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. テスト用を見て設定を選ぶことになり、テスト用も「選ぶのに使ったデータ」になります。その設定のテスト用での成績は、実力より良く見えやすくなります。設定を比べ直すなら検証データで行い、テスト用は最後に一度だけ測ります。
# 2. 学習用から取り分けた検証データ（検証損失）です。テスト用は、この節で一度だけ使いました。
# ```

# %% [markdown]
# ## 練習問題
#
# **基本1**：r=64・7モジュールのとき、Qwen3-0.6B の LoRA パラメータ数はいくつになるでしょうか。まず手で計算し、
# `lora_parameter_count(qwen, 64)` で確かめてください。
#
# ### 解答例
#
# 下のセル（クリックで開きます）が解答例です。このページを作るときに実際に実行した結果が表示されます。
# 解答例は自分の変数名（`slow`, `rs_table` など）を使うので、このページのほかの結果は変わりません。

# %% tags=["hide-cell"]
# 基本1の解答例: 手計算の 64 × 22,528 × 28 と比べる
print(lora_parameter_count(qwen, 64))

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 1層・r=1 あたり 22,528 個なので、$64 \times 22{,}528 \times 28 = 40{,}370{,}176$ 個です。上のセルの表示と一致します。
# ```
#
# **基本2**：学習率を基準の 0.3 倍にして `LONG_EPOCHS` エポック学習し、検証損失が最小になるエポックが
# 基準の学習率のとき（実験4-2）より遅くなるか確かめてください。
#
# ### 解答例
#
# 実験4-2と同じく学習率を一定（constant）にして、学習率だけを 0.3 倍にします（シードはページの `seed` の1つだけ）。

# %% tags=["hide-cell"]
# 基本2の解答例: 学習率だけを 0.3 倍にして、実験4-2と同じ長さだけ学習する
slow = sweep([dict(learning_rate=BASE_LR * 0.3, num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant",
                   name="lr×0.3")], train_set, val_set, desc="exercise: lr×0.3")
print("検証損失が最小のエポック:", int(slow.iloc[0]["best_epoch"]), f"（基準の学習率では {best_epoch}、シード{seed}）")

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 学習率が低いと一歩が小さいので、同じ点に着くまでに多くのエポックがかかり、最小点は後ろにずれるのが普通です。
# 最小点が `LONG_EPOCHS` 目（最後）なら、その長さでは過学習が始まる前に学習が終わった、ということです。
# ```
#
# **発展1（rsLoRA）**：LoRA の標準（α を固定して倍率 α/r を掛ける）では、r を大きくすると倍率が 1/r で小さくなります。
# rsLoRA の論文は、これが大きな r で学習を遅くすると分析し、倍率を $\alpha/\sqrt{r}$ にすることを提案しました（実験2の解説を参照）。
# `run_sweep` の `lora_alpha` に $c\sqrt{r}$ を渡すと、倍率は $c\sqrt{r}/r = c/\sqrt{r}$ になります（PEFT なら `LoraConfig(use_rslora=True)` で同じ倍率）。
# $c = 16/\sqrt{8}$ とすると r = 8 で基準設定と同じになります。r = 8 以上の r を振り、(a) α = 2r（倍率 2）、(b) α = 16 固定（倍率 16/r）、
# (c) rsLoRA（倍率 $c/\sqrt{r}$）で、いちばん大きな r の学習損失と検証損失を比べてください。
# r > 8 では倍率が (b) < (c) < (a) の順に大きくなります。rsLoRA の分析のとおり「α/r では大きな r で学習が遅い」なら、
# (c) は (b) より学習損失が低くなるはずです。では、倍率がいちばん大きい (a) はどうなるでしょうか。予想してから測ってください。
#
# ### 解答例
#
# シードはページの `seed` の1つだけです。(a) と (b) は実験1・2の結果（同じシード）を使います。

# %% tags=["hide-cell"]
# 発展1の解答例: lora_alpha = c√r として r を振る（倍率 α/r は c/√r）
import math

rs_c = 16 / math.sqrt(8)
RS_RANKS = [r for r in RANKS if r >= 8]  # 倍率の違いが出るのは r > 8（r = 8 では3つとも同じ設定）
rs_table = sweep([dict(lora_r=r, lora_alpha=rs_c * math.sqrt(r)) for r in RS_RANKS], train_set, val_set,
                 desc="exercise: rsLoRA")
rs_compare = pd.concat([
    rank_seeds[(rank_seeds["seed"] == seed) & rank_seeds["lora_r"].isin(RS_RANKS)].assign(条件="(a) α = 2r"),
    fixed_alpha_seeds[(fixed_alpha_seeds["seed"] == seed) & fixed_alpha_seeds["lora_r"].isin(RS_RANKS)]
    .assign(条件="(b) α = 16 固定"),
    rs_table.assign(条件="(c) rsLoRA（α = c√r）"),
], ignore_index=True)
rs_last = rs_compare[rs_compare["lora_r"] == RANKS[-1]].set_index("条件")
order = rs_last["scaling"].sort_values().index  # 倍率の小さい順
fixed_row, rs_row, ratio_row = (rs_last.loc[k] for k in order)
rs_sentence = (f"rsLoRA（倍率 {rs_row['scaling']:.2f}）は α 固定（倍率 {fixed_row['scaling']:.2f}）より学習損失が"
               + ("低く、rsLoRA の分析（α/r では大きな r で学習が遅い）と同じ向きでした。" if rs_row["train_loss"] < fixed_row["train_loss"]
                  else "低くならず、rsLoRA の分析とは違う結果でした。"))
ratio_sentence = (f"倍率がいちばん大きい α = 2r（倍率 {ratio_row['scaling']:.2f}）は、"
                  + ("学習損失もいちばん低くなりました。" if ratio_row["train_loss"] == rs_last["train_loss"].min() else
                     "学習損失がいちばん低いわけではなく、倍率は大きければよいわけではありません（実験2の α を大きくしすぎたときと同じです）。"))
glue_text("l2_rs_r", RANKS[-1])
glue_text("l2_rs_result", "、".join(f"{k}: 倍率 {row['scaling']:.2f}、学習損失 {row['train_loss']:.3f}、検証損失 {row['val_loss']:.3f}"
                                   for k, row in rs_last.loc[order].iterrows()))
glue_text("l2_rs_agree", rs_sentence + ratio_sentence)
print(rs_compare.pivot_table(index="lora_r", columns="条件", values=["train_loss", "val_loss"]).round(3).to_string())

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# このページの実行では、r = {glue:text}`l2_rs_r` で {glue:text}`l2_rs_result`（倍率の小さい順）。{glue:text}`l2_rs_agree`
# 検証損失は、学習が速いほど良いとは限りません（速すぎれば過学習や不安定になります）。
# rsLoRA の論文が扱うのは、隠れ次元が数千ある大きなモデルで r を数百以上にする場合です。隠れ次元が {glue:text}`l2_hidden` の tiny では
# r = {glue:text}`l2_rs_r` はもう低ランクではないので、同じ結果になるとは限りません。また、1つのシードの結果なので、確かめるにはシードを増やします。
# ```
#
# **発展2**：早期終了の `early_stopping_threshold` を 0.05 にすると、停止するエポックはどう変わるでしょうか。
# 検証損失の1エポックあたりの改善幅（実験4-2のグラフ）と照らし合わせて予想してから測ってください。
#
# ### 解答例
#
# 実験4-3と同じ設定（シードはページの `seed`）で、`early_stopping_threshold` だけを 0.05 にします。

# %% tags=["hide-cell"]
# 発展2の解答例: 改善幅が 0.05 未満なら「改善なし」と数える早期終了
strict = sweep([dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant", early_stopping_patience=2,
                     early_stopping_threshold=0.05, name="threshold=0.05")], train_set, val_set,
               desc="exercise: threshold")
print(strict.epoch_curves()["epoch"].max(), "エポック目で停止（threshold=0 では", stopped_epoch, "エポック目）")

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 0.05 未満の改善は「改善なし」と数えるので、検証損失の下がり方がゆるやかになった時点で早めに止まります。
# 最良点の少し手前で止まることもあり、止めどきと性能の引き換えになります。
# ```
#
# ## このページのまとめ
#
# 最後に、このページの計算にかかった時間と、レベル3の設定を表示します。

# %%
from course_lib.level3.config import LoopConfig

elapsed = time.perf_counter() - PAGE_START
l3 = LoopConfig.for_profile(loaded.profile)
l3_modules = ", ".join(m.replace("_proj", "") for m in l3.target_modules)
glue_text("l2_elapsed", f"{elapsed / 60:.1f} 分（{loaded.label}、quick={quick}、学習シード {seed_labels(SEEDS)}、"
                        f"PyTorch のスレッド数 {torch.get_num_threads()}）")
glue_text("l2_l3_config", f"学習率 {l3.learning_rate:g}、r = {l3.lora_r}、α = {l3.lora_alpha}、ドロップアウト {l3.lora_dropout:g}、"
                          f"対象 {l3_modules}、最初の学習 {l3.epochs_initial:g} エポック・反復ごとに {l3.epochs_iter:g} エポック")
glue_text("l2_l3_lm_head", "tiny では、ほとんど学習されていない埋め込みと重みを共有する出力層（lm_head）にも LoRA を付けています。"
          if "lm_head" in l3.target_modules else "")
print(f"このページの計算時間: {elapsed / 60:.1f} 分")
print(f"レベル3（{loaded.profile}）の設定: {l3_modules} / lr {l3.learning_rate:g} / r {l3.lora_r} / α {l3.lora_alpha} / "
      f"{l3.epochs_initial:g} + {l3.epochs_iter:g} エポック")

# %% [markdown]
# - 各パラメータの効果を、**1つずつ変えて、学習シードを変えて繰り返し測る**ことで確かめました。よく言われる説明のうち、
#   測定と合うものも合わないものもありました。判定が「シードによって違う」になった比較は、1回の学習だけでは
#   結論が逆になりうる比較です（このページでは {glue:text}`l2_mixed`）。
# - パラメータ数は $r \times (d_\text{in}+d_\text{out})$ で正確に計算でき、PEFT の表示と一致します。
# - スケジュールによる最良の検証損失の幅（{glue:text}`l2_sched_range`）は、学習率による幅（{glue:text}`l2_lr_range`）より {glue:text}`l2_sched_vs_lr` 値でした。
#   {glue:text}`l2_priority`。
#   r を変えるときは α を固定し（Hu et al. 2021）、大きな r では rsLoRA も候補になります。
# - 設定はすべて検証データで選び、選んだ設定だけを最後にテスト用で一度だけ測りました（損失 {glue:text}`l2_final_test_loss`、
#   形式どおり {glue:text}`l2_final_test_format`）。
# - 計算コストは主に系列長とバッチサイズで決まり、Qwen3-0.6B でも r=16 のアダプターは全体の約1.7%です。
# - このページの計算時間：{glue:text}`l2_elapsed`。
#
# 次のレベル3では、医療を題材にした自己改善ループ（生成 → 採点 → 学習の繰り返し）を作ります
# （教育目的の題材であり、医療上の助言ではありません）。レベル3は**このページで選んだ設定を使うのではなく**、
# 元の実験に合わせた自分の設定を使います。このページを実行したモデルでは {glue:text}`l2_l3_config` です。{glue:text}`l2_l3_lm_head`
# このページの考え方（学習率とエポック数をまず測る、シードを変えて確かめる）は、レベル3の結果を読むときにもそのまま使えます。

# %% tags=["remove-input"]
# CI の回帰チェック（このセルはページに表示しません）。しきい値は tiny モデル・quick=True で測った傾向に合わせてあります。
assert explorer.figure is not None or explorer.widget is not None, "エクスプローラーは図かウィジェットを出すはず"
assert by_len.loc[longest, "sec_per_step"] > 2 * by_len.loc[shortest, "sec_per_step"], "長い系列ほど時間がかかる"
assert by_len.loc[longest, "peak_memory_mb"] > by_len.loc[shortest, "peak_memory_mb"] + 20, "長い系列ほどメモリを使う"
assert len(SEEDS) >= (2 if quick else 3), "比較は複数の学習シードで繰り返す"
assert set(rank_seeds["seed"]) == set(SEEDS) == set(sched_seeds["seed"]) == set(dropout_seeds["seed"]), "どの比較も全シード"
assert not test_ids & sweep.seen_ids, "練習問題の学習も含め、テスト用の例はどの実験にも渡していない"
assert final["test_ids"] == tuple(r["id"] for r in test_records) and final["test_n"] == 20, "テスト用の20問すべてを測った"
if TINY:
    # 実験1：ランク（シードの平均と、シードをまたいだ判定）
    assert rank_mean.iloc[0] > rank_mean.min() + 0.1, "いちばん小さい r は明らかに不利だった"
    assert rank_verdicts[f"r={RANKS[0]}（α={2 * RANKS[0]}）"].verdict == WORSE, "いちばん小さい r はどのシードでも悪い"
    # 実験2：α と α/r
    assert best_alpha not in (min(ALPHAS), max(ALPHAS)), "α は小さすぎても大きすぎても悪い（山ではなく谷の形）"
    assert spread_alpha < spread_ratio, "tiny では α 固定のほうが r による差が小さかった"
    assert scale_verdicts[f"r={RANKS[0]}"].mean_diff < 0, "小さな r では α 固定（倍率が大きい）のほうが良い（本文の説明）"
    # 実験3：対象モジュール
    assert vals["q,v"] > vals["all7"] + 0.2, "tiny では 7 モジュールすべてのほうが明らかに良かった"
    # 実験4：学習率・エポック数・早期終了・スケジュール
    assert best_lr not in (lr_mean.index.min(), lr_mean.index.max()), "学習率は低すぎても高すぎても悪い"
    assert lr_low.verdict == WORSE, "低すぎる学習率はどのシードでも悪い"
    assert (overfit["best_epoch"] < LONG_EPOCHS).all(), "最後まで学習するより前に検証損失の最小がある"
    assert (overfit["final_val"] > overfit["best_val"]).all(), "最小のあと検証損失は上がる（過学習）"
    assert (overfit["final_train"] < overfit["train_at_best"]).all(), "そのあいだも学習損失は下がり続ける"
    assert es["stopped_early"] and stopped_epoch < LONG_EPOCHS, "検証損失が上がると予定より前に止まる（シード seed）"
    assert sched_range < lr_range, "tiny ではスケジュールの違いより学習率の違いのほうが効いた"
    assert final_val["constant"] > final_val.drop("constant").min(), "学習率を下げると終盤の悪化がゆるやか（平均）"
    # 実験5：ドロップアウト
    assert d.loc[top, "train_loss"] > d.loc[0.0, "train_loss"], "ドロップアウトを入れると学習データへの当てはまりは弱まる"
    assert d.loc[top, "gap"] < d.loc[0.0, "gap"], "その分、学習と検証の差（過学習の度合い）は縮む"

# %% tags=["remove-cell"]
# 実行状況ページの「時間の内訳」のために、学習・生成・採点などにかかった秒数をファイルに書き出します。
from course_lib.timing import write_breakdown

write_breakdown("level2_parameters");  # 「;」: 戻り値（ファイルの場所）を表示しない
