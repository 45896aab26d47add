"""Decoding refiners: repair what a model decodes before it is reported or served.

NER: per-word argmax can emit tag sequences no annotation scheme allows (`I-PER` after `O`, or
after `B-LOC`). seqeval's default mode silently reads such an `I-X` as the start of an entity;
strict scorers and downstream code reject it. `constrained_viterbi` finds the highest-scoring
sequence among the valid ones (IOB2, or BIOES when the labels use S-/E-), so when argmax is valid
it returns argmax unchanged, and otherwise the best valid repair.

Generation: `refine_sequence` re-scores a decoded response by coordinate descent over its
positions, trying the model's top-k tokens at each and keeping only changes that raise
log P(Y|X) (plus an optional length penalty and reward), batched through an ONNX Runtime session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def _split(label: str) -> tuple[str, str]:
    prefix, _, kind = label.partition("-")
    return (prefix, kind) if kind else ("O", "")


def transition_rules(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start, allowed, end) boolean masks over label ids for IOB2 or BIOES label sets.

    start[j]: a sentence may begin with j; allowed[i, j]: j may follow i; end[i]: may end with i.
    """
    parts = [_split(label) for label in labels]
    bioes = any(p in ("S", "E") for p, _ in parts)
    n = len(labels)
    start, end = torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    allowed = torch.ones(n, n, dtype=torch.bool)
    for j, (pj, kj) in enumerate(parts):
        continues = pj in ("I", "E")  # needs an open span of the same type before it
        if continues:
            start[j] = False
        for i, (pi, ki) in enumerate(parts):
            if continues:
                allowed[i, j] = pi in ("B", "I") and ki == kj
            elif bioes and pi in ("B", "I"):
                allowed[i, j] = False  # a BIOES span must close with E- before anything else
        if bioes and pj in ("B", "I"):
            end[j] = False
    return start, allowed, end


def constrained_viterbi(scores: torch.Tensor, start: torch.Tensor, allowed: torch.Tensor, end: torch.Tensor) -> list[int]:
    """Best label path under the rules for one sentence; `scores` (T, L) are log-probabilities."""
    if scores.size(0) == 0:
        return []
    neg = torch.tensor(float("-inf"), dtype=scores.dtype)
    trans = torch.where(allowed, torch.zeros((), dtype=scores.dtype), neg)  # (L, L)
    best = torch.where(start, scores[0], neg)
    back = []
    for t in range(1, scores.size(0)):
        total = best.unsqueeze(1) + trans  # (from, to)
        best, arg = total.max(dim=0)
        best = best + scores[t]
        back.append(arg)
    best = torch.where(end, best, neg)
    path = [int(best.argmax())]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


def decode_words(
    logits: torch.Tensor,
    word_ids: Sequence[int | None],
    num_words: int,
    rules: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> list[int]:
    """Per-word label ids of one sentence, read at each word's first subword.

    `logits` (T, L) per token, `word_ids` the word of each token (None or negative off words).
    Argmax per word, or with `rules` (from `transition_rules`) the best valid sequence. Words with
    no subword (cut by truncation) get label 0 (O), so they count as missed rather than vanish.
    """
    first: dict[int, int] = {}  # word -> position of its first subword
    for position, word in enumerate(word_ids):
        if word is not None and word >= 0:
            first.setdefault(word, position)
    scores = logits[list(first.values())].float()
    path = constrained_viterbi(torch.log_softmax(scores, dim=-1).cpu(), *rules) if rules is not None else scores.argmax(-1).tolist()
    labels = [0] * num_words
    for word, label in zip(first, path):
        labels[word] = label
    return labels


def invalid_transitions(tags: Sequence[str], bioes: bool = False) -> int:
    """How many tags break the scheme (an I-X/E-X that does not continue an X span)."""
    bad, previous = 0, ("O", "")
    for tag in tags:
        prefix, kind = _split(tag)
        if prefix in ("I", "E") and not (previous[0] in ("B", "I") and previous[1] == kind):
            bad += 1
        previous = (prefix, kind)
    return bad


# -- generation ------------------------------------------------------------------------------------
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
