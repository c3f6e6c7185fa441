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
# # レベル1：LoRA ファインチューニングの基本
#
# ```{admonition} このページで学ぶこと
# :class: tip
# - **目標**
#   - ファインチューニング（fine-tuning）とは何か、プロンプトの工夫や RAG とどう使い分けるかを説明できる
#   - トークン（token）とチャットテンプレート（chat template）を、実際の日本語で確かめる
#   - LoRA が追加する2つの小さな行列と、その倍率 alpha/r を、読み込んだモデルの実物で確かめる
#   - 回答部分だけに損失（loss）をかけて学習し、損失曲線（loss curve）を読む
#   - 学習前後の生成を同じ質問で比べ、アダプター（adapter）を保存・再読み込み・マージ（merge）する
# - **前提知識**: [レベル0：環境の確認](level0_setup.ipynb) を終えていること。Python の基本（関数・リスト・辞書）
# - **所要時間**: 約60分（読みながらセルを実行した場合。tiny モデルなら、全セルの計算そのものは CPU で約2分です）
# - **学習内容**: 指示データの形、学習前の生成、LoRA の取り付け、回答だけの損失、学習、損失曲線、学習後の生成、保存と再利用
# ```
#
# ```{note}
# このページの出力（生成文・損失・表・グラフ）は、すぐ下の「1. 準備」に表示されるモデルで生成したものです。
# 公開している本のページは、コースに内蔵された小さな **tiny モデル** を CPU で実行した結果で、
# `Qwen/Qwen3-0.6B` の結果ではありません。
# ```
#
# このレベルでは、小さな日本語の指示データ（instruction data）を使って、モデルに
# **決まった答え方**（1行目に「【結論】」、2行目に「【理由】」）を身につけさせます。
# 答え方という目に見える変化を題材にすると、ファインチューニングで「何が変わり、何が変わらないのか」を
# 数字で確かめられるからです。

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny", quick=True）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b"
quick = False  # True: fewer epochs (what CI runs)
seed = 0
epochs = None  # None: the default of the loaded profile (set in the next cells)
lr = None  # None: the default of the loaded profile

# %% [markdown]
# ## 1. 準備：モデルを読み込む
#
# レベル0と同じく、`model_profile="auto"` は Qwen3-0.6B を読み込めればそれを、読み込めなければ tiny モデルを使います。

# %%
from course_lib.lesson import start_lesson, show_model_note
from course_lib.profiles import load_model

start_lesson(seed)
loaded = load_model(model_profile)
model, tokenizer = loaded.model, loaded.tokenizer
show_model_note(loaded)

# %% [markdown]
# 学習の設定はモデルの大きさに合わせて変えます。tiny モデルは小さく、最初はこの答え方をまったく知らないので、
# 大きめの学習率（learning rate）で何十エポック（epoch）も回します。Qwen3-0.6B はすでに日本語で会話できるので、
# LoRA でよく使われる `2e-4` 前後の学習率で数エポックだけ回せば十分です。
#
# なお tiny モデルを CPU で動かすとき、`load_model` は計算を1スレッドにします。行列が小さい（幅128）ので、
# 複数のスレッドで分けるとスレッド同士の待ち合わせのほうが高くつき、ほかの処理と CPU を取り合う環境では何倍も遅くなるためです。

# %%
import pandas as pd
import torch

# Per-profile defaults, measured on the tiny model (CPU) and chosen for Qwen3-0.6B (GPU, bf16).
PROFILE_SETTINGS = {
    "tiny": {"epochs": 40, "quick_epochs": 30, "lr": 7e-3, "batch_size": 8, "warmup_steps": 10},
    "qwen3-0.6b": {"epochs": 3, "quick_epochs": 2, "lr": 2e-4, "batch_size": 8, "warmup_steps": 2},
}
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
MAX_NEW_TOKENS = 96  # long enough that an answer which never stops breaks the 60-character line rule

settings = dict(PROFILE_SETTINGS[loaded.profile])
settings["epochs"] = epochs if epochs is not None else (settings["quick_epochs"] if quick else settings["epochs"])
settings["lr"] = lr if lr is not None else settings["lr"]
pd.Series({
    "モデル": loaded.label,
    "エポック数（epochs）": settings["epochs"],
    "学習率（learning rate）": settings["lr"],
    "バッチサイズ（batch size）": settings["batch_size"],
    "ウォームアップ（warmup steps）": settings["warmup_steps"],
    "LoRA ランク r": LORA_R,
    "LoRA alpha": LORA_ALPHA,
}, name="設定").to_frame()

