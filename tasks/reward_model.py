"""Reward models trained on preference pairs (Bradley-Terry), for PPO or for ranking.

    lightkit fit --config tests/conf/reward_model.yaml

Loss `-log σ(r(chosen) - r(rejected) - margin_scale * margin)` on a sequence model with one
scalar output (`AutoModelForSequenceClassification`, num_labels=1); accuracy is the fraction of
pairs ranked right. The saved model is a plain transformers sequence classifier, so PPO
(`reward_model:`), export and any transformers code load it as is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy
from transformers import AutoModelForSequenceClassification

from lightkit.tasks.sequence_classification import SequenceClassificationTask
from lightkit.training.task import BaseTask, StepOutput


class RewardModelTask(BaseTask):
    """Pairwise preference training of a scalar reward.

    Args:
        input_max_length: the longest input it is trained on (linked from PreferenceDataModule's
            max_length); saved with the model (`lightkit.json`) so PPO's `reward_model` reads the
            same length.
        response_first: whether it reads the response before the prompt (linked and saved the
            same way).
        reference_column: the prompt data's column of reference answers it reads beside each
            response (linked and saved the same way); PPO's `reward_model` then needs that column
            in its prompt data, and a run without it stops as it starts.
        margin_scale: how far apart, in score, a pair must be placed per unit of its `margin`
            column (TRL's RewardTrainer and Llama 2's reward model subtract the margin the same
            way, at scale 1): a pair the preference separates widely is pushed apart further. 0
            ignores the column.
        **kwargs: pretrained / model_config, learning rate, ... (see BaseTask).
    """

    auto_model = AutoModelForSequenceClassification
    peft_task_type = "SEQ_CLS"  # with LoRA, peft keeps the new score head trainable
    primary_metric = "accuracy"

    def __init__(
        self,
        input_max_length: int | None = None,
        response_first: bool = False,
        reference_column: str | None = None,
        margin_scale: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not (math.isfinite(margin_scale) and margin_scale >= 0):
            raise ValueError(f"margin_scale must be a finite number >= 0, got {margin_scale}")
        super().__init__(**kwargs)

    def needed_columns(self) -> dict[str, set[str]]:
        return {"margin_scale": {"margin"}} if self.hparams.margin_scale else {}

    def saved_settings(self) -> dict[str, Any]:
        h = self.hparams
        return {"input_max_length": h.input_max_length, "response_first": h.response_first,
                "reference_column": h.reference_column}  # fmt: skip

    def model_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {"num_labels": 1, "id2label": {0: "reward"}, "label2id": {"reward": 0}}
        if self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            overrides["pad_token_id"] = self.tokenizer.pad_token_id  # decoders pool the last non-pad token
        return overrides

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"accuracy": BinaryAccuracy()})

    def score(self, batch: dict[str, Any], side: str) -> torch.Tensor:
        inputs = {k.removeprefix(f"{side}_"): v for k, v in batch.items() if k.startswith(f"{side}_")}
        return self.model(**inputs).logits.squeeze(-1).float()  # (B,)

    def step(self, batch: dict[str, Any]) -> StepOutput:
        margin = self.score(batch, "chosen") - self.score(batch, "rejected")
        wanted = 0.0
        if self.hparams.margin_scale:
            self.check_columns(batch, "a batch")  # a DataModule whose data the stage's start could not read
            wanted = self.hparams.margin_scale * batch["margin"]
        loss = -F.logsigmoid(margin - wanted).mean()
        # BinaryAccuracy thresholds sigmoid(margin) at 0.5, i.e. counts pairs with margin > 0.
        ones = torch.ones_like(margin, dtype=torch.long)
        return StepOutput(loss, torch.sigmoid(margin.detach()), ones, logs={"margin": margin.detach().mean()})


# The task classes whose checkpoints hold a reward model, the first loading a Hugging Face folder:
# what `ModelReward` (and PPO's `reward_model`) is given to load one.
REWARD_MODEL_TASKS = (SequenceClassificationTask, RewardModelTask)
