"""CPU inference latency: ONNX Runtime forms vs PyTorch eager fp32, same inputs, same process.

    python benchmarks/inference_cpu.py --artifact runs/ner/onnx --hf_model runs/ner/hf_model \\
        [--clm_artifact runs/clm/onnx --clm_hf_model runs/clm/hf_model] \\
        --out benchmarks/results/inference-cpu.json

Shapes 1x128, 8x128, 32x128 (batch x tokens, no padding) of random token ids: synthetic inputs,
for the shapes; `lightkit benchmark` times the same forms on the real test batches. For each
shape: median and p90 over `--repeats` runs, spread over `--rounds` interleaved rounds (the order
reversed every other round, `--warmup` calls before each block: lightkit.io.measure.interleaved),
with host copies included (the CPU EP reads host memory).
PyTorch runs the same HF model in fp32 eager with torch's default intra-op threads; ORT uses its
default threads. With `--clm_artifact`, the causal LM too: prefill `--prompt` tokens, then greedy
decode with the KV cache, batch 1 and 8, PyTorch fp32 vs the ORT forms (benchmarks/lm_inference.py).
Metrics (test F1, perplexity, greedy agreement) come from each artifact's manifest (its parity
gate). The GPU rows of the inference matrix (benchmarks/inference.py) need a GPU and are not produced here.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import torch
from lm_inference import decoder_matrix
from measure import command_line, forms_summary, write_result
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.measure import interleaved, latency_summary, provenance

BATCHES = (1, 8, 32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", default="runs/ner/onnx")
    ap.add_argument("--hf_model", default="runs/ner/hf_model")
    ap.add_argument("--forms", nargs="+", default=["fp32", "int8-cpu"])
    ap.add_argument("--length", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the repeats are spread over")
    ap.add_argument("--clm_artifact", default=None, help="also time this exported causal LM (prefill + decode)")
    ap.add_argument("--clm_hf_model", default=None)
    ap.add_argument("--clm_forms", nargs="+", default=["fp32", "int8-cpu"])
    ap.add_argument("--prompt", type=int, default=128, help="causal LM prompt tokens")
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/inference-cpu.json")
    args = ap.parse_args()
    artifact = Path(args.artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    auto = (
        AutoModelForTokenClassification
        if manifest["objective"] == "TokenClassificationTask"
        else AutoModelForSequenceClassification
    )
    model = auto.from_pretrained(args.hf_model).eval()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    rows = []
    sessions = {form: OrtModel(artifact / form / "model.onnx", device="cpu") for form in args.forms}
    for batch, length in ((b, args.length) for b in BATCHES):
        ids = torch.from_numpy(rng.integers(min(1000, vocab // 2), vocab, size=(batch, length)))  # skip special ids
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        calls = {"pytorch_fp32_eager": functools.partial(model, **inputs)}
        for form, session in sessions.items():
            calls[f"ort_{form}"] = functools.partial(session.session.run, ["logits"], session.feeds(**inputs))
        with torch.inference_mode():  # interleaved rounds, the order reversed every other one
            times = interleaved(calls, args.warmup, args.repeats, args.rounds)
        row = {"shape": f"{batch}x{length}", **{name: latency_summary(t) for name, t in times.items()}}
        base = row["pytorch_fp32_eager"]["median_ms"]
        row["speedup_vs_pytorch"] = {k: base / v["median_ms"] for k, v in row.items() if k.startswith("ort_")}
        rows.append(row)
        print(json.dumps(row))
    result = {
        "what": "CPU inference latency, ONNX Runtime forms vs PyTorch eager fp32, same synthetic (random-id) inputs, "
        "interleaved",
        "command": command_line("inference_cpu.py", args),
        **provenance("transformers", "onnxruntime"),
        "model": {"task": manifest["task"], "config": manifest["source"]["config"]},
        "forms": forms_summary(manifest, args.forms),
        "rows": rows,
    }
    if args.clm_artifact:
        result["decoder"] = decoder_matrix(
            args.clm_artifact,
            args.clm_hf_model,
            args.clm_forms,
            device="cpu",
            dtypes={"pytorch_fp32": torch.float32},
            prompt=args.prompt,
            new_tokens=args.new_tokens,
            warmup=args.warmup,
            repeats=args.repeats,
        )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
