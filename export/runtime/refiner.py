"""The generation refiner: move a decoded response Y0 toward argmax log P(Y|X) + length term + reward.

A local search over one-token edits of Y: substitute the token at a position, insert one before
it, or delete it. The candidate tokens at a position are the model's own top-k there, given the
current prefix, so a round considers about |Y| x (2k + 1) neighbours. All of them are scored in
batches that reuse the prompt's KV cache (`DecodeLoop.prefill` / `continuation_logprobs`): the
prompt runs once per refinement, and a round costs ceil(neighbours / batch_size) model calls (on
the fused decoder graph, whose GroupQueryAttention takes one candidate per run over the shared
cache, one call per neighbour: the same budget buys fewer candidates there; see
`OrtModel.positions_inside`). The
best neighbour replaces Y only if it raises the objective, so the result never scores below Y0;
the search ends at a local optimum or when the budget (model calls, milliseconds) is spent.

Insertions and deletions change |Y|, so a length term acts (a substitution-only search keeps |Y|
fixed and its length term constant). It needs one: every token costs log-probability, so pure
argmax log P(Y|X) deletes its way to the shortest answer (the "empty string" mode of MAP
decoding). By default the weight is Y0's own mean token cost, which makes Y0's length neutral: a
deletion pays only if it removes a costlier-than-average token, an insertion only if it adds a
cheaper one. An explicit weight overrides it (0 is pure MAP). A final end-of-sequence token is kept in place: the edits
are to the text before it. Token-classification decoding (constrained Viterbi) is
`lightkit.objectives.word_tags`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.errors import InputError

#: A batched reward on token ids: one float per candidate response (its text before any EOS).
TokenReward = Callable[[list[list[int]]], Sequence[float]]


@dataclass
class Refined:
    tokens: list[int]  # the refined response
    before: float  # objective of Y0
    after: float  # objective of the result (>= before)
    logprob: float  # log P(result | prompt)
    length_weight: float  # per token of the result before EOS, as used (resolved when given None)
    calls: int  # model calls, the prompt's included
    seconds: float
    moves: dict[str, int] = field(default_factory=lambda: {"substitute": 0, "insert": 0, "delete": 0})


def check_budget(max_calls: int | None, max_ms: float | None) -> None:
    if max_calls is None and max_ms is None:
        raise InputError("refiner: give a budget, max_calls or max_ms")
    if max_calls is not None and max_calls < 2:
        raise InputError(f"refiner: max_calls must be at least 2 (the prompt, then Y0), got {max_calls}")
    if max_ms is not None and max_ms <= 0:
        raise InputError(f"refiner: max_ms must be > 0, got {max_ms}")


class _Scorer:
    """The objective of candidate responses, batched over one prefilled prompt, counting calls."""

    def __init__(
        self,
        session: OrtModel,
        prompt: torch.Tensor,
        length_weight: float,
        reward: TokenReward | None,
        batch_size: int,
        eos: int | None,
        max_calls: int | None,
        deadline: float | None,
    ) -> None:
        # The budget counts session runs. The fused graph scores one candidate per run over the
        # prompt's cache (OrtModel.positions_inside), so there a call is one candidate.
        if getattr(session, "positions_inside", False):
            batch_size = 1
        self.loop, self.length_weight, self.reward, self.batch_size = (
            DecodeLoop(session),
            length_weight,
            reward,
            batch_size,
        )
        self.eos, self.max_calls, self.deadline = eos, max_calls, deadline
        self.calls = 1
        self.cache = self.loop.prefill(prompt)

    def spent(self) -> bool:
        over_calls = self.max_calls is not None and self.calls >= self.max_calls
        return over_calls or (self.deadline is not None and time.perf_counter() >= self.deadline)

    def values(self, chunk: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model call: the objective and log-prob of each candidate, the per-position log-probs
        (N, R, V) and the lengths."""
        lengths = torch.tensor([len(c) for c in chunk])
        tokens = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for i, c in enumerate(chunk):
            tokens[i, : len(c)] = torch.tensor(c)
        steps = self.loop.continuation_logprobs(self.cache, tokens, lengths)  # (N, R, V)
        self.calls += 1
        first = self.cache.next_logprobs[tokens[:, 0]]
        rest = steps[:, :-1].gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        rest = rest.masked_fill(torch.arange(rest.size(1)) >= (lengths - 1).view(-1, 1), 0.0)
        logprob = first + rest.sum(-1)
        body = [c[:-1] if self.eos is not None and c and c[-1] == self.eos else c for c in chunk]
        value = logprob + self.length_weight * torch.tensor([len(b) for b in body], dtype=torch.float)
        if self.reward is not None:
            value = value + torch.tensor([float(r) for r in self.reward(body)])
        return value, logprob, steps, lengths

    def score(self, candidates: list[list[int]]) -> tuple[int, float, float, torch.Tensor] | None:
        """(index, objective, log-prob, per-position log-probs) of the best candidate scored before
        the budget ran out, or None if none was. The per-position log-probs (|Y| + 1, V) are row t:
        the distribution of token t given the prompt and Y[:t] (the edit options of position t)."""
        best = None
        for start in range(0, len(candidates), self.batch_size):
            if self.spent():
                break
            chunk = candidates[start : start + self.batch_size]
            value, logprob, steps, lengths = self.values(chunk)
            i = int(value.argmax())
            if best is None or float(value[i]) > best[1]:
                dists = torch.cat([self.cache.next_logprobs.view(1, -1), steps[i, : int(lengths[i])]])
                best = (start + i, float(value[i]), float(logprob[i]), dists)
        return best


