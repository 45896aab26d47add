"""Sequence classification on AutoModelForSequenceClassification: accuracy and macro-F1.

    lightkit fit  --config configs/classification.yaml
    lightkit test --config configs/classification.yaml --ckpt_path runs/classification/checkpoints/best.ckpt

`lightkit test` writes to the run's log folder `classification_report.json` / `.txt` (precision,
recall, F1 and support per class, macro and weighted averages), `confusion_matrix.json` and
`confusion_matrix.png`. All come from one torchmetrics confusion matrix summed over processes, so
they are exact under DDP. `lightkit predict` writes one JSON line per text: label and probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from transformers import AutoModelForSequenceClassification

from lightkit.io.atomic import atomic_write_text
from lightkit.metrics.class_report import per_class_report, plot_confusion_matrix, report_text
from lightkit.training.task import BaseTask, StepOutput, label_config


class SequenceClassificationTask(BaseTask):
    """Text (or text-pair) classification.

    Args:
        label_names: label names; linked from the DataModule by the CLI.
        **kwargs: pretrained / model_config, learning rate, ... (see BaseTask).
    """

    auto_model = AutoModelForSequenceClassification
    peft_task_type = "SEQ_CLS"
    primary_metric = "accuracy"
    export_kind = "encoder"
    serving = "labels"

    def __init__(self, label_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test_confusion = MulticlassConfusionMatrix(len(self.hparams.label_names))

    def logits_axes(self) -> list[str | int]:
        return ["batch", len(self.hparams.label_names)]

    def model_overrides(self) -> dict[str, Any]:
        return label_config(self.hparams.label_names, type(self).__name__)

    def configure_metrics(self) -> MetricCollection:
        n = len(self.hparams.label_names)
        return MetricCollection(
            {"accuracy": MulticlassAccuracy(n, average="micro"), "macro_f1": MulticlassF1Score(n, average="macro")}
        )

    def step(self, batch: dict[str, Any]) -> StepOutput:
        out = self.run_model(batch, labels=batch["labels"])  # logits (B, C)
        if not self.wants_metrics():
            return StepOutput(out.loss, None, None, output=out)
        return StepOutput(out.loss, out.logits.detach().argmax(-1), batch["labels"], output=out)

    # -- test report ---------------------------------------------------------------------------
    def on_test_batch_end(
        self, outputs: StepOutput, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.test_confusion.update(outputs.preds, outputs.target)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        matrix = self.test_confusion.compute().cpu()  # (C, C): rows gold, columns predicted
        self.test_confusion.reset()
        if not self.trainer.is_global_zero:
            return
        names = self.hparams.label_names
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        report = per_class_report(matrix, names)
        text = report_text(report)
        atomic_write_text(out / "classification_report.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out / "classification_report.txt", text)
        atomic_write_text(
            out / "confusion_matrix.json", json.dumps({"labels": names, "matrix": matrix.tolist()}, indent=2) + "\n"
        )
        plot_confusion_matrix(matrix, names, out / "confusion_matrix.png")
        print(f"\nclassification report ({int(matrix.sum())} examples):\n{text}\nwritten to {out}")

    # -- predict -------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        probs = torch.softmax(self.model(**self.model_inputs(batch)).logits.float(), dim=-1)  # (B, C)
        names = self.hparams.label_names
        return [
            {"text": text, "label": names[int(p.argmax())], "probabilities": dict(zip(names, p.tolist()))}
            for text, p in zip(batch["text"], probs)
        ]

    def prediction_lines(self, prediction: list[dict[str, Any]]) -> Iterable[str]:
        for row in prediction:
            yield json.dumps(row, ensure_ascii=False) + "\n"
