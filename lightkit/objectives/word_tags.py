"""Decoding for token classification: per-word labels read at each word's first subword, and
constrained Viterbi over the label scheme.

Per-word argmax can emit tag sequences no annotation scheme allows (`I-PER` after `O`, or after
`B-LOC`). seqeval's default mode silently reads such an `I-X` as the start of an entity; strict
scorers and downstream code reject it. `constrained_viterbi` finds the highest-scoring sequence
among the valid ones (IOB2, or BIOES when the labels use S-/E-), so when argmax is valid it
returns argmax unchanged, and otherwise the best valid repair. Training, `lightkit test` and the
served artifact (`lightkit.export.runtime.serving`) all decode through this module.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def constrained_viterbi(
    scores: torch.Tensor, start: torch.Tensor, allowed: torch.Tensor, end: torch.Tensor
) -> list[int]:
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
    path = (
        constrained_viterbi(torch.log_softmax(scores, dim=-1).cpu(), *rules)
        if rules is not None
        else scores.argmax(-1).tolist()
    )
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