def objective(
    session: OrtModel,
    prompt: torch.Tensor,
    responses: Sequence[Sequence[int]],
    *,
    length_weight: float = 0.0,
    reward: TokenReward | None = None,
    batch_size: int = 32,
    eos_token_id: int | None = None,
) -> list[tuple[float, float]]:
    """(objective, log P(Y|X)) of each response, exactly as `refine` scores them: the prompt runs
    once, the responses in batches over its cache. For ranking other decoders' candidates (a
    best-of-N baseline) on the refiner's objective."""
    scorer = _Scorer(session, prompt, length_weight, reward, batch_size, eos_token_id, None, None)
    out: list[tuple[float, float]] = []
    for start in range(0, len(responses), batch_size):
        value, logprob, _, _ = scorer.values([list(r) for r in responses[start : start + batch_size]])
        out += zip(value.tolist(), logprob.tolist())
    return out


def neighbours(tokens: list[int], dists: torch.Tensor, top_k: int, eos: int | None) -> list[tuple[str, list[int]]]:
    """Every one-token edit of `tokens` before a final EOS, with the top-k tokens of each position."""
    end = len(tokens) - 1 if eos is not None and tokens and tokens[-1] == eos else len(tokens)
    body, tail = tokens[:end], tokens[end:]
    options = dists.topk(min(top_k + 2, dists.size(-1)), dim=-1).indices.tolist()
    seen, moves = {tuple(tokens)}, []

    def add(kind: str, candidate: list[int]) -> None:
        if tuple(candidate) not in seen:
            seen.add(tuple(candidate))
            moves.append((kind, candidate))

    for t in range(end + 1):
        # No EOS inside the text; at the end of an unfinished response, EOS may be appended.
        picks = [o for o in options[t] if o != eos or (t == end and not tail)][:top_k]
        for o in picks:
            if t < end and o != body[t]:
                add("substitute", body[:t] + [o] + body[t + 1 :] + tail)
            add("insert", body[:t] + [o] + body[t:] + tail)
        if t < end and end > 1:
            add("delete", body[:t] + body[t + 1 :] + tail)
    return moves


def refine(
    session: OrtModel,
    prompt: torch.Tensor,
    response: Sequence[int],
    *,
    top_k: int = 4,
    length_weight: float | None = None,
    reward: TokenReward | None = None,
    max_calls: int | None = 32,
    max_ms: float | None = None,
    batch_size: int = 32,
    eos_token_id: int | None = None,
) -> Refined:
    """Best-improvement local search from `response` (see the module docstring).

    Args:
        session: an artifact's decoder form (anything with `prefill` and `continuation_logprobs`).
        prompt: (P,) token ids of the prompt (chat template applied, if any).
        response: Y0, the decoded token ids (a final `eos_token_id` stays in place).
        length_weight: added per token of Y (before EOS); > 0 favours longer answers. None: Y0's
            mean token cost, so that Y0's length is neutral (see the module docstring).
        reward: batched extra term on the candidates' token ids (see `TokenReward`).
        max_calls / max_ms: the budget; the first of the two to run out ends the search.
        batch_size: candidates per model call.
    """
    check_budget(max_calls, max_ms)
    if top_k < 1 or batch_size < 1:
        raise InputError(f"refiner: top_k and batch_size must be >= 1, got {top_k} and {batch_size}")
    start = time.perf_counter()
    deadline = start + max_ms / 1000 if max_ms is not None else None
    scorer = _Scorer(session, prompt, length_weight or 0.0, reward, batch_size, eos_token_id, max_calls, deadline)
    current = list(response)
    if not current:
        raise InputError("refiner: the response to refine is empty")
    first = scorer.score([current])
    if first is None:  # the budget ended before Y0 could be scored: nothing to compare against
        raise InputError(f"refiner: the budget ({max_calls} calls, {max_ms} ms) ran out before Y0 was scored")
    _, value, logprob, dists = first
    if length_weight is None:
        body = len(current) - (eos_token_id is not None and current[-1] == eos_token_id)
        scorer.length_weight = -logprob / max(body, 1)
        value += scorer.length_weight * body
    result = Refined(current, value, value, logprob, scorer.length_weight, scorer.calls, 0.0)
    while not scorer.spent():
        moves = neighbours(current, dists, top_k, eos_token_id)
        best = scorer.score([c for _, c in moves]) if moves else None
        if best is None or best[1] <= value + 1e-6:
            break
        i, value, logprob, dists = best
        current = moves[i][1]
        result.moves[moves[i][0]] += 1
    result.tokens, result.after, result.logprob = current, value, logprob
    result.calls, result.seconds = scorer.calls, time.perf_counter() - start
    return result
