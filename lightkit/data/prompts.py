"""Prompt-only and preference-pair data for RLHF: PPO rollouts and reward-model training.

PromptDataModule      prompts (.txt lines or .jsonl rows) for PPO; every split is prompts.
PreferenceDataModule  JSONL {prompt, chosen, rejected} pairs for Bradley-Terry reward models.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from lightkit.data.base import BaseDataModule
from lightkit.data.causal_lm import PromptsMixin, format_prompt, read_prompts
from lightkit.data.chat import check_messages, render
from lightkit.data.files import Rows, read_table
from lightkit.data.trl_formats import is_conversation, preference_parts
from lightkit.io.errors import InputError
from lightkit.models.reward_inputs import encode_scored


class PromptDataModule(PromptsMixin, BaseDataModule):
    """Prompts for PPO: the policy samples a response to each; validation prompts measure reward.

    Files (see BaseDataModule): `.txt` with one prompt per line, or `.jsonl` rows with the
    template's fields. A `dataset` gives rows with the template's fields, or TRL's prompt-only
    conversational rows (`prompt` as a list of turns, rendered by the chat template with the
    generation prompt). Batches are left-padded (generation appends on the right) and keep the
    prompt strings for the reward.

    Args:
        prompt_template: how a prompt is formatted (`{prompt}` for a .txt line); linked into the
            task and saved with the policy.
        **kwargs: tokenizer (the policy's), files, holdout, batch sizes (see BaseDataModule).
    """

    def __init__(self, prompt_template: str = "{prompt}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt_template = prompt_template

    def from_rows(self, rows: Rows, split: str) -> list[str]:
        prompts = []
        for row in rows:
            where = row["_where"]
            if is_conversation(row.get("prompt")):
                if not getattr(self.tokenizer, "chat_template", None):
                    raise InputError(f"{where}: a conversational prompt needs a tokenizer with a chat template")
                turns = check_messages(row["prompt"], where, need_answer=False)
                prompts.append(render(self.tokenizer, turns, generation_prompt=True))
            else:
                prompts.append(format_prompt(self.prompt_template, row, where))
        return prompts

    def build_split(self, split: str) -> Dataset:
        if split == "predict":
            return self.prompt_dataset("predict")
        prompts = self.splits(lambda path: read_prompts(path, self.prompt_template, self.hparams.encoding))[split]
        if not prompts:
            raise InputError(f"{self.source(split)}: the {split} split has no prompts")
        return Dataset.from_dict({"prompt": prompts})

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate_prompts(features)


class PreferenceDataModule(BaseDataModule):
    """Preference pairs for reward models: JSONL rows `{prompt, chosen, rejected}`.

    Each side is scored as `prompt_template.format(**row) + response`, cut to max_length from the
    left so that the response is read whole; or, with `response_first`, as the text pair
    (response, prompt) with the prompt cut from its end (`lightkit.models.reward_inputs`).
    A numeric `margin` column (how far apart the pair is, as TRL's reward datasets carry it) is
    passed on as the batch's `margin`, for RewardModelTask's `margin_scale`.

    Args:
        prompt_template: how the prompt is formatted before the response.
        response_first: read the response, then the start of the prompt: for an encoder reward
            model and prompts longer than max_length, whose start matters (an article's lead).
            Linked into RewardModelTask with max_length, and saved with the model for PPO.
        reference_column: a column holding each prompt's reference answer, read in the prompt's
            place (`encode_scored`): a reward model that judges an answer against the reference,
            for a reward defined against one (ROUGE against a real headline). Linked and saved the
            same way; PPO's prompt data must then hold the column too.
        **kwargs: tokenizer, files, holdout, batch sizes, max_length (see BaseDataModule).
    """

    def __init__(
        self,
        prompt_template: str = "{prompt}",
        response_first: bool = False,
        reference_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_template = prompt_template
        self.response_first = response_first
        self.reference_column = reference_column

    @property
    def input_max_length(self) -> int:
        """max_length, linked into RewardModelTask, which saves it with the model for PPO."""
        return self.hparams.max_length

    def _read(self, path: Path) -> Rows:
        return self.from_rows(read_table(path, ["chosen", "rejected"], self.hparams.encoding), "train")

    def from_rows(self, rows: Rows, split: str) -> Rows:
        pairs = []
        for row in rows:
            where = row["_where"]
            prompt, chosen, rejected = preference_parts(row, where)
            margin = pair_margin(row, where)
            reference = self.row_reference(row, where)
            if isinstance(chosen, list):  # conversational: each side rendered whole by the chat template
                if not getattr(self.tokenizer, "chat_template", None):
                    raise InputError(f"{where}: conversational pairs need a tokenizer with a chat template")
                sides = {s: render(self.tokenizer, prompt + turns, generation_prompt=False)
                         for s, turns in zip(("chosen", "rejected"), (chosen, rejected))}  # fmt: skip
                pairs.append({"prompt": "", **sides, "margin": margin, "reference": reference})  # each side whole
                continue
            # An implicit prompt is scored as it stands in the texts; an explicit one through the template.
            text = format_prompt(self.prompt_template, row, where) if "prompt" in row else (prompt or "")
            pairs.append({"prompt": text, "chosen": chosen, "rejected": rejected, "margin": margin,
                          "reference": reference})  # fmt: skip
        return pairs

    def row_reference(self, row: dict[str, Any], where: str) -> str | None:
        """The row's reference answer, where the data module reads one (`reference_column`)."""
        column = self.reference_column
        if column is None:
            return None
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            found = "missing" if column not in row else f"{value!r}"
            raise InputError(f"{where}: reference_column '{column}' must hold the prompt's reference answer as "
                             f"non-empty text, got {found}")  # fmt: skip
        return value

    def build_split(self, split: str) -> Dataset:
        rows = self.splits(self._read)[split]
        if not rows:
            raise InputError(f"{self.source(split)}: the {split} split has no preference pairs")
        return Dataset.from_list(rows)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = {}
        for side in ("chosen", "rejected"):  # as ModelReward will score them (lightkit.models.reward_inputs)
            prompts, responses = [f["prompt"] for f in features], [f[side] for f in features]
            references = [f["reference"] for f in features] if self.reference_column else None
            enc = encode_scored(self.tokenizer, prompts, responses, self.hparams.max_length, self.response_first,
                                references)  # fmt: skip
            batch.update({f"{side}_{k}": v for k, v in enc.items()})
        if all(f.get("margin") is not None for f in features):
            batch["margin"] = torch.tensor([f["margin"] for f in features], dtype=torch.float32)
        return batch


def pair_margin(row: dict[str, Any], where: str) -> float | None:
    """A row's `margin` as a finite number, or None where the row has none."""
    margin = row.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise InputError(f"{where}: `margin` must be a finite number (how far apart the pair is), got {margin!r}")
    return float(margin)
