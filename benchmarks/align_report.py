"""Before and after preference optimisation: zero-shot, SFT, DPO, PPO and GRPO on held-out articles.

    python benchmarks/align_report.py --runs runs/align --sft runs/sft_headlines/hf_model \
        --out benchmarks/results/align-smollm2-headlines-cpu.json

Every model (the untuned SmolLM2-135M-Instruct, and each tuned one's merged `hf_model`) answers
the same 112 held-out articles of the headline task (the test split of the headline configs,
never trained on) greedily with the same generation code, in bf16 autocast. Scored per model:
- mean reward: the weighted reward callables of configs/grpo_headlines.yaml and
  ppo_headlines.yaml (ROUGE-L + length window + 0.5 x copied lead);
- ROUGE-1/L (torchmetrics, as `lightkit test` reports), mean answer words, share ending with EOS;
- KL to the reference (the untuned model), summed over each answer's tokens: the exact KL of the
  two next-token distributions at every position of the model's own greedy answer;
- a few samples.
The training wall time of each run is read from `<runs>/times.txt` (written by `make align`) when present.
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
from torchmetrics.text.rouge import ROUGEScore
from transformers import AutoModelForCausalLM

from lightkit.io.atomic import atomic_write_text
from lightkit.io.measure import provenance

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("dpo", "ppo", "grpo")


def held_out() -> tuple[Any, list[dict[str, Any]]]:
    from lightkit.data import HeadlineDataModule

    dm = HeadlineDataModule(tokenizer=MODEL, holdout=(0.02, 0.05), split_seed=13, max_length=320)
    return dm.tokenizer, dm.splits(dm._read, dm.split_key)["test"]


def reward_fn() -> Any:
    """The reward of configs/grpo_headlines.yaml, built the way the task builds it."""
    from lightkit.rewards.scoring import build_reward

    args = yaml.safe_load((ROOT / "configs" / "grpo_headlines.yaml").read_text())["model"]["init_args"]
    return build_reward(args["reward_fn"], None, weights=args["reward_weights"])


@torch.no_grad()
def answer(model: Any, reference: Any, tokenizer: Any, rows: list[dict[str, Any]], batch: int = 16) -> dict[str, Any]:
    """Greedy answers, and each answer's summed KL(model || reference) along its own tokens (0
    without a reference)."""
    answers, kls, ended = [], [], []
    eos = tokenizer.eos_token_id
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        enc = tokenizer([r["gen_prompt"] for r in chunk], return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)  # fmt: skip
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=eos)  # fmt: skip
        P = enc["input_ids"].size(1)
        response = out[:, P:]
        is_eos = response == eos
        mask = ((is_eos.long().cumsum(1) - is_eos.long()) == 0).float()  # through the first EOS
        attention = torch.cat([enc["attention_mask"], mask.long()], 1)
        keep = response.size(1) + 1
        ended += is_eos.any(1).tolist()
        answers += [a.strip() for a in tokenizer.batch_decode(response, skip_special_tokens=True)]
        if reference is None:
            kls += [0.0] * len(chunk)
            continue
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=out, attention_mask=attention, logits_to_keep=keep).logits[:, :-1].float()
            ref = reference(input_ids=out, attention_mask=attention, logits_to_keep=keep).logits[:, :-1].float()
        logp, logq = torch.log_softmax(logits, -1), torch.log_softmax(ref, -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        kls += (kl * mask).sum(1).tolist()
    return {"answers": answers, "kl": kls, "ended": ended}


def scores(out: dict[str, Any], rows: list[dict[str, Any]], reward: Any) -> dict[str, float]:
    references = [r["reference"] for r in rows]
    rouge = ROUGEScore(rouge_keys=("rouge1", "rougeL"))(out["answers"], references)
    rewards = reward([r["gen_prompt"] for r in rows], out["answers"], reference=references)
    n = len(rows)
    return {
        "reward": float(rewards.mean()),
        **{name: float(mean) for name, mean in reward.last_parts.items()},  # reward_<callable>
        "rouge1": float(rouge["rouge1_fmeasure"]),
        "rougeL": float(rouge["rougeL_fmeasure"]),
        "answer_words": sum(len(a.split()) for a in out["answers"]) / n,
        "ended_frac": sum(out["ended"]) / n,
        "kl_to_reference": sum(out["kl"]) / n,
        "answers": n,
    }


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/align")
    ap.add_argument("--sft", default="runs/sft_headlines/hf_model")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--out", default="runs/align/report.json")
    args = ap.parse_args()
    from lightkit.models.resources import resolve_path

    torch.manual_seed(0)
    tokenizer, rows = held_out()
    reward = reward_fn()
    base_path = resolve_path(MODEL, what="model")
    reference = AutoModelForCausalLM.from_pretrained(base_path).eval()
    models = {"zero_shot": base_path, "sft": Path(args.sft)}
    models |= {m: Path(args.runs) / m / "hf_model" for m in METHODS}
    results: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    # Scores are cached per model file (path and modification time), so re-running after one
    # model changed scores only that one.
    cache_path = Path(args.runs) / "report-cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for name, path in models.items():
        weights = path / "model.safetensors"
        if not weights.exists():
            print(f"{name}: no model at {path}; skipped")
            continue
        key = f"{path.resolve()}@{weights.stat().st_mtime_ns}"
        if key not in cache:
            model = reference if name == "zero_shot" else AutoModelForCausalLM.from_pretrained(path).eval()
            start = time.perf_counter()
            out = answer(model, reference, tokenizer, rows)
            cache[key] = {"scores": scores(out, rows, reward) | {"eval_s": round(time.perf_counter() - start, 1)},
                          "answers": out["answers"]}  # fmt: skip
            atomic_write_text(cache_path, json.dumps(cache))
        results[name], answers[name] = dict(cache[key]["scores"]), cache[key]["answers"]
        s = results[name]
        print(f"{name:10s} reward {s['reward']:+.3f}  ROUGE-L {s['rougeL']:.3f}  KL {s['kl_to_reference']:.2f}  "
              f"{s['answer_words']:.1f} words  ended {s['ended_frac']:.2f}", flush=True)  # fmt: skip
    times = train_times(Path(args.runs))
    for name, seconds in times.items():
        if name in results:
            results[name]["train_s"] = seconds
    result = {
        "what": "SmolLM2-135M-Instruct on BBC headlines: zero-shot, then LoRA SFT, DPO, PPO and GRPO "
        "(configs/sft_headlines.yaml, dpo_headlines.yaml, ppo_headlines.yaml, grpo_headlines.yaml)",
        "command": "make align",
        **provenance("transformers", "peft", "onnxruntime"),
        "held_out_articles": len(rows),
        "reward": "rouge_l + headline_length + 0.5 * copied_lead (lightkit.rewards.text)",
        "models": results,
        "samples": [
            {"reference": r["reference"], **{name: answers[name][i] for name in answers}}
            for i, r in enumerate(rows[: args.samples])
        ],
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
