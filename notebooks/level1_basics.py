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
#   - LoRA が追加する2つの小さな行列と、その倍率 alpha/r を、読み込んだモデルの実物で確かめ、自分でも15行ほどで書いてみる
#   - 損失（loss）が何を測っているか（交差エントロピー）を説明し、回答部分だけに損失をかけて学習し、損失曲線（loss curve）を読む
#   - 学習用・検証用・テスト用の3つにデータを分ける理由を説明し、最終の成績をテスト用だけで測る
#   - LoRA と、すべての重みを学習する方法（全体のファインチューニング）を、コストと忘却（forgetting）で比べる
#   - アダプター（adapter）を保存・再読み込み・マージ（merge）する
# - **前提知識**: [レベル0：環境の確認](level0_setup.ipynb) を終えていること。Python の基本（関数・リスト・辞書）
# - **所要時間**: 計算にかかる時間は、この本を作ったときに測った値が[実行状況](report.md)のページにあります（tiny モデル、CPU）
# - **学習内容**: 指示データの形とデータの分け方、学習前の生成、LoRA の取り付けと手作りの LoRA 層、交差エントロピーと回答だけの損失、学習、損失曲線、学習後の生成と丸暗記、全体のファインチューニングとの比較、保存と再利用
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
#
# 各節の終わりには、短い **確認クイズ** があります。答えは「答え」をクリックすると開きます。

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny", quick=True）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b" のどれか
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
from IPython.display import Markdown, display
from myst_nb import glue

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
# **ベースモデル（base model）** と呼びます。ファインチューニングは、このモデルに
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
# - **破滅的忘却（catastrophic forgetting）**: 狭い課題に寄せすぎると、元のモデルが持っていた一般的な能力の一部が失われることがあります（11節で測ります）。
# - **事実は増えにくい**: 少ない見本で覚えられるのは主に「形」です。見本に出てこない事実が正しく答えられるようになるわけではありません（10節で確かめます）。
# ```
#
# この手順は一般に、**目的を決める → 指示と理想の応答の組を集める → 学習する → 評価して直す** の繰り返しです。
# このページでもこの順に進めます。
#
# ```{admonition} 確認クイズ
# :class: note
# 1. 「社内規程の最新版にもとづいて質問に答えさせたい。規程は毎月変わる」。まず検討するのはどれですか。
#    (a) ファインチューニング　(b) RAG　(c) 学習率を上げる
# 2. 少ない見本でファインチューニングしたとき、主に身につくのはどちらですか。
#    (a) 見本に出てこない新しい事実　(b) 答え方の形や文体
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. (b) RAG。変わり続ける知識は、質問のたびに最新の文書を探して添えるほうが確実です。
# 2. (b) 答え方の形や文体。新しい事実は増えにくいことを、10節で確かめます。
# ```
#
# ## 3. データを見る
#
# 使うのは `datasets/level1/` の小さなデータセットです。応答はすべて次の2行の形をしています（各行10〜60文字）。
#
# ```text
# 【結論】<答えを一文で>
# 【理由】<なぜそうなのかを一、二文で>
# ```
#
# データは役目の違う3つに分けてあります。検証用とテスト用は、学習用に出てこない話題の質問です。
#
# | 分け方 | ファイル | 使い道 |
# | --- | --- | --- |
# | **学習用（train）** | `train.jsonl` | 重みを更新する（学習する）のに使う |
# | **検証用（validation）** | `heldout.jsonl` | 学習中の検証損失（validation loss）を測る。設定選びや、学習を途中で止める判断（早期終了, early stopping）にも使う |
# | **テスト用（test）** | `test.jsonl` | 最後に一度だけ、最終の成績を測る。何かを選ぶのには使わない |
#
# 検証用とテスト用を分けるのは、**選ぶのに使ったデータでの成績は、実力より良く見えやすい** からです。
# 検証用の成績を見て学習率やエポック数を選ぶと、選んだ設定は検証用の20問に「たまたま合った」ものを含みます。
# 模試の問題で何度も練習してから同じ模試を受け直しても、本番の実力はわかりません。そこで、何を選ぶのにも使わなかった
# テスト用で最後に測ります。このページでも、検証用は損失曲線と設定選び（練習問題）に使い、テスト用は学習後の成績を測ることだけに使います。

# %%
from course_lib.level1 import LEVEL1_FORMAT, follows_format, format_match_rate, load_level1, load_level1_test

train_records, val_records = load_level1()  # 学習用と検証用（読み込むときに、項目・id・答えの形式を検査します）
test_records = load_level1_test()  # テスト用（学習用・検証用と同じ質問がないことも検査します）
print(f"学習用: {len(train_records)} 件 / 検証用: {len(val_records)} 件 / テスト用: {len(test_records)} 件")
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
assert format_match_rate([r["response"] for r in train_records + val_records + test_records]) == 1.0, "データの答えはすべて形式に合っているはず"

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
# 下に2つの文字列を表示します。
#
# - 1つ目は、生成のときにモデルへ渡す文字列です。最後の `assistant` の行のあとから、モデルが答えを書き始めます。
# - 2つ目は、学習のときにモデルが読む文字列です。答えと、発言の終わりを表す特殊トークン（special token）までが入っています。

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
# ```{admonition} 確認クイズ
# :class: note
# 1. 学習率を3つ試して、一番よいものを選びたい。比べるのに使ってよいのは、検証用とテスト用のどちらですか。
# 2. 学習データの答えの最後に `<|im_end|>` をつけておくのはなぜですか。
#    (a) 文字化けを防ぐため　(b) 答えをどこで終えるかを学ばせるため　(c) トークン数を減らすため
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 検証用です。テスト用は最後に一度だけ測るために取っておきます。テスト用で選ぶと、テスト用の成績が実力より良く見えてしまいます。
# 2. (b) このトークンも損失に入るので、モデルは「2行書いたら止まる」ことを学びます。
# ```
#
# ## 5. 学習前に生成する
#
# 変化を測るには、まず **学習前の答え（ベースライン, baseline）** を記録しておきます。
# 学習用とテスト用の質問すべてに、毎回同じ答えになる貪欲法（greedy decoding, `temperature=0`）で答えさせます。

# %%
from course_lib.generate import sample_answers


def greedy_answers(m, prompts):
    """質問ごとに貪欲法の答えを1つ（まとめて生成します）。"""
    out = sample_answers(m, tokenizer, prompts, n=1, temperature=0, max_new_tokens=MAX_NEW_TOKENS, progress=False)
    return [a[0] for a in out]


train_prompts = [r["prompt"] for r in train_records]
val_prompts = [r["prompt"] for r in val_records]
test_prompts = [r["prompt"] for r in test_records]
before = greedy_answers(model, train_prompts + test_prompts)
before_train, before_test = before[: len(train_prompts)], before[len(train_prompts):]
rate_before = {"学習用": format_match_rate(before_train), "テスト用": format_match_rate(before_test)}
print("学習前の形式一致率:", {k: f"{v:.0%}" for k, v in rate_before.items()})
for p, a in list(zip(train_prompts, before_train))[:3]:
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
# - $r$ は **ランク（rank）**: $A$ と $B$ の、細いほうの辺の長さ。$BA$ は大きな行列ですが、ランクは $r$ 以下です。
# - $\alpha$（alpha）は倍率のもとになる値で、実際にかかる倍率（scaling）は $\alpha / r$ です。
# - $B$ は 0 で初期化されるので、取り付けた直後のモデルは元のモデルとまったく同じ答えを返します。
#
# まず小さな数値で「細長い行列2つの積はランクが低い」ことを確かめます。

