"""transformers' `generate` over a list of rendered prompts, a batch at a time: the one loop that
greedy answers (`lightkit.metrics.answers`) and sampled preference pairs
(`lightkit.data.sampled_pairs`) both run, so both pad, batch and cast alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from lightkit.models.shared_prefill import shared_prefill


def autocast(model: Any) -> torch.autocast:
    """bf16 autocast on CPU (what the chain trains in); the model's own dtype elsewhere."""
    return torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=model.device.type == "cpu")


@torch.no_grad()
def generate_batches(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int,
    context: Callable[[], Any] | None = None,
    **generate: Any,
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """For each batch of `prompts` (rendered as the model is fed them: no special tokens added),
    its left-padded encoding and `generate`'s output (prompt and new tokens), run in `context`
    (default `autocast`). `generate` takes transformers' generation arguments; the pad and EOS
    ids default to the tokenizer's. With `num_return_sequences` each prompt is prefilled once
    (`shared_prefill`)."""
    context = context or (lambda: autocast(model))
    eos = tokenizer.eos_token_id
    generate = {"pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                "eos_token_id": eos, **generate}  # fmt: skip
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        enc = {key: value.to(model.device) for key, value in enc.items()}
        with context(), shared_prefill(model, generate.get("num_return_sequences", 1)):
            out = model.generate(**enc, **generate)
        yield enc, out
