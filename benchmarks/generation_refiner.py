"""Generation refiner on a real artifact: objective before/after and the time it costs.

    python benchmarks/generation_refiner.py --artifact runs/clm/onnx --prompts configs/prompts/tech_news.txt \\
        --out benchmarks/results/generation_refiner-cpu.json

For each prompt: a greedy and a sampled response (ONNX Runtime, KV cache), then `refine_sequence`
(top-k coordinate descent on log P(Y|X)) on each. Reports mean log P before and after, positions
changed and seconds per response, with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from lightkit.export.refiner import refine_sequence
from lightkit.export.runtime import OrtModel


def sample(
    session: OrtModel, prompt: torch.Tensor, n: int, rng: np.random.Generator, temperature: float = 1.0
) -> torch.Tensor:
    ids = prompt.view(1, -1)
    for _ in range(n):  # full forwards: a few prompts, short responses; the KV loop is in OrtModel.greedy
        logits = session(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].double() / temperature
        p = torch.softmax(logits, -1).numpy()
        ids = torch.cat([ids, torch.tensor([[rng.choice(len(p), p=p / p.sum())]])], dim=1)
    return ids[0, prompt.numel() :]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", default="runs/clm/onnx")
    ap.add_argument("--form", default="fp32")
    ap.add_argument("--prompts", default="configs/prompts/tech_news.txt")
    ap.add_argument("--n_prompts", type=int, default=8)
    ap.add_argument("--new_tokens", type=int, default=24)
    ap.add_argument("--top_k", type=int, default=5)
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/generation_refiner-cpu.json")
    args = ap.parse_args()
    artifact = Path(args.artifact)
    session = OrtModel(artifact / args.form / "model.onnx", device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(artifact / "tokenizer")
    prompts = [p for p in Path(args.prompts).read_text().splitlines() if p.strip()][: args.n_prompts]
    rng = np.random.default_rng(0)
    rows = []
    for text in prompts:
        prompt = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
        start = time.perf_counter()
        greedy = session.greedy(prompt.view(1, -1), torch.ones(1, prompt.numel(), dtype=torch.long), args.new_tokens)[0]
        greedy_s = time.perf_counter() - start
        for kind, response in (("greedy", greedy), ("sampled", sample(session, prompt, args.new_tokens, rng))):
            r = refine_sequence(session, prompt, response, top_k=args.top_k, sweeps=args.sweeps)
            rows.append(
                {
                    "prompt": text,
                    "decoding": kind,
                    "before": r.before,
                    "after": r.after,
                    "changes": r.changes,
                    "refine_seconds": r.seconds,
                    "decode_seconds": greedy_s if kind == "greedy" else None,
                    "initial": tokenizer.decode(response),
                    "refined": tokenizer.decode(r.tokens),
                }
            )
    summary = {}
    for kind in ("greedy", "sampled"):
        part = [r for r in rows if r["decoding"] == kind]
        summary[kind] = {
            k: float(np.mean([r[k] for r in part])) for k in ("before", "after", "changes", "refine_seconds")
        }
    result = {
        "what": "generation refiner (top-k coordinate descent on log P(Y|X)) on the lightkit CLM artifact",
        "command": "python benchmarks/generation_refiner.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "device": f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (ONNX Runtime CPU EP)",
        "versions": {"onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "summary": summary,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
