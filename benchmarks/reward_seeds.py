"""The reward model over the chain's splits and seeds, so its held-out accuracy is not one run's.

    python benchmarks/reward_seeds.py --chains runs/align-seeds --variants shipped first-slow \
        --out benchmarks/results/reward-seeds-cpu.json

Each chain run of `align_seeds.py` (`<chains>/s<S>-r<R>/`) holds its own on-policy pairs: every
two of its SFT model's answers 0.2 apart (pairs-all.jsonl) and those of a fifth of its articles,
never trained on (pairs-all-val.jsonl). Each variant of `reward_variants.py` that learns from
those pairs is trained on a run's pairs with the run's seed, as `make align` would train it, and
scored on that run's held-out pairs as PPO scores them (`ModelReward`). So is the ensemble of the
variants (or of those `--ensemble` names): the sum of their scores, one model of each per run.

The summary gives each one's mean and sd over the runs, each split's mean and the share of the
variance between splits (`align_seeds.over_splits`). A trained model is read, not trained again.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path
from typing import Any

from align_seeds import over_splits
from measure import command_line, write_result
from reward_variants import ROOT, VARIANTS, fit_once, pair_scores, ranked, variant_config

from lightkit.data.sampled_pairs import pair_files
from lightkit.io.csvlog import logged_rows
from lightkit.io.measure import provenance

RUN = re.compile(r"s(\d+)-r(\d+)")


def chain_runs(chains: Path) -> dict[tuple[int, int], Path]:
    """The chain runs under `chains` that hold their pairs, by (split, seed)."""
    runs = {}
    for folder in sorted(chains.iterdir()):
        match = RUN.fullmatch(folder.name)
        if match and pair_files(folder / "pairs.jsonl")["every_val"].exists():
            runs[(int(match[1]), int(match[2]))] = folder
    if not runs:
        raise SystemExit(f"{chains}: no s<S>-r<R> folders with pairs-all.jsonl and pairs-all-val.jsonl")
    return runs


def train(key: str, run: Path, folder: Path, seed: int) -> dict[str, Any]:
    """Train one variant on one run's pairs (unless saved); its held-out pairs' score gaps."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = run / "pairs.jsonl"
    train_s = fit_once(variant_config(key, folder, pairs, pairs, pairs, seed))  # only the run's own pairs
    rows = logged_rows(folder / "lightning_logs")
    logged = [round(float(r["val_accuracy"]), 4) for r in rows if r.get("val_accuracy")]
    return {
        "gaps": pair_scores(folder / "hf_model", pair_files(pairs)["every_val"]),
        "logged_val_accuracy": logged[-1],
        "train_s": train_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", default="runs/align-seeds", help="align_seeds.py's --work folder")
    own = [k for k, (_, _, source) in VARIANTS.items() if source in ("pairs", "close")]
    ap.add_argument("--variants", nargs="+", default=["shipped", "first-slow"], choices=own)
    ap.add_argument("--ensemble", nargs="*", metavar="VARIANT", help="the variants summed as one (default: all)")
    ap.add_argument("--work", default="runs/reward-seeds")
    ap.add_argument("--out", default="benchmarks/results/reward-seeds-cpu.json")
    args = ap.parse_args()
    members = args.variants if args.ensemble is None else args.ensemble
    if set(members) - set(args.variants):
        ap.error(f"--ensemble: {sorted(set(members) - set(args.variants))} not among --variants")
    runs = chain_runs(Path(args.chains))
    trained = {
        key: {(s, r): train(key, run, ROOT / args.work / key / run.name, r) for (s, r), run in runs.items()}
        for key in args.variants
    }
    rows = []
    for key in args.variants:
        cells = {k: ranked([t["gaps"]]) for k, t in trained[key].items()}
        rows.append({"variant": key, "description": VARIANTS[key][0], "accuracy": over_splits(cells),
                     "runs": [{"split": s, "seed": r, "held_out_pair_accuracy": cells[(s, r)],
                               "logged_val_accuracy": t["logged_val_accuracy"], "train_s": t["train_s"]}
                              for (s, r), t in trained[key].items()]})  # fmt: skip
    if len(members) > 1:
        cells = {k: ranked([trained[key][k]["gaps"] for key in members]) for k in runs}
        rows.append({"variant": "ensemble", "description": "the sum of the scores of " + " and ".join(members),
                     "accuracy": over_splits(cells),
                     "runs": [{"split": s, "seed": r, "held_out_pair_accuracy": v}
                              for (s, r), v in cells.items()]})  # fmt: skip
    result = {
        "kind": "reward-seeds",
        "what": "the reward model trained on each chain run's own pairs with the run's seed, scored on that run's "
        "held-out pairs as PPO scores them",
        **provenance("transformers"),
        "command": command_line("reward_seeds.py", args),
        "chains": args.chains,
        "held_out_pairs": {
            f"s{s}-r{r}": sum(1 for _ in pair_files(p / "pairs.jsonl")["every_val"].open())
            for (s, r), p in runs.items()
        },  # fmt: skip
        "train_pairs": {
            f"s{s}-r{r}": sum(1 for _ in pair_files(p / "pairs.jsonl")["every"].open()) for (s, r), p in runs.items()
        },  # fmt: skip
        "variants": rows,
    }
    write_result(args.out, result)
    for row in rows:
        a = row["accuracy"]
        print(f"{a['mean']:.3f} ± {a['sd']:.3f}  {row['description']}")
    print("held-out pairs per run:", statistics.fmean(result["held_out_pairs"].values()))


if __name__ == "__main__":
    main()
