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
#   何を変えるのかを、説明を読むのではなく**自分で測って**確かめる。測った表から、出発点になる設定を選べるようになる
# - **前提知識**: レベル0（環境の確認）とレベル1（LoRA の基礎：アダプターを付けて学習し、損失曲線を読む）
# - **所要時間**: 約60分（計算は CPU で約10〜15分。`quick=True` にすると約3分）
# ```
#
# LoRA の解説には「ランクを上げると表現力が上がる」「ドロップアウトで過学習を防ぐ」「α は強さを決める」
# といった説明がよく出てきます。このページでは、そうした説明を**一つずつ実験で確かめます**。
# どの実験も、同じデータ・同じ基準設定から**つまみ（パラメータ）を1つだけ**動かし、結果を表とグラフにします。
#
# | よく言われること | このページでの確かめ方 |
# | --- | --- |
# | ランク r を上げると表現力が上がる | 実験1：r = 1〜32 でパラメータ数と損失を測る |
# | α（alpha）は適応の強さを決める。実効的な学習率は α/r で決まる | 実験2：r を固定して α を変える／α/r を固定して r を変える |
# | 対象モジュールを増やすほど包括的に学習できる | 実験3：注意機構だけ／MLP の一部まで／7つすべて |
# | 学習率は低めが慎重で安全。エポックを増やすと深く学習する | 実験4：学習率の掃引（sweep）と、長めの学習での検証損失 |
# | 早期終了（early stopping）とスケジュールで学習が安定する | 実験4：`EarlyStoppingCallback`、linear / cosine / constant（ウォームアップ付き） |
# | ドロップアウト（dropout）は過学習を防ぐ | 実験5：わざと小さくしたデータで 0 / 0.05 / 0.1 を比べる |
# | 「高表現力」設定と「効率重視」設定では効率重視が得 | 実験6：A（r=16, α=32, 5エポック）と B（r=12, α=24, 4エポック）の A/B 比較 |
#
# 最後に、測った表をもとに推奨の出発点をまとめ、計算コストが r と系列長でどう増えるかを見ます。

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny", quick=True）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b"
quick = False  # True: 実験の格子（grid）を小さくして約3分で終える
seed = 0

# %% [markdown]
# ## 0. 準備：モデルとデータ
#
# モデルは**1回だけ**読み込み、すべての実験で使い回します。各実験では、同じベースモデル（base model）に
# 新しい LoRA アダプターを付けて学習し、測り終わったら取り外して（`unload()`）元のベースモデルに戻します。
# 取り外したあと、ベースモデルの重みが1つも変わっていないことも毎回確認します。

# %%
from course_lib.lesson import start_lesson, show_model_note
from course_lib.profiles import load_model

start_lesson(seed)
loaded = load_model(model_profile)
model, tokenizer = loaded.model, loaded.tokenizer
show_model_note(loaded)
TINY = loaded.profile == "tiny"

# %% [markdown]
# ```{admonition} CPU のスレッド数について
# :class: note
# tiny モデルの行列はとても小さいので、CPU のスレッドを増やしても速くなりません。それどころか、
# 同じ CPU をほかのプログラムと分け合っていると、スレッドどうしが待ち合わせて**何倍も遅く**なります
# （このコースを作った、ほかの作業と共有の2コアの計算機で、1ステップ 0.22〜0.31 秒（1スレッド）に対して 1.3〜3.4 秒（2スレッド）でした）。
# そこで `load_model` は、tiny を CPU で動かすときにスレッドを1つにします。大きなモデルや GPU ではこの設定はしません。
# ```

# %%
import torch

print("PyTorch のスレッド数:", torch.get_num_threads())

# %% [markdown]
# データはレベル1と同じ、「【結論】」「【理由】」の2行で答える指示データ（60件）です。
# そのうち2割を**検証データ（validation data）**として取り分け、学習には使いません。
# 検証損失（validation loss）は「学習していない質問にどれだけ当てはまるか」の目安で、
# 過学習（overfitting）を見つける手がかりになります。形式が身についたかは、別の話題の評価用20件（heldout）で確かめます。

# %%
from course_lib.data import train_val_split
from course_lib.level1 import load_level1

records, heldout = load_level1()  # レベル1と同じ読み込み方（形式の規則も同じものを使います）
train_set, val_set = train_val_split(records, val_fraction=0.2, seed=seed)
print(f"学習: {len(train_set)} 件 / 検証: {len(val_set)} 件 / 評価用（別の話題）: {len(heldout)} 件")

# %% [markdown]
# ### 基準設定（reference configuration）
#
# すべての実験はこの設定から出発し、1つのつまみだけを変えます。比較をはっきりさせるため、基準設定ではドロップアウトを 0 にしています
# （ドロップアウトは実験5で調べます）。学習率はモデルによって適した値が大きく違うので、tiny モデルと Qwen3-0.6B で別の値を使います
# （モデルごとに違う設定は `PROFILE_SETTINGS` の表にまとめ、読み込んだモデルの行を `SETTINGS` として使います）。
# `quick=True` のときは、格子を小さくし、エポック数を減らします。
#
# 設定の名前は、PEFT の `LoraConfig`（`lora_alpha`, `lora_dropout`, `target_modules`）と Transformers の
# `TrainingArguments`（`learning_rate`, `num_train_epochs`, `lr_scheduler_type` など）に合わせてあります
# （ランクだけは `LoraConfig` では `r` ですが、ほかの設定と並べても分かるよう `lora_r` と呼びます）。
# 表の列名も同じ名前なので、ここで覚えた名前をそのまま本物のライブラリで使えます。