# %% [markdown]
# ## 2. ファインチューニングとは
#
# 大量の文章であらかじめ学習したモデルを **事前学習済みモデル（pre-trained model）** または
# **基盤モデル（foundation model）** と呼びます。ファインチューニングは、このモデルに
# **目的に合わせた小さなデータセットを追加で学習させ、振る舞いを調整すること** です。
# 入社したばかりの人が、会社の報告書の書き方を過去の報告書の見本から覚えるのに似ています。
# 日本語はもう書けるので、教えるのは「この職場での書き方」です。
#
# モデルの答えを変える方法は、ファインチューニングだけではありません。
#
# | 方法 | 何を変えるか | 向いている場面 | 手間 |
# | --- | --- | --- | --- |
# | プロンプトの工夫（prompting） | 質問文や指示文だけ。モデルの重みは変えない | まず最初に試す。指示すれば従える程度の変更 | 小さい |
# | RAG（Retrieval-Augmented Generation, 検索拡張生成） | 質問のたびに関連する文書を探してプロンプトに添える | 最新の情報や、社内文書など出典のある知識を答えさせたい | 中くらい（検索の仕組みが必要） |
# | ファインチューニング | モデルの重み（の一部）を学習で変える | 答え方・文体・形式・作業の手順など、振る舞いそのものを安定して変えたい | 大きい（データ作りと計算） |
#
# おおまかな目安は、**知識を足したいなら RAG、振る舞いを変えたいならファインチューニング** です。
# 両方を組み合わせることもよくあります。このレベルで教える「【結論】【理由】の2行で答える」は、
# 振る舞いの変更なのでファインチューニングに向いた題材です。
#
# ```{admonition} ファインチューニングの注意点
# :class: warning
# - **データの質がすべて**: 見本の誤りや偏り（bias）も、そのまま忠実に学習されます。
# - **コストがかかる**: 見本データを用意する手間と、学習の計算時間がかかります。
# - **破滅的忘却（catastrophic forgetting）**: 狭い課題に寄せすぎると、元のモデルが持っていた一般的な能力の一部が失われることがあります。
# - **事実は増えにくい**: 少ない見本で覚えられるのは主に「形」です。見本に出てこない事実が正しく答えられるようになるわけではありません（10節で確かめます）。
# ```
#
# この手順は一般に、**目的を決める → 指示と理想の応答の組を集める → 学習する → 評価して直す** の繰り返しです。
# このページでもこの順に進めます。
#
# ## 3. データを見る
#
# 使うのは `datasets/level1/` の小さなデータセットです。学習用（train）60件と、学習には使わない
# 評価用（held-out）20件があり、評価用は学習用に出てこない話題の質問です。
# 応答はすべて次の2行の形をしています（各行10〜60文字）。
#
# ```text
# 【結論】<答えを一文で>
# 【理由】<なぜそうなのかを一、二文で>
# ```

# %%
from course_lib.formats import LEVEL1_FORMAT, follows_format, format_match_rate, load_level1

train_records, heldout_records = load_level1()  # validated: schema, ids, and the answer format
print(f"学習用: {len(train_records)} 件 / 評価用: {len(heldout_records)} 件")
print("形式チェックの正規表現:", LEVEL1_FORMAT.pattern)
pd.DataFrame(train_records[:3])[["id", "prompt", "response"]]

# %% [markdown]
# `format_match_rate` は、答えのうち何割がこの形式に合っているかを返します。データの応答はもちろん 100% 合っています。
# 形式だけを見る指標なので、**中身が正しいかどうかは測りません**。

# %%
examples = [
    train_records[0]["response"],
    "【結論】米の中心まで水を吸わせるためです。",  # one line only
    "米の中心まで水を吸わせるためです。",  # no labels
]
pd.DataFrame({"答え": [e.replace("\n", " ⏎ ") for e in examples], "形式に合う": [follows_format(e) for e in examples]})

# %%
assert format_match_rate([r["response"] for r in train_records + heldout_records]) == 1.0

# %% [markdown]
# ## 4. トークンとチャットテンプレート
#
# モデルが読むのは文字列ではなくトークンの列です。学習データの質問を1つトークンに分けてみます。

# %%
question = train_records[0]["prompt"]
ids = tokenizer(question, add_special_tokens=False)["input_ids"]
pd.DataFrame({"トークンID": ids, "トークン": [tokenizer.decode([i]) for i in ids]}).T

# %% [markdown]
# `�` が表示されたら、それは1文字（日本語の多くは UTF-8 で3バイト）が複数のトークンに分かれたときの断片です。
# 断片だけでは文字にならないので、1トークンずつ表示するとこうなります。並べて戻せば元の文字になります。
#
# 会話のモデルは、質問をそのまま読むのではなく、**チャットテンプレート** で「だれの発言か」の目印をつけた形で読みます。
# 下の1つ目が生成のときにモデルへ渡す文字列（最後の `assistant` の行のあとから答えを書き始めます）、
# 2つ目が学習のときにモデルが読む文字列（答えと、発言の終わりを表す特殊トークン（special token）まで）です。

# %%
from course_lib.sft import answer_suffix, chat_prompt

prompt_text = chat_prompt(tokenizer, question)
print("--- 生成のときに渡す文字列 ---")
print(prompt_text)
print("--- 学習のときに読む文字列 ---")
print(prompt_text + train_records[0]["response"] + answer_suffix(tokenizer))

# %% [markdown]
# 答えの最後にある `<|im_end|>` が大切です。モデルはこのトークンを出すことで「ここで答えを終える」ことを表します。
# これも学習の対象に含めるので、学習後のモデルは2行書いたところで止まれるようになります。
#
# ## 5. 学習前に生成する
#
# 変化を測るには、まず **学習前の答え（ベースライン, baseline）** を記録しておきます。
# 学習用と評価用の全80問に、毎回同じ答えになる貪欲法（greedy decoding, `temperature=0`）で答えさせます。

