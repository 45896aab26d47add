"""The decoder chain's report: `report/report.md`, a self-contained `report/report.html`, `report/summary.json`.

What an RLHF user asks of a chain, each read from the files the stage records name (never
recomputed here, so the report and those files agree by construction):

- per model (zero-shot, SFT, each method): held-out reward and its parts, ROUGE-1/L, KL to SFT,
  answer length, share ending with EOS (the evaluate stage's files), and its training wall time;
- the reward model: held-out pair accuracy and its correlation with the callable reward;
- per training stage, its curves against the step: loss, reward, KL, the greedy validation
  answers' reward and ROUGE-L, pair accuracy, from the CSV logger's metrics.csv;
- the same held-out articles answered by every model, side by side;
- the shipped artifacts: form, size, the parity gate, and `lightkit generate`'s answers greedy and
  refined, with their reward;
- the pairs, the wall time of each stage, the machine and versions, and the config.

Rendering shares the models report's charts and helpers (lightkit.cli.ship.report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightkit.cli.ship.report import figure_png, page_context, plot_bars, read_curves, write_pages
from lightkit.cli.ship.settings import ShipSettings
from lightkit.io.measure import versions
from lightkit.rewards.scoring import describe_reward

# Curve panels: a title and the logged keys drawn in it (those a stage logs; the rest are left out).
PANELS = (
    ("loss", ("train_loss_step", "val_loss")),
    ("reward", ("train_reward_step", "val_reward", "val_greedy_reward")),
    ("KL to the reference", ("train_kl_step", "val_kl")),
    ("held-out answers, ROUGE-L", ("val_rougeL",)),
    ("accuracy", ("val_accuracy",)),
    ("margin", ("train_margin_step", "val_margin")),
)
# The same logged key means a different thing in each stage: what its panel says there.
TITLES = {
    ("fit", "accuracy"): "next-token accuracy, validation",
    ("reward", "accuracy"): "pair accuracy, held-out pairs",
    ("reward", "margin"): "score margin, chosen - rejected",
    ("dpo", "accuracy"): "pair accuracy (implicit reward), validation pairs",
    ("dpo", "margin"): "implicit reward margin, chosen - rejected",
}
TRAINED = ("fit", "reward", "dpo", "ppo", "grpo")
MODEL_STAGE = {"sft": "fit"}  # the evaluate stage's model names, by the stage that trained each


def read(path: str | None) -> Any:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def plot_panels(name: str, curves: dict[str, list[tuple[int, float]]], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(title, [k for k in keys if k in curves]) for title, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    columns = min(len(panels), 3)  # wider rows shrink to unreadable type on the page
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            xs, ys = zip(*curves[key])
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_title(f"{name}: {TITLES.get((name, title), title)}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure_png(fig, out / f"curves-{name}.png")


def model_rows(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated model, its scores as the evaluate stage wrote them."""
    rows = []
    for name, entry in records.get("evaluate", {}).get("outputs", {}).get("models", {}).items():
        evaluation = read(entry["evaluation_path"])
        stage = MODEL_STAGE.get(name, name)
        rows.append({"model": name, **evaluation["scores"], "answers_list": evaluation["answers"],
                     "references": evaluation["references"],
                     "train_s": records.get(stage, {}).get("wall_s") if stage in TRAINED else None})  # fmt: skip
    return rows


def artifact_rows(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per exported form: size and the gate; per model, the generate stage's answers and rewards."""
    generated = records.get("generate", {}).get("outputs", {}).get("models", {})
    rows = []
    for name, entry in records.get("export", {}).get("outputs", {}).get("models", {}).items():
        manifest = read(entry["manifest_path"])
        runs = {
            mode: (read(files["scores_path"]), [json.loads(x) for x in Path(files["answers_path"]).open()])
            for mode, files in generated.get(name, {}).items()
        }
        for form, info in manifest["forms"].items():
            parity = info.get("parity", {})
            scored = {mode: s for mode, (s, _) in runs.items() if s and s["form"] == form}
            rows.append({
                "model": {"fit": "sft"}.get(name, name), "form": form, "mib": info["bytes"] / 2**20,
                "passed": parity.get("passed"),
                "greedy_agreement": parity.get("greedy_agreement"),
                "greedy_decided_steps": parity.get("greedy_decided_steps"),
                "greedy_steps": (parity.get("greedy_decided_steps") or 0) + (parity.get("greedy_near_ties") or 0),
                "reward_greedy": (scored.get("greedy") or {}).get("mean_reward"),
                "reward_refined": (scored.get("refined") or {}).get("mean_reward"),
                "answers": {mode: [w["response"] for w in written] for mode, (s, written) in runs.items()
                            if s and s["form"] == form},
            })  # fmt: skip
    return rows


def write_chain_report(settings: ShipSettings, records: dict[str, dict[str, Any]]) -> tuple[Path, Path]:
    out = settings.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    models = model_rows(records)
    artifacts = artifact_rows(records)
    evaluate = records.get("evaluate", {}).get("outputs", {})
    reward_model = read(evaluate.get("reward_model_path"))
    curves = []
    for stage in TRAINED:
        logged = records.get(stage, {}).get("outputs", {})
        png = logged and plot_panels(stage, read_curves(logged.get("metrics_csv_path")), out)
        if png:
            curves.append({"model": stage, "image": png})
    charts = []
    if models:
        labels = [m["model"] for m in models]
        charts = [
            plot_bars("held-out reward", labels, {"reward": [m["reward"] for m in models]}, "mean reward", out),
            plot_bars("held-out ROUGE-L", labels, {"ROUGE-L": [m["rougeL"] for m in models]}, "ROUGE-L F", out),
            plot_bars("KL to SFT", labels, {"KL": [m["kl_to_sft"] for m in models]}, "nats per answer", out),
        ]
    samples = []
    n = min(settings.section("evaluate").get("samples", 5), len(models[0]["references"]) if models else 0)
    for i in range(n):
        samples.append({"reference": models[0]["references"][i], "answers": {m["model"]: m["answers_list"][i]
                                                                              for m in models}})  # fmt: skip
    scored = settings.reward_section("evaluate") if models else {}  # the reward the models were scored with
    context = {
        **page_context(settings, records, None, versions("transformers", "peft", "onnx", "onnxruntime")),
        "reward": describe_reward(scored["reward_fn"], scored.get("reward_weights")) if scored else None,
        "models": models,
        "reward_parts": sorted({k for m in models for k in m if k.startswith("reward_")}),
        "reward_model": reward_model,
        # SFT's answers' spread under both rewards, which the mix's weights multiply (None before it was recorded)
        "reward_spread": ((reward_model or {}).get("sd_per_model") or {}).get("sft"),
        "pairs": records.get("pairs", {}).get("outputs"),
        "curves": curves,
        "charts": charts,
        "samples": samples,
        "sample_models": [m["model"] for m in models],
        "artifacts": artifacts,
        "held_out": evaluate.get("rows"),
    }
    summary = {
        "held_out": context["held_out"],
        "reward": context["reward"],
        "models": [{k: v for k, v in m.items() if k not in ("answers_list", "references")} for m in models],
        "reward_model": reward_model,
        "pairs": context["pairs"],
        "artifacts": [{k: v for k, v in a.items() if k != "answers"} for a in artifacts],
        "samples": samples,
    }
    what = (
        f"lightkit ship {settings.config_file.as_posix()}: SFT, then preference methods from it, each scored on the "
        "held-out test split (reward, ROUGE, KL to SFT), the reward model, and the shipped artifacts"
    )
    return write_pages(out, "chain_report", context, "ship-decoder", what, summary)