# %%
from functools import partial

import pandas as pd

from course_lib.level2.explorer import running_in_jupyterlab
from course_lib.level2.sweep import MODULE_SETS, run_sweep
from course_lib.lora import ALL_PROJ_MODULES

# モデルごとに違う設定（tiny は大きな学習率が必要。実験4で確かめます）
PROFILE_SETTINGS = {
    "tiny": {"learning_rate": 1e-2, "per_device_train_batch_size": 8},
    "qwen3-0.6b": {"learning_rate": 2e-4, "per_device_train_batch_size": 8},
}
SETTINGS = PROFILE_SETTINGS[loaded.profile]
BASE_LR = SETTINGS["learning_rate"]
REF = dict(lora_r=8, lora_alpha=16, lora_dropout=0.0, target_modules=ALL_PROJ_MODULES, learning_rate=BASE_LR,
           num_train_epochs=3 if quick else 5, per_device_train_batch_size=SETTINGS["per_device_train_batch_size"])
LONG_EPOCHS = 8 if quick else 15  # 過学習を見るための長めの学習
ALL_RANKS = [1, 2, 4, 8, 16, 32]
RANKS = [2, 8, 32] if quick else ALL_RANKS
ALPHAS = [4, 16, 64] if quick else [2, 4, 8, 16, 32, 64]
MODULE_KEYS = ["q,v", "attention", "all7"] if quick else list(MODULE_SETS)
LR_FACTORS = [0.1, 1, 3] if quick else [0.1, 0.3, 1, 3]

live = running_in_jupyterlab()  # JupyterLab で開いているときだけ進捗バーとウィジェットを出す
cache = {}  # 同じ設定の学習は一度だけ（実験どうしで結果を共有）
sweep = partial(run_sweep, model, tokenizer, progress=live, defaults=REF, seed=seed, cache=cache)

pd.DataFrame({"値": {k: (", ".join(v) if isinstance(v, tuple) else v) for k, v in REF.items()}})

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
from course_lib.lora import lora_parameter_count, lora_parameter_table

print(f"r=8 のときの内訳（{loaded.label}）")
lora_parameter_table(model, lora_r=8)

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
# 表の「学習損失」と「検証損失」は、学習を終えたモデルで学習データ・検証データ全体の損失を測り直した値です。

# %%
from course_lib.level2.tables import japanese_table

rank_table = sweep([dict(lora_r=r, lora_alpha=2 * r) for r in RANKS], train_set, val_set, desc="rank")
japanese_table(rank_table, ["lora_r", "lora_alpha", "trainable_params", "trainable_pct", "train_loss", "val_loss",
                            "seconds"])

# %%
import matplotlib.pyplot as plt
import seaborn as sns


def loss_long(table, x):
    """各行の学習損失と検証損失を縦長の形にする（seaborn の折れ線1本ずつにするため）。"""
    return table.melt(id_vars=[x], value_vars=["train_loss", "val_loss"], var_name="種類", value_name="損失").replace(
        {"train_loss": "学習損失（train）", "val_loss": "検証損失（validation）"})


def log2_axis(ax, ticks, labels=None):
    """底2の対数目盛の x 軸に、指定した目盛だけを付ける（r や α は点ごとに2倍になるため）。"""
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, labels or [str(t) for t in ticks])
    ax.minorticks_off()


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
sns.lineplot(data=counts, x="lora_r", y="trainable_params", marker="o", ax=ax1)
ax1.set(yscale="log", xlabel="ランク r", ylabel="学習可能パラメータ数", title="パラメータ数は r に比例する")
log2_axis(ax1, ALL_RANKS)
sns.lineplot(data=loss_long(rank_table, "lora_r"), x="lora_r", y="損失", hue="種類", marker="o", ax=ax2)
ax2.set(xlabel="ランク r（α = 2r）", title="r と学習後の損失")
log2_axis(ax2, RANKS)
plt.tight_layout()
plt.show()

# %%
best_rank = rank_table.loc[rank_table["val_loss"].idxmin()]
print(f"検証損失が最も低かったのは r={best_rank['lora_r']}（{best_rank['val_loss']:.3f}）")

# %% [markdown]
# **読み取り方**：r が小さすぎると、追加行列の幅が足りず損失が下がりきりません。r を上げると学習損失は下がりますが、
# 効果はだんだん小さくなり、パラメータ数（と学習するメモリ）だけが比例して増えていきます。
# tiny モデルでは、α/r を 2 に固定したまま r を 32 まで上げると、かえって損失が悪くなることがあります。その理由は次の実験2で調べます。
#
# 「r を上げれば上げるほど良い」わけではない、というのが測った結果です。

# %% [markdown]
# ## 実験2：α と α/r のスケーリング
#
# 式 $W' = W + \frac{\alpha}{r} BA$ のとおり、**α（alpha）** は追加分 $BA$ に掛かる倍率 $\alpha/r$ を決めます。
# よく「実効的な学習率は α/r で決まる」と説明されます。これを2通りに確かめます。
#
# 1. r = 8 に固定して α を変える（α/r が変わる）
# 2. r を変えるとき、(a) α/r = 2 に固定する（実験1の表）と (b) α = 16 に固定する、を比べる
#
# 「α/r だけで決まる」のなら、(a) では r を変えても損失はほぼ同じになり、(b) では大きく変わるはずです。

# %%
alpha_table = sweep([dict(lora_alpha=a) for a in ALPHAS], train_set, val_set, desc="alpha")
japanese_table(alpha_table, ["lora_r", "lora_alpha", "scaling", "train_loss", "val_loss"])