# %%
from course_lib.generate import sample_answers


def greedy_answers(m, prompts):
    """One greedy answer per prompt, batched."""
    out = sample_answers(m, tokenizer, prompts, n=1, temperature=0, max_new_tokens=MAX_NEW_TOKENS, progress=False)
    return [a[0] for a in out]


train_prompts = [r["prompt"] for r in train_records]
heldout_prompts = [r["prompt"] for r in heldout_records]
all_prompts = train_prompts + heldout_prompts
before = greedy_answers(model, all_prompts)
before_train, before_heldout = before[: len(train_prompts)], before[len(train_prompts):]
rate_before = {"学習用": format_match_rate(before_train), "評価用": format_match_rate(before_heldout)}
print("学習前の形式一致率:", {k: f"{v:.0%}" for k, v in rate_before.items()})
for p, a in list(zip(all_prompts, before))[:3]:
    print(f"\n質問: {p}\n答え: {a[:120]}")

# %%
assert rate_before["学習用"] <= 0.1 and rate_before["評価用"] <= 0.1, "before training the model should not know the format"

# %% [markdown]
# 学習前のモデルは、この答え方をまったく使いません（tiny モデルの場合は、そもそも意味の通る文になっていません）。
# tiny モデルの文には、事前学習に使った文章の言葉（料理・自然・体調や薬の話など）が脈絡なく混ざりますが、
# 意味のない文であり、医療上の助言ではありません。
#
# ## 6. LoRA が追加するもの
#
# モデルの中には、ベクトルに行列をかける層（線形層, linear layer）がたくさんあります。
# 全部の重み $W$（出力 × 入力の行列）を学習し直す代わりに、LoRA は $W$ を **凍結（freeze）** したまま、
# 横に2つの細長い行列 $A$（$r$ × 入力）と $B$（出力 × $r$）を足します。
#
# $$
# h = W x + \frac{\alpha}{r} B A x
# $$
#
# - $r$ は **ランク（rank）**: $A$ と $B$ の細さ。$BA$ は大きな行列ですが、ランクは $r$ 以下です。
# - $\alpha$（alpha）は倍率のもとになる値で、実際にかかる倍率（scaling）は $\alpha / r$ です。
# - $B$ は 0 で初期化されるので、取り付けた直後のモデルは元のモデルとまったく同じ答えを返します。
#
# まず小さな数値で「細長い行列2つの積はランクが低い」ことを確かめます。

# %%
import torch

A_demo = torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0],
                       [0.0, 1.0, 0.0, 1.0, 0.0]])  # r=2 x in=5
B_demo = torch.tensor([[1.0, 0.0],
                       [0.0, 1.0],
                       [1.0, 1.0],
                       [2.0, 0.0]])  # out=4 x r=2
delta_demo = B_demo @ A_demo  # out=4 x in=5
print(f"B {tuple(B_demo.shape)} @ A {tuple(A_demo.shape)} = ΔW {tuple(delta_demo.shape)}, "
      f"ランク = {torch.linalg.matrix_rank(delta_demo).item()}")
print(f"ΔW をそのまま学習すると {delta_demo.numel()} 個、A と B なら {A_demo.numel() + B_demo.numel()} 個の数")
pd.DataFrame(delta_demo.numpy())

# %%
assert torch.linalg.matrix_rank(delta_demo).item() == 2

# %% [markdown]
# 4 × 5 の小さな例では節約になりませんが、実際の層は数百〜数千の幅があるので、差は大きくなります。
# では、読み込んだモデルに LoRA を取り付けます（`attach_lora` は PEFT ライブラリの `get_peft_model` を呼びます）。
# 対象は注意機構（attention）と MLP の7種類の線形層すべてです。

# %%
from course_lib.lora import attach_lora, count_parameters, expected_lora_parameters

by_arithmetic = expected_lora_parameters(model, LORA_R)  # r * (in + out) summed over the target layers, before attaching
peft_model = attach_lora(model, r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT)
q_proj = peft_model.base_model.model.model.layers[0].self_attn.q_proj  # a real layer of the loaded model
lora_A = q_proj.lora_A["default"].weight
lora_B = q_proj.lora_B["default"].weight
pd.DataFrame({
    "形（shape）": [tuple(q_proj.base_layer.weight.shape), tuple(lora_A.shape), tuple(lora_B.shape)],
    "学習するか": [q_proj.base_layer.weight.requires_grad, lora_A.requires_grad, lora_B.requires_grad],
}, index=["元の重み W（出力×入力）", "LoRA の A（r×入力）", "LoRA の B（出力×r）"])

# %%
scaling = q_proj.scaling["default"]
print(f"倍率 alpha / r = {LORA_ALPHA} / {LORA_R} = {scaling}")
print(f"B の 0 でない要素の数: {torch.count_nonzero(lora_B).item()}")

enc = tokenizer([chat_prompt(tokenizer, question)], return_tensors="pt", add_special_tokens=False).to(loaded.device.device)
with torch.no_grad():
    logits_lora = peft_model(**enc).logits
    with peft_model.disable_adapter():
        logits_base = peft_model(**enc).logits
