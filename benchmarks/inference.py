"""GPU inference matrix: PyTorch eager vs the ONNX Runtime forms of one trained model, same inputs.

    python benchmarks/inference.py --artifact runs/ner/onnx --hf_model runs/ner/hf_model \\
        --clm_artifact runs/clm/onnx --clm_hf_model runs/clm/hf_model --out $OUT/inference-gpu.json

Encoder (the NER model), shapes 1x128, 8x128, 32x128, random ids, no padding:
- PyTorch eager fp32 and bf16 (the HF model, SDPA attention), timed to a synchronised device and
  also with the host copies a server makes (ids to the GPU, logits back);
- ORT CUDA EP: fp32 with TF32 on and off, fp16 fused, int8-gpu with and without the CUTLASS
  option (`ep.cuda.fpa_intb_gemm`); each with host copies (`session.run` on numpy), with IO
  binding (inputs already on the device, logits left there), and IO binding + CUDA graph.
Causal LM (the CLM model): prefill of 128 tokens, then greedy decode, batch 1 and 8, PyTorch eager
fp32 and bf16 vs the ORT forms (benchmarks/lm_inference.py says how).

Median and p90 of `--repeats` after `--warmup`. Metrics (seqeval F1, perplexity, greedy agreement)
are the export's parity results on the real test split, read from each manifest; CPU rows come
from benchmarks/inference_cpu.py on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lm_inference import decoder_matrix
from measure import attempt, command_line, forms_summary, timed, write_result
from transformers import AutoModelForTokenClassification

from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.measure import provenance

BATCHES = (1, 8, 32)  # x --length tokens
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def ort_variants(form: str) -> list[tuple[str, dict[str, Any]]]:
    if form == "fp32":
        return [("fp32_tf32", {"tf32": True}), ("fp32_no_tf32", {"tf32": False})]
    if form == "int8-gpu":
        return [("int8-gpu", {}), ("int8-gpu_cutlass", {"fpa_intb_gemm": True})]
    return [(form, {})]


def encoder_matrix(args: argparse.Namespace) -> dict[str, Any]:
    artifact = Path(args.artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    model = AutoModelForTokenClassification.from_pretrained(args.hf_model).to(DEVICE).eval()
    bf16 = AutoModelForTokenClassification.from_pretrained(args.hf_model, dtype=torch.bfloat16).to(DEVICE).eval()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    rows = []
    for batch in BATCHES:
        length = args.length
        ids = rng.integers(min(1000, vocab // 2), vocab, size=(batch, length))
        host = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        on_gpu = {k: torch.from_numpy(v).to(DEVICE) for k, v in host.items()}
        row: dict[str, Any] = {"shape": f"{batch}x{length}"}
        with torch.inference_mode():
            for name, m in (("pytorch_fp32", model), ("pytorch_bf16", bf16)):
                row[name] = {
                    "device": timed(lambda: m(**on_gpu).logits, args.warmup, args.repeats),
                    "host_copies": timed(
                        lambda: m(**{k: torch.from_numpy(v).to(DEVICE) for k, v in host.items()}).logits.float().cpu(),
                        args.warmup,
                        args.repeats,
                    ),
                }
        for form in args.forms:
            for name, options in ort_variants(form):
                path = artifact / form / "model.onnx"
                cell: dict[str, Any] = {}
                plain = OrtModel(path, **options)
                feeds = plain.feeds(**{k: torch.from_numpy(v) for k, v in host.items()})
                cell["host_copies"] = attempt(
                    lambda: timed(lambda: plain.session.run(["logits"], feeds), args.warmup, args.repeats)
                )
                bound = plain.bind(feeds)
                cell["io_binding"] = attempt(lambda: timed(bound.run, args.warmup, args.repeats))

                def graphed() -> dict[str, float]:
                    runner = OrtModel(path, cuda_graph=True, **options).bind(feeds)
                    return timed(runner.run, args.warmup, args.repeats)

                cell["io_binding_cuda_graph"] = attempt(graphed)
                row[f"ort_{name}"] = cell
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {
        "task": manifest["task"],
        "config": manifest["source"]["config"],
        "forms": forms_summary(manifest, args.forms),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", default="runs/ner/onnx")
    ap.add_argument("--hf_model", default="runs/ner/hf_model")
    ap.add_argument("--forms", nargs="+", default=["fp32", "fp16", "int8-gpu"])
    ap.add_argument("--clm_artifact", default=None)
    ap.add_argument("--clm_hf_model", default=None)
    ap.add_argument("--clm_forms", nargs="+", default=["fp32", "fp16", "int8-gpu"])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--length", type=int, default=128, help="encoder tokens per sequence")
    ap.add_argument(
        "--allow_cpu",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run on the CPU (a smoke test of the script; CUDA-graph cells then report their error)",
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit(
            "benchmarks/inference.py measures the GPU matrix and needs CUDA (--allow_cpu: a smoke run); "
            "benchmarks/inference_cpu.py gives the CPU rows"
        )
    result: dict[str, Any] = {
        "what": "GPU inference matrix: PyTorch eager vs ONNX Runtime CUDA EP forms, same inputs, same process",
        "command": command_line("inference.py", args),
        **provenance("transformers", "onnxruntime"),
        "timing": "host clock around each call; PyTorch synchronised; ORT's run returns after its stream finished",
    }
    result["encoder"] = encoder_matrix(args)
    if args.clm_artifact:
        dtypes = {"pytorch_fp32": torch.float32, "pytorch_bf16": torch.bfloat16}
        result["decoder"] = decoder_matrix(
            args.clm_artifact,
            args.clm_hf_model,
            args.clm_forms,
            device="auto",
            dtypes=dtypes,
            prompt=args.prompt,
            new_tokens=args.new_tokens,
            warmup=args.warmup,
            repeats=args.repeats,
        )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
