"""The RLHF chain over article splits and training seeds, so no number belongs to one split or one seed.

    python benchmarks/align_seeds.py --splits 13 7 --seeds 13 14 15 --out benchmarks/results/align-seeds-cpu.json
    python benchmarks/align_seeds.py --runs 13:13 13:14 7:13   # some runs of the grid only
    python benchmarks/align_seeds.py --methods dpo --set dpo.model.init_args.rpo_alpha=1.0 \
        --work runs/align-seeds-rpo --out benchmarks/results/align-seeds-rpo-cpu.json   # one method, changed

For each split seed S (how HeadlineDataModule carves the articles into train, validation and test)
and training seed R, the chain of `make align` runs in `runs/align-seeds/s<S>-r<R>/`, from the
shipped configs with only these changed: `seed_everything: R`, `split_seed: S`, every path moved
into the run's folder (as `lightkit ship` moves them), and each stage reading the previous one's
output:

    sft -> pairs (the SFT model's ranked samples) -> reward model -> DPO, PPO, GRPO -> report

Each run's report (benchmarks/align_report.py) scores zero-shot, SFT and the three methods on that
split's 112 held-out articles. A finished stage (its `hf_model` or pairs file present) is not run
again, so the script resumes after a kill. The run of split 13 and seed 13 is `make align`'s
own (runs/sft_headlines, runs/align) when it exists and the chain is the shipped one.

`--methods` runs only some of DPO, PPO and GRPO (the reward model only for PPO), and `--set
STAGE.KEY=VALUE` changes a stage's config (`dpo.model.init_args.learning_rate=0.0005`): a changed
chain in its own `--work` folder, its gains over SFT measured as the shipped chain's are.

The summary gives, per model and metric, the mean and sample sd over all runs, each split's mean
over its seeds, and the share of the variance that lies between splits (the split's part of the
spread); and per method, its gain over SFT on reward in units of the runs' sd.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from measure import write_result

from lightkit.cli.ship.stages import merge, relocate
from lightkit.data.sampled_pairs import pair_files
from lightkit.io.atomic import atomic_write_text
from lightkit.io.measure import provenance

ROOT = Path(__file__).resolve().parents[1]
LIGHTKIT = str(Path(sys.executable).with_name("lightkit"))
METHODS = ("dpo", "ppo", "grpo")
METRICS = ("reward", "rougeL", "kl_to_sft", "answer_words")


def setting(text: str) -> dict[str, Any]:
    """`a.b.c=value` as the nested mapping {a: {b: {c: value}}}, the value read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set: expected KEY=VALUE such as model.init_args.learning_rate=0.0005, got {text!r}")
    nested: dict[str, Any] = {}
    inner = nested
    *parents, last = key.split(".")
    for part in parents:
        inner = inner.setdefault(part, {})
    inner[last] = number(yaml.safe_load(value))
    return nested


def number(value: Any) -> Any:
    """PyYAML reads YAML 1.1, where `5e-4` (no dot) is a string; as a setting it means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def run(*command: str, timed: tuple[Path, str] | None = None) -> None:
    """Run `command`; `timed` (folder, stage) adds its wall time to the folder's times.txt, as
    `make align` records its stages, for the report's stage times."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")})
    if timed:
        with (timed[0] / "times.txt").open("a") as times:
            times.write(f"{timed[1]} {time.perf_counter() - start:.0f} s\n")