# %%
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
#
# ### 実際の層で見る形
#
# 読み込んだモデルの1層目の MLP にある `up_proj`（入力と出力の幅が違う線形層）を例に、式の各部分の形を、
# モデルから読み取った実際の大きさで表示します。`×` の左が行の数（出力側）、右が列の数（入力側）です。

# %%
up_proj = model.model.layers[0].mlp.up_proj  # 読み込んだモデルの実際の層（まだ LoRA はついていません）
d_in, d_out, r = up_proj.in_features, up_proj.out_features, settings["lora_r"]
alpha = settings["lora_alpha"]
top = f"─ W ({d_out}×{d_in}, frozen) ─► W·x ({d_out}) "
bottom = f"─ A ({r}×{d_in}) ─► A·x ({r}) ─► B ({d_out}×{r}) ─► ×{alpha}/{r} ─► (α/r)·B·A·x ({d_out}) "
width = max(len(top), len(bottom))
lead = f"x ({d_in}) ──"
pad = " " * len(lead)
print(f"h = W·x + (α/r)·B·A·x,   α/r = {alpha}/{r} = {alpha / r:g}\n")
print(f"{pad}┌{top.ljust(width, '─')}┐")
print(f"{lead}┤{' ' * width}├─(+)─► h ({d_out})")
print(f"{pad}└{bottom.ljust(width, '─')}┘")
display(pd.DataFrame({
    "形（shape）": [f"{d_in}", f"{d_out} × {d_in}", f"{r} × {d_in}", f"{d_out} × {r}", f"{d_out} × {d_in}", f"{d_out}"],
    "数の個数": ["", f"{d_out * d_in:,}", f"{r * d_in:,}", f"{d_out * r:,}", "（A と B から計算）", ""],
    "学習するか": ["", "しない（凍結）", "する", "する", "", ""],
}, index=["入力 x", "元の重み W", "LoRA の A", "LoRA の B", "差分 (α/r)·B·A", "出力 h"]))
print(f"この層だけで、W は {d_out * d_in:,} 個、A と B は合わせて {r * (d_in + d_out):,} 個"
      f"（W の {r * (d_in + d_out) / (d_out * d_in):.1%}）です。")

# %% [markdown]
# ### LoRA を自分で書く
#
# LoRA の仕組みは、これだけです。実際に `torch.nn.Module` として書いてみます。元の線形層 `base` をそのまま持ち、
# $A$ を小さな乱数、$B$ を 0 で作り、順伝播（forward）で $Wx + \frac{\alpha}{r} BAx$ を返します。
# $A$ と $B$ は PEFT と同じく float32 で持ち、計算のときに入力の型をそろえます。

# %%
class LinearWithLoRA(torch.nn.Module):
    """A frozen ``nn.Linear`` plus a LoRA update: h = W x + (alpha / r) * B A x."""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)  # 元の重み W は凍結
        device = base.weight.device
        self.A = torch.nn.Parameter(torch.randn(r, base.in_features, device=device) / base.in_features ** 0.5)  # 小さな乱数
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, r, device=device))  # 0 から始める
        self.scaling = alpha / r

    def forward(self, x):
        update = (x.to(self.A.dtype) @ self.A.T @ self.B.T) * self.scaling  # (α/r)·B·A·x
        return (self.base(x) + update).to(x.dtype)


# %% [markdown]
# この層を、モデルの複製（`copy.deepcopy`）の1層目の `up_proj` と差し替えます。元のモデルはこのあと PEFT で使うので、そのまま残します。
# $B$ が 0 なので、差し替えた直後の出力は元のモデルと同じはずです。

# %%
import copy

enc = tokenizer([chat_prompt(tokenizer, question)], return_tensors="pt", add_special_tokens=False).to(loaded.device.device)
scratch_model = copy.deepcopy(model)
scratch_layer = LinearWithLoRA(scratch_model.model.layers[0].mlp.up_proj, r=settings["lora_r"], alpha=settings["lora_alpha"])
scratch_model.model.layers[0].mlp.up_proj = scratch_layer  # 1つの層だけを差し替える
with torch.no_grad():
    logits_base = model(**enc).logits
    diff_at_start = (scratch_model(**enc).logits - logits_base).abs().max().item()
print(f"A の形 {tuple(scratch_layer.A.shape)}、B の形 {tuple(scratch_layer.B.shape)}、倍率 α/r = {scratch_layer.scaling:g}")
print(f"B = 0 のまま：元のモデルとの出力（logits）の最大差 = {diff_at_start}")

# %%
assert diff_at_start == 0.0, "B が 0 なら、差し替えた直後の出力は元のモデルと同じはず"

# %% [markdown]
# 次に、PEFT が作る LoRA 層と同じ計算になっているかを確かめます。
#
# 1. もう1つの複製に、PEFT で同じ $r$・$\alpha$ の LoRA を `up_proj` だけに取り付けます。
# 2. PEFT の $B$ を 0 でない乱数にします（$B = 0$ のままでは、どちらも元のモデルと同じになるだけで、比べる意味がないからです）。
# 3. PEFT の $A$ と $B$ の値を、自分で書いた層にコピーします。
# 4. 同じ入力で、2つのモデルの出力を比べます。
#
# 計算の順番が少し違うと、小数の丸め誤差でごくわずかな差が出ることがあります。そこで「ぴったり同じ」ではなく、
# 許容誤差（tolerance）以下かどうかで判定します。

# %%
from course_lib.lora import attach_lora

peft_check = attach_lora(copy.deepcopy(model), lora_r=settings["lora_r"], lora_alpha=settings["lora_alpha"],
                         lora_dropout=0.0, target_modules=("up_proj",))
peft_up = peft_check.base_model.model.model.layers[0].mlp.up_proj
with torch.no_grad():
    torch.nn.init.normal_(peft_up.lora_B["default"].weight, std=0.05)  # B を 0 でない乱数にする
    scratch_layer.A.copy_(peft_up.lora_A["default"].weight)  # PEFT の A と B を、自分の層へコピー
    scratch_layer.B.copy_(peft_up.lora_B["default"].weight)
    logits_scratch = scratch_model(**enc).logits.float()
    logits_peft = peft_check(**enc).logits.float()
scratch_max_diff = (logits_scratch - logits_peft).abs().max().item()
scratch_change = (logits_scratch - logits_base.float()).abs().max().item()
# float32 なら 1e-4、bfloat16 なら 3e-2 を、出力の大きさにかけた値まで許す
scratch_tolerance = (1e-4 if loaded.device.dtype == torch.float32 else 3e-2) * max(1.0, logits_peft.abs().max().item())
print(f"PEFT の scaling = {peft_up.scaling['default']:g}、自分の層の scaling = {scratch_layer.scaling:g}")
print(f"元のモデルからの変化（最大）: {scratch_change:.4f}")
print(f"自分の LoRA と PEFT の LoRA の出力の最大差: {scratch_max_diff:.2e}（許容誤差 {scratch_tolerance:.2e}）")
del scratch_model, peft_check  # 確かめ終わったので、複製は捨てます

# %%
assert scratch_change > 100 * scratch_tolerance, "B を 0 でない値にしたので、元のモデルとは出力が変わるはず"
assert scratch_max_diff <= scratch_tolerance, f"自分で書いた LoRA 層と PEFT の LoRA 層の出力が一致しません（最大差 {scratch_max_diff:.2e}）"

