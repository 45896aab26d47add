"""The RLHF chain on held-out articles: zero-shot, SFT, then DPO, PPO and GRPO from SFT, and the reward model.

    python benchmarks/align_report.py --runs runs/align --sft runs/sft_headlines/hf_model \
        --out benchmarks/results/align-smollm2-headlines-cpu.json

Every model (the untuned SmolLM2-135M-Instruct, the SFT model, and each method's merged `hf_model`) answers
the same 112 held-out articles of the headline task (the test split of the headline configs,
never trained on) greedily with the same generation code, in bf16 autocast. Scored per model:
- mean reward: the weighted reward callables of configs/grpo_headlines.yaml and
  ppo_headlines.yaml (ROUGE-L + length window + 0.5 x copied lead);
- ROUGE-1/L (torchmetrics, as `lightkit test` reports), mean answer words, share ending with EOS;
- KL to SFT (the methods' reference), summed over each answer's tokens: the exact KL of the two
  next-token distributions at every position of the model's own greedy answer (the SFT model
  reads the prompts once for all five, `lightkit.models.prompt_cache`);
- a few samples.
The learned reward (`<runs>/reward/hf_model`, configs/reward_headlines.yaml) is reported by its
held-out pair accuracy (its last `val_accuracy`) and by how it tracks the callable reward on every
model's held-out answers (Pearson and Spearman correlation, pooled). Each method's per-step train
reward and KL come from its CSV log. The training wall time of each stage is read from
`<runs>/times.txt` (written by `make align`) when present.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from measure import write_result

from lightkit.io.atomic import atomic_write_text
from lightkit.io.csvlog import logged_rows, version_logs
from lightkit.io.measure import provenance
from lightkit.metrics.answers import PolicyComparison, reward_model_report
from lightkit.rewards.scoring import build_reward, describe_reward, path_parts
from lightkit.tasks import REWARD_MODEL_TASKS

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("dpo", "ppo", "grpo")
# The settings that tell one run of a method from another (rate, length, loss), recorded with its
# scores: a result file then says which DPO it measured when the shipped config changes.
SETTINGS = {
    "dpo": ("learning_rate", "beta", "loss_type", "rpo_alpha"),
    "ppo": ("learning_rate", "reward_model_weight", "kl_coef", "temperature"),
    "grpo": ("learning_rate", "beta", "loss_type", "num_generations", "num_iterations", "temperature"),
}


def held_out(split_seed: int = 13) -> tuple[Any, list[dict[str, Any]]]:
    from lightkit.data import HeadlineDataModule

    dm = HeadlineDataModule(tokenizer=MODEL, holdout=(0.02, 0.05), split_seed=split_seed, max_length=320)
    return dm.tokenizer, dm.splits(dm._read, dm.split_key)["test"]


def reward_settings() -> tuple[list[str], list[float]]:
    """configs/grpo_headlines.yaml's reward callables and their weights."""
    args = yaml.safe_load((ROOT / "configs" / "grpo_headlines.yaml").read_text())["model"]["init_args"]
    return args["reward_fn"], args["reward_weights"]


def reward_fn(without: tuple[str, ...] = ()) -> Any:
    """The reward of configs/grpo_headlines.yaml, built the way the task builds it, less the
    callables named in `without`."""
    kept = [(f, w) for f, w in zip(*reward_settings()) if path_parts(f)[1] not in without]
    return build_reward([f for f, _ in kept], None, weights=[w for _, w in kept])


def pair_gaps(rows: list[dict[str, Any]], reward: Any, prompt: str = "prompt", batch_size: int = 256) -> Any:
    """Each pair's chosen answer's reward less its rejected answer's, under `reward`, which reads
    each row's `prompt` column (a reward model: `rendered_prompt`, the text it was trained on), in
    batches of `batch_size` pairs so a model's activations stay small."""

    def side(chunk: list[dict[str, Any]], key: str) -> Any:
        # A row's reference answer, where the pairs file keeps one, goes to a reward that reads it.
        columns = {"reference": [r["reference"] for r in chunk]} if all(r.get("reference") for r in chunk) else {}
        return reward([r[prompt] for r in chunk], [r[key] for r in chunk], **columns)

    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return torch.cat([side(chunk, "chosen") - side(chunk, "rejected") for chunk in chunks] or [torch.zeros(0)])


def reference_free_agreement(pairs: Path) -> float | None:
    """The share of the reward model's pairs in `pairs` that the reward's parts needing no
    reference headline (all but ROUGE-L) already order as the whole reward does, a tie counting
    half: what a reward model reading only the article and the answer could learn at best from
    those parts."""
    if not pairs.exists():
        return None
    rows = [json.loads(line) for line in pairs.read_text().splitlines() if line.strip()]
    gaps = pair_gaps(rows, reward_fn(without=("rouge_l",)))
    return float(((gaps > 0).float() + 0.5 * (gaps == 0).float()).mean())


def train_times(runs: Path) -> dict[str, float]:
    path = runs / "times.txt"
    if not path.exists():
        return {}
    times = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "s":
            times[parts[0]] = float(parts[1])
    return times


