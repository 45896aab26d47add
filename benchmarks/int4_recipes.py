"""Which 4-bit recipe keeps the tuned headline writer: ONNX Runtime's quantisers on its fused graph.

    python benchmarks/int4_recipes.py --out benchmarks/results/int4-recipes-cpu.json

Every recipe quantises the same fp32 graph (`make generate`'s export of the SFT model, the fused
graph of onnxruntime-genai's model builder) exactly as `lightkit export` makes a CPU form
(`lightkit.export.builder.decoder_cpu.quantize_cpu_decoder`: the tied token table one 8-bit copy,
the MatMuls as the recipe says, int8 compute with `accuracy_level` 4), and is scored with the
inputs of benchmarks/llm_peers.py: perplexity on held-out BBC articles (8 x 160 tokens) and on 32
held-out headlines given their chat prompts (answer tokens only: what the LoRA fine-tune changed),
against the same numbers of the fp32 graph. Recipes: round to nearest (asymmetric and symmetric,
block 32); HQQ (block 32 and 16); HQQ with a rank-8 and a rank-16 correction of each projection's
rounding error (`lightkit.export.builder.low_rank`; rank 16 is the shipped `int4-cpu`); and the
shipped `int8-cpu` for comparison. No timing: the file size and the perplexities are the point.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from llm_peer_side import Lightkit, answer_perplexity, perplexity
from llm_peers import job
from measure import write_result

from lightkit.export.builder.decoder_cpu import quantize_cpu_decoder
from lightkit.export.builder.weight_only import INT4_CPU_DECODER, INT8_CPU_DECODER, WeightOnly
from lightkit.io.measure import provenance

FOUR_BIT = {"bits": 4, "symmetric": False, "accuracy_level": 4}
RECIPES = {
    "int8-cpu (shipped)": INT8_CPU_DECODER,
    "round to nearest, asymmetric, block 32": WeightOnly(**FOUR_BIT),
    "round to nearest, symmetric, block 32": WeightOnly(**{**FOUR_BIT, "symmetric": True}),
    "HQQ, block 32": WeightOnly(**FOUR_BIT, algorithm="hqq"),
    "HQQ, block 16": WeightOnly(**FOUR_BIT, algorithm="hqq", block_size=16),
    "HQQ, block 32, rank-8 correction": WeightOnly(**FOUR_BIT, algorithm="hqq", correction_rank=8),
    "int4-cpu (shipped): HQQ, block 32, rank-16 correction": INT4_CPU_DECODER,
}


def score(folder: Path, spec: dict[str, Any]) -> dict[str, float]:
    side = Lightkit(folder)
    return {"bytes": side.bytes, "perplexity": perplexity(side, spec["texts"]),
            "answer_perplexity": answer_perplexity(side, spec["answers"])}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf", default="runs/sft_headlines/hf_model")
    ap.add_argument("--fp32", default="runs/sft_headlines/onnx/fp32/model.onnx")
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--text_tokens", type=int, default=160)
    ap.add_argument("--out", default="benchmarks/results/int4-recipes-cpu.json")
    args = ap.parse_args()
    spec, pytorch = job(args.hf, args.texts, args.text_tokens)
    fp32 = score(Path(args.fp32).parent, spec)
    print(f"fp32: {fp32}", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in RECIPES.items():
            folder = Path(tmp) / f"r{len(rows)}"
            folder.mkdir()
            record = quantize_cpu_decoder(None, Path(args.fp32), folder / "model.onnx", settings)
            row = score(folder, spec)
            row.update(
                settings=settings.describe(),
                perplexity_change=row["perplexity"] / fp32["perplexity"] - 1,
                answer_perplexity_change=row["answer_perplexity"] / fp32["answer_perplexity"] - 1,
                size_vs_fp32=row["bytes"] / fp32["bytes"],
                low_rank=record.get("low-rank correction"),
            )
            rows[name] = row
            print(f"{name}: {row['bytes'] / 2**20:.0f} MiB, perplexity {row['perplexity_change']:+.1%}, "
                  f"answer perplexity {row['answer_perplexity_change']:+.1%}", flush=True)  # fmt: skip
            for path in folder.iterdir():
                path.unlink()
    result = {
        "what": "4-bit recipes on the SFT headline writer's fused fp32 graph (ONNX Runtime's quantisers, lightkit's "
        "CPU form around them), perplexity against that graph on the inputs of benchmarks/llm_peers.py",
        "command": "python benchmarks/int4_recipes.py " + " ".join(sys.argv[1:]),
        **provenance("onnxruntime", "onnx"),
        "texts": len(spec["texts"]),
        "text_tokens": args.text_tokens,
        "answers": len(spec["answers"]),
        "pytorch_fp32": {k: pytorch[k] for k in ("perplexity", "answer_perplexity")},
        "fp32": fp32,
        "recipes": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
