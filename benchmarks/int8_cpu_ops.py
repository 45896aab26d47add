"""Which ops the int8-cpu form should quantise: size, latency and agreement of each choice, in one run.

    python benchmarks/int8_cpu_ops.py --artifact runs/ner/onnx --hf_model runs/ner/hf_model \
        --out benchmarks/results/int8-cpu-ops-cpu.json

From the artifact's fp32 graph, fused as `lightkit export` fuses it, dynamic QInt8 with three op
sets: MatMul/Gemm only (lightkit before 2026-11-23), plus the fused Attention (QAttention), plus
the embedding tables (QEmbedLayerNormalization; lightkit's INT8_CPU_OPS, whose Gather has nothing
to quantise on a fused graph). Each is timed with ORT on the CPU (2 threads, batch 1, fixed random
128-token input, medians) beside the fp32 graph, and compared with it (max |logit diff|, argmax
agreement on that input). The task metric of the shipped choice is in the export manifest and
`lightkit evaluate`. """

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from measure import command_line, timed, write_result
from transformers import AutoConfig

from lightkit.export.builder.onnx_export import INT8_CPU_OPS, fuse, quantize_int8_cpu
from lightkit.io.measure import provenance

OP_SETS = {
    "matmul_gemm": ["MatMul", "Gemm"],
    "plus_attention": ["MatMul", "Gemm", "Attention"],
    "lightkit": INT8_CPU_OPS,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True, help="a `lightkit export` folder with an fp32 form")
    ap.add_argument(
        "--hf_model", required=True, help="the Hugging Face folder the artifact came from (for the fusion's shapes)"
    )
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results/int8-cpu-ops-cpu.json")
    args = ap.parse_args()
    fp32 = Path(args.artifact) / "fp32" / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads

    def session(path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    reference = session(fp32)
    model = SimpleNamespace(config=AutoConfig.from_pretrained(args.hf_model))  # fuse() reads only the config
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.config.vocab_size, (1, args.length))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {i.name: feeds[i.name].astype(np.int64) for i in reference.get_inputs()}
    want = reference.run(None, feeds)[0]
    rows: dict[str, Any] = {
        "fp32": {"mib": os.path.getsize(fp32) / 2**20, **timed(lambda: reference.run(None, feeds), 5, args.repeats)}
    }
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        if not fuse(model, fp32, fused):
            raise SystemExit(f"{args.hf_model}: not a model type ORT's BERT fusion applies to")
        for name, ops in OP_SETS.items():
            path = Path(tmp) / f"{name}.onnx"
            quantize_int8_cpu(fused, path, ops)  # the export's own call, with this op set
            s = session(path)
            got = s.run(None, feeds)[0]
            kept_float = sorted(
                {n.op_type for n in onnx.load(str(path)).graph.node}
                & {"MatMul", "Attention", "EmbedLayerNormalization"}
            )
            rows[name] = {
                "ops": ops,
                "mib": os.path.getsize(path) / 2**20,
                **timed(lambda: s.run(None, feeds), 5, args.repeats),
                "max_abs_diff": float(np.abs(got - want).max()),
                "argmax_agreement": float((got.argmax(-1) == want.argmax(-1)).mean()),
                "float_ops_left": kept_float,
            }
            print(name, {k: v for k, v in rows[name].items() if k != "ops"}, flush=True)
    result = {
        "what": "int8-cpu op sets: size and ORT CPU latency at batch 1 against the fp32 graph, one run",
        "command": command_line("int8_cpu_ops.py", args),
        **provenance("onnxruntime", "onnx", threads=args.threads),
        "shape": f"1x{args.length}",
        "forms": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
