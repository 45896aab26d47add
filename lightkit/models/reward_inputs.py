"""How a reward model reads a prompt and a response: one function for training and for scoring.

A reward model must be fed at scoring time (PPO's `reward_model`, `ModelReward`) exactly as it was
trained (`PreferenceDataModule`): the same text, cut to the same length. Both call
`encode_scored`, and a trained lightkit reward model saves the length it read
(`input_max_length` in `lightkit.json`), which `ModelReward` reads back. Without that record,
PPO read 512 tokens of prompt where the reward model had learned from 320, and scored text it was
never trained on.
"""

from __future__ import annotations

from typing import Any

import torch


def encode_scored(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """The padded batch of `texts` (prompt and response), each cut from the left: the response,
    whose end decides a preference, is always read whole (as TRL's RewardTrainer reads a side)."""
    side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    finally:  # the caller's tokenizer is left as it was given
        tokenizer.truncation_side = side