# %%
fixed_alpha_table = sweep([dict(lora_r=r, lora_alpha=16) for r in RANKS], train_set, val_set, desc="fixed alpha")
compare = pd.concat([
    rank_table.assign(条件="α/r = 2 で固定（α = 2r）"),
    fixed_alpha_table.assign(条件="α = 16 で固定（α/r = 16/r）"),
])
japanese_table(compare, ["条件", "lora_r", "lora_alpha", "scaling", "train_loss", "val_loss"])

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
sns.lineplot(data=loss_long(alpha_table, "lora_alpha"), x="lora_alpha", y="損失", hue="種類", marker="o", ax=ax1)
ax1.set(xlabel="α（r = 8 で固定）", title="α を変える")
log2_axis(ax1, ALPHAS, [f"{a}\n(α/r={a / 8:g})" for a in ALPHAS])
sns.lineplot(data=compare, x="lora_r", y="val_loss", hue="条件", marker="o", ax=ax2)
ax2.set(xlabel="ランク r", ylabel="検証損失", title="r を変えるとき、何を固定するか")
log2_axis(ax2, RANKS)
plt.tight_layout()
plt.show()

# %%
spread_ratio = rank_table["val_loss"].max() - rank_table["val_loss"].min()
spread_alpha = fixed_alpha_table["val_loss"].max() - fixed_alpha_table["val_loss"].min()
best_alpha = alpha_table.loc[alpha_table["val_loss"].idxmin(), "lora_alpha"]
print(f"α/r を固定して r を変えたときの検証損失の幅: {spread_ratio:.3f}")
print(f"α を固定して r を変えたときの検証損失の幅  : {spread_alpha:.3f}")
print(f"r=8 で検証損失が最も低かった α: {best_alpha}（α/r = {best_alpha / 8:g}）")

# %% [markdown]
# **読み取り方**：
#
# - α を大きくすると、学習率を上げたときと同じように学習が速く進みます。大きすぎると学習が不安定になり、損失はかえって悪くなります。
#   α は「強さ」というより、**学習率と掛け合わさる倍率**だと考えると実態に合います。
# - tiny モデルの測定では、**α/r を固定したほうが r による差が大きく**、α を固定したほうが差が小さくなりました。
#   つまり「実効的な学習率は α/r だけで決まる」という説明は、この測定とは合いません。
#
# ```{admonition} なぜ α/r ではなく α が効くのか（一つの説明）
# :class: dropdown
# 学習に使う AdamW は、勾配の大きさをならして、各パラメータをだいたい「学習率くらい」ずつ動かします。
# $B$ の各要素が学習率くらいずつ動くと、積 $BA$ は r 個の項の和なので、r に比例して大きく変わりやすくなります。
# そこに $\alpha/r$ を掛けると、重みの変化は r によらずおよそ $\alpha \times$ 学習率 の大きさになります。
# このため、α/r を固定して r を上げると、実質的には学習率を上げたのと近い効果が出ます。
# r を大きくしても安定するように、倍率を $\alpha/\sqrt{r}$ にする rsLoRA（rank-stabilized LoRA）という方法もあります
# （PEFT では `LoraConfig(use_rslora=True)`）。
# ```
#
# 実務上の結論：**r を変えたら学習率か α を調べ直す**こと。よく使われる「α = 2r」は出発点としては妥当ですが、
# r を大きく変えるときはそのままでよいとは限りません。

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
module_table = sweep([dict(target_modules=MODULE_SETS[k]) for k in MODULE_KEYS], train_set, val_set, desc="modules")
japanese_table(module_table, ["target_modules", "trainable_params", "trainable_pct", "train_loss", "val_loss",
                              "seconds"])

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
sns.barplot(data=module_table, x="target_modules", y="val_loss", hue="target_modules", legend=False, ax=ax)
for i, row in module_table.reset_index(drop=True).iterrows():
    ax.annotate(f"{row['trainable_params']:,} 個", (i, row["val_loss"]), ha="center", va="bottom", fontsize=9)
ax.set(xlabel="対象モジュール", ylabel="検証損失", title="対象モジュールと検証損失（数字は学習可能パラメータ数）")
ax.margins(y=0.12)
plt.tight_layout()
plt.show()

# %%
vals = module_table.set_index("target_modules")["val_loss"]
assert module_table["trainable_params"].is_monotonic_increasing, "対象を増やすとパラメータ数も増える"

# %% [markdown]
# **読み取り方**：対象を増やすとパラメータ数が増え、同じ r・同じエポック数でも損失がより下がりました。
# とくに MLP（`gate_proj, up_proj, down_proj`）は行列が大きいので、パラメータ数の増え方も大きくなります。
# 増えたパラメータ数に対して、損失がどれだけ下がったか（費用対効果）も表で見比べてみましょう。

# %% [markdown]
# ## 実験4：学習率・エポック数・早期終了・スケジュール
#
# ### 4-1. 学習率（learning rate）の掃引
#
# 基準の学習率の 0.1 倍〜3 倍を、同じエポック数で比べます。

# %%
lr_table = sweep([dict(learning_rate=BASE_LR * f) for f in LR_FACTORS], train_set, val_set, desc="lr")
japanese_table(lr_table, ["learning_rate", "train_loss", "val_loss", "seconds"])

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
sns.lineplot(data=loss_long(lr_table, "learning_rate"), x="learning_rate", y="損失", hue="種類", marker="o", ax=ax)
ax.set(xscale="log", xlabel="学習率（対数目盛）", title=f"学習率と損失（{REF['num_train_epochs']} エポック）")
plt.tight_layout()
plt.show()

