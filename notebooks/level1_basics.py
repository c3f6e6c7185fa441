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
quick = False  # True: エポック数を減らして短く実行します（CI の設定）
seed = 0
num_train_epochs = None  # None: 読み込んだモデルの既定値（次の節の PROFILE_SETTINGS）を使います
learning_rate = None  # None: 読み込んだモデルの既定値を使います

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
# 設定の名前（キー）は、PEFT の `LoraConfig`（`lora_` で始まるもの）と Transformers の `TrainingArguments`（それ以外）の
# 引数名と同じにしてあります。ほかの記事やライブラリの説明を読むときも、同じ名前で探せます。
#
# なお tiny モデルを CPU で動かすとき、`load_model` は計算を1スレッドにします。行列が小さい（幅128）ので、
# 複数のスレッドで分けるとスレッド同士の待ち合わせのほうが高くつき、ほかの処理と CPU を取り合う環境では何倍も遅くなるためです。

# %%
import pandas as pd
import torch

# モデルごとの既定値。tiny は CPU で実測して決め、Qwen3-0.6B は GPU（bfloat16）向けに選んだ値です。
# lora_* は PEFT の LoraConfig、それ以外は Transformers の TrainingArguments の引数名です。
PROFILE_SETTINGS = {
    "tiny": {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
             "learning_rate": 7e-3, "num_train_epochs": 40, "quick_num_train_epochs": 30,
             "per_device_train_batch_size": 8, "warmup_steps": 10},
    "qwen3-0.6b": {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                   "learning_rate": 2e-4, "num_train_epochs": 3, "quick_num_train_epochs": 2,
                   "per_device_train_batch_size": 8, "warmup_steps": 2},
}
MAX_NEW_TOKENS = 96  # 止まらない答えが「1行60文字まで」の決まりを破るのに十分な長さ

settings = dict(PROFILE_SETTINGS[loaded.profile])
quick_num_train_epochs = settings.pop("quick_num_train_epochs")
if num_train_epochs is not None:  # パラメータのセルで指定したときはその値
    settings["num_train_epochs"] = num_train_epochs
elif quick:
    settings["num_train_epochs"] = quick_num_train_epochs
if learning_rate is not None:
    settings["learning_rate"] = learning_rate
pd.Series({
    "モデル": loaded.label,
    "エポック数（num_train_epochs）": settings["num_train_epochs"],
    "学習率（learning_rate）": settings["learning_rate"],
    "バッチサイズ（per_device_train_batch_size）": settings["per_device_train_batch_size"],
    "ウォームアップ（warmup_steps）": settings["warmup_steps"],
    "LoRA ランク（lora_r）": settings["lora_r"],
    "LoRA の alpha（lora_alpha）": settings["lora_alpha"],
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
from course_lib.level1 import LEVEL1_FORMAT, follows_format, format_match_rate, load_level1

train_records, heldout_records = load_level1()  # 読み込むときに、項目・id・答えの形式を検査します
print(f"学習用: {len(train_records)} 件 / 評価用: {len(heldout_records)} 件")
print("形式チェックの正規表現:", LEVEL1_FORMAT.pattern)
pd.DataFrame(train_records[:3])[["id", "prompt", "response"]]

# %% [markdown]
# `format_match_rate` は、答えのうち何割がこの形式に合っているかを返します。データの応答はもちろん 100% 合っています。
# 形式だけを見る指標なので、**中身が正しいかどうかは測りません**。

# %%
examples = [
    train_records[0]["response"],
    "【結論】米の中心まで水を吸わせるためです。",  # 1行だけ
    "米の中心まで水を吸わせるためです。",  # 【結論】【理由】の目印がない
]
pd.DataFrame({"答え": [e.replace("\n", " ⏎ ") for e in examples], "形式に合う": [follows_format(e) for e in examples]})

# %%
assert format_match_rate([r["response"] for r in train_records + heldout_records]) == 1.0, "データの答えはすべて形式に合っているはず"

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
    """質問ごとに貪欲法の答えを1つ（まとめて生成します）。"""
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
                       [0.0, 1.0, 0.0, 1.0, 0.0]])  # r=2 × 入力=5
B_demo = torch.tensor([[1.0, 0.0],
                       [0.0, 1.0],
                       [1.0, 1.0],
                       [2.0, 0.0]])  # 出力=4 × r=2
