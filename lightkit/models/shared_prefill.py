"""Sampling several answers per prompt without reading each prompt several times.

Sampling k answers per prompt (on-policy pairs, GRPO's groups) repeats each prompt k times
before `generate`; its prefill, a forward over every prompt token, then runs k times over the
same rows. With ~300-token prompts and 24-token answers that prefill is most of the sampling time
on a CPU. `shared_prefill` runs it once per distinct prompt and repeats the filled KV cache and the
last logits k times, so the decode steps, the sampling RNG and therefore the samples stay exactly
those of the repeated batch: a row of a forward does not depend on the other rows in its batch
(checked bit for bit in bf16 on CPU by tests/test_shared_prefill.py, which would fail if a kernel
ever made it so).

transformers has no option for this: `num_return_sequences` expands the inputs before the
prefill (`_expand_inputs_for_generation`), so the model's first forward is wrapped instead, for
the one `generate` call inside the context.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# The inputs of a causal LM's forward whose first dimension is the batch.
_BATCHED = ("input_ids", "attention_mask", "position_ids", "inputs_embeds")


def _repeated(ids: torch.Tensor, repeats: int) -> bool:
    """Whether the rows of `ids` are groups of `repeats` equal consecutive rows."""
    if ids.size(0) % repeats:
        return False
    return torch.equal(ids, ids[::repeats].repeat_interleave(repeats, 0))


@contextmanager
def shared_prefill(model: Any, repeats: int) -> Iterator[None]:
    """Within the context, the first forward of `model` (the prefill of one `generate` call whose
    rows come in groups of `repeats` equal prompts) runs on one row per group. Falls back to the
    plain forward when the rows are not so grouped."""
    if repeats <= 1:
        yield
        return
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the model generate calls
    original, own = inner.forward, inner.__dict__.get("forward")  # own: an instance forward already set
    pending = True

    @functools.wraps(original)  # generate reads forward's signature (it passes logits_to_keep only if named there)
    def forward(*args: Any, **kwargs: Any) -> Any:
        nonlocal pending
        first, pending = pending, False
        ids = kwargs.get("input_ids")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if not first or args or ids is None or cache is None or cache.get_seq_length() or not _repeated(ids, repeats):
            return original(*args, **kwargs)
        rows = {k: v[::repeats] if k in _BATCHED and isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        out = original(**rows)
        cache.batch_repeat_interleave(repeats)  # filled in place by the forward, one row per prompt
        out.logits = out.logits.repeat_interleave(repeats, 0)
        return out

    inner.forward = forward
    try:
        yield
    finally:
        if own is None:
            del inner.forward  # the class's forward again
        else:
            inner.forward = own