print("取り付けた直後、LoRA あり/なしの出力の最大差:", (logits_lora - logits_base).abs().max().item())

# %%
assert scaling == LORA_ALPHA / LORA_R
assert tuple(lora_A.shape) == (LORA_R, q_proj.in_features) and tuple(lora_B.shape) == (q_proj.out_features, LORA_R)
assert torch.count_nonzero(lora_B).item() == 0 and torch.equal(logits_lora, logits_base)

# %% [markdown]
# ### 学習するパラメータの数
#
# 学習するのは $A$ と $B$ だけです。1つの層で増える数は $r \times (\text{入力} + \text{出力})$ なので、
# 全部の対象層について足し算した値（LoRA を取り付ける前に `expected_lora_parameters` で計算しておきました）は、
# 取り付けたあとに数えた値と一致するはずです。

# %%
trainable, total = count_parameters(peft_model)
pd.DataFrame({
    "パラメータ数": [f"{trainable:,}", f"{total:,}", f"{by_arithmetic:,}"],
}, index=["学習する（LoRA の A と B）", "全体（元の重み + LoRA）", "計算で求めた LoRA の数"]).assign(
    割合=[f"{trainable / total:.2%}", "100%", ""])

# %%
assert trainable == by_arithmetic > 0

# %% [markdown]
# 割合はモデルの大きさで大きく変わります。tiny モデルは層の幅が 128 しかないので、LoRA の分が全体の1割ほどになります。
# 幅が広い実際のモデルでは割合はずっと小さく、たとえば TinyLlama-1.1B に LoRA をつけた例では、
# 学習するパラメータは 4,505,600 個で全体の 0.41% でした。Qwen3-0.6B に同じ設定（r=16、7種類の層）をつけると、
# 計算上は約1,000万個、全体の約1.7%です（上の表には、このページで読み込んだモデルの実際の数が出ます）。
#
# ## 7. 損失は答えの部分だけにかける
#
# 学習では、モデルに「次のトークン」を当てさせ、外れた度合いを損失として小さくしていきます。
# ただし質問の部分まで当てさせる必要はありません。覚えてほしいのは答え方だからです。
# そこで質問側のトークンのラベル（label）を `-100` にします。`-100` の位置は損失の計算から外れます。

# %%
from course_lib.sft import IGNORE_INDEX, encode_example

example = encode_example(tokenizer, train_records[0]["prompt"], train_records[0]["response"])
input_ids, labels = example["input_ids"], example["labels"]
n_prompt = sum(label == IGNORE_INDEX for label in labels)
print(f"全 {len(input_ids)} トークンのうち、質問側 {n_prompt} 個はラベル -100、答え側 {len(input_ids) - n_prompt} 個が損失に入ります")


def token_rows(start, stop):
    """One row per piece of text; byte fragments of one character are joined into one row."""
    rows, group = [], []
    for pos in range(start, stop):
        group.append(pos)
        text = tokenizer.decode([input_ids[p] for p in group])
        if "\ufffd" not in text or pos == stop - 1:
            rows.append({
                "位置": ",".join(str(p) for p in group),
                "トークン": text.replace("\n", "\\n"),
                "入力ID": ",".join(str(input_ids[p]) for p in group),
                "ラベル": ",".join(str(labels[p]) for p in group),
                "損失に入る": labels[group[0]] != IGNORE_INDEX,
            })
            group = []
    return rows


# the end of the question, the start of the answer, and the end of the answer
mask_table = pd.DataFrame(token_rows(n_prompt - 6, n_prompt + 12) + token_rows(len(input_ids) - 3, len(input_ids)))
mask_table

# %%
assert all(label == IGNORE_INDEX for label in labels[:n_prompt])
assert labels[n_prompt:] == input_ids[n_prompt:]  # the answer tokens are their own labels
assert labels[-2] == tokenizer.eos_token_id  # the end-of-turn token is learned too

# %% [markdown]
# 1文字が複数のトークンに分かれている所は、1行にまとめて表示しました（「位置」が複数あります）。
# 答え側のラベルは入力IDと同じ値です（1つ先のトークンを当てるためのずらしは、モデルの中で行われます）。
# 最後の `<|im_end|>` にもラベルがついているので、「どこで止まるか」も学習されます。
#
# ## 8. 学習する
#
# `course_lib.train.train` は Hugging Face の `Trainer` を呼び、損失の記録（history）を返します。
# 評価用の20問は学習には使いませんが、各エポックの終わりに **検証損失（validation loss）** を測るのに使います。
#
# ```{admonition} Qwen3-0.6B を GPU で動かす場合
# :class: note
# `model_profile="qwen3-0.6b"` で GPU があると、モデルは bfloat16 で読み込まれ、設定は
# 学習率 `2e-4`、3エポック（`quick=True` なら2エポック）、バッチサイズ 8 になります（60件なら1エポック8ステップ）。
# 目安は、学習が数十秒、ページ全体がモデルのダウンロードを除いて数分、GPU メモリがおおよそ 3〜6 GB です。
# この目安はモデルの大きさからの見積もりで、このコースの CI（GPU なし）では計測していません。
# 実際の値は、下の学習のセルが表示する「学習時間」と「ピークメモリ」を見てください。
# CPU で Qwen3-0.6B を学習すると、ノートパソコンでは数十分かかることがあります。
# ```