delta_demo = B_demo @ A_demo  # 出力=4 × 入力=5
print(f"B {tuple(B_demo.shape)} @ A {tuple(A_demo.shape)} = ΔW {tuple(delta_demo.shape)}, "
      f"ランク = {torch.linalg.matrix_rank(delta_demo).item()}")
print(f"ΔW をそのまま学習すると {delta_demo.numel()} 個、A と B なら {A_demo.numel() + B_demo.numel()} 個の数")
pd.DataFrame(delta_demo.numpy())

# %%
assert torch.linalg.matrix_rank(delta_demo).item() == 2, "r=2 の細長い行列2つの積なので、ランクは 2 のはず"

# %% [markdown]
# 4 × 5 の小さな例では節約になりませんが、実際の層は数百〜数千の幅があるので、差は大きくなります。
# では、読み込んだモデルに LoRA を取り付けます（`attach_lora` は PEFT ライブラリの `get_peft_model` を呼びます）。
# 対象は注意機構（attention）と MLP の7種類の線形層すべてです。

# %%
from course_lib.lora import attach_lora, count_parameters, lora_parameter_count

# 取り付ける前に計算しておく: 対象の層すべてについて r ×（入力 + 出力）を足した数
by_arithmetic = lora_parameter_count(model, settings["lora_r"])
peft_model = attach_lora(model, lora_r=settings["lora_r"], lora_alpha=settings["lora_alpha"],
                         lora_dropout=settings["lora_dropout"])
q_proj = peft_model.base_model.model.model.layers[0].self_attn.q_proj  # 読み込んだモデルの実際の層
lora_A = q_proj.lora_A["default"].weight
lora_B = q_proj.lora_B["default"].weight
pd.DataFrame({
    "形（shape）": [tuple(q_proj.base_layer.weight.shape), tuple(lora_A.shape), tuple(lora_B.shape)],
    "学習するか": [q_proj.base_layer.weight.requires_grad, lora_A.requires_grad, lora_B.requires_grad],
}, index=["元の重み W（出力×入力）", "LoRA の A（r×入力）", "LoRA の B（出力×r）"])

# %%
scaling = q_proj.scaling["default"]
print(f"倍率 alpha / r = {settings['lora_alpha']} / {settings['lora_r']} = {scaling}")
print(f"B の 0 でない要素の数: {torch.count_nonzero(lora_B).item()}")

enc = tokenizer([chat_prompt(tokenizer, question)], return_tensors="pt", add_special_tokens=False).to(loaded.device.device)
with torch.no_grad():
    logits_lora = peft_model(**enc).logits
    with peft_model.disable_adapter():
        logits_base = peft_model(**enc).logits
print("取り付けた直後、LoRA あり/なしの出力の最大差:", (logits_lora - logits_base).abs().max().item())

# %%
assert scaling == settings["lora_alpha"] / settings["lora_r"], "倍率は alpha / r のはず"
assert tuple(lora_A.shape) == (settings["lora_r"], q_proj.in_features), "A は r × 入力のはず"
assert tuple(lora_B.shape) == (q_proj.out_features, settings["lora_r"]), "B は 出力 × r のはず"
assert torch.count_nonzero(lora_B).item() == 0, "B は 0 で初期化されるはず"
assert torch.equal(logits_lora, logits_base), "取り付けた直後は、元のモデルと同じ出力になるはず"

# %% [markdown]
# ### 学習するパラメータの数
#
# 学習するのは $A$ と $B$ だけです。1つの層で増える数は $r \times (\text{入力} + \text{出力})$ なので、
# 全部の対象層について足し算した値（LoRA を取り付ける前に `lora_parameter_count` で計算しておきました）は、
# 取り付けたあとに数えた値と一致するはずです。

# %%
trainable, total = count_parameters(peft_model)
pd.DataFrame({
    "パラメータ数": [f"{trainable:,}", f"{total:,}", f"{by_arithmetic.trainable:,}"],
}, index=["学習する（LoRA の A と B）", "全体（元の重み + LoRA）", "計算で求めた LoRA の数"]).assign(
    割合=[f"{trainable / total:.2%}", "100%", ""])

# %%
assert trainable == by_arithmetic.trainable > 0, "数えた数と、計算で求めた数は一致するはず"
assert total == by_arithmetic.total, "全体の数も、元の重み + LoRA の計算と一致するはず"

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
#
# これを行うのが `course_lib.sft.encode_example` です。中身は数行だけなので、まずソースを表示します。
# 質問（チャットテンプレートの `assistant` の行まで）と答えを別々にトークンに分けてつなぎ、
# 質問側の長さだけラベルを `-100`（`IGNORE_INDEX`）で埋めています。次のセルで、学習データの1件目を実際に変換します。

