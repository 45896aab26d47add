"""Where a GPT-2-small training step's time goes on a GPU, without any trainer around it.

    python benchmarks/clm_step_levers.py --out $OUT/clm-step-levers.json

Both lightkit and the HF Trainer reached the same ~13% MFU on an H100 (benchmarks/results/
train-clm-*-h100.json), so the limit is the model step itself, not the loop. This times the bare
step (forward, loss, backward, fused AdamW; random ids, fixed shape) under the levers a trainer
can pull: bf16 autocast vs bf16 weights, SDPA vs eager attention, torch.compile (steady state,
after its warm-up; `_named_loss`: without the graph break that GPT-2's unnamed loss type puts in
every compiled forward, as lightkit builds it), and profiles the autocast step's top CUDA kernels
and GPU-busy fraction.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from measure import bf16_matmul_tflops
from transformers import AutoConfig, AutoModelForCausalLM

from lightkit.io.measure import provenance, write_json


def build(attn: str, dtype: torch.dtype | None, vocab: int, activation: str, named_loss: bool = False) -> Any:
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "gpt2",
        n_embd=768,
        n_layer=12,
        n_head=12,
        vocab_size=vocab,
        n_positions=1024,
        attn_implementation=attn,
        activation_function=activation,
    )
    model = AutoModelForCausalLM.from_config(config).cuda().train()
    if named_loss:  # as CausalLMTask builds it: no warning_once (a graph break) in every forward
        model.loss_type = "ForCausalLM"
    return model.to(dtype) if dtype else model


def step_fn(model: Any, autocast: bool) -> Any:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(ids: torch.Tensor) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def tokens_per_s(step: Any, ids: torch.Tensor, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step(ids)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(ids)
    torch.cuda.synchronize()
    return ids.numel() * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--activation", default="gelu_new", help="gelu_pytorch_tanh: the same function as one fused kernel")
    ap.add_argument("--variants", nargs="*", default=None, help="a subset of the variant names")
    ap.add_argument("--no_profile", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ids = torch.randint(0, args.vocab, (args.batch_size, args.length), device="cuda")
    params = sum(p.numel() for p in build("sdpa", None, args.vocab, args.activation).parameters())
    peak = bf16_matmul_tflops() * 1e12
    results: dict[str, Any] = {}
    variants = [
        ("autocast_sdpa", "sdpa", None, True, False),
        ("autocast_eager_attention", "eager", None, True, False),
        ("bf16_weights_sdpa", "sdpa", torch.bfloat16, False, False),
        ("autocast_sdpa_compiled", "sdpa", None, True, True),
        ("autocast_sdpa_compiled_named_loss", "sdpa", None, True, True),
    ]
    for name, attn, dtype, autocast, compiled in variants:
        if args.variants and name not in args.variants:
            continue
        model = build(attn, dtype, args.vocab, args.activation, named_loss=name.endswith("_named_loss"))
        if compiled:
            model.compile()
        rate = tokens_per_s(step_fn(model, autocast), ids, 25 if compiled else 5, 20)
        results[name] = {"tokens_per_s": rate, "mfu_6N": rate * 6 * params / peak}
        print(name, json.dumps(results[name]), flush=True)
        del model
        torch.cuda.empty_cache()
    # Profile of the plain autocast step: which kernels, and how busy the GPU is.
    out = {
        "what": "bare GPT-2-small training step under trainer levers (no trainer)",
        **provenance("transformers"),
        "parameters": params,
        "shape": f"{args.batch_size}x{args.length}",
        "activation": args.activation,
        "measured_bf16_tflops": peak / 1e12,
        "results": results,
    }
    if args.no_profile:
        write_json(args.out, out)
        return
    model = build("sdpa", None, args.vocab, args.activation)
    step = step_fn(model, True)
    for _ in range(5):
        step(ids)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(5):
            step(ids)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = [
        e for e in prof.key_averages() if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0) > 0
    ]
    gpu_us = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: getattr(e, "self_device_time_total", 0), reverse=True)[:15]
    results["profile_autocast_sdpa"] = {
        "wall_ms_per_step": wall / 5 * 1000,
        "gpu_kernel_ms_per_step": gpu_us / 5 / 1000,
        "top_kernels_ms_per_step": {
            e.key[:90]: round(getattr(e, "self_device_time_total", 0) / 5 / 1000, 3) for e in top
        },
        "kernels_seen": len(events),
    }
    print(json.dumps(results["profile_autocast_sdpa"], indent=1))
    write_json(args.out, out)


if __name__ == "__main__":
    main()
