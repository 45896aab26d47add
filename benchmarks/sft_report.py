"""Zero-shot against tuned: the headline task's held-out answers, scored side by side.

    python benchmarks/sft_report.py --runs runs/sft_headlines --out benchmarks/results/sft-headlines-cpu.json

Reads the `test_generations.jsonl` that `lightkit test` (with `test_generation: true`) wrote for
the model zero-shot (`<runs>/zero-shot`) and after LoRA SFT (`<runs>/tuned`), rescores both with
the same ROUGE (torchmetrics), and prints and writes the comparison with a few samples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from measure import write_result
from torchmetrics.text.rouge import ROUGEScore

from lightkit.io.measure import provenance


def scores(rows: list[dict[str, str]]) -> dict[str, float]:
    values = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(
        [r["answer"] for r in rows], [r["reference"] for r in rows]
    )
    words = sum(len(r["answer"].split()) for r in rows) / len(rows)
    reference_words = sum(len(r["reference"].split()) for r in rows) / len(rows)
    return {**{k: float(values[f"{k}_fmeasure"]) for k in ("rouge1", "rouge2", "rougeL")}, "answer_words": words,
            "reference_words": reference_words, "answers": len(rows)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/sft_headlines")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--out", default="runs/sft_headlines/report.json")
    args = ap.parse_args()
    runs = Path(args.runs)
    rows = {name: [json.loads(line) for line in (runs / name / "test_generations.jsonl").read_text().splitlines()]
            for name in ("zero-shot", "tuned")}  # fmt: skip
    if [r["reference"] for r in rows["zero-shot"]] != [r["reference"] for r in rows["tuned"]]:
        raise SystemExit("the two runs answered different test articles")
    result = {
        "what": "SmolLM2-135M-Instruct writing BBC headlines: zero-shot vs after LoRA SFT (configs/sft_headlines.yaml)",
        "command": "make sft",
        **provenance("transformers", "peft", "onnxruntime"),
        "zero_shot": scores(rows["zero-shot"]),
        "tuned": scores(rows["tuned"]),
        "samples": [
            {"reference": z["reference"], "zero_shot": z["answer"], "tuned": t["answer"]}
            for z, t in zip(rows["zero-shot"][: args.samples], rows["tuned"][: args.samples])
        ],  # fmt: skip
    }
    write_result(args.out, result)
    for name in ("zero_shot", "tuned"):
        s = result[name]
        rouge = f"ROUGE-1 {s['rouge1']:.3f}  ROUGE-2 {s['rouge2']:.3f}  ROUGE-L {s['rougeL']:.3f}"
        length = f"{s['answer_words']:.1f} words (references {s['reference_words']:.1f})"
        print(f"{name:>9}: {rouge}  {length}, {s['answers']} articles")
    for sample in result["samples"][:3]:
        print(f"  {sample['reference']!r}\n    zero-shot: {sample['zero_shot']!r}\n    tuned:     {sample['tuned']!r}")


if __name__ == "__main__":
    main()