# %%
import inspect

from course_lib.sft import IGNORE_INDEX, encode_example

print(inspect.getsource(encode_example))

# %%
example = encode_example(tokenizer, train_records[0]["prompt"], train_records[0]["response"])
input_ids, labels = example["input_ids"], example["labels"]
n_prompt = sum(label == IGNORE_INDEX for label in labels)
print(f"全 {len(input_ids)} トークンのうち、質問側 {n_prompt} 個はラベル -100、答え側 {len(input_ids) - n_prompt} 個が損失に入ります")


def token_rows(start, stop):
    """表示する文字ごとに1行。1文字が複数のトークン（バイトの断片）に分かれていたら、1行にまとめます。"""
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


# 質問の終わり、答えの始まり、答えの終わり
mask_table = pd.DataFrame(token_rows(n_prompt - 6, n_prompt + 12) + token_rows(len(input_ids) - 3, len(input_ids)))
mask_table

# %%
assert all(label == IGNORE_INDEX for label in labels[:n_prompt]), "質問側のラベルはすべて -100 のはず"
assert labels[n_prompt:] == input_ids[n_prompt:], "答え側のラベルは、入力IDそのもののはず"
assert labels[-2] == tokenizer.eos_token_id, "発言の終わりのトークンも学習の対象のはず"

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
    num_train_epochs=settings["num_train_epochs"],
    learning_rate=settings["learning_rate"],
    per_device_train_batch_size=settings["per_device_train_batch_size"],
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
merged = merge_adapter(reloaded)  # 読み込み直した元の重みに、アダプターを足し込みます
answers_merged = greedy_answers(merged, all_prompts)
same = pd.Series({
    "再読み込みしたモデル": np.mean([a == b for a, b in zip(after, answers_reloaded)]),
    "マージしたモデル": np.mean([a == b for a, b in zip(after, answers_merged)]),
}, name="学習直後と同じ答えの割合（80問）")
same.map(lambda v: f"{v:.0%}").to_frame()

# %%
assert same["再読み込みしたモデル"] == 1.0, "読み込み直したアダプターは、学習直後のモデルとまったく同じ答えを返すはず"
# マージでは W + 倍率×BA を一度だけ丸めます。float32 なら答えは同じまま、bfloat16 ではわずかに変わることがあります。
assert same["マージしたモデル"] >= (1.0 if loaded.device.dtype == torch.float32 else 0.9), "マージしたモデルの答えが学習直後と違いすぎます"

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
grown.resize_token_embeddings(vocab + 4, mean_resizing=False)  # 特殊トークンを4つ足したときと同じ状態
plain = copy.deepcopy(merged)
try:
    plain.load_state_dict(grown.state_dict())
except RuntimeError as err:
    print(next(line.strip() for line in str(err).splitlines() if "size mismatch" in line))
plain.resize_token_embeddings(vocab + 4, mean_resizing=False)  # 対処: 先に行数をそろえる
plain.load_state_dict(grown.state_dict())
print(f"行数を {vocab} → {vocab + 4} にそろえると読み込めました")
del grown, plain

# %% [markdown]
# ## 13. 練習問題
#
# ### 基本
#
# 1. LoRA のランクを `lora_r=4` にすると、学習するパラメータは何個になりますか。まず $r \times (\text{入力} + \text{出力})$ で予想し、
#    `lora_parameter_count`（層の種類ごとの内訳は `lora_parameter_table`）と、実際に取り付けたモデルの `count_parameters` で確かめてください。
# 2. 自分で考えた質問を3つ作り、学習後のモデル（`peft_model`）に答えさせて、`format_match_rate` で形式に合うか調べてください。
#
# #### 解答例
#
# 下の2つのセルが、基本1と基本2の解答例です（クリックで開きます）。このページを作るときに実際に実行した結果が表示されます。

# %% tags=["hide-cell"]
# 基本1: lora_r=4 のときの LoRA のパラメータ数
from course_lib.lora import attach_lora, count_parameters, lora_parameter_count, lora_parameter_table

