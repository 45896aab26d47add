"""The KV-cache loop of an exported decoder: what runs an `OrtModel` session token by token.

Generation (greedy, or sampled from the exported top-k candidates), forced decoding (the parity
gate's check of the loop against PyTorch's path) and a prompt prefilled once and scored many times
(the refiner's batches) all step through one loop, `_decode`, over a `DecodeBatch`: prefill with
an empty past, then one token per step, the present tensors bound as the next step's past where
the session computed them (IO binding; GPU memory on the CUDA EP), only the decoding outputs
coming back to the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lightkit.export.runtime.decode_batch import DecodeBatch
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.errors import InputError


@dataclass
class PromptCache:
    """A prefilled prompt: its per-layer KV cache (batch 1), the log-probs of the token after it,
    and its length."""

    past: dict[str, np.ndarray]
    next_logprobs: torch.Tensor  # (V,)
    length: int


def sample_candidates(
    logits: np.ndarray,
    ids: np.ndarray,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """One token per row from its (k,) best candidates (sorted best first, as TopK returns them)."""
    scores = logits.astype(np.float64) / temperature
    if top_k is not None:
        scores[:, top_k:] = -np.inf
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p is not None:  # nucleus: the smallest prefix whose mass reaches top_p (always >= 1 token)
        keep = np.cumsum(probs, axis=1) - probs < top_p
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    choice = np.array([rng.choice(probs.shape[1], p=row) for row in probs])
    return ids[np.arange(ids.shape[0]), choice].astype(np.int64)


class DecodeLoop:
    """The KV-cache loop over `model` (a decoder's session; see the module docstring)."""

    def __init__(self, model: OrtModel) -> None:
        self.model = model

    def greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Greedy continuation (B, <= max_new_tokens) of left-padded prompts; see `generate`."""
        return self.generate(input_ids, attention_mask, max_new_tokens, eos_token_id)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stopped: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> torch.Tensor:
        """Continuation (B, <= max_new_tokens) of left-padded prompts, reusing the KV cache.

        A row is finished at `eos_token_id`, or when `stopped` (given the (B, t) tokens so far)
        marks it, e.g. on a stop string; a finished row is padded with `eos_token_id` (0 without
        one) and the loop ends when every row is finished.

        Prefill runs the prompts with an empty past; each step then feeds one token and the
        previous step's present tensors (see `_decode`). Only the graph's decoding outputs come
        back to the host, never the logits: `next_token`
        (argmax, B ids) for greedy, or `top_logits`/`top_ids` (the B x k best, k = 64 at export)
        for sampling with `temperature` > 0, `top_k` <= k and/or `top_p`. Sampling draws from
        those k candidates, which is exact for top_k <= k and drops the tail beyond them otherwise.
        """
        sample = temperature > 0
        outputs = {o.name: o for o in self.model.session.get_outputs()}
        if sample and "top_ids" not in outputs:
            raise InputError(
                f"{self.model.path}: sampling needs the top_logits/top_ids outputs; re-export the model with this "
                "lightkit"
            )
        if sample and top_k is not None and not 0 < top_k <= outputs["top_ids"].shape[1]:
            raise InputError(
                f"top_k={top_k}: the artifact exports the {outputs['top_ids'].shape[1]} best tokens per step; use "
                "1..that"
            )
        rng = np.random.default_rng(seed)
        new, done = [], np.zeros(input_ids.size(0), dtype=bool)

        pad = eos_token_id if eos_token_id is not None else 0

        def choose(values: list[np.ndarray]) -> np.ndarray | None:
            nonlocal done
            token = sample_candidates(values[0], values[1], temperature, top_k, top_p, rng) if sample else values[0]
            token = np.where(done, pad, token)
            if eos_token_id is not None:
                done |= token == eos_token_id
            new.append(token)
            if stopped is not None:
                done |= stopped(np.stack(new, axis=1))
            return None if done.all() or len(new) == max_new_tokens else token

        self._decode(input_ids, attention_mask, ["top_logits", "top_ids"] if sample else ["next_token"], choose)
        return torch.from_numpy(np.stack(new, axis=1))

    def prefill(self, prompt: torch.Tensor) -> PromptCache:
        """One prompt (P,) run once: its KV cache and the next-token log-probs after it, so that
        many continuations can be scored without running the prompt again (`continuation_logprobs`)."""
        ids = prompt.view(1, -1)
        feeds = self.model.feeds(input_ids=ids, attention_mask=torch.ones_like(ids))
        logits, *present = self.model.session.run(["logits", *self.model.present_names], feeds)
        past = {i.name: value for i, value in zip(self.model.past, present)}
        return PromptCache(past, torch.log_softmax(torch.from_numpy(logits[0, -1]).float(), dim=-1), ids.size(1))

    def continuation_logprobs(self, cache: PromptCache, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs (N, R, V) after each prefix of N right-padded continuations (N, R)
        of a prefilled prompt: row i, step t is the distribution of token t + 1 given the prompt and
        tokens[i, :t + 1]. Padding past `lengths` is masked out and never seen by real tokens (causal)."""
        n, r = tokens.shape
        if self.model.positions_inside and n > 1:  # batch 1 only over a past (OrtModel.positions_inside)
            rows = [self.continuation_logprobs(cache, tokens[i : i + 1], lengths[i : i + 1]) for i in range(n)]
            return torch.cat(rows)
        mask = torch.arange(r).expand(n, r) < lengths.view(-1, 1)
        feeds = {
            "input_ids": tokens.cpu().numpy().astype(np.int64),
            "attention_mask": np.concatenate([np.ones((n, cache.length), np.int64), mask.numpy().astype(np.int64)], 1),
        }
        if not self.model.positions_inside:
            feeds["position_ids"] = np.broadcast_to(np.arange(cache.length, cache.length + r), (n, r)).copy()
        # The prompt's cache is repeated per row: the graph takes one past per row. A copy of the
        # cache, far cheaper than running the prompt again for every candidate.
        feeds.update({name: np.repeat(value, n, axis=0) for name, value in cache.past.items()})
        logits = torch.from_numpy(self.model.session.run(["logits"], feeds)[0]).float()
        return torch.log_softmax(logits, dim=-1)

    def forced(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) of the KV-cache loop fed `tokens` (B, T) instead of its own picks.

        Step t sees the prompt plus tokens[:, :t], exactly as `generate` would had it chosen them,
        so the loop is checked token by token against a reference path without one early
        near-tie sending the rest of the sequence elsewhere (what the parity gate needs).
        """
        logits: list[np.ndarray] = []

        def choose(values: list[np.ndarray]) -> np.ndarray | None:
            logits.append(values[0][:, -1])
            return None if len(logits) == tokens.size(1) else tokens[:, len(logits) - 1].numpy()

        self._decode(input_ids, attention_mask, ["logits"], choose)
        return torch.from_numpy(np.stack(logits, axis=1)).float()

    def _decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        host_outputs: list[str],
        choose: Callable[[list[np.ndarray]], np.ndarray | None],
    ) -> None:
        """Prefill, then one token per step until `choose` (given the host outputs) returns None."""
        batch = DecodeBatch(self.model, host_outputs)
        values = batch.start(input_ids.cpu().numpy().astype(np.int64), attention_mask.cpu().numpy().astype(np.int64))
        while (token := choose(values)) is not None:
            values = batch.step(np.asarray(token, dtype=np.int64))
