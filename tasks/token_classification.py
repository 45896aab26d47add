"""Token classification (NER) on AutoModelForTokenClassification, scored with seqeval.

    lightkit fit  --config configs/ner.yaml
    lightkit test --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt
    lightkit predict --config configs/ner.yaml --ckpt_path ... --data.predict_file sentences.txt

Batches come from `lightkit.data.CoNLLDataModule`; predictions are read back at each word's first
subword, so every metric, report and output file is per word, in IOB2.

`lightkit test` writes to the run's log folder: `seqeval_report.txt` (seqeval's per-entity
classification_report), `seqeval_report.json` (the same numbers) and `test_predictions.conll`
(token, gold, predicted), and prints the report. `lightkit predict` writes CoNLL-style
`token<TAB>tag` lines through the PredictionWriter callback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Literal

import torch
from torchmetrics import MetricCollection
from transformers import AutoModelForTokenClassification

from lightkit.data.conll import conll_lines
from lightkit.metrics.entities import Seqeval, write_report
from lightkit.objectives.word_tags import decode_words, invalid_transitions, transition_rules
from lightkit.training.task import BaseTask, StepOutput, label_config


class TokenClassificationTask(BaseTask):
    """Named-entity recognition (or any per-word tagging).

    Args:
        label_names: IOB2 label names, O first; linked from the DataModule by the CLI.
        decoding: `argmax` per word, or `viterbi`: the best tag sequence that is valid IOB2
            (no I-X after O or after another type; see lightkit.objectives.word_tags).
        **kwargs: pretrained / model_config, learning rate, ... (see BaseTask).
    """

    auto_model = AutoModelForTokenClassification
    peft_task_type = "TOKEN_CLS"
    primary_metric = "f1"
    export_kind = "encoder"
    serving = "word_tags"

    def __init__(
        self, label_names: list[str] | None = None, decoding: Literal["argmax", "viterbi"] = "argmax", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._rules = transition_rules(self.hparams.label_names) if decoding == "viterbi" else None

    def logits_axes(self) -> list[str | int]:
        return ["batch", "sequence", len(self.hparams.label_names)]

    def model_overrides(self) -> dict[str, Any]:
        return label_config(self.hparams.label_names, type(self).__name__)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"seqeval": Seqeval(self.hparams.label_names)})

    def predict_words(self, logits: torch.Tensor, batch: dict[str, Any]) -> list[list[int]]:
        """Per-word label ids for each sentence of the batch (first-subword reading)."""
        word_ids = batch["word_ids"].tolist()  # (B, T), -1 off words
        return [
            decode_words(row, words, len(tokens), self._rules)
            for row, words, tokens in zip(logits, word_ids, batch["tokens"])
        ]

    def step(self, batch: dict[str, Any]) -> StepOutput:
        out = self.run_model(batch, labels=batch["labels"])  # logits (B, T, L)
        if not self.wants_metrics():
            return StepOutput(out.loss, None, None, output=out)  # no per-step host sync (.tolist) while training
        preds = self.predict_words(out.logits.detach(), batch)
        # Words past max_length have no subword; they are predicted O (missed), and counted.
        seen = (batch["word_ids"].max(dim=1).values + 1).tolist()
        truncated = sum(len(t) - n for t, n in zip(batch["tokens"], seen))
        return StepOutput(out.loss, preds, batch["word_labels"], {"truncated": truncated}, output=out)

    # -- test report ---------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        # Predictions stream to a file as batches go, so a large test set never sits in memory.
        rank = self.trainer.global_rank
        name = "test_predictions.conll" if self.trainer.world_size == 1 else f"test_predictions.rank{rank}.conll"
        self._pred_path = Path(self.trainer.log_dir or self.trainer.default_root_dir) / name
        self._pred_path.parent.mkdir(parents=True, exist_ok=True)
        self._pred_tmp = self._pred_path.with_name(f".{name}.tmp")
        self._pred_file: IO[str] = self._pred_tmp.open("w", encoding="utf-8")

    def on_test_batch_end(
        self, outputs: StepOutput, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        names = self.hparams.label_names
        for tokens, gold, pred in zip(batch["tokens"], outputs.target, outputs.preds):
            self._pred_file.writelines(conll_lines(tokens, [names[i] for i in gold], [names[i] for i in pred]))

    def on_test_epoch_end(self) -> None:
        self._pred_file.close()
        self._pred_tmp.replace(self._pred_path)
        metric = self.test_metrics["seqeval"]
        with metric.sync_context():  # gathered from every process (a no-op on one)
            y_true, y_pred = metric.sequences()
            truncated = int(metric.truncated)
        super().on_test_epoch_end()  # logs test_f1 etc., resets the metric
        if self.trainer.is_global_zero and y_true:
            extra = {
                "sentences": len(y_true),
                "truncated_words": truncated,
                "decoding": self.hparams.decoding,
                "invalid_transitions": sum(invalid_transitions(tags) for tags in y_pred),
                "predictions": str(self._pred_path),
            }
            txt, js, text = write_report(self._pred_path.parent, y_true, y_pred, extra)
            print(
                f"\nseqeval report ({len(y_true)} sentences, {truncated} words cut by truncation "
                f"and counted as O):\n{text}\nwritten to {txt}, {js} and {self._pred_path}"
            )

    # -- predict -------------------------------------------------------------------------------
    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[tuple[list[str], list[str]]]:
        logits = self.model(**self.model_inputs(batch)).logits
        names = self.hparams.label_names
        return [
            (tokens, [names[i] for i in pred])
            for tokens, pred in zip(batch["tokens"], self.predict_words(logits, batch))
        ]

    def prediction_lines(self, prediction: list[tuple[list[str], list[str]]]) -> Iterable[str]:
        """CoNLL-style lines (token, tag) for the PredictionWriter callback."""
        for tokens, tags in prediction:
            yield from conll_lines(tokens, tags)
