"""A frozen model that reads each batch of prompts once, then only the answers that follow them.

A report scores several models' answers to the same prompts against one reference (the KL of
each model to the SFT model). The reference's forward over prompt + answer is mostly the prompt
(~300 tokens against a 24-token answer), and the prompt is the same for every model.
`CachedPrompts` keeps the reference's KV cache of each batch of prompts, and its logits at the
prompt's last position, so every model after the first costs the answer tokens only.

The answer is read a token at a time with the cache, exactly as `generate` wrote it (the same
inputs, positions and attention mask), not in one forward: the model's own distributions come
from its `generate` call, so both sides go through the same computation and a copy of the
reference scores 0 (exactly, on the headline report's 32 first held-out prompts in bf16; a copy's
weights at another address may still round a last bit differently). One forward over the answer
adds in another order, which in bf16 left 0.007 nats per answer between identical weights.

A model whose cache cannot be cut back to the prompt (sliding-window layers) reads prompt and
answer in one forward every time.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


def unless_full(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The mask, or None where no row is padded: what `generate` passes its model, whose attention
    then takes the plain causal path (the same values, added in another order)."""
    return None if bool(attention_mask.all()) else attention_mask


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as transformers' `generate` makes them."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 1)


def cache_bytes(cache: Any) -> int:
    """Bytes held by the key and value tensors of a transformers cache's layers."""
    tensors = (getattr(layer, name, None) for layer in getattr(cache, "layers", ()) for name in ("keys", "values"))
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class CachedPrompts:
    """`model` (frozen, in eval mode) with each batch of prompts it has read kept as a KV cache,
    up to `max_bytes` of caches in all: a batch read once the budget is spent is read again for
    each model, as without the cache. (The report's 112 prompts of SmolLM2-135M keep about 0.8
    GiB; one 16-prompt batch of a 7B Llama, 2.4 GiB.)"""

    def __init__(self, model: Any, max_bytes: int = 2 * 1024**3) -> None:
        self.model = model
        # transformers 5 renamed the forward's `past_key_values` to `cache`
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._read: dict[tuple[tuple[int, ...], bytes, bytes], tuple[Any, torch.Tensor]] = {}
        self.max_bytes, self.kept_bytes = max_bytes, 0

    def _prompt(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
        key = (tuple(prompt_ids.shape), prompt_ids.cpu().numpy().tobytes(), prompt_mask.cpu().numpy().tobytes())
        if key in self._read:
            return self._read[key]
        out = self.model(input_ids=prompt_ids, attention_mask=unless_full(prompt_mask),
                         position_ids=positions(prompt_mask), use_cache=True, logits_to_keep=1)  # fmt: skip
        cache = getattr(out, "cache", None) or out.past_key_values
        read = (cache if getattr(cache, "is_croppable", False) else None, out.logits.float())
        size = cache_bytes(read[0])
        if self.kept_bytes + size <= self.max_bytes:
            self._read[key] = read
            self.kept_bytes += size
        return read

    @torch.no_grad()
    def answer_logits(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, R, V) fp32 logits at the R positions that predict the response's tokens: the
        prompt's last position, then each response token's but the last. `response_mask` is 0
        where a row's answer has ended; those positions' logits are not meant to be used."""
        width = prompt_ids.size(1)
        cache, last = self._prompt(prompt_ids, prompt_mask)
        if cache is None:  # no cache to extend: one forward over prompt and answer
            attention = torch.cat([prompt_mask, response_mask[:, :-1].to(prompt_mask.dtype)], 1)
            ids = torch.cat([prompt_ids, response[:, :-1]], 1)
            out = self.model(input_ids=ids, attention_mask=attention, position_ids=positions(attention),
                             logits_to_keep=response.size(1))  # fmt: skip
            return out.logits.float()
        steps, attention = [last], prompt_mask
        try:
            for t in range(response.size(1) - 1):  # generate's decode steps: every new key attended
                attention = torch.cat([attention, attention.new_ones(attention.size(0), 1)], 1)
                out = self.model(input_ids=response[:, t : t + 1], attention_mask=unless_full(attention),
                                 position_ids=positions(attention)[:, -1:], use_cache=True,
                                 **{self._cache_arg: cache})  # fmt: skip
                steps.append(out.logits.float())
        finally:  # back to the prompt alone, for the next model's answers (a negative count removes
            cache.crop(-(cache.get_seq_length() - width))  # tokens in every transformers that has crop)
        return torch.cat(steps, 1)