def logged(run: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV log (`<run>/lightning_logs/version_N/metrics.csv`), a resumed
    fit's versions joined."""
    return logged_rows(run / "lightning_logs")


def settings(run: Path, method: str) -> dict[str, Any]:
    """The method's `SETTINGS` and step count as it last ran, from the config Lightning saved beside
    its newest log version (a resumed run saves it again)."""
    logs = version_logs(run / "lightning_logs")
    if not logs or not (logs[-1].parent / "config.yaml").exists():
        return {}
    config = yaml.safe_load((logs[-1].parent / "config.yaml").read_text())
    init = config["model"]["init_args"]
    return {"max_steps": config["trainer"].get("max_steps")} | {
        k: init[k] for k in SETTINGS[method] if init.get(k) is not None
    }


def curves(run: Path) -> dict[str, list[list[float]]]:
    """[step, value] series of what each method logs per training step and per validation."""
    keys = ("train_reward_step", "train_kl_step", "train_margin_step", "val_greedy_reward", "val_rougeL", "val_kl")
    out: dict[str, list[list[float]]] = {}
    for row in logged(run):
        for key in keys:
            if row.get(key):
                out.setdefault(key.removesuffix("_step"), []).append([int(row["step"]), float(row[key])])
    return out


def learned_reward(runs: Path, prompts: list[str], references: list[str], answers: dict[str, list[str]],
                   results: dict[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """The reward model's held-out pair accuracy and its agreement with the callable reward."""
    path = runs / "reward" / "hf_model"
    if not (path / "model.safetensors").exists():
        return None
    callable_ = [v for name in answers for v in results[name]["rewards"]]
    accuracy = [float(r["val_accuracy"]) for r in logged(runs / "reward") if r.get("val_accuracy")]
    report = reward_model_report(path, REWARD_MODEL_TASKS, accuracy, prompts, answers, callable_, references)
    return {
        **report,
        "held_out_pairs_ordered_by_reference_free_parts": reference_free_agreement(runs / "pairs-all-val.jsonl"),
        "training_pairs_ordered_by_reference_free_parts": reference_free_agreement(runs / "pairs-all.jsonl"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/align")
    ap.add_argument("--sft", default="runs/sft_headlines/hf_model")
    ap.add_argument("--split_seed", type=int, default=13, help="the articles' carve (HeadlineDataModule)")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--out", default="runs/align/report.json")
    args = ap.parse_args()
    from lightkit.models.resources import resolve_path

    torch.manual_seed(0)
    tokenizer, rows = held_out(args.split_seed)
    reward = reward_fn()
    base_path = resolve_path(MODEL, what="model")
    sft = Path(args.sft)
    prompts, references = [r["gen_prompt"] for r in rows], [r["reference"] for r in rows]
    comparison = PolicyComparison(sft, tokenizer, prompts, references, reward)  # SFT: every method's reference
    runs = Path(args.runs)
    models = {"zero_shot": base_path, "sft": sft}
    models |= {m: runs / m / "hf_model" for m in METHODS}
    results: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    # Scores are cached per model file and reference (path and modification time), so re-running
    # after one model changed scores only that one.
    cache_path = runs / "report-cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    sft_key = f"{sft.resolve()}@{(sft / 'model.safetensors').stat().st_mtime_ns}"
    for name, path in models.items():
        weights = path / "model.safetensors"
        if not weights.exists():
            print(f"{name}: no model at {path}; skipped")
            continue
        key = f"{path.resolve()}@{weights.stat().st_mtime_ns}~{sft_key}"
        if key not in cache:
            start = time.perf_counter()
            out, scored = comparison.score(path)
            cache[key] = {"scores": scored | {"eval_s": round(time.perf_counter() - start, 1)},
                          "answers": out["answers"]}  # fmt: skip
            atomic_write_text(cache_path, json.dumps(cache))
        results[name], answers[name] = dict(cache[key]["scores"]), cache[key]["answers"]
        s = results[name]
        print(f"{name:10s} reward {s['reward']:+.3f}  ROUGE-L {s['rougeL']:.3f}  KL to SFT {s['kl_to_sft']:.2f}  "
              f"{s['answer_words']:.1f} words  ended {s['ended_frac']:.2f}", flush=True)  # fmt: skip
    times = train_times(runs)
    for name, seconds in times.items():
        if name in results:
            results[name]["train_s"] = seconds
    rm = learned_reward(runs, prompts, references, answers, results)
    if rm is not None:
        rm["train_s"] = times.get("reward")
        print(f"reward model: held-out pair accuracy {rm['held_out_pair_accuracy']}, Pearson "
              f"{rm['pearson_with_callable_reward']:.3f} / Spearman {rm['spearman_with_callable_reward']:.3f} "
              "with the callable reward on held-out answers")  # fmt: skip
    for s in results.values():
        s.pop("rewards")
    result = {
        "what": "SmolLM2-135M-Instruct on BBC headlines: zero-shot, LoRA SFT, then DPO (on the SFT model's ranked "
        "answers), PPO (against the learned reward mixed with the callables) and GRPO (the callables), each from "
        "the SFT model (configs/sft_headlines.yaml, reward_headlines.yaml, dpo_headlines.yaml, ppo_headlines.yaml, "
        "grpo_headlines.yaml)",
        "command": "make align",
        **provenance("transformers", "peft", "onnxruntime"),
        "held_out_articles": len(rows),
        "split_seed": args.split_seed,
        "reward": describe_reward(*reward_settings()),
        "stage_times_s": times,
        "models": results,
        "settings": {m: settings(runs / m, m) for m in METHODS if (runs / m).exists()},
        "reward_model": rm,
        "curves": {m: curves(runs / m) for m in METHODS if (runs / m).exists()},
        "samples": [
            {"reference": r["reference"], **{name: answers[name][i] for name in answers}}
            for i, r in enumerate(rows[: args.samples])
        ],
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
