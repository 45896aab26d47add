"""How a reward model reads a prompt and a response: one function for training and for scoring.

A reward model must be fed at scoring time (PPO's `reward_model`, `ModelReward`) exactly as it was
trained (`PreferenceDataModule`): the same text, in the same order, cut to the same length. Both
call `encode_scored`, and a trained lightkit reward model saves how it read (`input_max_length` and
`response_first` in `lightkit.json`), which `ModelReward` reads back. Without that record, PPO read
512 tokens of prompt where the reward model had learned from 320, and scored text it was never
trained on.
"""

from __future__ import annotations

from typing import Any

import torch


def encode_scored(
    tokenizer: Any, prompts: list[str], responses: list[str], max_length: int, response_first: bool = False
) -> dict[str, torch.Tensor]:
    """The padded batch of each prompt with its response; the response is always read whole.

    By default the text is `prompt + response`, cut from the left (as TRL's RewardTrainer reads a
    side): right for a decoder, which scores the last token, so the response's end is read. With
    `response_first`, the response and the prompt are a text pair (`[CLS] response [SEP] prompt`),
    the prompt cut from its end: for an encoder, whose pooled first token sees the whole input, this
    keeps the start of a long prompt (an article's lead, which a headline is judged against) where
    the left cut kept only its last sentences.
    """
    side = tokenizer.truncation_side
    try:
        if response_first:
            tokenizer.truncation_side = "right"
            return tokenizer(
                responses, prompts, return_tensors="pt", padding=True, truncation="longest_first", max_length=max_length
            )
        tokenizer.truncation_side = "left"
        texts = [p + r for p, r in zip(prompts, responses)]
        return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    finally:  # the caller's tokenizer is left as it was given
        tokenizer.truncation_side = side
