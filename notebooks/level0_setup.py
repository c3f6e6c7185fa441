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
# # レベル0：環境の確認
#
# ```{admonition} このページで学ぶこと
# :class: tip
# - **目標**: コースの道具一式（モデル・トークナイザー・生成・グラフ）が手元で動くことを確かめる
# - **前提知識**: Python の基本と、Jupyter のセルを上から順に実行する操作
# - **所要時間**: 計算にかかる時間は、この本を作ったときに測った値が[実行状況](report.md)のページにあります（tiny モデル、CPU）。初回はコース内蔵モデルの構築に数分かかります
# ```
#
# このコースでは、小さな言語モデル（language model）を **LoRA（Low-Rank Adaptation）** で
# ファインチューニング（fine-tuning）します。レッスンを始める前に、次の4点を確認しましょう。
#
# 1. モデルを読み込めること（どのモデルを、どのデバイスで使うのかを表示します）
# 2. 日本語の文がトークン（token）に分割される様子
# 3. モデルが文章を生成（generate）できること
# 4. 日本語のラベルがついたグラフを描けること

# %% tags=["parameters"]
# papermill がこのセルの値を差し替えます（CI では model_profile="tiny"）。
model_profile = "auto"  # "auto" | "tiny" | "qwen3-0.6b" のどれか
quick = False  # このレッスンでは使いません（ほかのレッスンとそろえるための引数です）
seed = 0

# %% [markdown]
# ## 1. モデルを読み込む
#
# `model_profile="auto"` は、`Qwen/Qwen3-0.6B` を読み込めるとき（ローカルにコピーがある、または
# Hugging Face Hub に接続できるとき）はそれを使い、読み込めないときはコースが自前で作る
# **小さな Qwen3 アーキテクチャのモデル（tiny）** を使います。どちらを使ったかと、その理由が表示されます。

# %%
from course_lib.lesson import start_lesson, show_model_note
from course_lib.profiles import load_model

start_lesson(seed)
loaded = load_model(model_profile)
model, tokenizer = loaded.model, loaded.tokenizer
show_model_note(loaded)

from myst_nb import glue

glue("l0_device", f"{loaded.device.device}（{loaded.device.dtype_name}）", display=False)
glue("l0_model", loaded.label, display=False)

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. `model_profile="auto"` のとき、`Qwen/Qwen3-0.6B` を読み込めない環境では何が起きますか。
#    (a) エラーで止まる　(b) コース内蔵の tiny モデルが使われる　(c) 別の大きなモデルをダウンロードする
# 2. このページの実行では、どのモデルを、どのデバイスとデータ型（dtype）で使いましたか。上のバナーを見て答えてください。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. (b) です。どちらを使ったかと、その理由がバナーに表示されます。
# 2. モデルは {glue:text}`l0_model`、デバイスとデータ型は {glue:text}`l0_device` でした。
# ```

# %% [markdown]
# ## 2. 日本語をトークンに分ける
#
# モデルは文字列をそのまま読むのではなく、**トークナイザー（tokenizer）** が文を
# トークンという単位に分け、それぞれに番号（ID）を割り当てたものを読みます。

# %%
import pandas as pd

text = "LoRAは小さな追加行列だけを学習する手法です。"
ids = tokenizer(text, add_special_tokens=False)["input_ids"]
pd.DataFrame({"トークンID": ids, "トークン": [tokenizer.decode([i]) for i in ids]}).T

# %% [markdown]
# 文字数とトークン数は一致しません。よく出てくる言葉は1トークンにまとまり、
# まれな文字は複数のトークンに分かれます（文字化けのように見える断片は、1文字のバイト列の一部です）。

# %%
print(f"文字数: {len(text)}  トークン数: {len(ids)}")
assert tokenizer.decode(ids) == text, "トークン列を戻すと元の文になるはず"
glue("l0_chars", f"{len(text)}", display=False)
glue("l0_tokens", f"{len(ids)}", display=False)
glue("l0_more", "文字数" if len(text) > len(ids) else ("トークン数" if len(ids) > len(text) else "どちらも同じ"), display=False)

# %% [markdown]
# ```{admonition} 確認クイズ
# :class: note
# 1. 上の例文は何文字で、何トークンでしたか。多いのはどちらですか。
# 2. トークンを1つずつ表示したときに出る `�` は何ですか。
#    (a) トークナイザーのエラー　(b) 1文字のバイト列が複数のトークンに分かれたときの断片　(c) 語彙にない文字
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. {glue:text}`l0_chars` 文字、{glue:text}`l0_tokens` トークンで、多いのは {glue:text}`l0_more` です。
# 2. (b) です。断片を並べて戻すと、元の文字になります。
# ```

# %% [markdown]
# ## 3. 文章を生成する
#
# チャット形式のモデルは、会話を **チャットテンプレート（chat template）** という決まった書式に
# 直してから読みます。学習前のモデルに質問を1つ投げてみましょう。

