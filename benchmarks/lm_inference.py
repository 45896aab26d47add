"""The causal-LM part of the inference matrix: prefill, then greedy decode with a KV cache, PyTorch
eager against ONNX Runtime forms, on whatever device the caller names (benchmarks/inference.py on
the GPU, benchmarks/inference_cpu.py on the CPU).

Both loops do the same work per call: prefill `prompt` random tokens, then decode; argmax stays on
the device and only the new ids come back. PyTorch uses the HF model's own KV cache, ORT
`DecodeLoop.greedy` (present tensors bound as the next step's past, only `next_token` copied out).
Per-token decode time = (time for 1 + `new_tokens` tokens - time for 1) / `new_tokens`, so the
prefill and the per-call overhead cancel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from measure import attempt, forms_summary, timed
from transformers import AutoModelForCausalLM

from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import OrtModel


def decoder_matrix(
    artifact: str | Path,
    hf_model: str | Path,
    forms: list[str],
    *,
    device: str,
    dtypes: dict[str, torch.dtype],
    prompt: int,
    new_tokens: int,
    warmup: int,
    repeats: int,
    batches: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    """Rows of {batch, prompt, new_tokens, <engine>: {prefill_ms, prefill_plus_N_ms,
    decode_ms_per_token}} for PyTorch in each of `dtypes` (name -> dtype) and each ORT form in
    `forms` that the artifact holds, ORT on `device` too ("cpu" or "auto" for the CUDA EP)."""
    artifact = Path(artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    torch_device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    models = {
        name: AutoModelForCausalLM.from_pretrained(hf_model, dtype=dtype).to(torch_device).eval()
        for name, dtype in dtypes.items()
    }
    vocab = next(iter(models.values())).config.vocab_size
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        ids = torch.from_numpy(rng.integers(10, vocab, size=(batch, prompt)))
        mask = torch.ones_like(ids)
        row: dict[str, Any] = {"batch": batch, "prompt": prompt, "new_tokens": new_tokens}

        def pytorch_greedy(model: Any, steps: int) -> torch.Tensor:
            full = mask.to(torch_device)
            out = model(input_ids=ids.to(torch_device), attention_mask=full, use_cache=True)
            token, past = out.logits[:, -1].argmax(-1), out.past_key_values
            tokens = [token]
            for _ in range(steps - 1):
                full = torch.cat([full, full.new_ones(batch, 1)], dim=1)
                out = model(input_ids=token[:, None], attention_mask=full, past_key_values=past, use_cache=True)
                token, past = out.logits[:, -1].argmax(-1), out.past_key_values
                tokens.append(token)
            return torch.stack(tokens, 1).cpu()

        def cell(run: Callable[[int], Any]) -> dict[str, Any]:
            prefill = timed(lambda: run(1), warmup, repeats)
            total = timed(lambda: run(1 + new_tokens), max(1, warmup // 3), max(5, repeats // 4))
            return {
                "prefill_ms": prefill,
                f"prefill_plus_{new_tokens}_ms": total,
                "decode_ms_per_token": round((total["median_ms"] - prefill["median_ms"]) / new_tokens, 4),
            }

        with torch.inference_mode():
            for name, model in models.items():
                row[name] = attempt(lambda: cell(lambda steps: pytorch_greedy(model, steps)))
        for form in forms:
            if form not in manifest["forms"]:
                continue
            session = OrtModel(artifact / form / "model.onnx", device=device)
            loop = DecodeLoop(session)
            row[f"ort_{form}"] = attempt(lambda: cell(lambda steps: loop.greedy(ids, mask, steps)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {
        "task": manifest["task"],
        "config": manifest["source"]["config"],
        "forms": forms_summary(manifest, forms),
        "rows": rows,
    }