# %%
from course_lib.train import TrainConfig, train

config = TrainConfig(
    epochs=settings["epochs"],
    lr=settings["lr"],
    batch_size=settings["batch_size"],
    warmup_steps=settings["warmup_steps"],
    seed=seed,
)
result = train(peft_model, tokenizer, train_records, heldout_records, config)
pd.Series({
    "学習時間（秒）": round(result.seconds, 1),
    "ステップ数": result.steps,
    "最初の学習損失": round(float(result.train_loss["loss"].iloc[0]), 3),
    "最後の学習損失": round(result.final_loss, 3),
    "最小の検証損失": round(result.best_eval_loss, 3),
    "ピークメモリ（MB）": round(result.peak_memory_mb),
}, name=loaded.label).to_frame()

# %% [markdown]
# ## 9. 損失曲線を読む

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from course_lib.plots import plot_loss

fig, ax = plt.subplots(figsize=(8, 4))
plot_loss(result.history, ax=ax, title=f"損失曲線（{loaded.label}）")
best = result.eval_loss.loc[result.eval_loss["eval_loss"].idxmin()]
ax.axvline(best["step"], color="gray", linestyle="--", linewidth=1)
ax.annotate("検証損失が最小", (best["step"], best["eval_loss"]), xytext=(5, 15), textcoords="offset points", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# 損失曲線を読むときは、次の3点を順に見ます。
#
# 1. **学習損失（train loss）は下がっているか。** 下がっていれば、モデルは学習データに合わせられています。
#    細かいギザギザは、バッチごとに中身が違うためで、心配いりません。見るのは全体の傾きです。
# 2. **検証損失は下がっているか。** 学習に使っていないデータでも損失が下がっていれば、学んだことが新しい質問にも通じています。
# 3. **2本の差は開いていないか。** 学習損失だけが下がり続け、検証損失が途中から上がり始めたら、
#    学習データを丸暗記し始めた **過学習（overfitting）** のしるしです。
#    逆に、最後まで両方が高いまま、あるいはまだ急に下がっている途中なら、**学習不足（underfitting）** です。
#    エポックを増やすか、学習率を見直します。
#
# 形の見本を模式図（実測ではありません）で示します。

# %%
import numpy as np

x_demo = np.linspace(0, 1, 50)
shapes = pd.concat([
    pd.DataFrame({"進み具合": x_demo, "損失": 3 * np.exp(-3 * x_demo) + 0.6, "種類": "学習損失", "場合": "順調"}),
    pd.DataFrame({"進み具合": x_demo, "損失": 3 * np.exp(-3 * x_demo) + 0.8, "種類": "検証損失", "場合": "順調"}),
    pd.DataFrame({"進み具合": x_demo, "損失": 3 * np.exp(-5 * x_demo) + 0.2, "種類": "学習損失", "場合": "過学習"}),
    pd.DataFrame({"進み具合": x_demo, "損失": 3 * np.exp(-5 * x_demo) + 0.8 + 1.5 * np.clip(x_demo - 0.35, 0, None) ** 1.5, "種類": "検証損失", "場合": "過学習"}),
    pd.DataFrame({"進み具合": x_demo, "損失": 3.5 - 1.0 * x_demo, "種類": "学習損失", "場合": "学習不足"}),
    pd.DataFrame({"進み具合": x_demo, "損失": 3.6 - 0.9 * x_demo, "種類": "検証損失", "場合": "学習不足"}),
])
grid = sns.relplot(data=shapes, x="進み具合", y="損失", hue="種類", col="場合", kind="line", height=2.6, aspect=1.1)
grid.set_titles("{col_name}（模式図）")
plt.show()

# %% [markdown]
# 今回の曲線を数字で確かめます。

# %%
train_curve, eval_curve = result.train_loss, result.eval_loss
last_eval, min_eval = float(eval_curve["eval_loss"].iloc[-1]), result.best_eval_loss
loss_summary = pd.DataFrame({
    "最初": [train_curve["loss"].head(5).mean(), eval_curve["eval_loss"].iloc[0]],
    "最小": [train_curve["loss"].min(), min_eval],
    "最後": [train_curve["loss"].tail(5).mean(), last_eval],
}, index=["学習損失（最初/最後は5ステップの平均）", "検証損失"]).round(3)
from IPython.display import display

display(loss_summary)
best_epoch = float(eval_curve.loc[eval_curve["eval_loss"].idxmin(), "epoch"])
if last_eval > min_eval * 1.05:
    print(f"検証損失は {best_epoch:.0f} エポック目で最小になり、その後は上がっています。"
          "学習用の質問に特有の中身（事実）を覚え始めた、過学習のしるしです。")
else:
    print("検証損失は最後まで大きく上がっていません。はっきりした過学習は見られません。")

# %%
assert loss_summary.loc[loss_summary.index[0], "最後"] < 0.8 * loss_summary.loc[loss_summary.index[0], "最初"], "train loss should fall"

# %% [markdown]
# 損失は「見本とどれだけ同じトークンを出せるか」の平均なので、損失だけでは、答え方が身についたかどうかは直接わかりません。
# 次の節で、実際に生成させて確かめます。
#
# ## 10. 学習後に生成する
#
# 学習前と **同じ80問** に、同じ貪欲法で答えさせます。

# %%
after = greedy_answers(peft_model, all_prompts)
after_train, after_heldout = after[: len(train_prompts)], after[len(train_prompts):]
rate_after = {"学習用": format_match_rate(after_train), "評価用": format_match_rate(after_heldout)}
exact = {
    "学習用": np.mean([a == r["response"] for a, r in zip(after_train, train_records)]),
    "評価用": np.mean([a == r["response"] for a, r in zip(after_heldout, heldout_records)]),
}
rates = pd.DataFrame({
    "形式一致率（学習前）": rate_before,
    "形式一致率（学習後）": rate_after,
    "見本と完全に同じ答え（学習後）": exact,
}).map(lambda v: f"{v:.0%}")
rates

# %% [markdown]
# 同じ質問について、学習前と学習後の答えを並べます（`⏎` は改行です。長い答えは途中で切っています）。

# %%
def one_line(text, limit=70):
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[:limit] + "…"


picked = [("学習用", i) for i in range(4)] + [("評価用", i) for i in range(4)]
side_by_side = pd.DataFrame([
    {
        "区分": split,
        "質問": (train_prompts if split == "学習用" else heldout_prompts)[i],
        "学習前": one_line((before_train if split == "学習用" else before_heldout)[i]),
        "学習後": one_line((after_train if split == "学習用" else after_heldout)[i]),
        "形式OK（前→後）": "{} → {}".format(
            "○" if follows_format((before_train if split == "学習用" else before_heldout)[i]) else "×",
            "○" if follows_format((after_train if split == "学習用" else after_heldout)[i]) else "×"),
    }
    for split, i in picked
])
side_by_side

# %% [markdown]
# ### 何が広がり、何が広がらなかったか
#
# 評価用の質問は、学習データに出てこない話題です。評価用の答えを見本と並べます。

# %%
pd.DataFrame({
    "質問": heldout_prompts[:5],
    "見本の答え": [one_line(r["response"], 80) for r in heldout_records[:5]],
    "学習後の答え": [one_line(a, 80) for a in after_heldout[:5]],
})

# %% [markdown]
# - **形式は広がりました。** 一度も見ていない質問にも「【結論】…」「【理由】…」の2行で答え、そこで止まっています（上の形式一致率）。
# - **中身は広がっていません。** 評価用で見本と同じ答えはほぼなく、tiny モデルの場合は文として意味が通らない部分も多く残ります。
#   学習用の質問では見本をそのまま再現できるものがあるのと対照的です。少ない見本で身につくのは主に「形」で、
#   知らない事実が増えるわけではない、ということです（2節の注意点）。
# - **損失と形式は別のものを見ています。** 9節で検証損失が途中から上がっていても、評価用の形式一致率は上がりえます。
#   損失は答えの全トークンの平均で、その大部分は中身（事実）の言葉です。知らない事実は当てられないので検証損失は下がりきらず、
#   学習用の中身を覚えるほど上がることもあります。一方、「【結論】で始めて2行で止まる」という形は、どの質問にも共通なので広がります。
# - 形式一致率は「形」だけを測る指標です。BLEU や ROUGE のように見本との文字の重なりを測る指標も、
#   **事実として正しいか** は測れません。中身の正しさは、別の方法（人の確認や、正解を知っている採点者）で確かめる必要があります。

# %%
assert rate_after["学習用"] >= 0.7, f"format match on training prompts too low: {rate_after['学習用']:.0%}"
assert rate_after["評価用"] >= 0.5, f"format match on held-out prompts too low: {rate_after['評価用']:.0%}"
assert rate_after["学習用"] > rate_before["学習用"] and rate_after["評価用"] > rate_before["評価用"]
assert exact["評価用"] <= 0.1 < exact["学習用"], "the facts of training answers are recalled, new ones are not"


# %% [markdown]
# ## 11. 保存・再読み込み・マージ
#
# 保存するのは LoRA の $A$ と $B$ だけです。元のモデルの重みは保存しないので、ファイルはとても小さくなります。
# ここでは一時フォルダ（tempfile）に保存します。

# %%
import tempfile
from pathlib import Path

from course_lib.lora import load_adapter, merge_adapter, save_adapter

adapter_dir = Path(tempfile.mkdtemp(prefix="level1-adapter-"))
save_adapter(peft_model, adapter_dir)
pd.DataFrame(
    [(p.name, f"{p.stat().st_size / 1024:.1f} KB") for p in sorted(adapter_dir.iterdir())],
    columns=["ファイル", "大きさ"],
)

# %% [markdown]
# 別のプログラムで使う場面を想定して、**新しく読み込み直した元のモデル** にアダプターを載せます。
# さらに `merge_adapter` で $W + \frac{\alpha}{r}BA$ を元の重みに足し込むと、PEFT なしで使える普通のモデルになります。
# どちらも、学習した直後のモデルと同じ答えを返すはずです。

# %%
fresh = load_model(loaded.profile, verbose=False)
reloaded = load_adapter(fresh.model, adapter_dir)
answers_reloaded = greedy_answers(reloaded, all_prompts)
merged = merge_adapter(reloaded)  # folds the adapter into the freshly loaded base weights
answers_merged = greedy_answers(merged, all_prompts)
same = pd.Series({
    "再読み込みしたモデル": np.mean([a == b for a, b in zip(after, answers_reloaded)]),
    "マージしたモデル": np.mean([a == b for a, b in zip(after, answers_merged)]),
}, name="学習直後と同じ答えの割合（80問）")
same.map(lambda v: f"{v:.0%}").to_frame()

# %%
assert same["再読み込みしたモデル"] == 1.0, "the reloaded adapter must reproduce the trained model exactly"
# Merging rounds W + scale*B@A once; in float32 the greedy answers stay identical, in bfloat16 a few may differ.
assert same["マージしたモデル"] >= (1.0 if loaded.device.dtype == torch.float32 else 0.9)

# %% [markdown]
# 使い分けの目安です。
#
# - **アダプターのまま**: 1つの元のモデルに、目的ごとのアダプターを付け替えて使えます。保存も配布も軽くなります。
# - **マージ**: 推論のときの余分な計算がなくなり、PEFT を知らないツールにもそのまま渡せます。ただし元のモデルと同じ大きさのファイルになります。
#
# ## 12. トラブルシューティング
#
# ```{admonition} よくあるエラー
# :class: caution
# **Q1. アダプターを読み込むと `size mismatch for ... embed_tokens.weight` と出る**
#
# - 症状: `copying a param with shape torch.Size([32004, 2048]) from checkpoint, the shape in current model is torch.Size([32000, 2048])`
#   （TinyLlama-1.1B で実際に起きた例です）
# - 原因: 学習のときにトークナイザーへ特殊トークンを4つ足して埋め込み層（embedding layer）を 32000 行から 32004 行に広げたのに、
#   読み込むときは広げる前のモデルに載せようとしている。
# - 対処: アダプターと一緒にトークナイザーも保存し、読み込むときは **アダプターを載せる前に**
#   `base.resize_token_embeddings(len(tokenizer))` で行数をそろえる。
#
# **Q2. `TypeError: ... got an unexpected keyword argument 'evaluation_strategy'`**
#
# - 原因: Transformers の版が上がり、`TrainingArguments` の引数名が `evaluation_strategy` から `eval_strategy` に変わった。古い記事のコードでよく起きます。
# - 対処: `eval_strategy="steps"`（または `"epoch"`）に書き換える。
#
# **Q3. 学習後も答えが止まらず、同じ行をくり返す**
#
# - 原因: 答えの最後の終了トークン（`<|im_end|>`）が学習データに入っていない、またはラベルが `-100` になっている。学習不足のこともある。
# - 対処: 7節の表で、最後のトークンにラベルがついているか確かめる。損失曲線がまだ下がっている途中ならエポックを増やす。
#
# **Q4. 損失が下がらない、または急に大きくなる（`nan` になる）**
#
# - 原因: 学習率が小さすぎる／大きすぎる。
# - 対処: tiny モデルなら `7e-3` 前後、Qwen3-0.6B なら `2e-4` 前後から始め、2〜3倍ずつ動かして損失曲線を比べる。
# ```
#
# ほかのエラーは [トラブルシューティング](../troubleshooting.md) のページにまとめています。
# Q1 と Q2 のエラーは、手元でわざと起こして確かめられます。まず Q2 です。

# %%
from transformers import TrainingArguments

with tempfile.TemporaryDirectory() as tmp:
    try:
        TrainingArguments(output_dir=tmp, evaluation_strategy="epoch")
        print("エラーになりませんでした（古い版の Transformers です）")
    except TypeError as err:
        print(f"{type(err).__name__}: {err}")
    args_ok = TrainingArguments(output_dir=tmp, eval_strategy="epoch", report_to="none")
    print("eval_strategy なら通ります:", getattr(args_ok.eval_strategy, "value", args_ok.eval_strategy))

# %% [markdown]
# 次に Q1 です。マージしたモデルを複製して、埋め込み層を4行だけ広げた「学習時のモデル」を作り、
# その重みを広げていないモデルに読み込ませます。語彙サイズは違っても、32000 と 32004 のときと同じエラーになります。

# %%
import copy

vocab = merged.get_input_embeddings().weight.shape[0]
grown = copy.deepcopy(merged)
grown.resize_token_embeddings(vocab + 4, mean_resizing=False)  # as if 4 special tokens had been added
plain = copy.deepcopy(merged)
try:
    plain.load_state_dict(grown.state_dict())
except RuntimeError as err:
    print(next(line.strip() for line in str(err).splitlines() if "size mismatch" in line))
plain.resize_token_embeddings(vocab + 4, mean_resizing=False)  # the fix: same number of rows first
plain.load_state_dict(grown.state_dict())
print(f"行数を {vocab} → {vocab + 4} にそろえると読み込めました")
del grown, plain

# %% [markdown]
# ## 13. 練習問題
#
# ### 基本
#
# 1. LoRA のランクを `r=4` にすると、学習するパラメータは何個になりますか。まず $r \times (\text{入力} + \text{出力})$ で予想し、
#    `expected_lora_parameters` と、実際に取り付けたモデルの `count_parameters` で確かめてください。
# 2. 自分で考えた質問を3つ作り、学習後のモデル（`peft_model`）に答えさせて、`format_match_rate` で形式に合うか調べてください。
#
# ````{admonition} 解答例
# :class: dropdown
# ```python
# from course_lib.lora import attach_lora, count_parameters, expected_lora_parameters
# from course_lib.profiles import load_model
#
# base = load_model(loaded.profile, verbose=False).model
# print("予想:", expected_lora_parameters(base, 4))
# small = attach_lora(base, r=4, alpha=8)
# print("実際:", count_parameters(small))  # (trainable, total); trainable equals the prediction
#
# my_questions = ["雨の日に洗濯物が乾きにくいのはなぜですか。", "朝ごはんを食べるとよいのはなぜですか。", "海の水がしょっぱいのはなぜですか。"]
# mine = greedy_answers(peft_model, my_questions)
# print(mine)
# print("形式一致率:", format_match_rate(mine))
# ```
# ランクを 16 から 4 にすると、LoRA のパラメータ数はちょうど 1/4 になります（入力と出力の幅は変わらないため）。
# ````
#
# ### 発展
#
# 1. 学習率を今の 1/10 にして同じエポック数で学習し、損失曲線と形式一致率を比べてください。何が起きていますか。
# 2. LoRA を注意機構の4種類の層（`ATTENTION_MODULES`）だけに付けて学習し、学習するパラメータ数と形式一致率を7種類のときと比べてください。
#
# ````{admonition} 解答例
# :class: dropdown
# ```python
# from course_lib.lora import ATTENTION_MODULES, attach_lora, count_parameters
# from course_lib.plots import plot_loss
# from course_lib.profiles import load_model
# from course_lib.train import TrainConfig, train
#
# def run(lr, target_modules=None):
#     base = load_model(loaded.profile, verbose=False).model
#     kwargs = {"target_modules": target_modules} if target_modules else {}
#     m = attach_lora(base, r=LORA_R, alpha=LORA_ALPHA, **kwargs)
#     res = train(m, tokenizer, train_records, heldout_records,
#                 TrainConfig(epochs=settings["epochs"], lr=lr, batch_size=settings["batch_size"],
#                             warmup_steps=settings["warmup_steps"], seed=seed))
#     answers = greedy_answers(m, heldout_prompts)
#     return res, count_parameters(m)[0], format_match_rate(answers)
#
# slow, _, slow_rate = run(settings["lr"] / 10)
# plot_loss(slow.history, title="学習率 1/10")
# plt.show()
# print("学習率 1/10 の形式一致率（評価用）:", slow_rate)
#
# _, n_attn, attn_rate = run(settings["lr"], ATTENTION_MODULES)
# print("注意機構だけ:", n_attn, "個、形式一致率（評価用）:", attn_rate)
# ```
# tiny モデル・30エポック（`quick=True` の設定）で測った例です。
#
# | 設定 | 学習するパラメータ | 最後の学習損失 | 形式一致率（学習用） | 形式一致率（評価用） |
# | --- | ---: | ---: | ---: | ---: |
# | 本文の設定（学習率 7e-3、7種類の層） | 116,736 | 1.40 | 83% | 90% |
# | 学習率 1/10（7e-4） | 116,736 | 2.99 | 22% | 20% |
# | 注意機構の4種類だけ | 43,008 | 2.72 | 65% | 70% |
#
# 1. 学習率を 1/10 にすると、損失は最後まで高いままで、形式も一部しか身につきません（学習不足）。
#    エポックを増やせば追いつきますが、その分時間がかかります。
# 2. 注意機構だけにすると、学習するパラメータは MLP の3種類の分だけ減り、同じエポック数では形式一致率も下がりました。
#    どの層に付けるかも設定の一部です。設定の比べ方は、レベル2でくわしく扱います。
# ````
#
# ## まとめ
#
# - ファインチューニングは、答え方・形式のような **振る舞い** を変えるのに向いています。知識を足すなら RAG も考えます。
# - LoRA は元の重みを凍結し、細長い行列 $A$ と $B$ を学習します。$B$ は 0 から始まり、倍率は $\alpha / r$ です。
# - 損失は答えの部分（と終了トークン）だけにかけます。質問側のラベルは `-100` です。
# - 損失曲線では、学習損失と検証損失の両方と、その差を見ます。
# - 学習後のモデルは、学習用でも評価用でも決まった2行の形式で答えるようになりました。ただし評価用の質問の中身は正しくなりません。
# - アダプターは小さなファイルとして保存でき、新しく読み込んだモデルに載せても、マージしても、同じ答えを返します。
#
# ```{admonition} チェックリスト：次のことができれば、レベル1は完了です
# :class: tip
# - プロンプトの工夫・RAG・ファインチューニングの違いを、それぞれ一言で説明できる
# - LoRA の $A$ と $B$ の形と、倍率 $\alpha / r$ の意味を説明できる
# - ラベル `-100` が何のためにあるかを説明できる
# - 損失曲線から、過学習と学習不足を見分けられる
# - アダプターを保存し、新しく読み込んだモデルに載せ直し、マージできる
# ```
#
# 次のレベル2では、ランク・alpha・学習率・エポック数などの設定を1つずつ変え、結果がどう変わるかを測ります。