# %% [markdown]
# 元のモデルとははっきり違う出力なのに、自分で書いた層と PEFT の層の出力の差は許容誤差以下でした。
# PEFT の LoRA 層も、中でしていることは上の15行ほどと同じです。PEFT はこれに加えて、多くの層へのまとめての取り付け、
# ドロップアウト（dropout）、保存と読み込み、マージなどを引き受けてくれます。
#
# ### PEFT でモデルに取り付ける
#
# では、読み込んだモデルに PEFT で LoRA を取り付けます（`attach_lora` は PEFT ライブラリの `get_peft_model` を呼びます）。
# 対象は注意機構（attention）と MLP の7種類の線形層すべてです。

# %%
from course_lib.lora import count_parameters, lora_parameter_count

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

with torch.no_grad():
    logits_lora = peft_model(**enc).logits
    with peft_model.disable_adapter():
        logits_off = peft_model(**enc).logits
print("取り付けた直後、LoRA あり/なしの出力の最大差:", (logits_lora - logits_off).abs().max().item())

# %%
assert scaling == settings["lora_alpha"] / settings["lora_r"], "倍率は alpha / r のはず"
assert tuple(lora_A.shape) == (settings["lora_r"], q_proj.in_features), "A は r × 入力のはず"
assert tuple(lora_B.shape) == (q_proj.out_features, settings["lora_r"]), "B は 出力 × r のはず"
assert torch.count_nonzero(lora_B).item() == 0, "B は 0 で初期化されるはず"
assert torch.equal(logits_lora, logits_off), "取り付けた直後は、元のモデルと同じ出力になるはず"

# %% [markdown]
# ### 学習可能パラメータの数
#
# 学習するのは $A$ と $B$ だけです。1つの層で増える数は $r \times (\text{入力} + \text{出力})$ なので、
# 全部の対象層について足し算した値（LoRA を取り付ける前に `lora_parameter_count` で計算しておきました）は、
# 取り付けたあとに数えた値と一致するはずです。

# %%
trainable, total = count_parameters(peft_model)
display(pd.DataFrame({
    "パラメータ数": [f"{trainable:,}", f"{total:,}", f"{by_arithmetic.trainable:,}"],
}, index=["学習する（LoRA の A と B）", "全体（元の重み + LoRA）", "計算で求めた LoRA の数"]).assign(
    割合=[f"{trainable / total:.2%}", "100%", ""]))
glue("l1_hidden_size", f"{loaded.model.config.hidden_size:,}", display=False)
glue("l1_lora_percent", f"{trainable / total:.1%}", display=False)
print(f"このモデルの層の幅（hidden_size）: {loaded.model.config.hidden_size:,}、LoRA の割合: {trainable / total:.1%}")

# %%
assert trainable == by_arithmetic.trainable > 0, "数えた数と、計算で求めた数は一致するはず"
assert total == by_arithmetic.total, "全体の数も、元の重み + LoRA の計算と一致するはず"

# %% [markdown]
# 割合はモデルの大きさで大きく変わります。このページで読み込んだモデルは層の幅（hidden size）が {glue:text}`l1_hidden_size` で、
# LoRA の分は全体の {glue:text}`l1_lora_percent` です。層の幅が広いほど、割合は小さくなります。
# 計算で確かめられる例を2つ挙げます（どちらも $r \times (\text{入力} + \text{出力})$ を層ごとに足した値です）。
#
# - TinyLlama-1.1B（幅2048、22層）の注意機構の4種類（`q_proj`・`k_proj`・`v_proj`・`o_proj`）に r=16 をつけると、4,505,600 個で全体の約0.41%。
# - Qwen3-0.6B（幅1024、28層）の7種類すべてに r=16 をつけると、10,092,544 個で全体の約1.7%。
#
# 2つは対象の層の種類が違うので、割合の差は幅の違いだけから来るわけではありません。
#
# ```{admonition} 確認クイズ
# :class: note
# 1. 入力 1024、出力 2048 の線形層に r=8 の LoRA をつけます。$A$ と $B$ の数は合わせていくつですか。
# 2. `lora_alpha=32`、`lora_r=16` のとき、$BAx$ にかかる倍率はいくつですか。
# 3. LoRA を取り付けた直後のモデルが、元のモデルとまったく同じ出力を返すのはなぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. $8 \times (1024 + 2048) = 24{,}576$ 個です（$A$ が $8 \times 1024$、$B$ が $2048 \times 8$）。
# 2. $\alpha / r = 32 / 16 = 2$ です。
# 3. $B$ が 0 で初期化されるので、$\frac{\alpha}{r} BAx$ が 0 になり、$h = Wx$ のままだからです。
# ```
#
# ## 7. 損失は答えの部分だけにかける
#
# ### 損失が測っているもの：交差エントロピー
#
# 学習では、モデルに「次のトークン」を当てさせます。モデルは答えの各位置で、語彙（vocabulary）のすべてのトークンに確率を配ります。
# 見本の次のトークン（正解）に配った確率を $p$ とすると、その位置の損失は $-\log p$ です。
# 損失は、これを答えのトークン全部で平均した値で、**交差エントロピー（cross-entropy）** と呼びます。
#
# $$
# \text{損失} = \frac{1}{N} \sum_{i=1}^{N} -\log p(\text{見本の } i \text{ 番目のトークン} \mid \text{それより前のトークン})
# $$
#
# - 見本のトークンに確率 1 を配れば、その位置の損失は 0 です。確率が小さいほど損失は大きくなり、0 に近いと際限なく大きくなります。
# - 語彙が $V$ 個あるとき、どのトークンにも同じ確率 $1/V$ を配る「当て推量」の損失は、どの位置でも $\ln V$ です。
# - 損失が $L$ なら、見本のトークンに平均して（幾何平均で）$e^{-L}$ くらいの確率を配っている、と読めます。
#
# つまり損失は、見本と同じトークンを出せた割合（正解率, accuracy）ではなく、**見本のトークンにどれだけ高い確率を配れたか** を測ります。
# 正解のトークンに一番高い確率を配っていても、その確率が 0.3 なら損失は 1.2 です。逆に、間違ったトークンに自信をもって
# 高い確率を配ると、当て推量の $\ln V$ より大きな損失になります。8節で、このページの実行の数字で確かめます。
#
# ### 答えの部分だけを数える
#
# ただし、質問の部分まで当てさせる必要はありません。覚えてほしいのは答え方だからです。
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
# ```{admonition} 確認クイズ
# :class: note
# 1. 語彙が 4096 個のモデルが、どのトークンにも同じ確率を配る当て推量をすると、損失はいくつですか（小数第2位まで）。
# 2. 見本のトークンに、どの位置でも確率 0.5 を配るモデルの損失はいくつですか（小数第2位まで）。
# 3. ラベルが `-100` の位置はどう扱われますか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. $\ln 4096 \approx 8.32$ です。
# 2. $-\ln 0.5 \approx 0.69$ です。
# 3. 損失の計算から外れます。このページでは質問側のトークンがそうなっていて、答えの部分だけが学習されます。
# ```
#
# ## 8. 学習する
#
# `course_lib.train.train` は Hugging Face の `Trainer` を呼び、損失の記録（history）を返します。
# 検証用の20問は学習には使いませんが、各エポックの終わりに **検証損失** を測るのに使います。
# テスト用は、ここでは使いません。
#
# ```{admonition} Qwen3-0.6B で動かす場合
# :class: note
# `model_profile="qwen3-0.6b"` では、設定は学習率 `2e-4`、3エポック（`quick=True` なら2エポック）、バッチサイズ 8 になります
# （60件なら1エポック8ステップ、3エポックで24ステップ）。GPU ではモデルを bfloat16 で、bfloat16 を持たない GPU
# （Colab の T4 など）では float16 で読み込みます。
#
# 時間とメモリは、Qwen3-0.6B と同じ形のモデル（重みは乱数、ダウンロードなし）で測りました
# （`benchmarks/bench_qwen3_shape.py`、記録は `benchmarks/results/`）。
#
# - **CPU**（Intel Xeon 2コアをほかの作業と共用、float32、2026-11-29 測定）: LoRA の学習1ステップ（バッチ 4・259 トークン、
#   レベル3の設定）に約150秒（2回測って 165 秒と 131 秒）かかり、学習中にメモリが 9.2 GiB 増え、プロセス全体では最大 11.9 GiB でした。
#   このページの1ステップ（バッチ 8・最長 100 トークン）はこれよりトークンが少ないので、24ステップの学習はこの速さで1時間以内です。
# - **GPU**（NVIDIA H200、torch 2.11、2026-11-30 測定）: このページと同じバッチ 8・100 トークンの LoRA の1ステップが
#   bfloat16 で 0.26 秒、float16 で 0.22 秒、ピークメモリはどちらも約 4,500 MiB でした。24ステップなら 10 秒足らずです。
#
# 手元での実際の値は、下の学習のセルが表示する「学習時間」と「ピークメモリ」を見てください。
# 11節の全体のファインチューニングは、すべての重みとその勾配と AdamW の2つの状態を float32 で持つので、それだけで
# 596,049,920 × 16 バイト ≈ 8.9 GiB を使います（計算値。これに途中の計算結果が加わります。H200 で実測したピークメモリは 12,378 MiB、1ステップ 0.12 秒でした）。
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
result = train(peft_model, tokenizer, train_records, val_records, config)
pd.Series({
    "学習時間（秒）": round(result.seconds, 1),
    "ステップ数": result.steps,
    "最初の学習損失": round(float(result.train_loss["loss"].iloc[0]), 3),
    "最後の学習損失": round(result.final_loss, 3),
    "最小の検証損失": round(result.best_eval_loss, 3),
    "ピークメモリ（MB）": round(result.peak_memory_mb),
}, name=loaded.label).to_frame()

