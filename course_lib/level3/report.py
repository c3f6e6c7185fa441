"""The level-3 section of the execution report: markdown, PNG figures and JSON.

Where it goes: the folder the runner names (``COURSE_REPORT_DIR``, see :mod:`course_lib.paths`;
the book's ``book/executed/``), else ``<run folder>/report``.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pandas as pd

from .. import paths
from ..data import json_default, write_json, write_text_atomic
from ..profiles import LABELS
from .config import CONTROL
from .tables import VERDICT_JA, comparison_table, stage_names
from .plots import (
    plot_accuracy, plot_loop_vs_control, plot_paraphrase_gap, plot_question_heatmap, plot_score_distribution,
)
from .runs import LoopResult

REPORT_STEM = "level3_report"
DISCLAIMER = "教育目的の実験結果です。医療上の助言ではありません。薬の使用は医師・薬剤師に相談してください。"
PLOTS = {
    "accuracy": "level3_accuracy.png",
    "heatmap": "level3_heatmap.png",
    "scores": "level3_scores.png",
    "gap": "level3_paraphrase_gap.png",
    "control": "level3_loop_vs_control.png",
}




def report_dir(result: LoopResult) -> Path:
    """``$COURSE_REPORT_DIR`` when the runner sets it, else ``<run folder>/report``."""
    return paths.report_dir() or result.run_dir / "report"


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines)


def save_plots(result: LoopResult, out_dir: Path, no_replay: LoopResult | None = None) -> dict[str, Path]:
    """Draw the report's figures into ``out_dir`` as PNG files."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    makers = {
        "accuracy": lambda ax: plot_accuracy(result, ax=ax, extra={"リプレイなし": no_replay} if no_replay else None),
        "heatmap": lambda ax: plot_question_heatmap(result, ax=ax),
        "scores": lambda ax: plot_score_distribution(result, ax=ax),
        "gap": lambda ax: plot_paraphrase_gap(result, ax=ax),
    }
    if CONTROL in result.stages:
        makers["control"] = lambda ax: plot_loop_vs_control(result, ax=ax)
    sizes = {"heatmap": (2 + 1.3 * len(result.stages), 7.5), "gap": (5.5, 5.5)}
    paths = {}
    for key, make in makers.items():
        fig, ax = plt.subplots(figsize=sizes.get(key, (8, 4)))
        make(ax)
        fig.tight_layout()
        path = out_dir / PLOTS[key]
        tmp = path.with_name(path.stem + ".tmp.png")  # atomic, as every file the course writes
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        paths[key] = path
    return paths


def _settings_lines(result: LoopResult, notebook_seconds: float | None) -> list[str]:
    """Which model, judge, sample sizes and settings produced the section (bullet lines)."""
    cfg, ident = result.config, result.identity
    judge, model = ident.get("judge", {}), ident.get("model", {})
    versions = (ident.get("machine") or {}).get("packages", {})
    judge_desc = judge.get("name", "?") + (f"（{judge['model']}）" if judge.get("model") else
                                           f"（{judge['version']}）" if judge.get("version") else "")
    n_questions = len(set(result.grades["item_id"][result.grades["split"] == "original"]))
    return [
        f"- モデル: `{LABELS.get(model.get('profile'), model.get('label'))}`（`{model.get('source')}`）"
        + ("。コース内蔵の小さなモデルの結果で、Qwen3-0.6B の結果ではありません。" if model.get("profile") == "tiny" else ""),
        f"- 採点者（judge）: `{judge_desc}`",
        f"- サンプル数: 元の質問 {n_questions} 問 × N = {cfg.n_samples}、"
        f"言い換え × {cfg.n_paraphrase}（温度 {cfg.temperature}、top_p {cfg.top_p}）",
        f"- LoRA: r = {cfg.lora_r}, α = {cfg.lora_alpha}, dropout = {cfg.lora_dropout}, 対象 = {', '.join(cfg.target_modules)}",
        f"- 学習: learning_rate = {cfg.learning_rate:g}, batch = {cfg.per_device_train_batch_size}, "
        f"初回 {cfg.epochs_initial:g} エポック、反復 {cfg.epochs_iter:g} エポック、"
        f"反復回数 K = {cfg.iterations}、リプレイ比率 = {cfg.replay_ratio}、シード = {cfg.seed}",
        f"- 実行: run `{result.run_dir.name}`、loop v{ident.get('loop_version')}、"
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        + (f"、ノートブック {notebook_seconds:.0f} 秒" if notebook_seconds else ""),
    ]


