"""PredictionWriter: stream `lightkit predict` output to a file, batch by batch.

Each task formats its own predictions (`prediction_lines(prediction)`: CoNLL lines for NER, ...);
this callback only owns the file: written as batches arrive (memory stays flat on long inputs),
into a temp file renamed over the target at the end, so an interrupted run leaves no half file.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class PredictionWriter(BasePredictionWriter):
    """Write predictions to `output` (default `<log_dir>/predictions.txt`).

    Args:
        output: file to write; its folder is created. Under several processes each rank writes
            `<output>.rank<N>`.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self._file: IO[str] | None = None

    def _target(self, trainer: L.Trainer) -> Path:
        path = (
            Path(self.output) if self.output else Path(trainer.log_dir or trainer.default_root_dir) / "predictions.txt"
        )
        return path if trainer.world_size == 1 else path.with_name(f"{path.name}.rank{trainer.global_rank}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "prediction_lines"):
            raise TypeError(
                f"{type(pl_module).__name__} does not define prediction_lines(); it cannot write predictions"
            )
        self._path = self._target(trainer)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._path.with_name(f".{self._path.name}.tmp")
        self._file = self._tmp.open("w", encoding="utf-8")

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        assert self._file is not None
        self._file.writelines(pl_module.prediction_lines(prediction))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._tmp.replace(self._path)
        rank_zero_info(f"lightkit: predictions written to {self._path}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)