# %% [markdown]
# 7節の交差エントロピーの説明を、この実行の数字で確かめます。最初のステップの損失は、まだ何も学習していない
# モデルの損失です（$B = 0$ なので、LoRA は出力を何も変えていません）。これを、語彙 $V$ 個への当て推量の損失 $\ln V$ と比べます。

# %%
import math

vocab_size = peft_model.get_output_embeddings().weight.shape[0]  # モデルが確率を配るトークンの数
uniform_loss = math.log(vocab_size)
first_loss = float(result.train_loss["loss"].iloc[0])
last_loss = result.final_loss
print(f"語彙の数 V = {vocab_size:,}、当て推量の損失 ln V = {uniform_loss:.3f}")
print(f"最初のステップの学習損失 = {first_loss:.3f}（見本のトークンへの平均の確率 e^-L = {math.exp(-first_loss):.2e}、当て推量なら 1/V = {1 / vocab_size:.2e}）")
print(f"最後のステップの学習損失 = {last_loss:.3f}（見本のトークンへの平均の確率 e^-L = {math.exp(-last_loss):.2f}）")
if first_loss > uniform_loss:
    print(f"最初の損失は当て推量の ln V より {first_loss - uniform_loss:.2f} 大きい値でした。学習前のモデルは、見本のトークン"
          "（【結論】などの目印や、この答え方の言い回し）に、平均すると当て推量の 1/V よりも低い確率しか配っていません。"
          "ほかのトークンに自信をもって高い確率を配り、外しているということです。")
else:
    print(f"最初の損失は当て推量の ln V より {uniform_loss - first_loss:.2f} 小さい値でした。学習前のモデルでも、"
          "事前学習で身につけた日本語の知識で、見本のトークンに当て推量より高い確率を配れています。")
glue("l1_first_loss", f"{first_loss:.2f}", display=False)
glue("l1_uniform_loss", f"{uniform_loss:.2f}", display=False)

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
display(loss_summary)
best_epoch = float(eval_curve.loc[eval_curve["eval_loss"].idxmin(), "epoch"])
if last_eval > min_eval * 1.05:
    print(f"検証損失は {best_epoch:.0f} エポック目で最小になり、その後は上がっています。"
          "学習用の質問に特有の中身（事実）を覚え始めた、過学習のしるしです。")
else:
    print("検証損失は最後まで大きく上がっていません。はっきりした過学習は見られません。")
glue("l1_best_epoch", f"{best_epoch:.0f}", display=False)
glue("l1_epochs", f"{settings['num_train_epochs']:g}", display=False)

# %% [markdown]
# 損失は、見本のトークンに配った確率の対数（の符号を変えたもの）の平均でした。答えの大部分は中身（事実）の言葉なので、
# 損失の数字だけでは、「【結論】【理由】の2行で答える」という答え方が身についたかどうかは直接わかりません。
# 次の節で、実際に生成させて確かめます。
#
# ```{admonition} 確認クイズ
# :class: note
# 1. 学習損失は下がり続けているのに、検証損失は途中から上がり始めました。何のしるしですか。
# 2. このページの実行では、検証損失が最小になったのは何エポック目でしたか（上の表とメッセージで確かめてください）。
# 3. このページの実行で、最初のステップの学習損失は、当て推量の損失 $\ln V$ より大きかったですか、小さかったですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 過学習です。学習用のデータに特有のこと（ここでは答えの中身）を丸暗記し始めています。
# 2. {glue:text}`l1_epochs` エポックのうち、{glue:text}`l1_best_epoch` エポック目です。
# 3. 最初の損失は {glue:text}`l1_first_loss`、$\ln V$ は {glue:text}`l1_uniform_loss` でした（8節のセルの出力に、どちらが大きいかとその意味が表示されています）。
# ```
#
# ## 10. 学習後に生成する
#
# 学習前と同じ学習用とテスト用の質問に、同じ貪欲法で答えさせます。あとで丸暗記を調べるため、検証用の質問にも答えさせます
# （検証用の答えは、丸暗記の数を数えるのにだけ使います）。