def stage_config(
    name: str, folder: Path, split: int, seed: int, sft: Path, paths: dict[str, str], changes: Sequence[dict] = ()
) -> Path:
    """configs/<name>_headlines.yaml with `changes` over it and this run's seed, split and paths
    (module docstring)."""
    config = yaml.safe_load((ROOT / "configs" / f"{name}_headlines.yaml").read_text())
    for change in changes:
        config = merge(config, change)
    config = relocate(config, folder / name)
    config["seed_everything"] = seed
    data = config["data"]["init_args"]
    data["split_seed"] = split
    init = config["model"]["init_args"]
    if name != "reward":  # the reward model starts from MiniLM, not from the policy
        init["pretrained"] = data["tokenizer"] = str(sft)
    if name == "dpo":
        data["train_file"] = paths["pairs"]
    if name == "reward":  # every ranked pair (headline_pairs writes them beside the pairs file)
        files = pair_files(Path(paths["pairs"]))
        data["train_file"], data["val_file"] = str(files["every"]), str(files["every_val"])
    if name == "ppo":
        init["reward_model"] = paths["reward"]
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"] == "GenerationMetrics" and "prompts" in (callback.get("init_args") or {}):
            callback["init_args"]["prompts"] = paths["val_prompts"]  # this split's validation articles
    path = folder / f"{name}.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def sft_config(folder: Path, split: int, seed: int) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "sft_headlines.yaml").read_text())
    config = merge(
        relocate(config, folder / "sft"), {"seed_everything": seed, "data": {"init_args": {"split_seed": split}}}
    )
    path = folder / "sft.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def validation_prompts(path: Path, split: int, rows: int = 16) -> None:
    """The split's first validation articles as a prompts file, for DPO's GenerationMetrics."""
    from lightkit.data.headlines import HeadlineDataModule

    dm = HeadlineDataModule(tokenizer="HuggingFaceTB/SmolLM2-135M-Instruct", holdout=(0.02, 0.05), split_seed=split)
    val = dm.splits(dm._read, dm.split_key)["validation"][:rows]
    lines = [json.dumps({"prompt": r["user"], "reference": r["reference"]}, ensure_ascii=False) + "\n" for r in val]
    atomic_write_text(path, "".join(lines))


def trained_stages(methods: tuple[str, ...]) -> tuple[str, ...]:
    """The stages a chain trains after its SFT model and pairs: the reward model only for PPO."""
    return ("reward", *methods) if "ppo" in methods else methods


def chain(
    split: int, seed: int, work: Path, methods: tuple[str, ...] = METHODS, changes: dict[str, list] | None = None
) -> Path:
    """Run (or resume) the chain of one split and seed, with only `methods` and each stage's
    `changes` (stage -> settings); returns its report's path."""
    changes = changes or {}
    shipped = methods == METHODS and not changes
    if shipped and (split, seed) == (13, 13) and (ROOT / "runs/align/report.json").exists():
        return ROOT / "runs/align/report.json"  # `make align`'s own run
    folder = work / f"s{split}-r{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    sft = folder / "sft" / "hf_model"
    if not (sft / "model.safetensors").exists():
        run(LIGHTKIT, "fit", "--config", str(sft_config(folder, split, seed)), timed=(folder, "sft"))
    paths = {"pairs": str(folder / "pairs.jsonl"), "reward": str(folder / "reward" / "hf_model"),
             "val_prompts": str(folder / "val_prompts.jsonl")}  # fmt: skip
    if not Path(paths["pairs"]).exists():
        run(sys.executable, "-m", "lightkit.data.headline_pairs", "--out", paths["pairs"], "--policy", str(sft),
            "--seed", str(seed), "--split-seed", str(split), timed=(folder, "pairs"))  # fmt: skip
    validation_prompts(Path(paths["val_prompts"]), split)
    if not methods:  # the SFT model and its pairs only: what reward-model studies train on
        return Path(paths["pairs"])
    for name in trained_stages(methods):
        if not (folder / name / "hf_model" / "model.safetensors").exists():
            config = stage_config(name, folder, split, seed, sft, paths, changes.get(name, []))
            run(LIGHTKIT, "fit", "--config", str(config), timed=(folder, name))
    report = folder / "report.json"
    run(sys.executable, "benchmarks/align_report.py", "--runs", str(folder), "--sft", str(sft),
        "--split_seed", str(split), "--out", str(report))  # fmt: skip
    return report


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}  # fmt: skip


