"""How a reward model reads a prompt and a response: one function for training and for scoring.

A reward model must be fed at scoring time (PPO's `reward_model`, `ModelReward`) exactly as it was
trained (`PreferenceDataModule`): the same text, cut to the same length. Both call
`encode_scored`, and a trained lightkit reward model records the length it read in
`lightkit.json` beside its weights (`trained_max_length` reads it back). Without that record,
PPO read 512 tokens of prompt where the reward model had learned from 320, and scored text it was
never trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

SETTINGS_FILE = "lightkit.json"


def encode_scored(tokenizer: Any, prompts: list[str], responses: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """The padded batch of `prompt + response` texts, cut from the left: the response, whose end
    decides a preference, is always read whole (as TRL's RewardTrainer reads a pair's sides)."""
    tokenizer.truncation_side = "left"
    texts = [p + r for p, r in zip(prompts, responses)]
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)


def trained_max_length(path: str | Path) -> int | None:
    """The input length the reward model at `path` (a saved folder or a lightkit checkpoint) was
    trained on; None for any other model (e.g. a Hub classifier)."""
    path = Path(path).expanduser()
    if path.is_dir():
        settings = path / SETTINGS_FILE
        return json.loads(settings.read_text()).get("input_max_length") if settings.exists() else None
    if path.is_file():  # mmap: the hyperparameters without reading the weights
        ckpt = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        return dict(ckpt.get("hyper_parameters", {})).get("input_max_length")
    return None  # a Hub id
