"""GenerationMetrics: validation also answers a fixed slice of prompts, and logs how good the answers are.

A language model's validation loss says little about the answers users will read, and nothing at
all for DPO, PPO or GRPO, whose losses are not comparable across steps. So at each validation this
callback answers the same prompts greedily and logs, beside the task's own metrics:

- `val_rougeL`: ROUGE-L F-measure of the answers against the reference answers (torchmetrics);
- `val_words`: the answers' mean length in words;
- `val_greedy_reward`: the mean reward of the answers, from `reward_fn` or, when that is not set,
  the task's own reward (PPO, GRPO).

A `ModelCheckpoint` or `EarlyStopping` can monitor any of them, so a run keeps the checkpoint
whose answers are best rather than the one with the lowest loss. The answers of each validation go
to `<log_dir>/val_generations/step-<N>.jsonl`. (The Hugging Face Trainer declined this feature,
transformers#23763; its users write a callback around `model.generate` for it.)

The prompts are the first `rows` rows of the DataModule's validation split (instruction data:
each row's prompt and its answer), or those of a `prompts` file with `prompt` and `reference`
columns, rendered as the DataModule renders training prompts: what DPO's preference pairs need,
since a pair holds no reference answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics.functional.text.rouge import rouge_score

from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError
from lightkit.metrics.answers import greedy_answers
from lightkit.rewards.scoring import build_reward


class GenerationMetrics(Callback):
    """Greedy answers to a fixed slice of prompts at each validation, scored (module docstring).

    Args:
        prompts: a JSONL/CSV/TSV file of `prompt` and `reference` columns; default: the
            DataModule's validation rows.
        rows: how many prompts (the first ones, so every validation answers the same).
        max_new_tokens: tokens generated per answer.
        batch_size: prompts per `generate` call.
        reward_fn: reward callable(s) for `val_greedy_reward` (import paths, as the RL tasks take
            them); default: the task's own reward where it has one, else no reward is logged.
        reward_weights: one weight per reward_fn.
    """

    def __init__(
        self,
        prompts: str | None = None,
        rows: int = 32,
        max_new_tokens: int = 32,
        batch_size: int = 8,
        reward_fn: str | list[str] | None = None,
        reward_weights: list[float] | None = None,
    ) -> None:
        if rows < 1 or max_new_tokens < 1 or batch_size < 1:
            raise InputError(
                f"GenerationMetrics: rows, max_new_tokens and batch_size must be >= 1, got {rows}, "
                f"{max_new_tokens} and {batch_size}"
            )
        self.prompts, self.rows, self.max_new_tokens, self.batch_size = prompts, rows, max_new_tokens, batch_size
        self.reward = build_reward(reward_fn, None, weights=reward_weights) if reward_fn is not None else None
        self.slice: list[dict[str, str]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "generation_rows"):
            raise InputError(
                f"GenerationMetrics: {type(datamodule).__name__} has no prompts with reference answers; "
                "use instruction data (InstructionDataModule, HeadlineDataModule)"
            )
        self.slice = datamodule.generation_rows("validation", self.prompts)[: self.rows]
        if not self.slice:
            where = self.prompts or "the validation split"
            raise InputError(f"GenerationMetrics: {where} has no rows to answer")
        if self.reward is None:
            self.reward = pl_module.__dict__.get("_reward")  # RolloutTask's reward, unregistered

    @torch.no_grad()
    def answers(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
        prompts = [r["prompt"] for r in self.slice]
        # bf16-mixed runs generate as it trains: inside the precision plugin's forward context
        context = trainer.precision_plugin.forward_context
        return greedy_answers(pl_module.model, pl_module.tokenizer, prompts, self.max_new_tokens, self.batch_size,
                              context=context)["answers"]  # fmt: skip

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        answers = self.answers(trainer, pl_module)
        references = [r["reference"] for r in self.slice]
        values: dict[str, float] = {
            "val_rougeL": float(rouge_score(answers, references, rouge_keys="rougeL")["rougeL_fmeasure"]),
            "val_words": sum(len(a.split()) for a in answers) / len(answers),
        }
        scores = None
        if self.reward is not None:
            scores = self.reward([r["prompt"] for r in self.slice], answers, reference=references).float()
            values["val_greedy_reward"] = float(scores.mean())
        for name, value in values.items():  # the same on every rank: each answers the whole slice
            pl_module.log(name, value, batch_size=len(answers))
        if trainer.is_global_zero:
            self.write(trainer, answers, scores)

    def write(self, trainer: L.Trainer, answers: list[str], scores: torch.Tensor | None) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "val_generations"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, (row, answer) in enumerate(zip(self.slice, answers)):
            line: dict[str, Any] = {"prompt": row["prompt"], "reference": row["reference"], "answer": answer}
            if scores is not None:
                line["reward"] = float(scores[i])
            lines.append(json.dumps(line, ensure_ascii=False) + "\n")
        atomic_write_text(folder / f"step-{trainer.global_step}.jsonl", "".join(lines))
