"""A decoder's GPU forms against PyTorch bf16 on the same GPU: prefill and decode, batch 1 and 8.

    python benchmarks/llm_gpu.py --model HuggingFaceTB/SmolLM2-135M-Instruct --out $OUT/llm-gpu.json

Made for one call of the lent GPU machine (`benchmarks/gpu_session.sh llm`, under 10 minutes):
- lightkit's forms `fp16`, `int8-gpu` and `int4-gpu`, exported here from the fused graph
  (`lightkit.export.builder.fused_decoder`) exactly as `lightkit export` writes them, each run by
  lightkit's KV-cache loop (IO binding, the cache left on the GPU), after a placement check
  (every compute node on the CUDA EP, from an ORT profile);
- PyTorch bf16 eager and bf16 under `torch.compile` (mode `reduce-overhead`: CUDA graphs, with
  transformers' static cache, its documented recipe), greedy through `generate`.
ORT's CUDA graphs are not used: they need a fixed-size KV cache shared between past and present,
and lightkit's loop grows the cache each step (the result says so).

Prompts are 128 random token ids (timing only; accuracy is the export's parity gate); prefill is a
one-token generation, end to end adds 24 new tokens, decode per token is (end to end - prefill) /
23. Each side's calls are interleaved with the others' (`lightkit.io.measure.interleaved`), the
order reversed every other round; medians and p90s are reported. `--device cpu` runs the same
script on the CPU EP (the test suite does, on a tiny model), without the placement check.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from measure import command_line, write_result
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightkit.export.builder.onnx_export import export_causal_lm, quantize_int8_gpu, to_fp16
from lightkit.export.builder.placement import placement
from lightkit.export.builder.weight_only import INT4_GPU, INT8_GPU
from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.measure import interleaved, latency_summary, provenance
from lightkit.models.resources import resolve_path

NEW_TOKENS = 24
FORMS = ("fp16", "int8-gpu", "int4-gpu")


def export_forms(model: Any, tokenizer: Any, folder: Path) -> dict[str, Any]:
    """fp32 (the source), then each GPU form; returns how the graph was made."""
    fp32 = folder / "fp32.onnx"
    _, graph = export_causal_lm(model, fp32, tokenizer=tokenizer)
    to_fp16(model, fp32, folder / "fp16.onnx")
    quantize_int8_gpu(model, fp32, folder / "int8-gpu.onnx", 8, INT8_GPU)
    quantize_int8_gpu(model, fp32, folder / "int4-gpu.onnx", 8, INT4_GPU)
    return graph


def pytorch_side(model: Any, compiled: bool, device: str) -> Any:
    """Greedy `generate` of a bf16 copy: eager, or compiled with a static cache (reduce-overhead)."""
    import copy

    bf16 = copy.deepcopy(model).to(device=device, dtype=torch.bfloat16).eval()
    extra: dict[str, Any] = {}
    if compiled:
        bf16.forward = torch.compile(bf16.forward, mode="reduce-overhead", fullgraph=True)
        extra["cache_implementation"] = "static"

    def run(ids: torch.Tensor, n: int) -> Any:
        with torch.no_grad():
            return bf16.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, pad_token_id=0, **extra)  # fmt: skip

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompt_tokens", type=int, default=128)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="the torch.compile side")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    folder = resolve_path(args.model, what="model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    work = Path(tempfile.mkdtemp(prefix="llm-gpu-"))
    graph = export_forms(model, tokenizer, work)
    sessions = {form: OrtModel(work / f"{form}.onnx", device=args.device, tf32=False) for form in FORMS}
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(10, model.config.vocab_size, (8, args.prompt_tokens), generator=generator)
    placements = {}
    for form, session in sessions.items():
        feeds = session.feeds(input_ids=prompts[:1], attention_mask=torch.ones_like(prompts[:1]))
        if args.device == "cuda":
            placements[form] = placement(session.path, feeds)
        else:
            placements[form] = {"checked": False, "reason": "run on the CPU EP (--device cpu)"}
    sides: dict[str, Any] = {}
    for form, session in sessions.items():
        loop = DecodeLoop(session)
        sides[f"lightkit {form}"] = lambda ids, n, loop=loop: loop.greedy(ids, torch.ones_like(ids), n)
    sides["PyTorch bf16 eager"] = pytorch_side(model, compiled=False, device=args.device)
    if args.compile:
        sides["PyTorch bf16 torch.compile (reduce-overhead, static cache)"] = pytorch_side(
            model, compiled=True, device=args.device
        )
    results: dict[str, Any] = {}
    for batch in (1, 8):
        ids = prompts[:batch]
        on_device = ids.to(args.device)
        calls = {}
        for name, run in sides.items():
            source = ids if name.startswith("lightkit") else on_device
            calls[f"{name}|prefill"] = lambda run=run, source=source: run(source, 1)
            calls[f"{name}|e2e"] = lambda run=run, source=source: run(source, NEW_TOKENS)
        times = interleaved(calls, warmup=2, repeats=args.repeats, rounds=args.rounds)
        for name in sides:
            prefill, whole = latency_summary(times[f"{name}|prefill"]), latency_summary(times[f"{name}|e2e"])
            row = results.setdefault(name, {})
            row[f"prefill_ms_b{batch}"], row[f"prefill_p90_ms_b{batch}"] = prefill["median_ms"], prefill["p90_ms"]
            row[f"e2e_ms_b{batch}"], row[f"e2e_p90_ms_b{batch}"] = whole["median_ms"], whole["p90_ms"]
            row[f"decode_ms_per_token_b{batch}"] = (whole["median_ms"] - prefill["median_ms"]) / (NEW_TOKENS - 1)
    for form in FORMS:
        results[f"lightkit {form}"]["bytes"] = (work / f"{form}.onnx").stat().st_size
        results[f"lightkit {form}"]["placement"] = placements[form]
    result = {
        "what": f"{args.model}: lightkit's GPU forms (ORT CUDA EP) against PyTorch bf16, prefill and decode",
        "command": command_line("llm_gpu.py", args),
        **provenance("onnxruntime", "transformers"),
        "graph": graph,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": NEW_TOKENS,
        "settings": {
            "lightkit": "lightkit.export.runtime.decode_loop.DecodeLoop.greedy, IO binding, KV cache kept on the "
            "device; TF32 off; ORT CUDA graphs not used (the loop grows the cache each step)",
            "pytorch": "transformers generate, greedy, bf16 weights; eager, and torch.compile(mode='reduce-overhead', "
            "fullgraph=True) with cache_implementation='static'",
        },
        "results": results,
    }
    write_result(args.out, result)
    for name, row in results.items():
        print(name, {k: round(v, 2) for k, v in row.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
