"""One stage of the seeds grid trained again with a setting changed, judged on its validation only.

    python benchmarks/stage_variants.py --stage dpo --name lr5e-4 \
        --set model.init_args.learning_rate=0.0005 --runs 13:15 7:14 7:15 \
        --out benchmarks/results/dpo-lr-variants-cpu.json

Each run of `benchmarks/align_seeds.py` (`runs/align-seeds/s<S>-r<R>/`) keeps the config each stage
ran (`<stage>.yaml`). The variant is that config with the `--set` settings changed (a dotted key,
a YAML value) and every path moved to `<stage>-<name>/`, trained from the same SFT model, data and
seed; a variant whose model is saved is read, not trained again, and one killed part-way goes on
from its `last.ckpt` (LastCheckpoint's) when its settings are the same.

Both the stage as it ran and the variant are compared on what their validations logged: the 16
validation articles answered greedily (`GenerationMetrics`: reward and ROUGE-L) at each
validation, and which one the run kept (`ModelCheckpoint` on `val_greedy_reward`, the first of
equal values, as Lightning keeps it). A setting is thereby chosen without looking at the held-out
test articles that the grid's table reports.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from align_report import logged
from align_seeds import run_name, setting, split_and_seed
from measure import write_result

from lightkit.cli.ship.stages import merge, relocate
from lightkit.io.atomic import atomic_write_text
from lightkit.io.measure import provenance

ROOT = Path(__file__).resolve().parents[1]
LIGHTKIT = str(Path(sys.executable).with_name("lightkit"))
LOGGED = {"reward": "val_greedy_reward", "rougeL": "val_rougeL", "loss": "val_loss", "accuracy": "val_accuracy"}


def variant_config(folder: Path, stage: str, name: str, settings: list[dict[str, Any]]) -> Path:
    """`<folder>/<stage>.yaml` with `settings` over it and its outputs in `<folder>/<stage>-<name>/`."""
    base = folder / f"{stage}.yaml"
    if not base.exists():
        raise SystemExit(f"{base}: no such stage config; run benchmarks/align_seeds.py for this split and seed first")
    config = yaml.safe_load(base.read_text())
    for change in settings:
        config = merge(config, change)
    config = relocate(config, folder / f"{stage}-{name}")
    path = folder / f"{stage}-{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def resume(variant: Path, before: str | None, now: str) -> list[str]:
    """`lightkit fit`'s arguments to go on with a variant killed part-way: its `last.ckpt`, which
    resumes exactly (the RL tasks save their sampling RNG and reference cache in it), if the
    config it ran is the one written now; a killed run of other settings is refused, not mixed in."""
    last = variant / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return []
    if before != now:
        raise SystemExit(f"{last}: a run of other settings was killed here; give the variant another --name "
                         f"or remove {variant}")  # fmt: skip
    return ["--ckpt_path", str(last)]


def validations(rows: list[dict[str, str]], run: Path) -> list[dict[str, float]]:
    """Each validation's logged metrics (`LOGGED`), from the rows of the run's CSV log."""
    if not rows:
        raise SystemExit(f"{run}: no lightning_logs/version_*/metrics.csv")
    return [{"step": int(row["step"])} | {k: float(row[c]) for k, c in LOGGED.items() if row.get(c)}
            for row in rows if row.get(LOGGED["reward"])]  # fmt: skip


def training_reward(rows: list[dict[str, str]], n: int = 10) -> dict[str, float] | None:
    """The mean reward of the answers an RL run sampled in its first and last `n` batches (its
    logged `train_reward_step`, one row per sampled batch; None for DPO, which samples none):
    whether it climbed its own reward, where the validation's 16 greedy answers may not show it."""
    values = [float(row["train_reward_step"]) for row in rows if row.get("train_reward_step")]
    if not values:
        return None
    return {"first": statistics.fmean(values[:n]), "last": statistics.fmean(values[-n:]), "batches": len(values),
            "of": min(n, len(values))}  # fmt: skip


def logged_side(run: Path) -> dict[str, Any]:
    """What one side of the comparison logged: its validations, the one it kept, and (RL stages)
    its training reward; the run's CSV log read once."""
    rows = logged(run)
    curve = validations(rows, run)
    reward = training_reward(rows)
    return {"kept": kept(curve), "validations": curve} | ({"training_reward": reward} if reward else {})


def kept(curve: list[dict[str, float]]) -> dict[str, float]:
    """The validation the run kept: the most reward, the first of equal values."""
    return max(curve, key=lambda v: (v["reward"], -v["step"]))


def mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="dpo", choices=["dpo", "ppo", "grpo"])
    ap.add_argument("--name", required=True, help="the variant's folder suffix: <stage>-<name>")
    ap.add_argument(
        "--set",
        dest="settings",
        nargs="+",
        required=True,
        metavar="KEY=VALUE",
        help="a setting of the stage's config, dotted, with a YAML value: model.init_args.learning_rate=0.0005",
    )
    ap.add_argument("--runs", nargs="+", type=split_and_seed, required=True, metavar="SPLIT:SEED")
    ap.add_argument("--work", default="runs/align-seeds")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        settings = [setting(text) for text in args.settings]
    except ValueError as e:
        ap.error(str(e))
    rows: dict[str, Any] = {}
    for split, seed in args.runs:
        folder = ROOT / args.work / f"s{split}-r{seed}"
        written = folder / f"{args.stage}-{args.name}.yaml"
        before = written.read_text() if written.is_file() else None
        config = variant_config(folder, args.stage, args.name, settings)
        variant = folder / f"{args.stage}-{args.name}"
        if not (variant / "hf_model" / "model.safetensors").exists():
            command = ["fit", "--config", str(config), *resume(variant, before, config.read_text())]
            print("$ lightkit", *command, flush=True)
            subprocess.run([LIGHTKIT, *command], cwd=ROOT, check=True)
        rows[run_name(split, seed)] = {"as_run": logged_side(folder / args.stage), "variant": logged_side(variant)}
    summary = {}
    for metric in ("reward", "rougeL"):
        sides = {side: [r[side]["kept"][metric] for r in rows.values()] for side in ("as_run", "variant")}
        change = [v - a for a, v in zip(sides["as_run"], sides["variant"])]
        summary[metric] = {side: mean_sd(v) for side, v in sides.items()} | {"change": mean_sd(change)}
    write_result(args.out, {
        "what": f"the {args.stage} stage of benchmarks/align_seeds.py's runs trained again with "
        f"{', '.join(args.settings)}, each judged on the greedy answers to its 16 validation articles "
        "(the checkpoint it kept)",
        "command": "python benchmarks/stage_variants.py " + " ".join(sys.argv[1:]),
        **provenance("transformers", "peft"),
        "stage": args.stage,
        "variant": args.name,
        "settings": args.settings,
        "runs": rows,
        "summary": summary,
    })  # fmt: skip


if __name__ == "__main__":
    main()