ex_base = load_model(loaded.profile, verbose=False).model  # LoRA を付けていない元のモデルを読み込み直す
display(lora_parameter_table(ex_base, 4))  # 層の種類ごとに r ×（入力 + 出力）、それに層の数をかけたもの
ex_predicted = lora_parameter_count(ex_base, 4)
ex_small = attach_lora(ex_base, lora_r=4, lora_alpha=8)  # alpha / r は本文と同じ 2
ex_trainable, ex_total = count_parameters(ex_small)
print(f"予想（計算）: {ex_predicted.trainable:,} 個 / 取り付けて数えた数: {ex_trainable:,} 個")
print(f"lora_r={settings['lora_r']} のとき（6節）の {trainable:,} 個の {ex_trainable / trainable:.2f} 倍です")
assert ex_trainable == ex_predicted.trainable, "予想と、取り付けて数えた数は一致するはず"

# %% tags=["hide-cell"]
# 基本2: 自分で考えた質問に、学習後のモデルで答えさせる
my_questions = [
    "雨の日に洗濯物が乾きにくいのはなぜですか。",
    "朝ごはんを食べるとよいのはなぜですか。",
    "夜空の星がまたたいて見えるのはなぜですか。",
]
my_answers = greedy_answers(peft_model, my_questions)
display(pd.DataFrame({
    "質問": my_questions,
    "答え": [one_line(a, 80) for a in my_answers],
    "形式に合う": [follows_format(a) for a in my_answers],
}))
print(f"形式一致率: {format_match_rate(my_answers):.0%}")

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 1. ランクを 16 から 4 にすると、LoRA のパラメータ数はちょうど 1/4 になります。
#    1つの層で増える数は $r \times (\text{入力} + \text{出力})$ で、入力と出力の幅は変わらないからです。
# 2. 新しい質問でも「【結論】…」「【理由】…」の形で答えていれば、形式が広がったということです。
#    ただし形式一致率は形しか見ません。答えの中身が正しいかどうかは、別に確かめる必要があります（10節）。
# ```
#
# ### 発展
#
# 1. 学習率を今の 1/10 にして同じエポック数で学習し、損失曲線と形式一致率を比べてください。何が起きていますか。
# 2. LoRA を注意機構の4種類の層（`ATTENTION_MODULES`）だけに付けて学習し、学習するパラメータ数と形式一致率を7種類のときと比べてください。
#
# #### 解答例
#
# 比べる基準として、本文の設定（7種類の層、本文の学習率）もここで学習し直し、3つの設定をすべて同じエポック数で学習します。
# `quick=True` で実行したとき（公開している本のページ）は、時間を抑えるためにエポック数を本文の半分にしています。
# 3つとも同じエポック数なので、比べ方は公平です。時間を抑えるため、検証損失は測りません。

# %% tags=["hide-cell"]
# 発展の準備: 設定を1つ受け取り、読み込み直したモデルで学習して結果をまとめる関数と、基準（本文の設定）の学習
from course_lib.lora import ALL_PROJ_MODULES, ATTENTION_MODULES

ex_epochs = settings["num_train_epochs"] / 2 if quick else settings["num_train_epochs"]


def run_variant(label, learning_rate, target_modules=ALL_PROJ_MODULES):
    """読み込み直したモデルに LoRA を付けて学習し、(表の1行, 学習の結果) を返します。"""
    ex_model = attach_lora(load_model(loaded.profile, verbose=False).model, lora_r=settings["lora_r"],
                           lora_alpha=settings["lora_alpha"], lora_dropout=settings["lora_dropout"],
                           target_modules=target_modules)
    ex_config = TrainConfig(
        num_train_epochs=ex_epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=settings["per_device_train_batch_size"],
        warmup_steps=settings["warmup_steps"],
        seed=seed,
    )
    ex_result = train(ex_model, tokenizer, train_records, config=ex_config)
    ex_answers = greedy_answers(ex_model, all_prompts)
    row = {
        "設定": label,
        "学習するパラメータ": count_parameters(ex_model)[0],
        "最後の学習損失": round(ex_result.final_loss, 2),
        "形式一致率（学習用）": format_match_rate(ex_answers[: len(train_prompts)]),
        "形式一致率（評価用）": format_match_rate(ex_answers[len(train_prompts):]),
    }
    return row, ex_result


def show_rows(rows):
    """結果の行を、数は3桁区切り、割合は % で表示する表にします。"""
    table = pd.DataFrame(rows).set_index("設定")
    table["学習するパラメータ"] = table["学習するパラメータ"].map(lambda v: f"{v:,}")
    for column in ("形式一致率（学習用）", "形式一致率（評価用）"):
        table[column] = table[column].map(lambda v: f"{v:.0%}")
    return table


