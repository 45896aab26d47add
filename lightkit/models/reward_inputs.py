"""How a reward model reads a prompt and a response: one function for training and for scoring.

A reward model must be fed at scoring time (PPO's `reward_model`, `ModelReward`) exactly as it was
trained (`PreferenceDataModule`): the same text, in the same order, cut to the same length. Both
call `encode_scored`, and a trained lightkit reward model saves how it read (`input_max_length`,
`response_first` and `reference_column` in `lightkit.json`), which `ModelReward` reads back.
Without that record, PPO read 512 tokens of prompt where the reward model had learned from 320,
and scored text it was never trained on.
"""

from __future__ import annotations

from typing import Any

import torch


def encode_scored(
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    response_first: bool = False,
    references: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The padded batch of each prompt with its response; the response is always read whole.

    By default the text is `prompt + response`, cut from the left (as TRL's RewardTrainer reads a
    side): right for a decoder, which scores the last token, so the response's end is read. With
    `response_first`, the response and the prompt are a text pair (`[CLS] response [SEP] prompt`),
    the prompt cut from its end: for an encoder, whose pooled first token sees the whole input, this
    keeps the start of a long prompt (an article's lead, which a headline is judged against) where
    the left cut kept only its last sentences.

    `references` (a reference answer per prompt, for a reward model that judges a response against
    it, as ROUGE or BLEURT do) take the prompt's place: `reference \n response`, or
    `[CLS] response [SEP] reference`, so an encoder compares the two texts across its [SEP], the
    layout it ranks sentence pairs in.
    """
    if references is not None and len(references) != len(responses):
        raise ValueError(f"{len(references)} references for {len(responses)} responses")
    side = tokenizer.truncation_side
    try:
        if response_first:
            tokenizer.truncation_side = "right"
            second = prompts if references is None else references
            return tokenizer(
                responses, second, return_tensors="pt", padding=True, truncation="longest_first", max_length=max_length
            )
        tokenizer.truncation_side = "left"
        firsts = prompts if references is None else [f"{r}\n" for r in references]
        texts = [p + r for p, r in zip(firsts, responses)]
        return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    finally:  # the caller's tokenizer is left as it was given
        tokenizer.truncation_side = side
