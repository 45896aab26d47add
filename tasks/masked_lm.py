"""Masked language modelling (BERT-style pretraining or continued pretraining).

    lightkit fit --config configs/mlm.yaml

Batches come from `lightkit.data.MaskedLMDataModule` (packed blocks, 80/10/10 masking, optional
whole-word masking). Logged per stage: loss on masked tokens, accuracy on masked positions and
perplexity (exp of the epoch's mean masked-token NLL).
"""

from __future__ import annotations

from typing import Any

from torchmetrics import MetricCollection
from transformers import AutoModelForMaskedLM

from lightkit.metrics.lm import TokenMetrics
from lightkit.training.task import BaseTask, StepOutput


class MaskedLMTask(BaseTask):
    """Masked LM from a config (from scratch) or from pretrained weights (continued pretraining).

    A pretrained encoder without an MLM head (e.g. the packaged MiniLM) gets a fresh head, so its
    first loss is near ln(vocab size).

    Args:
        **kwargs: pretrained / model_config, learning rate, ... (see BaseTask).
    """

    auto_model = AutoModelForMaskedLM
    primary_metric = "perplexity"
    primary_mode = "min"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"tokens": TokenMetrics()})

    def step(self, batch: dict[str, Any]) -> StepOutput:
        out = self.run_model(batch, labels=batch["labels"])  # logits (B, T, V)
        if not self.wants_metrics():
            return StepOutput(out.loss, None, None, output=out)  # no (B, T, V) gather, no host sync per step
        masked = batch["labels"] != -100  # (B, T)
        preds = out.logits.detach()[masked].argmax(-1)  # (N,) only where a token was selected
        target = batch["labels"][masked]
        return StepOutput(out.loss, preds, target, {"nll_sum": out.loss.detach() * masked.sum()}, output=out)