def over_splits(cells: dict[tuple[int, int], float]) -> dict[str, Any]:
    """Mean and sd of one number over the runs (keyed by split and seed), each split's mean, and
    the share of the variance that lies between splits (None with one split)."""
    values = list(cells.values())
    splits = sorted({s for s, _ in cells})
    per_split = {s: [v for (split, _), v in cells.items() if split == s] for s in splits}
    means = {s: statistics.fmean(v) for s, v in per_split.items()}
    total = statistics.pvariance(values) if len(values) > 1 else 0.0
    grand = statistics.fmean(values)
    between = sum(len(per_split[s]) * (m - grand) ** 2 for s, m in means.items()) / len(values)
    share = between / total if total > 0 and len(means) > 1 else None  # one split: no split's part
    return {**spread(values), "per_split": {str(s): m for s, m in means.items()}, "between_split_share": share}


def summarise(reports: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over runs, per-split means, the between-split share of the variance, and each
    method's reward gain over SFT: in units of the larger of the two sds, and paired (the gain
    within each run, over the SFT model that run's method started from, mean and sd over runs),
    which the split's shift of both models does not blur."""
    models = sorted({m for r in reports.values() for m in r["models"]}, key=["zero_shot", "sft", *METHODS].index)
    out: dict[str, Any] = {}
    for model in models:
        out[model] = {}
        for metric in METRICS:
            cells = {key: r["models"][model][metric] for key, r in reports.items() if model in r["models"]}
            if not cells:
                continue
            out[model][metric] = over_splits(cells)
    for method in METHODS:
        if method in out and "sft" in out:
            gain = out[method]["reward"]["mean"] - out["sft"]["reward"]["mean"]
            sd = max(out[method]["reward"]["sd"], out["sft"]["reward"]["sd"])
            out[method]["reward_gain_over_sft"] = gain
            out[method]["reward_gain_in_sd"] = gain / sd if sd > 0 else None
            out[method]["rougeL_change_vs_sft"] = out[method]["rougeL"]["mean"] - out["sft"]["rougeL"]["mean"]
            paired = [r["models"][method]["reward"] - r["models"]["sft"]["reward"] for r in reports.values()
                      if method in r["models"] and "sft" in r["models"]]  # fmt: skip
            out[method]["paired_reward_gain"] = spread(paired)
    return out


def reward_model_accuracy(reports: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any] | None:
    """The reward model's held-out pair accuracy over the runs that trained one (those with PPO),
    each on its own run's pairs and seed, as `over_splits` gives a model's numbers."""
    cells = {key: (r.get("reward_model") or {}).get("held_out_pair_accuracy") for key, r in reports.items()}
    found = {key: value for key, value in cells.items() if value is not None}
    return over_splits(found) if found else None


def not_run_here(report: dict[str, Any], trained: tuple[str, ...]) -> list[str]:
    """The stages of a run whose output was in its folder without this script (or `make align`)
    having timed them there: put there by hand (another grid's SFT model, pairs or reward model,
    linked in to train one stage again on the same inputs), or `make sft`'s model for `make
    align`'s own run. Every stage run here has its line in the run's times.txt."""
    return [stage for stage in ("sft", "pairs", *trained) if stage not in (report.get("stage_times_s") or {})]


def run_name(split: int, seed: int) -> str:
    """A run's key in the result file (`reused_runs` reads it back)."""
    return f"split {split}, seed {seed}"


def run_summary(report: dict[str, Any]) -> dict[str, Any]:
    """One run's headline numbers, per model, and its reward model's."""
    models = {m: {k: v for k, v in x.items() if k in METRICS} for m, x in report["models"].items()}
    return {**models, "reward_model": report.get("reward_model")}


def reused_runs(path: Path, grid: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[dict[str, Any], str]]:
    """The runs of `grid` already in the result file `path`, each as the report `run_summary` made
    it from, with the date of the result that first held it: a run's folder stays on the machine
    that ran it, its numbers in the committed result."""
    if not path.exists():
        return {}
    result = json.loads(path.read_text())
    found = {}
    for key in grid:
        run = result.get("runs", {}).get(run_name(*key))
        if run is not None:
            models = {m: x for m, x in run.items() if m != "reward_model"}
            date = result.get("reused", {}).get(run_name(*key), result.get("date"))
            found[key] = ({"models": models, "reward_model": run.get("reward_model")}, date)
    return found


def split_and_seed(text: str) -> tuple[int, int]:
    split, sep, seed = text.partition(":")
    if not sep or not split.isdigit() or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected SPLIT:SEED, two integers such as 7:13, got {text!r}")
    return int(split), int(seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", type=int, nargs="+", default=[13, 7])
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    ap.add_argument(
        "--runs",
        nargs="+",
        metavar="SPLIT:SEED",
        type=split_and_seed,
        help="these split and seed pairs instead of every split with every seed (a grid not yet complete)",
    )
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument(
        "--set",
        dest="settings",
        nargs="+",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="a stage's setting, dotted after the stage's name, with a YAML value: dpo.model.init_args.rpo_alpha=1.0",
    )
    ap.add_argument("--work", default="runs/align-seeds")
    ap.add_argument("--out", default="benchmarks/results/align-seeds-cpu.json")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="take the runs that --out already holds from it instead of running them again (their folders "
        "are on the machine that ran them); the result names them and the date of the result that held them",
    )
    ap.add_argument(
        "--pairs_only",
        action="store_true",
        help="each run's SFT model and pairs only, no result written: the runs reward_variants.py and "
        "reward_seeds.py train reward models on",
    )
    args = ap.parse_args()
    grid = args.runs or [(split, seed) for split in args.splits for seed in args.seeds]
    if args.pairs_only:
        for key in grid:
            print(f"s{key[0]}-r{key[1]}: {chain(*key, ROOT / args.work, ())}")
        return
    methods = tuple(m for m in METHODS if m in args.methods)
    trained = trained_stages(methods)  # the SFT model and the pairs stay the shipped chain's
    changes: dict[str, list[dict[str, Any]]] = {}
    for text in args.settings:
        stage, _, rest = text.partition(".")
        if stage not in trained or not rest:
            ap.error(f"--set: expected STAGE.KEY=VALUE with STAGE one of {', '.join(trained)}; got {text!r}")
        try:
            changes.setdefault(stage, []).append(setting(rest))
        except ValueError as e:
            ap.error(str(e))
    reused = reused_runs(ROOT / args.out, grid) if args.reuse else {}
    work = ROOT / args.work
    reports = {key: reused[key][0] if key in reused else json.loads(chain(*key, work, methods, changes).read_text())
               for key in grid}  # fmt: skip
    result = {
        "what": "the RLHF chain of `make align` (SFT, on-policy pairs, "
        + ("reward model, " if "ppo" in methods else "")
        + ", ".join(m.upper() for m in methods)
        + " from SFT"
        + (f"; changed: {', '.join(args.settings)}" if args.settings else "")
        + ") over article splits and training seeds, each scored greedily on its split's held-out articles",
        "command": "python benchmarks/align_seeds.py " + " ".join(sys.argv[1:]),
        **provenance("transformers", "peft"),
        "methods": list(methods),
        "settings": args.settings,
        "splits": sorted({split for split, _ in grid}),
        "seeds": sorted({seed for _, seed in grid}),
        "runs": {run_name(*key): run_summary(report) for key, report in reports.items()},
        "summary": summarise(reports),
        "reward_model_accuracy": reward_model_accuracy(reports),
    }
    if reused:
        result["reused"] = {run_name(*key): date for key, (_, date) in reused.items()}
    elsewhere = {run_name(*key): stages for key, report in reports.items() if key not in reused
                 and (stages := not_run_here(report, trained))}  # fmt: skip
    if elsewhere:
        result["stages_not_run_here"] = elsewhere
    write_result(args.out, result)


if __name__ == "__main__":
    main()
