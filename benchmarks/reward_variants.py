"""Which reward model learns the headline preferences: variants of the shipped one, on the same pairs.

    python benchmarks/reward_variants.py --pairs runs/align/pairs.jsonl \
        --wide_pairs runs/align-m05/pairs.jsonl --sft runs/sft_headlines/hf_model

Every variant is a reward-model config with a few settings changed, trained on the SFT model's
ranked answers of `make align` (`--pairs`: pairs-all.jsonl beside it) and scored on the same
held-out pairs (pairs-all-val.jsonl: the pairs of a fifth of the articles, never trained on, 0.2
apart), so the held-out pair accuracies compare one change at a time. The variants of the reward
model that reads the prompt (`PROMPT_READER`, shipped until the reference reader) train on the
pairs 0.2 apart, as the pairs stage wrote them then; `reference` and `reference-far` are
configs/reward_headlines.yaml as it is, reading each answer beside the real headline, on every
pair 0.05 apart or on those 0.2 apart:

- how much it reads: the last 128 tokens of prompt and answer (shipped), or the answer first and
  then the prompt's start (`response_first`), which keeps the article's lead in view;
- how many pairs: `--wide_pairs` is the pairs stage rerun with `--min-margin 0.05` (the same
  answers and held-out articles, 3.7x the training pairs); `--many_pairs` is it rerun on
  `--many_rows` articles (1,024, four times the articles, by default; 2,069 is every training
  article), whose first 256 are sampled exactly as the shipped pairs' (same seed, same batches),
  so the shipped held-out articles are dropped from its training pairs;
- what it learns: the whole reward's order, or the order of the terms it can read (the length
  window and the copied lead), PPO's callables adding the ROUGE-L term it cannot.

Every variant is also scored on the held-out pairs of `--many_pairs` (those of the last fifth of
its articles, none trained on by any variant): about four times the shipped held-out pairs,
so a pair moves the accuracy a quarter as much; and there by quarter of the pairs' reward margin,
since a model that had learned the reward would rank the widely separated pairs best.

`--ensemble` also scores every trained model of the variants it names as one reward, the sum of
their scores (an ensemble of seeds, or of models that read different parts of the prompt).

Each runs in `runs/reward-variants/<variant>/`; a variant whose model is saved is read, not
trained again. The result also says which part of the reward decides each held-out pair (the
largest of its terms' differences), since only the length window and the copied lead can be read
from the article and the answer; ROUGE-L needs the real headline, which only the reference reader
sees. A `--many_pairs` file written before pair rows held `reference` gets it from its articles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from align_report import pair_gaps, reference_free_agreement, reward_fn
from measure import command_line, write_result

from lightkit.cli.ship.stages import merge, relocate
from lightkit.data.sampled_pairs import pair_files
from lightkit.io.atomic import atomic_write_text
from lightkit.io.csvlog import logged_rows
from lightkit.io.measure import provenance

ROOT = Path(__file__).resolve().parents[1]
LIGHTKIT = str(Path(sys.executable).with_name("lightkit"))
FIRST = {"data": {"init_args": {"response_first": True}}}
FIRST_256 = {"data": {"init_args": {"response_first": True, "max_length": 256}}}
# The SFT model itself as the trunk (LoRA on every linear layer, a new scalar head), reading the
# whole rendered prompt and answer: what the policy knows about headlines, where MiniLM starts cold.
SFT_TRUNK = {
    "model": {"init_args": {"pretrained": "runs/sft_headlines/hf_model",
                            "peft": {"r": 16, "alpha": 32, "target_modules": "all-linear"}}},
    "data": {"init_args": {"tokenizer": "runs/sft_headlines/hf_model", "max_length": 384}},
}  # fmt: skip
# Fine-tuned gently: BERT's usual learning rate (its paper's 2e-5 to 5e-5), for longer.
FIRST_SLOW = merge(FIRST, {"model": {"init_args": {"learning_rate": 3e-5}}, "trainer": {"max_epochs": 5}})
# configs/reward_headlines.yaml before it read the reference headline: the rendered prompt and the
# answer, the last 128 tokens, 3 epochs. The variants below it are changes to this one, so they
# measure what their results say they measured.
PROMPT_READER = {
    "data": {"init_args": {"reference_column": None, "response_first": False, "max_length": 128,
                           "prompt_template": "{rendered_prompt}"}},
    "trainer": {"max_epochs": 3},
}  # fmt: skip
# key -> (what changes, settings over configs/reward_headlines.yaml, its training pairs: the shipped
# ones, the wide ones, or the shipped ones ordered by the terms that need no reference headline)
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "shipped": ("the prompt reader: MiniLM, last 128 tokens (shipped before the reference reader)", {}, "pairs"),
    "first-128": ("answer first, 128 tokens", FIRST, "pairs"),
    "first-256": ("answer first, 256 tokens", FIRST_256, "pairs"),
    # The pairs' reward gap in the loss (TRL's and Llama 2's margin), scaled to a few logits:
    # the margins run 0.2 to 0.8 in reward units.
    "margin": (
        "shipped, with each pair's reward gap as its margin (margin_scale 4)",
        {"model": {"init_args": {"margin_scale": 4.0}}},
        "pairs",
    ),  # fmt: skip
    "first-slow": ("answer first, 128 tokens, learning rate 3e-5, 5 epochs", FIRST_SLOW, "pairs"),
    "wide": ("3.7x the pairs, last 128 tokens", {}, "wide"),
    "articles": ("the many articles, last 128 tokens", {}, "many"),
    "articles-readable": (
        "the many articles, ordered by the terms it can read, answer first, 256 tokens",
        FIRST_256,
        "many-readable",
    ),
    "readable": ("pairs ordered by the terms it can read, answer first, 256 tokens", FIRST_256, "readable"),
    "articles-first-slow": (
        "the many articles, answer first, 128 tokens, learning rate 3e-5, 5 epochs",
        FIRST_SLOW,
        "many",
    ),
    "sft-trunk": ("the SFT model with LoRA, last 384 tokens", SFT_TRUNK, "pairs"),
    # One epoch: trained for three, its held-out loss was lowest after the first (0.633; 69.3% of
    # the 75 pairs) and rose after the second (0.729; 60.0%), so the 263 pairs judge the first.
    "articles-sft-trunk": (
        "the many articles, the SFT model with LoRA, last 384 tokens, 1 epoch",
        merge(SFT_TRUNK, {"trainer": {"max_epochs": 1}}),
        "many",
    ),
}
# Variants of configs/reward_headlines.yaml as it is, without PROMPT_READER under them: the answer
# beside the article's real headline (`reference_column`), on every pair 0.05 apart (`close`) or
# only those 0.2 apart.
REFERENCE_VARIANTS = {
    "reference": ("the answer beside the real headline, 64 tokens, 1 epoch, pairs 0.05 apart (shipped)", {}, "close"),
    "reference-far": ("the answer beside the real headline, 64 tokens, 1 epoch, pairs 0.2 apart", {}, "pairs"),
    "reference-3ep": (
        "the answer beside the real headline, 64 tokens, 3 epochs, pairs 0.05 apart",
        {"trainer": {"max_epochs": 3}},
        "close",
    ),
}
PROMPT_VARIANTS = set(VARIANTS)
VARIANTS |= REFERENCE_VARIANTS


def variant_config(key: str, folder: Path, pairs: Path, wide: Path, many: Path, seed: int) -> Path:
    _, settings, source = VARIANTS[key]
    config = relocate(yaml.safe_load((ROOT / "configs" / "reward_headlines.yaml").read_text()), folder)
    config = merge(config, PROMPT_READER) if key in PROMPT_VARIANTS else config
    config = merge(config, {**settings, "seed_everything": seed})
    data = config["data"]["init_args"]
    readable = folder.parent / "pairs-readable.jsonl"
    many_train = folder.parent / "pairs-many.jsonl"
    far = folder.parent / "pairs-far.jsonl"  # the pairs 0.2 apart, as the pairs stage wrote them before
    train = {"pairs": far, "close": pair_files(pairs)["every"], "wide": pair_files(wide)["every"],
             "readable": readable, "many": many_train,
             "many-readable": folder.parent / "pairs-many-readable.jsonl"}[source]  # fmt: skip
    if not far.exists():
        far_pairs(pair_files(pairs)["every"], far)
    if source.startswith("many") and not many_train.exists():
        without_articles(pair_files(many)["every"], pair_files(pairs)["every_val"], many_train)
    if source.endswith("readable") and not train.exists():
        readable_pairs(many_train if source == "many-readable" else far, train)
    data["train_file"] = str(train)
    data["val_file"] = str(pair_files(pairs)["every_val"])
    path = folder / "reward.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def far_pairs(source: Path, out: Path, margin: float = 0.2) -> None:
    """The pairs of `source` at least `margin` apart: the reward model's training pairs as the pairs
    stage wrote them before `--every-margin` (0.05) gave it the closer ones too."""
    lines = [line for line in source.open() if json.loads(line)["margin"] >= margin]
    atomic_write_text(out, "".join(lines))


def with_references(path: Path, rows: int, seed: int, split_seed: int) -> None:
    """Give the pairs of a file written before pair rows held `reference` each article's real
    headline, found by its index (`article`) among the `rows` training articles the pairs stage
    drew with `seed`; a row's user turn must be that article's."""
    pairs = [json.loads(line) for line in path.open()]
    if all(p.get("reference") for p in pairs):
        return
    from lightkit.data.headline_pairs import SMOLLM2, training_articles

    _, articles = training_articles(SMOLLM2, rows, seed, holdout=[0.02, 0.05], split_seed=split_seed)
    for p in pairs:
        article = articles[p["article"]]
        if article["user"] != p["prompt"]:
            raise ValueError(f"{path}: pair of article {p['article']} is not that article's; cannot add its headline")
        p["reference"] = article["reference"]
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))


def readable_pairs(source: Path, out: Path) -> None:
    """The pairs of `source` ordered by the reward's terms that need no reference headline (the
    length window and the copied lead), ties dropped: what the reward model can read, without the
    ROUGE-L term that it cannot (PPO's callables still add it)."""
    rows = [json.loads(line) for line in source.open()]
    gaps = pair_gaps(rows, reward_fn(without=("rouge_l",)))
    kept = []
    for row, gap in zip(rows, gaps.tolist()):
        if gap < 0:
            row = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
        if gap != 0:
            kept.append(json.dumps({**row, "margin": abs(gap)}, ensure_ascii=False) + "\n")
    atomic_write_text(out, "".join(kept))


def without_articles(source: Path, held_out: Path, out: Path) -> None:
    """The pairs of `source` but those of the articles `held_out` holds pairs of: `--many_pairs`
    sampled the shipped pairs' articles first, its held-out ones among them."""
    prompts = articles(held_out)
    lines = [line for line in source.open() if json.loads(line)["rendered_prompt"] not in prompts]
    atomic_write_text(out, "".join(lines))


def articles(*paths: Path) -> set[str]:
    """The articles the pairs of `paths` are of (each pair's rendered prompt)."""
    return {json.loads(line)["rendered_prompt"] for path in paths for line in path.open()}


def pair_accuracy(model: Path, pairs: Path) -> float:
    """The share of `pairs` whose chosen answer the reward model scores above the rejected one, as
    PPO would score them (`ModelReward`, reading what it was trained on)."""
    return ranked([pair_scores(model, pairs)])


def ranked(gaps: list[list[float]]) -> float:
    """The share of pairs ranked right by the sum of the models' score gaps (one model's gaps, or
    several models' summed as an ensemble). A tie counts as wrong, as in the task's own
    `val_accuracy` (a margin > 0), so the two agree; learned scores almost never tie. (The
    callable reward's parts tie often, so `align_report.reference_free_agreement` counts a tie
    half: it measures what those parts could teach, not a model's accuracy.)"""
    summed = [sum(col) for col in zip(*gaps)]
    return round(sum(gap > 0 for gap in summed) / len(summed), 4)


def pair_scores(model: Path, pairs: Path) -> list[float]:
    """The reward model's chosen-less-rejected score of each pair. Saved beside the model per
    pairs file, so a rerun that adds a variant does not score every saved model again."""
    from lightkit.rewards.scoring import ModelReward
    from lightkit.tasks import REWARD_MODEL_TASKS

    saved = model.parent / "pair_scores.json"
    known = json.loads(saved.read_text()) if saved.exists() else {}
    key = f"{pairs}@{hashlib.sha256(pairs.read_bytes()).hexdigest()[:16]}"
    if key not in known:
        reward = ModelReward(str(model), REWARD_MODEL_TASKS)
        rows = [json.loads(line) for line in pairs.open()]
        known[key] = pair_gaps(rows, reward, prompt="rendered_prompt", batch_size=32).tolist()
        atomic_write_text(saved, json.dumps(known) + "\n")
    return known[key]


def accuracy_by_margin(gaps: list[list[float]], pairs: Path, parts: int = 4) -> list[dict[str, Any]]:
    """Pair accuracy in each quarter of the pairs by their reward margin (the mean over the runs'
    `gaps`): a model that had learned the reward would rank the widely separated pairs best."""
    margins = [json.loads(line)["margin"] for line in pairs.open()]
    cuts = [min(margins), *statistics.quantiles(margins, n=parts), max(margins)]
    out = []
    for i, (low, high) in enumerate(zip(cuts, cuts[1:])):
        inside = [j for j, m in enumerate(margins) if low <= m < high or (i == parts - 1 and m == high)]
        if not inside:  # tied margins at a cut leave a quarter empty
            continue
        accuracy = [sum(run[j] > 0 for j in inside) / len(inside) for run in gaps]
        out.append({"margin": [round(low, 3), round(high, 3)], "pairs": len(inside),
                    "accuracy": round(statistics.mean(accuracy), 4)})  # fmt: skip
    return out


def fit_once(config: Path) -> int | None:
    """Train the reward model of `config` (in its own folder) unless it is saved; the seconds its
    training took, when this or an earlier call timed it."""
    folder = config.parent
    seconds = folder / "seconds.txt"
    if not (folder / "hf_model" / "lightkit.json").exists():
        start = time.perf_counter()
        subprocess.run([LIGHTKIT, "fit", "--config", str(config)], cwd=ROOT, check=True)
        atomic_write_text(seconds, f"{time.perf_counter() - start:.0f}\n")
    return int(seconds.read_text()) if seconds.exists() else None


def train(key: str, folder: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train a variant with one seed (unless its model is saved) and read its curves."""
    folder.mkdir(parents=True, exist_ok=True)
    config = variant_config(key, folder, Path(args.pairs), Path(args.wide_pairs), Path(args.many_pairs), seed)
    train_s = fit_once(config)
    rows = logged_rows(folder / "lightning_logs")
    column = lambda name: [round(float(r[name]), 4) for r in rows if r.get(name)]  # noqa: E731
    return {
        "seed": seed,
        "held_out_pair_accuracy": column("val_accuracy")[-1],
        "accuracy_per_validation": column("val_accuracy"),
        "val_loss_per_validation": column("val_loss"),
        "train_loss_per_epoch": column("train_loss_epoch"),
        "train_s": train_s,
        "many_held_out_pair_accuracy": pair_accuracy(
            folder / "hf_model", pair_files(Path(args.many_pairs))["every_val"]
        ),
        "config": str(config),
    }


def variant(key: str, seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """A variant over its seeds: each run, and the held-out accuracy's mean and sd."""
    runs = [train(key, ROOT / args.work / key / f"seed-{seed}", seed, args) for seed in seeds]
    data = yaml.safe_load(Path(runs[0]["config"]).read_text())["data"]["init_args"]
    accuracy = [r["held_out_pair_accuracy"] for r in runs]
    many = [r["many_held_out_pair_accuracy"] for r in runs]
    many_pairs = pair_files(Path(args.many_pairs))["every_val"]
    gaps = [pair_scores(Path(r["config"]).parent / "hf_model", many_pairs) for r in runs]
    fresh = unseen(many_pairs, [Path(data["train_file"])])
    many_unseen = [ranked([only(g, fresh)]) for g in gaps]
    for run, value in zip(runs, many_unseen):
        run["many_unseen_held_out_pair_accuracy"] = value
    return {
        "variant": key,
        "description": VARIANTS[key][0],
        "train_pairs": sum(1 for _ in open(data["train_file"])),
        "held_out_pairs": sum(1 for _ in open(data["val_file"])),
        "many_held_out_pairs": sum(1 for _ in many_pairs.open()),
        "max_length": data["max_length"],
        "response_first": bool(data.get("response_first", False)),
        "reference_column": data.get("reference_column"),
        "held_out_pair_accuracy": round(statistics.mean(accuracy), 4),
        "held_out_pair_accuracy_sd": round(statistics.stdev(accuracy), 4) if len(runs) > 1 else None,
        "many_held_out_pair_accuracy": round(statistics.mean(many), 4),
        "many_held_out_pair_accuracy_sd": round(statistics.stdev(many), 4) if len(runs) > 1 else None,
        "many_held_out_pairs_of_trained_articles": fresh.count(False),
        "many_unseen_held_out_pair_accuracy": round(statistics.mean(many_unseen), 4),
        "many_unseen_held_out_pair_accuracy_sd": round(statistics.stdev(many_unseen), 4) if len(runs) > 1 else None,
        "many_held_out_accuracy_by_margin": accuracy_by_margin(gaps, many_pairs),
        "train_file": data["train_file"],
        "runs": runs,
    }


def ensemble(keys: list[str], results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Every trained model of the variants `keys` as one reward, the sum of their scores, on both
    held-out sets: what an ensemble of the runs already made ranks."""
    models = [Path(r["config"]).parent / "hf_model" for v in results if v["variant"] in keys for r in v["runs"]]
    held_out, many_pairs = (pair_files(Path(p))["every_val"] for p in (args.pairs, args.many_pairs))
    many = [pair_scores(model, many_pairs) for model in models]
    fresh = unseen(many_pairs, [Path(v["train_file"]) for v in results if v["variant"] in keys and v.get("train_file")])
    return {"variants": keys, "models": len(models),
            "held_out_pair_accuracy": ranked([pair_scores(model, held_out) for model in models]),
            "many_held_out_pair_accuracy": ranked(many),
            "many_unseen_held_out_pair_accuracy": ranked([only(gaps, fresh) for gaps in many])}  # fmt: skip


def unseen(held_out: Path, train_files: list[Path]) -> list[bool]:
    """Which pairs of `held_out` are of an article that no pair of `train_files` is of. The BBC
    set repeats some articles word for word, so the held-out fifth of `--many_pairs` can hold an
    article the shipped pairs trained on; the accuracy without those pairs is the unseen one."""
    seen = articles(*train_files)
    return [json.loads(line)["rendered_prompt"] not in seen for line in held_out.open()]


def only(values: list[float], keep: list[bool]) -> list[float]:
    return [v for v, k in zip(values, keep, strict=True) if k]


def deciding_parts(path: Path) -> dict[str, Any]:
    """Which reward term moves most between a pair's two answers (ROUGE-L: the margin less the
    others), and how often the terms that need no reference headline order the pair as the whole
    reward does (align_report's measure, a tie counting half)."""
    rows = [json.loads(line) for line in path.open()]
    terms = {"headline_length": reward_fn(without=("rouge_l", "copied_lead")),
             "copied_lead": reward_fn(without=("rouge_l", "headline_length"))}  # fmt: skip
    gaps = {k: pair_gaps(rows, fn) for k, fn in terms.items()}
    counts = dict.fromkeys(("rouge_l", *terms), 0)
    for i, row in enumerate(rows):
        parts = {k: float(gap[i]) for k, gap in gaps.items()}
        parts["rouge_l"] = row["margin"] - sum(parts.values())
        counts[max(parts, key=lambda k: abs(parts[k]))] += 1
    return {"pairs": len(rows), "largest_term": counts,
            "ordered_by_reference_free_terms": reference_free_agreement(path)}  # fmt: skip


def seeded(text: str) -> tuple[str, int | None]:
    """`--seeded` entry: a variant run with every seed, or `variant:N` with the first N."""
    key, _, count = text.partition(":")
    if key not in VARIANTS or (count and not count.isdigit()):
        raise ValueError(f"expected VARIANT or VARIANT:N with VARIANT one of {', '.join(VARIANTS)}, got {text!r}")
    return key, int(count) if count else None  # None: every seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="runs/align/pairs.jsonl")
    ap.add_argument("--wide_pairs", default="runs/align-m05/pairs.jsonl")
    ap.add_argument("--many_pairs", default="runs/align-1024/pairs.jsonl")
    ap.add_argument("--many_rows", type=int, default=1024, help="the articles --many_pairs is sampled from")
    ap.add_argument(
        "--sft", default="runs/sft_headlines/hf_model", help="the policy that samples the wide and many pairs"
    )
    ap.add_argument("--work", default="runs/reward-variants")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[13, 14, 15], help="seed_everything of each run")
    ap.add_argument(
        "--seeded",
        nargs="*",
        default=["shipped", "readable"],
        metavar="VARIANT[:N]",
        help="the variants run with every seed (or the first N); the others with the first",
    )
    ap.add_argument(
        "--ensemble", nargs="*", default=[], metavar="VARIANT", help="also score every model of these as one reward"
    )
    ap.add_argument("--out", default="benchmarks/results/reward-variants-cpu.json")
    args = ap.parse_args()
    if set(args.ensemble) - set(args.variants):
        ap.error(f"--ensemble: {sorted(set(args.ensemble) - set(args.variants))} not among --variants")
    needed = [(args.many_pairs, ["--rows", str(args.many_rows)])]  # every variant is scored on its held-out pairs
    needed += [(args.wide_pairs, ["--min-margin", "0.05"])] if "wide" in args.variants else []
    for out, settings in needed:
        if not pair_files(Path(out))["every"].exists():
            subprocess.run([sys.executable, "-m", "lightkit.data.headline_pairs", "--out", out, "--policy", args.sft,
                            *settings], cwd=ROOT, check=True)  # fmt: skip
    # The stage reuses a pairs file whatever --rows asks, so the result says what was sampled.
    settings = json.loads(Path(args.many_pairs).with_suffix(".settings.json").read_text())
    if settings["rows"] != args.many_rows:
        ap.error(f"--many_rows {args.many_rows}: {args.many_pairs} was sampled from {settings['rows']} articles")
    for path in pair_files(Path(args.many_pairs)).values():  # a reference reader scores them too
        with_references(path, settings["rows"], settings["seed"], settings["split_seed"])
    try:
        counts = dict(seeded(text) for text in args.seeded)
    except ValueError as e:
        ap.error(f"--seeded: {e}")
    results = [
        variant(key, args.seeds[: counts[key]] if key in counts else args.seeds[:1], args) for key in args.variants
    ]
    result = {
        "what": "reward-model variants on the same held-out pairs (configs/reward_headlines.yaml, one change each)",
        **provenance("transformers", "peft"),
        "command": command_line("reward_variants.py", args),
        "pairs": args.pairs,
        "wide_pairs": args.wide_pairs,
        "many_pairs": args.many_pairs,
        "many_rows": args.many_rows,
        "held_out_pairs_decided_by": deciding_parts(pair_files(Path(args.pairs))["every_val"]),
        "train_pairs_decided_by": deciding_parts(pair_files(Path(args.pairs))["every"]),
        "variants": results,
    }
    if args.ensemble:
        result["ensemble"] = ensemble(args.ensemble, results, args)
    write_result(args.out, result)
    for r in results:
        print(
            f"{r['held_out_pair_accuracy']:.3f}  {r['many_held_out_pair_accuracy']:.3f}  {r['train_pairs']:4d} pairs"
            f"  {r['description']}"
        )


if __name__ == "__main__":
    main()