def stage_seconds_table(result: LoopResult, names: Mapping[str, str]) -> pd.DataFrame:
    """Per stage: seconds of training, generation, judging and perplexity, Japanese headers."""
    t = result.stage_seconds()
    t["stage"] = t["stage"].map(lambda s: names.get(s, s))
    t = t.rename(columns={"stage": "段階", "train": "学習", "generate": "生成", "judge": "採点", "perplexity": "パープレキシティ"})
    return t.round(1).fillna("—")


def write_level3_report(result: LoopResult, out_dir: Path | str | None = None, no_replay: LoopResult | None = None,
                        agreement: Mapping | None = None, notebook_seconds: float | None = None) -> dict[str, Path]:
    """Write ``level3_report.md`` (a section for the execution report), ``level3_report.json``
    and the PNG plots into ``out_dir`` (default :func:`report_dir`). Returns the paths."""
    out = Path(out_dir) if out_dir is not None else report_dir(result)
    out.mkdir(parents=True, exist_ok=True)
    plots = save_plots(result, out, no_replay)
    cfg, ident = result.config, result.identity
    names = stage_names(cfg)
    comparisons = comparison_table(result.comparisons("original"), cfg,
                                   {s: i.get("replayed", []) for s, i in result.stage_info.items()})
    payload = {
        "run": result.run_dir.name, "model": ident.get("model", {}), "judge": ident.get("judge", {}), "config": cfg.to_dict(),
        "data": ident.get("data"), "loop_version": ident.get("loop_version"), "machine": ident.get("machine"),
        "stages": result.stages, "comparisons": comparisons.to_dict(orient="records"),
        "general_perplexity": result.general_perplexity().to_dict(),
        "table_original": result.table("original", formatted=False).to_dict(orient="records"),
        "table_paraphrase": result.table("paraphrase", formatted=False).to_dict(orient="records"),
        "training": result.training.to_dict(orient="records"),
        "stage_seconds": result.stage_seconds().to_dict(orient="records"),
        "agreement": dict(agreement) if agreement else None,
        "notebook_seconds": notebook_seconds, "plots": {k: p.name for k, p in plots.items()},
    }
    js = write_json(out / f"{REPORT_STEM}.json", json.loads(json.dumps(payload, default=json_default)))
    lines = ["## レベル3：自己改善ループの結果", "", f"> {DISCLAIMER}", "",
             *_settings_lines(result, notebook_seconds), "",
             "### 段階ごとの指標（元の質問）", "", _md_table(result.table("original", stage_names=names)), "",
             "### 段階ごとの指標（言い換え、学習に未使用）", "", _md_table(result.table("paraphrase", stage_names=names)), "",
             "### 段階の比較（元の質問、質問ごとに対応をとった差、Holm 補正）", "", _md_table(comparisons), "",
             "### 段階ごとの時間（秒）", "",
             "その段階を計算した実行で測った値です（別の実行からコピーした段階は、コピー元の値）。", "",
             _md_table(stage_seconds_table(result, names)), ""]
    captions = {"accuracy": "段階ごとの正答率と95%信頼区間", "heatmap": "質問ごとの平均スコア",
                "scores": "スコアの分布", "gap": "元の質問と言い換えのギャップ", "control": "ループ vs 同計算量の対照"}
    for key, path in plots.items():
        lines += [f"![{captions[key]}]({path.name})", ""]
    md = out / f"{REPORT_STEM}.md"
    write_text_atomic(md, "\n".join(lines))
    return {"markdown": md, "json": js, **plots}


ARMS_REPORT_STEM = "level3_beyond_report"
ARMS_PLOTS = {"accuracy": "level3_arms_accuracy.png", "differences": "level3_arms_differences.png"}