best_lr = lr_table.loc[lr_table["val_loss"].idxmin(), "learning_rate"]
print(f"検証損失が最も低かった学習率: {best_lr:g}")

# %% [markdown]
# **読み取り方**：学習率が低すぎると、決められたエポック数では損失が下がりきりません（「慎重」というより「進まない」）。
# 高すぎると更新が大きすぎて損失が跳ね、かえって悪くなります。ちょうどよい値は**モデルとデータによって何桁も違う**ので、
# ほかの人の設定をそのまま使わず、このように数点を測って確かめるのが確実です。
# たとえば tiny モデルには、Qwen3-0.6B でよく使われる 2e-4 よりずっと大きな学習率が必要です。

# %% [markdown]
# ### 4-2. エポック数と過学習：検証曲線から「止めどき」を見つける
#
# 同じ設定で長めに（`LONG_EPOCHS` エポック）学習し、エポックごとの学習損失と検証損失を並べます。
# 変化を見やすくするため、ここでは学習率を最後まで一定（constant）にします（学習率を下げていく方法は 4-4 で比べます）。
# 学習損失が下がり続けているのに検証損失が上がり始めたら、それが**過学習の始まり**です。

# %%
long_table = sweep([dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant", name="constant")],
                   train_set, val_set, desc="long")
curves = long_table.epoch_curves()
best_epoch = int(long_table.iloc[0]["best_epoch"])

fig, ax = plt.subplots(figsize=(8, 4))
sns.lineplot(data=curves, x="epoch", y="train_loss", marker="o", label="学習損失（train）", ax=ax)
sns.lineplot(data=curves, x="epoch", y="val_loss", marker="o", label="検証損失（validation）", ax=ax)
ax.axvline(best_epoch, color="gray", linestyle="--")
ax.annotate(f"検証損失が最小: {best_epoch} エポック目", (best_epoch, curves["val_loss"].min()),
            textcoords="offset points", xytext=(10, 25), fontsize=10)
ax.set(xlabel="エポック（epoch）", ylabel="損失（loss）", title="長めの学習と過学習の始まり")
plt.tight_layout()
plt.show()

final = curves.iloc[-1]
at_best = curves[curves["epoch"] == best_epoch].iloc[0]
print(f"最良の検証損失 {at_best['val_loss']:.3f}（{best_epoch} エポック目）→ 最後 {final['val_loss']:.3f}（{int(final['epoch'])} エポック目）")
print(f"その間に学習損失は {at_best['train_loss']:.3f} → {final['train_loss']:.3f}")

# %% [markdown]
# 最小点のあとは、学習データには合わせ続けている（学習損失は下がる）のに、学習していない検証データには合わなくなっています。
# よく「エポックを増やすと深く学習する」と言われますが、小さなデータでは**増やしすぎると検証損失が悪化**します。
#
# ### 4-3. 早期終了（early stopping）
#
# 検証損失が改善しなくなったら自動で止めるのが早期終了です。Hugging Face の `Trainer` では
# `EarlyStoppingCallback` を使います。ここでは `TrainConfig(early_stopping_patience=2)` を指定すると、
# コースの `train()` が中で `EarlyStoppingCallback(early_stopping_patience=2)` を付け、
# 最後に**検証損失が最良だった時点の重み**に戻します（`load_best_model_at_end=True`）。
# 「2回続けて改善しなかったら止める」という設定です。

# %%
es_table = sweep([dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant", early_stopping_patience=2,
                       name="早期終了あり")], train_set, val_set, desc="early stopping")
es = es_table.iloc[0]
stopped_epoch = es_table.epoch_curves()["epoch"].max()
print(f"{LONG_EPOCHS} エポックの予定が {stopped_epoch} エポック目で止まりました（{es['steps']} ステップ）")
print(f"戻した重みの検証損失: {es['val_loss']:.3f}（最良だった {int(es['best_epoch'])} エポック目の値）")
assert abs(es["val_loss"] - es["best_val_loss"]) < 1e-4, "最後に最良の重みへ戻っている"

# %%
both = pd.concat([curves.assign(設定=f"最後まで（{LONG_EPOCHS} エポック）"),
                  es_table.epoch_curves().assign(設定="早期終了あり（patience=2）")])
fig, ax = plt.subplots(figsize=(8, 4))
sns.lineplot(data=both, x="epoch", y="val_loss", hue="設定", style="設定", markers=True, ax=ax)
ax.axvline(stopped_epoch, color="gray", linestyle=":")
ax.set(xlabel="エポック（epoch）", ylabel="検証損失", title="早期終了は最小点の少しあとで止まり、最良の重みに戻す")
plt.tight_layout()
plt.show()

# %% [markdown]
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
# - **cosine**：コサイン曲線に沿って 0 まで下げる（はじめはゆっくり、中盤で速く下がる）
# - **constant_with_warmup**：最初の数ステップ（ウォームアップ, warmup）で 0 から上げ、あとは一定
# - **constant**：ずっと一定（4-2 の学習。比較の基準として並べます）
#
# ある学習率で数エポック、次に半分で数エポック…と段階的に下げる方法（手動のステップ減衰）も、linear や cosine に近い考え方です。