# %%
from course_lib.generate import answer
from course_lib.sft import chat_prompt

question = "日本の四季について一文で教えてください。"
print(chat_prompt(tokenizer, question))
reply = answer(model, tokenizer, question, max_new_tokens=40)
print("モデルの返答:", reply)

# %% [markdown]
# tiny モデルの場合、返答はまだ意味の通らない文章のはずです。
# このモデルは一般的な日本語の文章で少しだけ事前学習（pre-training）されていますが、
# 質問に答える練習はしていないからです。それを教えるのがファインチューニングです。
#
# ```{admonition} 確認クイズ
# :class: note
# 1. チャットテンプレートは何をするものですか。
#    (a) 質問を英語に翻訳する　(b) 会話を「だれの発言か」の目印がついた決まった書式に直す　(c) 答えの長さを決める
# 2. tiny モデルの返答が意味の通らない文章になるのは、なぜですか。
# ```
#
# ```{admonition} 答え
# :class: dropdown
# 1. (b) です。上に表示した文字列の `<|im_start|>user` や `<|im_start|>assistant` が、その目印です。
# 2. 一般的な文章で少し事前学習しただけで、質問に答える練習（ファインチューニング）をしていないからです。モデルがとても小さいことも理由です。
# ```

# %% [markdown]
# ## 4. 日本語ラベルのグラフ
#
# 以降のレッスンでは、損失曲線などを seaborn で描きます。日本語が文字化けせずに表示されるか確認します。

# %%
import matplotlib.pyplot as plt
import seaborn as sns

lengths = pd.DataFrame({
    "文": ["短い文", "やや長い文です", "これはもう少し長い日本語の文になります"],
})
lengths["トークン数"] = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in lengths["文"]]
fig, ax = plt.subplots(figsize=(6, 3))
sns.barplot(data=lengths, x="トークン数", y="文", ax=ax)
ax.set_title("文ごとのトークン数")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. 練習問題
#
# ### 基本
#
# 1. 自分で選んだ日本語の文を1つトークンに分け、文字数とトークン数を比べてください。
#    次に、同じ意味の文を **ひらがなだけ** で書き直して同じことをしてください。トークン数はどう変わりますか。
#
# #### 解答例
#
# 下のセルが解答例です（クリックで開きます）。このページを作るときに実際に実行した結果が表示されます。

# %% tags=["hide-cell"]
# 基本1: 漢字かな交じりの文と、同じ意味のひらがなだけの文を比べる
ex_sentences = {
    "漢字かな交じり": "今日は天気が良いので散歩に行きます。",
    "ひらがなだけ": "きょうはてんきがよいのでさんぽにいきます。",
}
ex_rows = []
for kind, sentence in ex_sentences.items():
    ex_ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ex_ids) == sentence, "トークン列を戻すと元の文になるはず"
    ex_rows.append({"書き方": kind, "文": sentence, "文字数": len(sentence), "トークン数": len(ex_ids),
                    "1トークンあたりの文字数": round(len(sentence) / len(ex_ids), 2)})
ex_table = pd.DataFrame(ex_rows).set_index("書き方")
ex_table

# %% [markdown]
# ```{admonition} 解説
# :class: dropdown
# トークナイザーは、学習に使った文章によく出てくる文字の並びを1トークンにまとめます。
# 「天気」「散歩」のような漢字の言葉はまとまりやすく、ひらがなだけで書くと文字数が増えるうえに、
# 言葉の切れ目もわかりにくくなるので、トークン数は多くなりがちです（上の表で確かめてください）。
# モデルが一度に読める長さや計算の量はトークン数で決まるので、同じ内容でも書き方でコストが変わります。
# ```

# %% [markdown]
# ## まとめ
#
# - モデルの読み込み、トークン化、生成、グラフ描画が動くことを確認しました。
# - 表示されたバナーに、使用中のモデル・デバイス・データ型（dtype）が出ています。
#   bfloat16 に対応した NVIDIA の GPU では `cuda` と `bfloat16` が、GPU がなければ `cpu` と `float32` が選ばれます（Apple の GPU では `mps` と `float32`）。
#
# 次のレベル1では、実際に LoRA でファインチューニングします。

# %% tags=["remove-input"]
# CI の確認（このセルはページに表示しません）
assert isinstance(reply, str), "生成の結果は文字列のはず"
assert (lengths["トークン数"] > 0).all() and (ex_table["トークン数"] > 0).all(), "どの文も1つ以上のトークンになるはず"
assert ex_table.loc["ひらがなだけ", "トークン数"] > ex_table.loc["漢字かな交じり", "トークン数"], "解説のとおり、ひらがなだけのほうがトークンが多いはず"

# %% tags=["remove-cell"]
# 実行状況ページの「時間の内訳」のために、学習・生成・採点などにかかった秒数をファイルに書き出します。
from course_lib.timing import write_breakdown

write_breakdown("level0_setup");  # 「;」: 戻り値（ファイルの場所）を表示しない
