"""The generation refiner: re-score what a causal LM decoded, and keep only improvements.

`refine_sequence` re-scores a decoded response by coordinate descent over its positions, trying
the model's top-k tokens at each and keeping only changes that raise log P(Y|X) (plus an optional
length penalty and reward), batched through an ONNX Runtime session (or anything called like a
transformers model). Token-classification decoding (constrained Viterbi) is `lightkit.decoding`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


def sequence_logprobs(session: Any, prompt: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """log P(response | prompt) for each row of `responses` (N, R), one batched forward."""
    ids = torch.cat([prompt.expand(responses.size(0), -1), responses], dim=1)
    logits = session(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # (N, P+R, V)
    start = prompt.numel() - 1  # position t predicts token t+1
    logp = torch.log_softmax(logits[:, start:-1].float(), dim=-1)
    return logp.gather(-1, responses.unsqueeze(-1)).squeeze(-1).sum(-1)


@dataclass
class Refined:
    tokens: torch.Tensor  # (R,) the refined response
    before: float  # objective of the initial response
    after: float  # objective of the refined one (>= before)
    changes: int  # positions changed
    seconds: float  # time spent refining


def refine_sequence(
    session: Any,
    prompt: torch.Tensor,
    response: torch.Tensor,
    top_k: int = 5,
    sweeps: int = 2,
    length_penalty: float = 0.0,
    reward: Callable[[torch.Tensor], float] | None = None,
) -> Refined:
    """Coordinate descent on `objective(Y) = log P(Y|X) + length_penalty * |Y| (+ reward(Y))`.

    Starting from the decoded response Y0, each sweep visits every position, tries the model's
    top-k tokens there (given the current prefix), scores all k variants in one batched forward
    and keeps the best if it raises the objective. A change is only ever kept when it improves,
    so the result never scores below Y0. Stops after `sweeps` or a sweep with no change.

    Args:
        session: an `OrtModel` of a causal LM (or anything called like a transformers model).
        prompt: (P,) prompt token ids; response: (R,) decoded token ids.
        reward: optional extra term on the token ids (e.g. decode and call a reward function).
    """
    start = time.perf_counter()
    prompt, best = prompt.view(1, -1), response.clone().view(1, -1)

    def objective(candidates: torch.Tensor) -> torch.Tensor:
        value = sequence_logprobs(session, prompt, candidates) + length_penalty * candidates.size(1)
        if reward is not None:
            value = value + torch.tensor([reward(c) for c in candidates])
        return value

    best_score = float(objective(best)[0])
    before, changes = best_score, 0
    for _ in range(sweeps):
        improved = False
        for t in range(best.size(1)):
            ids = torch.cat([prompt, best], dim=1)
            logits = session(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, prompt.size(1) + t - 1]
            options = logits.topk(top_k).indices
            options = options[options != best[0, t]]
            if options.numel() == 0:
                continue
            candidates = best.repeat(options.numel(), 1)
            candidates[:, t] = options
            scores = objective(candidates)
            i = int(scores.argmax())
            if float(scores[i]) > best_score + 1e-6:
                best, best_score = candidates[i : i + 1].clone(), float(scores[i])
                changes += 1
                improved = True
        if not improved:
            break
    return Refined(best[0], before, best_score, changes, time.perf_counter() - start)