ex_rows, ex_results = {}, {}
ex_rows["基準"], ex_results["基準"] = run_variant(
    f"本文の設定（学習率 {settings['learning_rate']:g}、7種類の層）", settings["learning_rate"])
print(f"どの設定も {ex_epochs:g} エポック学習します。")
show_rows([ex_rows["基準"]])

# %% tags=["hide-cell"]
# 発展1: 学習率を 1/10 にする
ex_rows["学習率1/10"], ex_results["学習率1/10"] = run_variant(
    f"学習率 1/10（{settings['learning_rate'] / 10:g}）", settings["learning_rate"] / 10)
ex_curves = pd.concat([ex_results[k].train_loss.assign(設定=ex_rows[k]["設定"]) for k in ("基準", "学習率1/10")])
fig, ax = plt.subplots(figsize=(8, 4))
sns.lineplot(data=ex_curves, x="step", y="loss", hue="設定", ax=ax)
ax.set_xlabel("ステップ（step）")
ax.set_ylabel("学習損失（train loss）")
ax.set_title(f"学習率を 1/10 にすると（{ex_epochs:g} エポック）")
plt.tight_layout()
plt.show()
show_rows([ex_rows["基準"], ex_rows["学習率1/10"]])

# %% tags=["hide-cell"]
# 発展2: 注意機構の4種類の層だけに LoRA を付ける（学習率は本文と同じ）
ex_rows["注意機構だけ"], ex_results["注意機構だけ"] = run_variant(
    "注意機構の4種類だけ", settings["learning_rate"], ATTENTION_MODULES)
print(f"{loaded.label}、どの設定も {ex_epochs:g} エポック学習した結果です。")
show_rows(list(ex_rows.values()))

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# 表と損失曲線は、すぐ上の解答例のセルを実行した結果です。
#
# 1. 学習率を 1/10 にすると、損失の下がり方がずっと遅く、最後まで高いままです。形式もほとんど身につきません（学習不足）。
#    エポックを増やせば追いつきますが、その分時間がかかります。
# 2. 注意機構だけにすると、学習するパラメータは MLP の3種類（`gate_proj`・`up_proj`・`down_proj`）の分だけ減ります。
#    同じエポック数では損失が下がりきらず、高めに残ります。形式一致率がどれだけ変わるかは、表で確かめてください。
#    どの層に付けるかも設定の一部です。設定の比べ方は、レベル2でくわしく扱います。
# ```
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

# %% tags=["remove-input"]
# CI の回帰チェック（このセルはページに表示しません）。tiny モデル・quick=True で測った結果に合わせた下限です。
# 学習の結果を変えてしまう変更をすると、ここで止まります。
assert rate_before["学習用"] <= 0.1 and rate_before["評価用"] <= 0.1, "学習前のモデルは、まだこの答え方を知らないはず"
assert loss_summary.loc[loss_summary.index[0], "最後"] < 0.8 * loss_summary.loc[loss_summary.index[0], "最初"], "学習損失が十分に下がっていません"
assert rate_after["学習用"] >= 0.7, f"学習用の質問での形式一致率が低すぎます: {rate_after['学習用']:.0%}"
assert rate_after["評価用"] >= 0.5, f"評価用の質問での形式一致率が低すぎます: {rate_after['評価用']:.0%}"
assert rate_after["学習用"] > rate_before["学習用"] and rate_after["評価用"] > rate_before["評価用"], "学習で形式一致率が上がっていません"
assert exact["評価用"] <= 0.1 < exact["学習用"], "学習用の答えの中身は再現でき、評価用の新しい中身は再現できないはず"
# 練習問題の解説に書いたこと
assert ex_rows["学習率1/10"]["最後の学習損失"] > ex_rows["基準"]["最後の学習損失"], "学習率 1/10 では損失が高く残るはず"
assert ex_rows["学習率1/10"]["形式一致率（評価用）"] <= ex_rows["基準"]["形式一致率（評価用）"], "学習率 1/10 では形式が身につきにくいはず"
assert ex_rows["注意機構だけ"]["学習するパラメータ"] < ex_rows["基準"]["学習するパラメータ"], "注意機構だけなら学習するパラメータは減るはず"
assert ex_rows["注意機構だけ"]["最後の学習損失"] > ex_rows["基準"]["最後の学習損失"], "注意機構だけでは、同じエポック数で損失が高めに残るはず"