def _save_figure(draw, path: Path, size) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_arms_report(arms: Mapping, comparison, out_dir: Path | str | None = None,
                      notebook_seconds: float | None = None) -> dict[str, Path]:
    """The update-rule arms' section of the execution report (``level3_beyond_report.md``, its JSON
    and two figures): each arm's last iteration per seed, the paired differences per seed and the
    verdict across seeds. ``arms``: :func:`.arms.run_arms`; ``comparison``: :func:`.arms.compare_arms`."""
    from .arms import RULE_JA, arm_summary, plot_arm_accuracy, plot_arm_differences

    first = next(iter(arms.values()))
    out = Path(out_dir) if out_dir is not None else report_dir(first)
    out.mkdir(parents=True, exist_ok=True)
    summary = arm_summary(arms)
    names = stage_names(first.config)
    plots = {"accuracy": _save_figure(lambda ax: plot_arm_accuracy(summary, ax=ax), out / ARMS_PLOTS["accuracy"], (8, 4)),
             "differences": _save_figure(lambda ax: plot_arm_differences(comparison, ax=ax), out / ARMS_PLOTS["differences"],
                                         (8, 0.6 * max(3, len(comparison.per_seed)) + 1))}
    table = pd.DataFrame({
        "更新ルール": summary["arm"].map(RULE_JA), "学習シード": summary["seed"],
        "段階": summary["stage"].map(lambda s: names.get(s, s)),
        "正答率（95%区間）": [f"{a:.1%} [{lo:.1%}, {hi:.1%}]" for a, lo, hi in
                        zip(summary["accuracy"], summary["accuracy_lo"], summary["accuracy_hi"])],
        "有害提案率（95%区間）": [f"{a:.1%} [{lo:.1%}, {hi:.1%}]" for a, lo, hi in
                           zip(summary["harmful_rate"], summary["harmful_lo"], summary["harmful_hi"])],
        "言い換えの正答率": [f"{x:.1%}" for x in summary["paraphrase_accuracy"]],
        "一般文のパープレキシティ": [f"{x:,.1f}" for x in summary["perplexity"]]})
    across = comparison.across
    across_table = pd.DataFrame({
        "更新ルール": across["rule"].map(RULE_JA), "比べる相手": across["against"].map(RULE_JA), "シード数": across["seeds"],
        "差の平均": [f"{x:+.1%}" for x in across["mean_diff"]],
        "シードをまたいだ判定": [VERDICT_JA[v] if v else "（3シード未満のため判定しない）" for v in across["verdict"]]})
    payload = {"summary": summary.to_dict(orient="records"), "per_seed": comparison.per_seed.to_dict(orient="records"),
               "across": across.to_dict(orient="records"), "config": first.config.to_dict(),
               "model": first.identity.get("model", {}), "judge": first.identity.get("judge", {}),
               "notebook_seconds": notebook_seconds, "plots": {k: p.name for k, p in plots.items()}}
    js = write_json(out / f"{ARMS_REPORT_STEM}.json", json.loads(json.dumps(payload, default=json_default)))
    model = first.identity.get("model", {})
    lines = ["## レベル3の先へ：更新ルールの比較", "", f"> {DISCLAIMER}", "",
             f"- モデル: `{LABELS.get(model.get('profile'), model.get('label'))}`"
             + ("。コース内蔵の小さなモデルの結果で、Qwen3-0.6B の結果ではありません。" if model.get("profile") == "tiny" else ""),
             f"- 採点者: `{first.identity.get('judge', {}).get('name', '?')}`、N = {first.config.n_samples}、"
             f"反復 {first.config.iterations} 回、学習シード {sorted({s for _, s in arms})}", "",
             "### 各ルールの最後の反復（元の質問、質問単位の95%区間）", "", _md_table(table), "",
             "### 対応のある比較（ルール − 比べる相手、Holm 補正はページで1回）", "", _md_table(comparison.table()), "",
             "### 学習シードをまたいだ判定", "", _md_table(across_table), "",
             "![各ルールの正答率](" + plots["accuracy"].name + ")", "",
             "![更新ルールどうしの差](" + plots["differences"].name + ")", ""]
    md = out / f"{ARMS_REPORT_STEM}.md"
    write_text_atomic(md, "\n".join(lines))
    return {"markdown": md, "json": js, **plots}
