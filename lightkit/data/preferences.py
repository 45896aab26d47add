"""Preference pairs for a policy (DPO): the prompt and two responses, labelled on the responses.

`PreferenceDataModule` (lightkit.data.prompts) scores whole texts, which is what a reward model
reads. A policy is trained on the log-probability of each response *given* its prompt, so here
the prompt and responses stay apart: each side is rendered like an instruction-tuning row (the
tokenizer's chat template, user turn then assistant turn, or the `prompt_template` format string
then the response and EOS; `InstructionDataModule`), and only the response tokens are labelled.
A pair too long for `max_length` loses the start of its prompt, never its response, which is
what the preference is about.

Batches hold both sides as one (2B, T) batch, chosen rows first, so the policy and the reference
each run once per step, and a `pair_key` per pair (a hash of its token ids) under which the
reference's log-probs can be cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from lightkit.data.causal_lm import InstructionDataModule, format_prompt
from lightkit.data.chat import encode_conversation
from lightkit.data.files import read_table
from lightkit.data.trl_formats import preference_parts
from lightkit.io.errors import InputError

SIDES = ("chosen", "rejected")


class PolicyPreferenceDataModule(InstructionDataModule):
    """Preference pairs `{prompt, chosen, rejected}` (JSONL, CSV or TSV, or a `dataset`) for DPO
    (module docstring). TRL's preference formats all read (`lightkit.data.trl_formats`): text or
    conversational, with an explicit prompt or an implicit one both sides share.

    Args:
        prompt_template: how a row's fields make the user turn (`{prompt}` by default).
        **kwargs: tokenizer (the policy's), format (`auto`, `chat`, `template`), system_prompt,
            files, holdout, batch sizes, max_length; see InstructionDataModule.
    """

    # InstructionDataModule settings that a pair has no use for: refused rather than ignored, with
    # what to do instead.
    NOT_FOR_PAIRS = {
        "prompts_only": (
            False,
            "for prompts, use InstructionDataModule (or HeadlineDataModule) with prompts_only: true",
        ),
        "response_field": ("response", "the responses are each row's `chosen` and `rejected` fields"),
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, (default, instead) in self.NOT_FOR_PAIRS.items():
            if self.hparams.get(name, default) != default:
                raise InputError(f"PolicyPreferenceDataModule: {name} does not apply to preference pairs; {instead}")

    def generation_rows(self, split: str = "validation", path: str | None = None) -> list[dict[str, str]]:
        if path is None:  # a pair's chosen side is a preference, not necessarily a reference answer
            raise InputError(
                "GenerationMetrics: preference pairs hold no reference answers; give it a prompts file "
                "(`prompts:`, JSONL with prompt and reference columns)"
            )
        return super().generation_rows(split, path)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        return self.from_rows(read_table(path, SIDES, self.hparams.encoding), "train")

    def from_rows(self, rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        pairs = []
        for row in rows:
            where = row["_where"]
            prompt, chosen, rejected = preference_parts(row, where)
            if isinstance(chosen, list):  # conversational: the prompt's turns, then each side's
                if not self.chat:
                    raise InputError(f"{where}: conversational pairs need a chat template (format: chat)")
                sides = {s: self.conversation_row(prompt + turns, where, first=len(prompt))
                         for s, turns in zip(SIDES, (chosen, rejected))}  # fmt: skip
            else:
                fields = {k: v for k, v in row.items() if k != "_where"} | ({"prompt": prompt} if prompt else {})
                text = format_prompt(self.prompt_template, fields, where)
                sides = {s: self.instruction_row(text, answer, where) for s, answer in zip(SIDES, (chosen, rejected))}
            pairs.append(sides | {"where": where})
        return pairs

    def encode_side(self, row: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Token ids and labels (-100 outside the response) of one side, cut from the left."""
        if self.chat:
            ids, labels = encode_conversation(self.tokenizer, row["text"], row["spans"], max_length=1 << 30)
        else:
            prompt = self.tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            response = self.tokenizer(row["response"], add_special_tokens=False)["input_ids"]
            response = response + [self.tokenizer.eos_token_id]
            ids, labels = prompt + response, [-100] * len(prompt) + response
        cut = max(0, len(ids) - self.hparams.max_length)
        return ids[cut:], labels[cut:]

    def build_split(self, split: str) -> Dataset:
        if split == "predict":
            return super().build_split(split)
        rows = self.splits(self._read)[split]
        if not rows:
            raise InputError(f"{self.source(split)}: the {split} split has no preference pairs")
        encoded = []
        for row in rows:
            out: dict[str, Any] = {}
            for side in SIDES:
                ids, labels = self.encode_side(row[side])
                if all(label == -100 for label in labels):
                    raise InputError(f"{row['where']}: the {side} response is longer than max_length="
                                     f"{self.hparams.max_length}; raise max_length")  # fmt: skip
                out[f"{side}_input_ids"], out[f"{side}_labels"] = ids, labels
            out["pair_key"] = hash((*out["chosen_input_ids"], -1, *out["rejected_input_ids"]))
            encoded.append(out)
        return Dataset.from_list(encoded)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "prompt" in features[0]:
            return self.collate_prompts(features)
        ids = [f[f"{side}_input_ids"] for side in SIDES for f in features]
        labels = [f[f"{side}_labels"] for side in SIDES for f in features]
        # Not DataCollatorForSeq2Seq: see InstructionDataModule.collate (decoders without a pad token).
        length = max(map(len, ids))
        if multiple := self.hparams.pad_to_multiple_of:
            length = -(-length // multiple) * multiple
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return {
            "input_ids": torch.tensor([x + [pad] * (length - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (length - len(x)) for x in ids]),
            "labels": torch.tensor([x + [-100] * (length - len(x)) for x in labels]),
            "pair_key": torch.tensor([f["pair_key"] for f in features], dtype=torch.long),
        }