# %%
after = greedy_answers(peft_model, train_prompts + val_prompts + test_prompts)
after_train = after[: len(train_prompts)]
after_val = after[len(train_prompts): len(train_prompts) + len(val_prompts)]
after_test = after[len(train_prompts) + len(val_prompts):]
rate_after = {"学習用": format_match_rate(after_train), "テスト用": format_match_rate(after_test)}
exact = {
    "学習用": np.mean([a == r["response"] for a, r in zip(after_train, train_records)]),
    "テスト用": np.mean([a == r["response"] for a, r in zip(after_test, test_records)]),
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


answers_by_split = {
    "学習用": (train_prompts, before_train, after_train),
    "テスト用": (test_prompts, before_test, after_test),
}
side_by_side = pd.DataFrame([
    {
        "区分": split,
        "質問": answers_by_split[split][0][i],
        "学習前": one_line(answers_by_split[split][1][i]),
        "学習後": one_line(answers_by_split[split][2][i]),
        "形式OK（前→後）": "{} → {}".format("○" if follows_format(answers_by_split[split][1][i]) else "×",
                                         "○" if follows_format(answers_by_split[split][2][i]) else "×"),
    }
    for split in answers_by_split for i in range(4)
])
side_by_side

# %% [markdown]
# ### 何が広がり、何が広がらなかったか
#
# テスト用の質問は、学習データに出てこない話題です。テスト用の答えを見本と並べます。

# %%
pd.DataFrame({
    "質問": test_prompts[:5],
    "見本の答え": [one_line(r["response"], 80) for r in test_records[:5]],
    "学習後の答え": [one_line(a, 80) for a in after_test[:5]],
})

# %% [markdown]
# - **形式は広がりました。** 一度も見ていない質問にも「【結論】…」「【理由】…」の2行で答え、そこで止まっています（上の形式一致率）。
# - **中身は広がっていません。** テスト用で見本と同じ答えはほぼなく、tiny モデルの場合は文として意味が通らない部分も多く残ります。
#   学習用の質問では見本をそのまま再現できるものがあるのと対照的です。少ない見本で身につくのは主に「形」で、
#   知らない事実が増えるわけではない、ということです（2節の注意点）。
# - **損失と形式は別のものを見ています。** 9節で検証損失が途中から上がっていても、テスト用の形式一致率は上がりえます。
#   損失は答えの全トークンの平均で、その大部分は中身（事実）の言葉です。知らない事実は当てられないので検証損失は下がりきらず、
#   学習用の中身を覚えるほど上がることもあります。一方、「【結論】で始めて2行で止まる」という形は、どの質問にも共通なので広がります。
# - 形式一致率は「形」だけを測る指標です。BLEU や ROUGE のように見本との文字の重なりを測る指標も、
#   **事実として正しいか** は測れません。中身の正しさは、別の方法（人の確認や、正解を知っている採点者）で確かめる必要があります。
#
# ### 丸暗記：学習用の答えをそのまま写していないか
#
# 形式に合っていても、中身が **学習用の答えをそのまま写したもの** のことがあります。学習で見ていない質問
# （検証用とテスト用）の答えのうち、学習用のどれかの答えと一字一句同じもの、または1行目（【結論】の行）だけが同じものを数えます。

# %%
train_by_answer = {r["response"]: r["prompt"] for r in train_records}
train_by_conclusion = {r["response"].split("\n")[0]: r["prompt"] for r in train_records}


def copied_from_training(answer):
    """学習用の答えを写していれば (写した範囲, 写し元の学習用の質問)、写していなければ None を返します。"""
    if answer in train_by_answer:
        return "答え全体", train_by_answer[answer]
    first_line = answer.split("\n")[0]
    if first_line in train_by_conclusion:
        return "【結論】の行だけ", train_by_conclusion[first_line]
    return None


unseen = [("検証用", p, a) for p, a in zip(val_prompts, after_val)] + [("テスト用", p, a) for p, a in zip(test_prompts, after_test)]
copies = [
    {"区分": split, "質問": p, "学習後の答え": one_line(a, 60), "写した範囲": found[0], "写し元（学習用の質問）": found[1]}
    for split, p, a in unseen if (found := copied_from_training(a))
]
n_copy_full = sum(c["写した範囲"] == "答え全体" for c in copies)
n_copy_line = len(copies) - n_copy_full
n_copy_full_test = sum(c["写した範囲"] == "答え全体" and c["区分"] == "テスト用" for c in copies)
print(f"学習で見ていない {len(unseen)} 問のうち、学習用の答えを丸ごと写したもの: {n_copy_full} 問、"
      f"【結論】の行だけ写したもの: {n_copy_line} 問")
if copies:
    display(pd.DataFrame(copies))
    sources = pd.Series([c["写し元（学習用の質問）"] for c in copies]).value_counts()
    n_copy_pass = sum(follows_format(a) for split, p, a in unseen if copied_from_training(a))
    print(f"写し元になった学習用の質問は {len(sources)} 種類で、一番多いのは「{sources.index[0]}」（{sources.iloc[0]} 回）です。")
    print(f"このうち {n_copy_pass} 問は、形式一致率では「合格」に数えられています。"
          "質問に答えているのではなく、覚えた答え（の一部）を出しているだけです。")
else:
    print("この実行では、学習用の答えを写した答えはありませんでした。")
glue("l1_copy_full", f"{n_copy_full}", display=False)
glue("l1_copy_line", f"{n_copy_line}", display=False)
glue("l1_unseen", f"{len(unseen)}", display=False)

# %% [markdown]
# 学習用の答えをそのまま出すのは、**丸暗記（memorization）** のしるしです。このページでは学習用の答えを
# {glue:text}`l1_epochs` エポック（同じデータを {glue:text}`l1_epochs` 回）読ませたので、モデルは答えを文ごと覚えていきます。
# 知らない質問に出会うと、覚えている答えの1つをそのまま出してしまうことがあります
# （上の表で、質問と写し元の質問を見比べてみてください。共通する言葉が見つかることがあります）。
#
# 形式一致率はこれを見逃します。丸写しの答えも2行の形式には合っているからです。指標の数字だけでなく、
# **実際の答えを読む** ことと、**学習データとの重なりを数える** ことが大切です。
#
# ```{admonition} 確認クイズ
# :class: note
# 1. テスト用の形式一致率が100%なら、テスト用の答えの中身も正しいと言えますか。
# 2. このページの実行で、学習で見ていない {glue:text}`l1_unseen` 問のうち、学習用の答えを丸ごと写した答えはいくつありましたか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. 言えません。形式一致率は2行の形だけを見ます。中身は別の方法で確かめる必要があります。
# 2. {glue:text}`l1_copy_full` 問でした（【結論】の行だけ写したものは {glue:text}`l1_copy_line` 問）。1つでもあれば、それは丸暗記のしるしです。
# ```
#
# ## 11. 全体のファインチューニングと比べる
#
# LoRA を使わずに、モデルの **すべての重み** を学習する方法を **全体のファインチューニング（full fine-tuning）** と呼びます。
# 読み込み直した元のモデルを、LoRA と同じデータ・同じエポック数・同じバッチサイズで全体のファインチューニングし、次の点を比べます。
#
# - 学習可能パラメータの数と、そのためのメモリ
# - 1ステップにかかる時間
# - 最後の学習損失、最小の検証損失、テスト用の形式一致率
# - テスト用で、学習用の答えを丸ごと写した答えの数
# - **忘却（forgetting）**: 一般の文章を、学習前と比べてどれだけうまく予測できなくなったか
#
# ### 忘却をパープレキシティで測る
#
# 忘却は **パープレキシティ（perplexity）** で測ります。文章の各トークンを、その前までのトークンから予測したときの
# 交差エントロピー（7節の損失と同じ式）を平均し、$e$ の肩に乗せた値です。
#
# $$
# \text{パープレキシティ} = \exp\left(\frac{1}{N} \sum_{i=1}^{N} -\log p(\text{トークン}_i \mid \text{それより前のトークン})\right)
# $$
#
# 「次のトークンを、毎回およそ何個の候補の中から迷っているか」と読めます。小さいほど文章をうまく予測できています。
# 語彙 $V$ 個に同じ確率を配る当て推量のモデルなら、ちょうど $V$ です。計算は `course_lib.perplexity.perplexity` にまとめてあります（レベル3でも同じ関数と同じ文章を使います）。
#
# 測る文章は、tiny モデルの事前学習に使った一般の日本語の文章（`datasets/pretrain`）から、10段落に1つを
# 決まった位置で取り出したものです。ファインチューニングでは一度も使っていません。tiny モデルはこれらの段落を事前学習で
# 読んでいるので、学習前のパープレキシティは低めに出ます。見るのは、ファインチューニングのあとにそれがどれだけ上がったか、
# つまり元のモデルができていたことをどれだけ失ったかです。
#
# ```{admonition} 全体のファインチューニングの学習率
# :class: note
# 全体のファインチューニングでは、LoRA より小さな学習率を使うのが一般的です。tiny モデルの値（`1e-3`）は、
# CPU で `3e-4`・`1e-3`・`3e-3` の3つを30エポックずつ試し、**検証損失** の最小値が一番小さかったものです（テスト用は見ていません）。
# Qwen3-0.6B の値（`2e-5`）は一般的な目安で、計測していません。
# また、GPU で bfloat16 の重みに小さな更新を足すと丸めで消えてしまうことがあるので、全体のファインチューニングでは
# 重みを float32 にしてから学習します（tiny モデルは最初から float32 です）。
# ```

# %%
from course_lib.perplexity import general_text, perplexity
from course_lib.tiny_model import read_corpus

FULL_LEARNING_RATE = {"tiny": 1e-3, "qwen3-0.6b": 2e-5}  # 全体のファインチューニングの学習率（上の注を参照）

paragraphs = read_corpus()
general_texts = general_text()  # 事前学習の文章から、10段落に1つ（いつも同じ段落）
print(f"一般の文章: 全 {len(paragraphs)} 段落のうち {len(general_texts)} 段落")
print(f"1つ目の段落: {general_texts[0][:60]}…")
with peft_model.disable_adapter():  # アダプターを外す = 学習前の元のモデル
    ppl_base = perplexity(peft_model, tokenizer, general_texts)
ppl_lora = perplexity(peft_model, tokenizer, general_texts)
print(f"パープレキシティ: 学習前 {ppl_base:.1f}、LoRA の学習後 {ppl_lora:.1f}（参考: 当て推量なら {vocab_size:,}）")

# %% [markdown]
# 次に、元のモデルを読み込み直して、全体のファインチューニングをします。LoRA の学習（8節）と同じく検証損失も測るので、
# 1ステップの時間も同じ条件で比べられます。

# %%
full_model = load_model(loaded.profile, verbose=False).model.float()  # 元のモデル（すべての重みを学習する）
full_config = TrainConfig(
    num_train_epochs=settings["num_train_epochs"],
    learning_rate=FULL_LEARNING_RATE[loaded.profile],
    per_device_train_batch_size=settings["per_device_train_batch_size"],
    warmup_steps=settings["warmup_steps"],
    seed=seed,
)
full_result = train(full_model, tokenizer, train_records, val_records, full_config)
full_after_test = greedy_answers(full_model, test_prompts)
ppl_full = perplexity(full_model, tokenizer, general_texts)
print(f"全体のファインチューニング: {full_result.steps} ステップ、{full_result.seconds:.1f} 秒")


def state_memory_mb(m):
    """学習可能パラメータ1つごとに、勾配1つと Adam の状態2つ（平均と2乗の平均）を持つときのメモリ（MB）。"""
    return sum(3 * p.numel() * p.element_size() for p in m.parameters() if p.requires_grad) / 2**20


def count_full_copies(answers):
    """学習用の答えを丸ごと写した答えの数。"""
    return sum(a in train_by_answer for a in answers)


cost = {
    "LoRA": {"params": count_parameters(peft_model)[0], "state_mb": state_memory_mb(peft_model), "res": result,
             "test_rate": rate_after["テスト用"], "copies": count_full_copies(after_test), "ppl": ppl_lora},
    "全体のファインチューニング": {"params": count_parameters(full_model)[0], "state_mb": state_memory_mb(full_model),
                                  "res": full_result, "test_rate": format_match_rate(full_after_test),
                                  "copies": count_full_copies(full_after_test), "ppl": ppl_full},
}
comparison = pd.DataFrame({
    "学習可能パラメータ": ["—"] + [f"{c['params']:,}" for c in cost.values()],
    "勾配と Adam の状態（計算, MB）": ["—"] + [f"{c['state_mb']:.1f}" for c in cost.values()],
    "ピークメモリ（実測, MB）": ["—"] + [f"{c['res'].peak_memory_mb:.0f}" for c in cost.values()],
    "1ステップの秒数": ["—"] + [f"{c['res'].seconds / c['res'].steps:.3f}" for c in cost.values()],
    "最後の学習損失": ["—"] + [f"{c['res'].final_loss:.3f}" for c in cost.values()],
    "最小の検証損失": ["—"] + [f"{c['res'].best_eval_loss:.3f}" for c in cost.values()],
    "テスト用の形式一致率": [f"{rate_before['テスト用']:.0%}"] + [f"{c['test_rate']:.0%}" for c in cost.values()],
    f"テスト用で丸写し（{len(test_prompts)}問中）": ["—"] + [f"{c['copies']}" for c in cost.values()],
    "一般の文章のパープレキシティ": [f"{ppl_base:.1f}"] + [f"{c['ppl']:.1f}" for c in cost.values()],
}, index=["学習前（元のモデル）", *cost])
comparison

# %% [markdown]
# メモリの列が2つあるのは、測り方に限界があるからです。CPU では、学習の間にプロセスのメモリ（RSS）がどれだけ
# 増えたかを測っています。先に実行した学習が手放したメモリを使い回すと小さく出るので、実行する順番で値が変わります。
# GPU では、確保したメモリの最大値（`torch.cuda.max_memory_allocated`）を測るので、実測の値もそのまま比べられます
# （ただし全体のファインチューニングの値には、メモリに載ったままの LoRA のモデルの分も含まれます）。
# 「勾配と Adam の状態」の列は、学習可能パラメータ1つにつき、勾配1つと Adam の状態2つを持つとして計算した値です。
# モデルが大きくなるほど、この部分がメモリの大きな割合を占めます。
#
# 表から読み取れることを、数字から文を組み立てて表示します。

# %%
lora, full = cost["LoRA"], cost["全体のファインチューニング"]
lora_sps, full_sps = lora["res"].seconds / lora["res"].steps, full["res"].seconds / full["res"].steps


def change_word(ratio):
    """パープレキシティが学習前の何倍になったかを、言葉にします。"""
    return "大きく上がりました" if ratio >= 2 else ("上がりました" if ratio >= 1.1 else "ほとんど変わりませんでした")


def w(name):
    """文の中に方法の名前を入れるとき、英字の名前だけ前後に空白を入れます。"""
    return f" {name} " if name.isascii() else name


forget_lora, forget_full = ppl_lora / ppl_base, ppl_full / ppl_base
more_forgetful = "全体のファインチューニング" if ppl_full > ppl_lora else "LoRA"
learned_more = "全体のファインチューニング" if full["res"].best_eval_loss < lora["res"].best_eval_loss else "LoRA"
faster = "LoRA" if lora_sps < full_sps else "全体のファインチューニング"
if lora["test_rate"] == full["test_rate"]:
    format_sentence = f"テスト用の形式一致率は、どちらも {lora['test_rate']:.0%} で同じでした。"
else:
    higher = "LoRA" if lora["test_rate"] > full["test_rate"] else "全体のファインチューニング"
    format_sentence = (f"テスト用の形式一致率は LoRA が {lora['test_rate']:.0%}、全体のファインチューニングが "
                       f"{full['test_rate']:.0%} で、{w(higher)}のほうが高くなりました。")
full_copies = [(p, a) for p, a in zip(test_prompts, full_after_test) if a in train_by_answer]
if lora["copies"] == full["copies"]:
    copy_sentence = f"テスト用で学習用の答えを丸ごと写した答えは、どちらも {lora['copies']} 問でした。"
else:
    copy_sentence = (f"テスト用で学習用の答えを丸ごと写した答えは LoRA が {lora['copies']} 問、全体のファインチューニングが "
                     f"{full['copies']} 問で、丸暗記がより多く出たのは{w('LoRA' if lora['copies'] > full['copies'] else '全体のファインチューニング')}でした。")
conclusion = [
    f"一般の文章のパープレキシティは、学習前の {ppl_base:.1f} から、LoRA では {ppl_lora:.1f}（{forget_lora:.1f} 倍）に"
    f"{change_word(forget_lora)}。全体のファインチューニングでは {ppl_full:.1f}（{forget_full:.1f} 倍）に{change_word(forget_full)}。"
    f"より多く忘れたのは{w(more_forgetful)}です。",
    f"最小の検証損失は LoRA が {lora['res'].best_eval_loss:.3f}、全体のファインチューニングが {full['res'].best_eval_loss:.3f} で、"
    f"学習した課題（検証用の答えの予測）により強く合わせられたのは{w(learned_more)}でした。" + format_sentence + copy_sentence,
    f"学習可能パラメータは、LoRA が全体のファインチューニングの {lora['params'] / full['params']:.1%} で、"
    f"勾配と Adam の状態のメモリは {full['state_mb'] / lora['state_mb']:.0f} 分の1 です。"
    f"1ステップの時間は{w(faster)}のほうが短くなりました（LoRA {lora_sps:.3f} 秒、全体 {full_sps:.3f} 秒）。",
]
step_gap = abs(lora_sps - full_sps) / max(lora_sps, full_sps)
if step_gap < 0.2:
    conclusion.append(f"ただし1ステップの時間の差は {step_gap:.0%} と小さく、ほかの処理と CPU を分け合う環境では、"
                      "実行のたびに順番が入れ替わることがあります。")
elif faster != "LoRA":
    conclusion.append("このモデルでは層が小さいので、省ける勾配の計算より、A と B の計算を足す手間のほうが目立ったと考えられます。"
                      "幅の広い大きなモデルでは、凍結した重みの勾配を計算しない分だけ、LoRA のほうが速くなるのがふつうです。")
if learned_more == more_forgetful == "全体のファインチューニング":
    conclusion.append("学習した課題により強く合わせた全体のファインチューニングが、一般の文章もより多く忘れました。"
                      "LoRA は変えられる量が限られるぶん、元のモデルから離れにくいと考えられます"
                      "（大きなモデルでも同じ傾向が、Biderman ほか（2024）「LoRA Learns Less and Forgets Less」で報告されています）。")
elif learned_more == more_forgetful:
    conclusion.append(f"学習した課題により強く合わせた{w(learned_more)}が、一般の文章もより多く忘れました。")
else:
    conclusion.append("この実行では、学習した課題により強く合わせた方法と、より多く忘れた方法が別でした。")
conclusion = [s.replace("  ", " ").replace("、 ", "、").replace("（ ", "（") for s in conclusion]  # 名前のまわりの余分な空白を取る
display(Markdown("\n".join(f"- {s}" for s in conclusion)))
if full_copies:
    print("全体のファインチューニングが、テスト用で学習用の答えを丸ごと写した例:")
    display(pd.DataFrame([{"質問": p, "答え": one_line(a, 60), "写し元（学習用の質問）": train_by_answer[a]} for p, a in full_copies]))
glue("l1_more_forgetful", more_forgetful, display=False)
glue("l1_ppl_summary", f"学習前 {ppl_base:.1f}、LoRA {ppl_lora:.1f}、全体のファインチューニング {ppl_full:.1f}", display=False)
del full_model  # メモリを空けます（結果の数字は残っています）

# %% [markdown]
# どちらの方法でも、一般の文章のパープレキシティは学習前より上がっているはずです（上の表で確かめてください）。
# 狭い課題に強く合わせると、元のモデルが得意だったことの一部が失われます。これが2節で触れた
# **破滅的忘却** を、数字で見たものです。対策には、学習率やエポック数を控えめにする、一般の文章を学習データに少し混ぜる
# （リプレイ, replay）、LoRA のランクを小さくする、などがあります。レベル3では、リプレイの効果を実際に測ります。
#
# ```{admonition} 確認クイズ
# :class: note
# 1. このページの実行で、一般の文章をより多く忘れた（パープレキシティがより大きく上がった）のはどちらでしたか。
# 2. どのトークンにも同じ確率を配るモデルのパープレキシティは、語彙が 4096 個ならいくつですか。
# 3. 大きなモデルで、LoRA が全体のファインチューニングよりメモリを大きく節約できる主な理由は何ですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. {glue:text}`l1_more_forgetful` です（{glue:text}`l1_ppl_summary`）。
# 2. 4096 です。パープレキシティは当て推量の候補の数と読めるので、語彙の数そのものになります。
# 3. 勾配と Adam の状態を、学習する $A$ と $B$ の分だけ持てばよいからです。全体のファインチューニングでは、すべての重みについて持つ必要があります。
# ```
#
# ## 12. 保存・再読み込み・マージ
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
all_prompts = train_prompts + val_prompts + test_prompts  # 10節で答えさせた質問すべて（after と同じ順）
fresh = load_model(loaded.profile, verbose=False)
reloaded = load_adapter(fresh.model, adapter_dir)
answers_reloaded = greedy_answers(reloaded, all_prompts)
merged = merge_adapter(reloaded)  # 読み込み直した元の重みに、アダプターを足し込みます
answers_merged = greedy_answers(merged, all_prompts)
same = pd.Series({
    "再読み込みしたモデル": np.mean([a == b for a, b in zip(after, answers_reloaded)]),
    "マージしたモデル": np.mean([a == b for a, b in zip(after, answers_merged)]),
}, name=f"学習直後と同じ答えの割合（{len(all_prompts)}問）")
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
# ```{admonition} 確認クイズ
# :class: note
# 1. `save_adapter` で保存されるのは、次のどれですか。
#    (a) 元のモデルの重みすべて　(b) LoRA の $A$ と $B$（と設定）だけ　(c) 学習データ
# 2. マージしたモデルが、PEFT なしで同じ答えを出せるのはなぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. (b) です。だからファイルが小さく、使うときは同じ元のモデルを読み込んでから載せます。
# 2. マージでは $W + \frac{\alpha}{r}BA$ を計算して元の重みに書き込みます。$Wx + \frac{\alpha}{r}BAx$ と同じ計算を、普通の線形層1つで行えるからです。
# ```
#
# ## 13. トラブルシューティング
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
# ## 14. 練習問題
#
# ### 基本
#
# 1. LoRA のランクを `lora_r=4` にすると、学習可能パラメータは何個になりますか。まず $r \times (\text{入力} + \text{出力})$ で予想し、
#    `lora_parameter_count`（層の種類ごとの内訳は `lora_parameter_table`）と、実際に取り付けたモデルの `count_parameters` で確かめてください。
# 2. 自分で考えた質問を3つ作り、学習後のモデル（`peft_model`）に答えさせて、`format_match_rate` で形式に合うか調べてください。
#
# #### 解答例
#
# 下の2つのセルが、基本1と基本2の解答例です（クリックで開きます）。このページを作るときに実際に実行した結果が表示されます。

# %% tags=["hide-cell"]
# 基本1: lora_r=4 のときの LoRA のパラメータ数
from course_lib.lora import attach_lora, count_parameters, lora_parameter_count, lora_parameter_table, parameter_table_ja

ex_base = load_model(loaded.profile, verbose=False).model  # LoRA を付けていない元のモデルを読み込み直す
display(parameter_table_ja(lora_parameter_table(ex_base, 4)))  # 層の種類ごとに r ×（入力 + 出力）、それに層の数をかけたもの
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
#    学習用の答えをそのまま写していないかも、10節の `copied_from_training` で調べられます。
# ```
#
# ### 発展
#
# 1. 学習率を今の 1/10 にして同じエポック数で学習し、損失曲線と形式一致率を比べてください。何が起きていますか。
# 2. LoRA を注意機構の4種類の層（`ATTENTION_MODULES`）だけに付けて学習し、学習可能パラメータ数と形式一致率を7種類のときと比べてください。
#
# 設定を比べて選ぶ練習なので、形式一致率は **検証用** で測ります。テスト用は使いません（3節）。
#
# #### 解答例
#
# 比べる基準として、本文の設定（7種類の層、本文の学習率）もここで学習し直し、3つの設定をすべて同じエポック数で学習します。
# `quick=True`（CI で使う短縮版）で実行したときは、時間を抑えるためにエポック数を本文の半分にしています。
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
    ex_answers = greedy_answers(ex_model, train_prompts + val_prompts)  # テスト用は使わない
    row = {
        "設定": label,
        "学習可能パラメータ": count_parameters(ex_model)[0],
        "最後の学習損失": round(ex_result.final_loss, 2),
        "形式一致率（学習用）": format_match_rate(ex_answers[: len(train_prompts)]),
        "形式一致率（検証用）": format_match_rate(ex_answers[len(train_prompts):]),
    }
    return row, ex_result


def show_rows(rows):
    """結果の行を、数は3桁区切り、割合は % で表示する表にします。"""
    table = pd.DataFrame(rows).set_index("設定")
    table["学習可能パラメータ"] = table["学習可能パラメータ"].map(lambda v: f"{v:,}")
    for column in ("形式一致率（学習用）", "形式一致率（検証用）"):
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
# 2. 注意機構だけにすると、学習可能パラメータは MLP の3種類（`gate_proj`・`up_proj`・`down_proj`）の分だけ減ります。
#    同じエポック数では損失が下がりきらず、高めに残ります。形式一致率がどれだけ変わるかは、表で確かめてください。
#    どの層に付けるかも設定の一部です。設定の比べ方は、レベル2でくわしく扱います。
#
# この表で一番よい設定を選んだら、その設定の最終の成績は、ここで使わなかったテスト用で測ります。
# 検証用の形式一致率は、選ぶのに使ったぶん、実力より良く見えやすいからです。
# ```
#
# ## まとめ
#
# - ファインチューニングは、答え方・形式のような **振る舞い** を変えるのに向いています。知識を足すなら RAG も考えます。
# - LoRA は元の重みを凍結し、細長い行列 $A$ と $B$ を学習します。$B$ は 0 から始まり、倍率は $\alpha / r$ です。
#   中身は15行ほどの層で書け、PEFT の層と同じ出力になることを確かめました。
# - 損失は交差エントロピー（見本のトークンに配った確率の $-\log$ の平均）で、答えの部分（と終了トークン）だけにかけます。質問側のラベルは `-100` です。
# - 損失曲線では、学習損失と検証損失の両方と、その差を見ます。
# - データは学習用・検証用・テスト用に分け、設定選びや早期終了は検証用で、最終の成績はテスト用だけで測ります。
# - 学習後のモデルは、テスト用の新しい質問にも決まった2行の形式で答えるようになりました。ただし中身は正しくならず、
#   学習用の答えを丸写しすること（丸暗記）もあります。
# - 全体のファインチューニングと比べると、LoRA は学習可能パラメータと、勾配・Adam の状態のメモリがずっと少なくてすみます。
#   一般の文章の忘れ方も、11節の表で比べました。
# - アダプターは小さなファイルとして保存でき、新しく読み込んだモデルに載せても、マージしても、同じ答えを返します。
#
# ```{admonition} チェックリスト：次のことができれば、レベル1は完了です
# :class: tip
# - プロンプトの工夫・RAG・ファインチューニングの違いを、それぞれ一言で説明できる
# - LoRA の $A$ と $B$ の形と、倍率 $\alpha / r$ の意味を説明でき、LoRA の層を自分で書ける
# - 損失（交差エントロピー）が何を測るかと、当て推量の損失 $\ln V$ の意味を説明できる
# - ラベル `-100` が何のためにあるかを説明できる
# - 損失曲線から、過学習と学習不足を見分けられる
# - 検証用とテスト用を分ける理由を説明できる
# - 全体のファインチューニングと比べた LoRA の利点を、メモリと忘却の面から説明できる
# - アダプターを保存し、新しく読み込んだモデルに載せ直し、マージできる
# ```
#
# 次のレベル2では、ランク・alpha・学習率・エポック数などの設定を1つずつ変え、結果がどう変わるかを測ります。

# %% tags=["remove-input"]
# CI の回帰チェック（このセルはページに表示しません）。tiny モデル・quick=True で測った結果に合わせた下限です。
# 学習の結果を変えてしまう変更をすると、ここで止まります。
assert rate_before["学習用"] <= 0.1 and rate_before["テスト用"] <= 0.1, "学習前のモデルは、まだこの答え方を知らないはず"
assert loss_summary.loc[loss_summary.index[0], "最後"] < 0.8 * loss_summary.loc[loss_summary.index[0], "最初"], "学習損失が十分に下がっていません"
assert rate_after["学習用"] >= 0.7, f"学習用の質問での形式一致率が低すぎます: {rate_after['学習用']:.0%}"
assert rate_after["テスト用"] >= 0.5, f"テスト用の質問での形式一致率が低すぎます: {rate_after['テスト用']:.0%}"
assert rate_after["学習用"] > rate_before["学習用"] and rate_after["テスト用"] > rate_before["テスト用"], "学習で形式一致率が上がっていません"
assert exact["テスト用"] <= 0.1 < exact["学習用"], "学習用の答えの中身は再現でき、テスト用の新しい中身は再現できないはず"
# 11節の本文に書いたこと（どちらの方法でも一般の文章を忘れる、全体のファインチューニングでも形式は身につく）
assert ppl_lora > ppl_base and ppl_full > ppl_base, "どちらの方法でも、一般の文章のパープレキシティは上がるはず"
assert cost["全体のファインチューニング"]["test_rate"] >= 0.5, "全体のファインチューニングでも、テスト用で形式が身につくはず"
assert cost["LoRA"]["state_mb"] < cost["全体のファインチューニング"]["state_mb"], "LoRA の勾配と Adam の状態は、全体より小さいはず"
# 練習問題の解説に書いたこと
assert ex_rows["学習率1/10"]["最後の学習損失"] > ex_rows["基準"]["最後の学習損失"], "学習率 1/10 では損失が高く残るはず"
assert ex_rows["学習率1/10"]["形式一致率（検証用）"] <= ex_rows["基準"]["形式一致率（検証用）"], "学習率 1/10 では形式が身につきにくいはず"
assert ex_rows["注意機構だけ"]["学習可能パラメータ"] < ex_rows["基準"]["学習可能パラメータ"], "注意機構だけなら学習可能パラメータは減るはず"
assert ex_rows["注意機構だけ"]["最後の学習損失"] > ex_rows["基準"]["最後の学習損失"], "注意機構だけでは、同じエポック数で損失が高めに残るはず"

# %% tags=["remove-cell"]
# 実行状況ページの「時間の内訳」のために、学習・生成・採点などにかかった秒数をファイルに書き出します。
from course_lib.timing import write_breakdown

write_breakdown("level1_basics");  # 「;」: 戻り値（ファイルの場所）を表示しない
