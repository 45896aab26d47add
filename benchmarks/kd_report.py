"""A distilled SmolLM2 against its teacher: quality kept, parameters, and CPU generation speed.

    python benchmarks/kd_report.py --runs runs/distill_sft_headlines \
        --out benchmarks/results/kd-smollm2-headlines-cpu.json

`make distill-sft` runs it after testing both models on the same 112 held-out articles
(`<runs>/teacher` and `<runs>/student`, each with the `test_generations.jsonl` and CSV metrics
`lightkit test` writes). Run it from the repository root: the teacher's folder is read from the
student's `distillation.json`, as the config named it. Reported:
- ROUGE-1/2/L of each model's greedy headlines (rescored alike, as `sft_report.py` does), and the
  student's retention: its ROUGE-L over the teacher's;
- held-out perplexity on the reference headlines (`test_perplexity`), and its retention: the
  teacher's perplexity over the student's (1.0 = as good as the teacher);
- parameters of both (from the student's `distillation.json`);
- greedy generation tokens/s of both saved models (plain transformers, KV cache, bf16 autocast
  by default: on this 2-core CPU the teacher decodes 16.7 tokens/s so against 12.7 in fp32, which
  `--precision fp32` gives; `--threads` threads), on the first `--prompts` test
  prompts one at a time, a fixed `--new_tokens` each (no early stop, so both decode the same
  number of tokens), the two models interleaved for `--repeats` rounds, medians reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
from measure import write_result
from sft_report import scores
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightkit.io.measure import median, provenance


def test_metrics(run: Path) -> dict[str, float]:
    """The last logged value of each test_* metric in the run's CSV logs."""
    values: dict[str, float] = {}
    for path in sorted(run.rglob("metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                values.update({k: float(v) for k, v in row.items() if k.startswith("test_") and v})
    if "test_perplexity" not in values:
        raise SystemExit(f"{run}: no test_perplexity in its metrics.csv; run `lightkit test` with a CSVLogger there")
    return values


def generations(run: Path) -> list[dict[str, str]]:
    """The answers `lightkit test` wrote (in its logger's folder when it has one)."""
    found = sorted(run.rglob("test_generations.jsonl"))
    if len(found) != 1:
        raise SystemExit(f"{run}: expected one test_generations.jsonl, found {[str(p) for p in found]}")
    return [json.loads(line) for line in found[0].read_text().splitlines()]


def tokens_per_s(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int, bf16: bool) -> float:
    """Decoded tokens per second over `prompts`, one prompt at a time (prefill included)."""
    start, produced = time.perf_counter(), 0
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        produced += out.shape[1] - enc["input_ids"].shape[1]
    return produced / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/distill_sft_headlines")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new_tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="generation precision")
    ap.add_argument("--out", default="runs/distill_sft_headlines/report.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    rows = {name: generations(runs / name) for name in ("teacher", "student")}
    if [r["reference"] for r in rows["teacher"]] != [r["reference"] for r in rows["student"]]:
        raise SystemExit("teacher and student answered different test articles")
    metrics = {name: test_metrics(runs / name) for name in ("teacher", "student")}
    info = json.loads((runs / "hf_model" / "distillation.json").read_text())
    quality = {name: {**scores(rows[name]), "perplexity": metrics[name]["test_perplexity"]} for name in rows}

    folders = {"teacher": Path(info["teacher"]), "student": runs / "hf_model"}
    tokenizer = AutoTokenizer.from_pretrained(folders["student"])
    models = {n: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for n, p in folders.items()}
    prompts = [r["prompt"] for r in rows["teacher"][: args.prompts]]
    speed: dict[str, list[float]] = {n: [] for n in models}
    for model in models.values():  # warm-up: first calls allocate and pick kernels
        tokens_per_s(model, tokenizer, prompts[:1], 4, args.precision == "bf16")
    for _ in range(args.repeats):
        for name, model in models.items():
            speed[name].append(tokens_per_s(model, tokenizer, prompts, args.new_tokens, args.precision == "bf16"))

    teacher, student = quality["teacher"], quality["student"]
    result = {
        "what": "SmolLM2-135M-Instruct headline writer (LoRA SFT, merged) distilled into a student built from "
        "its layers (configs/distill_sft_headlines.yaml): quality kept, size, CPU generation speed",
        "command": "make distill-sft",
        **provenance("transformers", threads=args.threads),
        "student_layers": info["student_layers"],
        "kd": {k: info.get(k) for k in ("kd_temperature", "alpha_kd", "alpha_ce", "kd_prompt", "optimizer_steps")},
        "parameters": {
            "teacher": info["teacher_parameters"],
            "student": info["student_parameters"],
            "ratio": info["student_parameters"] / info["teacher_parameters"],
        },
        "teacher": {**teacher, "generate_tokens_per_s": median(speed["teacher"])},
        "student": {**student, "generate_tokens_per_s": median(speed["student"])},
        "retention": {
            "rougeL": student["rougeL"] / teacher["rougeL"],
            "perplexity": teacher["perplexity"] / student["perplexity"],
        },
        "speedup_tokens_per_s": median(speed["student"]) / median(speed["teacher"]),
        "generation": {
            "prompts": args.prompts,
            "new_tokens": args.new_tokens,
            "batch": 1,
            "repeats": args.repeats,
            "precision": "bf16 autocast" if args.precision == "bf16" else "fp32",
            "runs": speed,
        },
        "samples": [
            {"reference": t["reference"], "teacher": t["answer"], "student": s["answer"]}
            for t, s in zip(rows["teacher"][: args.samples], rows["student"][: args.samples])
        ],
    }
    write_result(args.out, result)
    for name in ("teacher", "student"):
        q = result[name]
        print(f"{name:>8}: ROUGE-L {q['rougeL']:.3f}  perplexity {q['perplexity']:.2f}  "
              f"{result['parameters'][name]:,} parameters  {q['generate_tokens_per_s']:.1f} tokens/s")  # fmt: skip
    r = result["retention"]
    print(f"retention: ROUGE-L {r['rougeL']:.1%}, perplexity {r['perplexity']:.1%}; "
          f"speed-up {result['speedup_tokens_per_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