# %%
steps_per_epoch = -(-len(train_set) // REF["per_device_train_batch_size"])
schedules = [("linear", 0), ("cosine", 0), ("constant_with_warmup", steps_per_epoch), ("constant", 0)]
sched_table = sweep([dict(num_train_epochs=LONG_EPOCHS, lr_scheduler_type=s, warmup_steps=w, name=s)
                     for s, w in schedules], train_set, val_set, desc="schedule")
sched_curves = sched_table.epoch_curves()
sched_table["final_val_loss"] = sched_curves.groupby("run")["val_loss"].last().values
japanese_table(sched_table, ["lr_scheduler_type", "best_val_loss", "best_epoch", "final_val_loss", "train_loss"],
               labels={"final_val_loss": "最後の検証損失"})

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
lrs = sched_table.histories.dropna(subset=["loss"])
sns.lineplot(data=lrs, x="step", y="learning_rate", hue="name", ax=ax1)
ax1.set(xlabel="ステップ（step）", ylabel="学習率", title="スケジュールごとの学習率")
sns.lineplot(data=sched_curves, x="epoch", y="val_loss", hue="name", marker="o", ax=ax2)
ax2.set(xlabel="エポック（epoch）", ylabel="検証損失", title="スケジュールごとの検証損失")
for ax in (ax1, ax2):
    ax.legend(title="スケジュール")
plt.tight_layout()
plt.show()

# %%
lr_end = lrs.groupby("name")["learning_rate"].last()
assert lr_end["cosine"] < 0.05 * BASE_LR and lr_end["linear"] < 0.05 * BASE_LR, "linear と cosine は最後に 0 近くまで下がる"
assert abs(lr_end["constant_with_warmup"] - BASE_LR) < 1e-12, "constant_with_warmup はウォームアップのあと一定"
assert lrs[lrs["name"] == "constant_with_warmup"]["learning_rate"].iloc[0] < BASE_LR, "最初は小さい値から始まる"
sched_range = sched_table["best_val_loss"].max() - sched_table["best_val_loss"].min()
lr_range = lr_table["val_loss"].max() - lr_table["val_loss"].min()
print(f"スケジュールによる最良検証損失の差: {sched_range:.3f} ／ 学習率による差: {lr_range:.3f}")
final_val = sched_table.set_index("lr_scheduler_type")["final_val_loss"]

# %% [markdown]
# **読み取り方**：このデータでは、スケジュールの違いによる最良の検証損失の差は、学習率を変えたときの差よりずっと小さくなりました。
# 違いが出やすいのは**学習の終わり**です。学習率を 0 近くまで下げる linear と cosine は、一定のまま続ける constant に比べて
# 終盤の重みの動きが小さく、過学習の進み方がゆるやかになります。ウォームアップは、学習の最初に大きすぎる更新で
# 損失が跳ねるのを防ぎます（その分、立ち上がりは少し遅れます）。
# 優先順位としては、**まず学習率とエポック数（または早期終了）を決め、スケジュールはその次**で十分です。

# %% [markdown]
# ## 実験5：ドロップアウト（dropout）
#
# LoRA のドロップアウトは、学習中に LoRA への入力の一部をランダムに 0 にして、特定の入力に頼りすぎないようにする仕組みです
# （推論時には働きません）。効果が見えやすいように、**学習データをわざと12件に減らし**、エポック数を増やして
# 過学習しやすい状況を作ります。検証データは同じ12件を使います。

# %%
small_train = train_set[:12]
DROPOUT_EPOCHS = 10 if quick else 20
dropout_table = sweep([dict(lora_dropout=p) for p in [0.0, 0.05, 0.1]], small_train, val_set, desc="dropout",
                      defaults={**REF, "per_device_train_batch_size": 4, "num_train_epochs": DROPOUT_EPOCHS})
dropout_table["gap"] = dropout_table["val_loss"] - dropout_table["train_loss"]
japanese_table(dropout_table, ["lora_dropout", "train_loss", "val_loss", "gap", "best_val_loss"],
               labels={"gap": "検証−学習の差"})

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
dc = dropout_table.epoch_curves().merge(dropout_table[["lora_dropout"]].reset_index(names="run"), on="run")
sns.lineplot(data=dc, x="epoch", y="val_loss", hue="lora_dropout", palette="viridis", marker="o", ax=ax1)
ax1.set(xlabel="エポック（epoch）", ylabel="検証損失", title=f"学習データ {len(small_train)} 件での検証損失")
sns.barplot(data=dropout_table, x="lora_dropout", y="gap", hue="lora_dropout", palette="viridis", legend=False,
            ax=ax2)
ax2.set(xlabel="ドロップアウト率", ylabel="検証損失 − 学習損失", title="学習と検証の差（過学習の度合い）")
ax2.set_ylim(dropout_table["gap"].min() * 0.9, dropout_table["gap"].max() * 1.03)
plt.tight_layout()
plt.show()

# %%
d = dropout_table.set_index("lora_dropout")
print(f"検証−学習の差: dropout=0 → {d.loc[0.0, 'gap']:.3f}, dropout=0.1 → {d.loc[0.1, 'gap']:.3f}")

# %% [markdown]
# **読み取り方**：ドロップアウトを入れると、学習データへの当てはまり（学習損失）が弱まり、学習と検証の差が縮みました。
# 「過学習を防ぐ」という説明と同じ向きの結果です。ただし検証損失そのものの改善は小さく、
# 学習データを増やす・エポックを減らす（早期終了）ほどの効果はありません。ドロップアウトは**補助的な**対策と考えましょう。

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
# 違いを r・α・エポック数だけにするため、学習率などはこのページの基準設定に揃えます。
# 出力の質は、学習していない話題の20問（heldout）に貪欲法（greedy）で答えさせ、「【結論】…／【理由】…」の形式を
# どこまで守れたかで測ります。1行目が【結論】で始まる割合、2行目が【理由】で始まる割合、2行で過不足なく終わる割合（完全一致）の3段階です。
# 完全一致の判定には、レベル1と同じ規則（`course_lib.level1.follows_format`：2行で、各行10〜60文字）を使います。

# %%
from course_lib.generate import sample_answers
from course_lib.level1 import follows_format

heldout_prompts = [r["prompt"] for r in heldout]


def answer_quality(peft_model, tokenizer):
    """評価用の質問への貪欲法の答えと、2行の形式をどこまで守れたか（3段階の割合）。"""
    answers = [a[0] for a in sample_answers(peft_model, tokenizer, heldout_prompts, temperature=0,
                                            max_new_tokens=64, progress=False)]
    lines = [a.split("\n") for a in answers]

    def share(ok):
        return sum(ok) / len(answers)

    return {"line1_ok": share(ls[0].startswith("【結論】") for ls in lines),
            "line2_ok": share(len(ls) > 1 and ls[1].startswith("【理由】") for ls in lines),
            "format_rate": share(follows_format(a) for a in answers), "answers": answers}


ab_common = dict(lora_dropout=0.1, target_modules=MODULE_SETS["attention+gate,up"])
ab_table = sweep([dict(name="A（r=16, α=32, 5エポック）", lora_r=16, lora_alpha=32, num_train_epochs=5, **ab_common),
                  dict(name="B（r=12, α=24, 4エポック）", lora_r=12, lora_alpha=24, num_train_epochs=4, **ab_common)],
                 train_set, val_set, evaluate=answer_quality, desc="A/B")
QUALITY = {"line1_ok": "1行目【結論】", "line2_ok": "2行目【理由】", "format_rate": "完全一致"}
japanese_table(ab_table, ["name", "trainable_params", "seconds", "peak_memory_mb", "train_loss", "val_loss",
                          *QUALITY], labels=QUALITY)

# %%
metrics = {"seconds": "学習時間（秒）", "peak_memory_mb": "ピークメモリ（MB）", "val_loss": "検証損失",
           "line2_ok": "形式：2行目が【理由】の割合"}
fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
for ax, (col, label) in zip(axes, metrics.items()):
    sns.barplot(data=ab_table.assign(設定=["A", "B"]), x="設定", y=col, hue="設定", legend=False, ax=ax)
    ax.set(title=label, xlabel="", ylabel="")
axes[-1].set_ylim(0, 1)
plt.suptitle("A/B 比較（低いほど良い: 時間・メモリ・検証損失／高いほど良い: 形式）")
plt.tight_layout()
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
print(f"A は B の {a['trainable_params'] / b['trainable_params']:.2f} 倍のパラメータ、"
      f"{a['seconds'] / b['seconds']:.2f} 倍の学習時間（{a['steps']} 対 {b['steps']} ステップ）")
print(f"検証損失の差（A − B）: {a['val_loss'] - b['val_loss']:+.3f}")
print(f"2行目が【理由】: A {a['line2_ok']:.0%} / B {b['line2_ok']:.0%}、完全一致: A {a['format_rate']:.0%} / B {b['format_rate']:.0%}")

# %% [markdown]
# **読み取り方**：A はパラメータが 16/12 倍、ステップ数が 5/4 倍なので、時間は多くかかります。
# その分、損失や形式が良くなったかを表で確かめてください。
# tiny モデルは数エポックでは【結論】【理由】の書き出しは覚えても、2行で答えを止めることまでは覚えきれないことが多く、
# 完全一致の割合は低くなりがちです。そのため、形式を3段階に分けて比べています。どちらを選ぶかは「差に見合う費用か」で決まります。
# なお、学習時間は同じ計算機を使うほかの作業の影響を受けます。1回の測定で数十％程度の違いは誤差の範囲と考えましょう。
# CPU でのピークメモリ（下の「コストの増え方」を参照）も、この程度の差では測定のばらつきに埋もれがちです。

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
                    seq_lengths=[64, 256, 512] if quick else [64, 128, 256, 512],
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
print(f"系列長 {shortest} → {longest}（{longest // shortest} 倍）で、時間 {by_len.loc[longest, 'sec_per_step'] / by_len.loc[shortest, 'sec_per_step']:.1f} 倍、"
      f"ピークメモリ {by_len.loc[longest, 'peak_memory_mb'] / max(by_len.loc[shortest, 'peak_memory_mb'], 1):.1f} 倍")

# %% [markdown]
# **読み取り方**：時間とメモリを大きく左右するのは**系列長（とバッチサイズ）**です。活性化は「バッチ × 系列長」に比例して増え、
# 出力層では語彙数の分だけの確率を全トークンについて計算するからです。r の影響はそれより小さく見えます。
# ただし tiny モデルは隠れ次元が 128 しかないので、r=64 は「低ランク」とは言えないほど大きく、計算量の割合が実際のモデルより大きく出ます。
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
qwen_table

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
# ## まとめ：推奨の出発点
#
# まず、ページの最初に挙げた「よく言われること」が、このページの測定でどうだったかを表にします（数値はこのページで測ったもの）。

# %%
checks = [
    ("r を上げると表現力が上がる（学習損失が下がる）",
     f"r={RANKS[0]}: {rank_table.iloc[0]['train_loss']:.2f} → r={RANKS[-1]}: {rank_table.iloc[-1]['train_loss']:.2f}",
     rank_table.iloc[-1]["train_loss"] < rank_table.iloc[0]["train_loss"]),
    ("α を大きくすると学習が強くなる（大きすぎると悪化）",
     f"最良は α={best_alpha}（r=8）。α={max(ALPHAS)} では {alpha_table['val_loss'].iloc[-1]:.2f}",
     best_alpha not in (min(ALPHAS), max(ALPHAS))),
    ("実効的な学習率は α/r だけで決まる",
     f"r による差: α/r 固定 {spread_ratio:.2f}、α 固定 {spread_alpha:.2f}",
     spread_ratio < spread_alpha),
    ("対象モジュールを増やすと良くなる",
     f"q,v: {vals['q,v']:.2f} → all7: {vals['all7']:.2f}", vals["all7"] < vals["q,v"]),
    ("エポックを増やすほど深く学習する",
     f"検証損失は {best_epoch} エポック目が最小、その後 {final['val_loss']:.2f} まで悪化", best_epoch == LONG_EPOCHS),
    ("早期終了で止めどきを自動で選べる",
     f"{stopped_epoch} エポック目で停止、最良の重み（{int(es['best_epoch'])} エポック目）に復元", bool(es["stopped_early"])),
    ("ドロップアウトは過学習を防ぐ",
     f"学習と検証の差: {d.loc[0.0, 'gap']:.2f} → {d.loc[0.1, 'gap']:.2f}", d.loc[0.1, "gap"] < d.loc[0.0, "gap"]),
]
pd.DataFrame([{"よく言われること": c, "このページの測定": e, "測定と合ったか": "はい" if ok else "いいえ"}
              for c, e, ok in checks])

# %% [markdown]
# この結果から、出発点の設定を選びます。ページを実行したモデルの列は**表の値から自動で選び**、もう一方のモデルの列は
# このページの傾向と計算をもとにした出発点です（Qwen3-0.6B の列の数値は、Qwen3-0.6B で測った結果ではありません）。

# %%
def smallest_good(table, column="val_loss", by="lora_r", tolerance=0.05):
    """損失が最良から ``tolerance`` 以内に入る設定のうち、いちばん小さいもの。"""
    good = table[table[column] <= table[column].min() + tolerance]
    return good[by].min()


measured = {
    "ランク r": (smallest_good(rank_table), "最良から 0.05 以内で最小の r（実験1）"),
    "α": (f"{best_alpha / 8:g} × r", "r=8 で検証損失が最良だった α/r（実験2）"),
    "対象モジュール": (vals.idxmin(), "検証損失が最良（実験3）"),
    "学習率": (f"{best_lr:g}", "検証損失が最良（実験4-1）"),
    "エポック数": (f"{best_epoch}（または早期終了 patience=2）", "検証損失が最小だったエポック（実験4-2, 4-3）"),
    "スケジュール": (final_val.idxmin(), f"最後の検証損失が最良。最良値どうしの差は {sched_range:.3f} と小さい（実験4-4）"),
    "ドロップアウト": (d["val_loss"].idxmin(), "小さなデータで検証損失が最良（実験5）"),
}
qwen_start = {
    "ランク r": ("16", "約1000万個（1.7%）。アダプターの学習用メモリは約154 MiB で、GPU 1枚なら r は主因にならない"),
    "α": ("32（α = 2r）", "実験2：r を変えたら学習率か α を調べ直す"),
    "対象モジュール": ("all7", "実験3：7つすべてが最良。増えるパラメータもわずか"),
    "学習率": ("2e-4", "実験4-1の形（谷）を Qwen3-0.6B でも数点測って確かめる"),
    "エポック数": ("3〜5（早期終了 patience=2）", "実験4-2：小さなデータでは数エポックで検証損失が底を打つ"),
    "スケジュール": ("cosine（ウォームアップ 全体の約5%）", "実験4-4：差は小さいが、終盤に学習率を下げるほうが安定"),
    "ドロップアウト": ("0.05", "実験5：効果は補助的。データが少ないときは 0.1"),
}
tiny_start = {  # tiny で測った典型値（Qwen3-0.6B でページを実行したときに表示）
    "ランク r": ("8", "tiny：r=8〜16 で頭打ち"), "α": ("2 × r", "tiny：α/r=2〜4 が良好"),
    "対象モジュール": ("all7", "tiny：7つすべてが最良"), "学習率": ("1e-2", "tiny：1e-2 が谷の底"),
    "エポック数": ("5（早期終了 patience=2）", "tiny：5エポック前後で検証損失が最小"),
    "スケジュール": ("linear", "tiny：差はごく小さい"), "ドロップアウト": ("0.05〜0.1", "tiny：学習と検証の差が縮む"),
}
here, other = (("tiny（CPU）", "Qwen3-0.6B（GPU 1枚）") if TINY else ("Qwen3-0.6B（GPU 1枚）", "tiny（CPU）"))
other_values = qwen_start if TINY else tiny_start
summary = pd.DataFrame([{"項目": k, f"{here}：測定から": v, "根拠（このページの測定）": why,
                         f"{other}：出発点": other_values[k][0], "理由": other_values[k][1]}
                        for k, (v, why) in measured.items()])
summary

# %% [markdown]
# ```{admonition} 出発点の使い方
# :class: tip
# 推奨値は「最初に試す設定」です。新しいデータやモデルでは、まず学習率を3点ほど（例：基準の 0.3 倍・1 倍・3 倍）測り、
# 次にエポック数を早期終了で決め、最後に r や対象モジュールを必要に応じて調整します。
# 表とグラフを残しておけば、あとから「なぜこの設定にしたか」を説明できます。
# ```
#
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
# 実験4-2と同じく学習率を一定（constant）にして、学習率だけを 0.3 倍にします。

# %% tags=["hide-cell"]
# 基本2の解答例: 学習率だけを 0.3 倍にして、実験4-2と同じ長さだけ学習する
slow = sweep([dict(learning_rate=BASE_LR * 0.3, num_train_epochs=LONG_EPOCHS, lr_scheduler_type="constant",
                   name="lr×0.3")], train_set, val_set, desc="exercise: lr×0.3")
print("検証損失が最小のエポック:", int(slow.iloc[0]["best_epoch"]), "（基準の学習率では", best_epoch, "）")

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 学習率が低いと一歩が小さいので、同じ点に着くまでに多くのエポックがかかり、最小点は後ろにずれるのが普通です。
# ```
#
# **発展1**：実験2の説明のとおりなら、倍率を $\alpha/\sqrt{r}$ にそろえる（rsLoRA の考え方）と、r を変えても検証損失の差は
# α/r をそろえたときより小さくなるはずです。`run_sweep` の `lora_alpha` に $c\sqrt{r}$ を渡すと、倍率は $c\sqrt{r}/r = c/\sqrt{r}$ になります。
# $c = 16/\sqrt{8}$ として r を振り、3つの条件の「r による差」を比べてください。
#
# ### 解答例
#
# $c = 16/\sqrt{8}$ なら、r=8 のとき α=16 で基準設定と同じ学習になります。

# %% tags=["hide-cell"]
# 発展1の解答例: lora_alpha = c√r として r を振る（倍率 α/r は c/√r）
import math

rs_c = 16 / math.sqrt(8)
rs_table = sweep([dict(lora_r=r, lora_alpha=rs_c * math.sqrt(r)) for r in RANKS], train_set, val_set,
                 desc="exercise: rsLoRA")
spread_rs = rs_table["val_loss"].max() - rs_table["val_loss"].min()
print(f"α/r 固定: {spread_ratio:.3f}  α/√r 固定: {spread_rs:.3f}  α 固定: {spread_alpha:.3f}")

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 多くの場合、α/√r 固定の差は、α/r 固定と α 固定のあいだに入ります。結果が説明と合わなければ、それも大事な発見です。
# ```
#
# **発展2**：早期終了の `early_stopping_threshold` を 0.05 にすると、停止するエポックはどう変わるでしょうか。
# 検証損失の1エポックあたりの改善幅（実験4-2のグラフ）と照らし合わせて予想してから測ってください。
#
# ### 解答例
#
# 実験4-3と同じ設定で、`early_stopping_threshold` だけを 0.05 にします。

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
# - 各パラメータの効果を、**1つずつ変えて測る**ことで確かめました。よく言われる説明のうち、測定と合うものも合わないものもありました。
# - パラメータ数は $r \times (d_\text{in}+d_\text{out})$ で正確に計算でき、PEFT の表示と一致します。
# - 大きく効くのは学習率とエポック数（早期終了）。r・α・対象モジュールは互いに関係し、r を変えたら学習率か α を見直します。
# - 計算コストは主に系列長とバッチサイズで決まり、Qwen3-0.6B でも r=16 のアダプターは全体の約1.7%です。
#
# 次のレベル3では、ここで選んだ設定を使い、医療を題材にした自己改善ループ（生成 → 採点 → 学習の繰り返し）を作ります
# （教育目的の題材であり、医療上の助言ではありません）。

# %% tags=["remove-input"]
# CI の回帰チェック（このセルはページに表示しません）。しきい値は tiny モデル・quick=True で測った傾向に合わせてあります。
assert explorer.figure is not None or explorer.widget is not None, "エクスプローラーは図かウィジェットを出すはず"
assert by_len.loc[longest, "sec_per_step"] > 2 * by_len.loc[shortest, "sec_per_step"], "長い系列ほど時間がかかる"
assert by_len.loc[longest, "peak_memory_mb"] > by_len.loc[shortest, "peak_memory_mb"] + 20, "長い系列ほどメモリを使う"
if TINY:
    # 実験1：ランク
    assert rank_table.iloc[0]["val_loss"] > best_rank["val_loss"] + 0.1, "いちばん小さい r は明らかに不利だった"
    # 実験2：α と α/r
    assert best_alpha not in (min(ALPHAS), max(ALPHAS)), "α は小さすぎても大きすぎても悪い（山ではなく谷の形）"
    assert spread_alpha < spread_ratio, "tiny では α 固定のほうが r による差が小さかった"
    # 実験3：対象モジュール
    assert vals["q,v"] > vals["all7"] + 0.2, "tiny では 7 モジュールすべてのほうが明らかに良かった"
    # 実験4：学習率・エポック数・早期終了・スケジュール
    assert best_lr not in (lr_table["learning_rate"].min(), lr_table["learning_rate"].max()), "学習率は低すぎても高すぎても悪い"
    assert best_epoch < LONG_EPOCHS, "最後まで学習するより前に検証損失の最小がある"
    assert final["val_loss"] > at_best["val_loss"], "最小のあと検証損失は上がる（過学習）"
    assert final["train_loss"] < at_best["train_loss"], "そのあいだも学習損失は下がり続ける"
    assert es["stopped_early"] and stopped_epoch < LONG_EPOCHS, "検証損失が上がると予定より前に止まる"
    assert sched_range < lr_range, "tiny ではスケジュールの違いより学習率の違いのほうが効いた"
    assert final_val["constant"] > min(final_val["linear"], final_val["cosine"]), "学習率を下げると終盤の悪化がゆるやか"
    # 実験5：ドロップアウト
    assert d.loc[0.1, "train_loss"] > d.loc[0.0, "train_loss"], "ドロップアウトを入れると学習データへの当てはまりは弱まる"
    assert d.loc[0.1, "gap"] < d.loc[0.0, "gap"], "その分、学習と検証の差（過学習の度合い）は縮む"
