"""Prompt-only and preference-pair data for RLHF: PPO rollouts and reward-model training.

PromptDataModule      prompts (.txt lines or .jsonl rows) for PPO; every split is prompts.
PreferenceDataModule  JSONL {prompt, chosen, rejected} pairs for Bradley-Terry reward models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset

from lightkit.data.base import BaseDataModule
from lightkit.data.causal_lm import PromptsMixin, format_prompt, read_prompts
from lightkit.data.files import Rows, read_table
from lightkit.errors import InputError


class PromptDataModule(PromptsMixin, BaseDataModule):
    """Prompts for PPO: the policy samples a response to each; validation prompts measure reward.

    Files (see BaseDataModule): `.txt` with one prompt per line, or `.jsonl` rows with the
    template's fields. Batches are left-padded (generation appends on the right) and keep the
    prompt strings for the reward.

    Args:
        prompt_template: how a prompt is formatted (`{prompt}` for a .txt line); linked into the
            task and saved with the policy.
        **kwargs: tokenizer (the policy's), files, holdout, batch sizes (see BaseDataModule).
    """

    def __init__(self, prompt_template: str = "{prompt}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt_template = prompt_template

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

    Each side is scored as `prompt_template.format(**row) + response`; pairs are cut to
    max_length from the left, keeping the end of the response that decides the preference.

    Args:
        prompt_template: how the prompt is formatted before the response.
        **kwargs: tokenizer, files, holdout, batch sizes, max_length (see BaseDataModule).
    """

    def __init__(self, prompt_template: str = "{prompt}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt_template = prompt_template
        # Cut from the left: the end of a response decides the preference. The tokenizer is this
        # DataModule's own (the task loads another), so the setting reaches nothing else.
        self.tokenizer.truncation_side = "left"

    def _read(self, path: Path) -> Rows:
        pairs = []
        for row in read_table(path, ["chosen", "rejected"], self.hparams.encoding):
            where = row.pop("_where")
            not_text = [k for k in ("chosen", "rejected") if not isinstance(row[k], str)]
            if not_text:
                raise InputError(
                    f"{where}: field(s) {not_text} must be text; a preference row holds prompt, chosen and rejected "
                    "responses"
                )
            prompt = format_prompt(self.prompt_template, row, where)
            pairs.append({"chosen": prompt + row["chosen"], "rejected": prompt + row["rejected"]})
        return pairs

    def build_split(self, split: str) -> Dataset:
        rows = self.splits(self._read)[split]
        if not rows:
            raise InputError(f"{self.source(split)}: the {split} split has no preference pairs")
        return Dataset.from_list(rows)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = {}
        for side in ("chosen", "rejected"):
            enc = self.tokenizer(
                [f[side] for f in features],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.hparams.max_length,
            )
            batch.update({f"{side}_{k}": v for k, v in enc.items()})
        return batch
