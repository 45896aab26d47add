"""QuantizationAwareTraining: train with int8 fake quantisation of every nn.Linear, export as QDQ.

Fake quantisation (lightkit.training.fake_quant) is attached when the Trainer sets up, so a checkpoint's
quantiser state loads into it for test, predict and resume. During fit it turns on at
`start_step` (optimizer steps; before it the model trains in float, as a warm start), observers
keep updating scales until `freeze_observers_step`, then scales are fixed for the rest of training
(the usual QAT recipe: let weights adapt to fixed quantisation grids at the end). Validation, test
and predict run fake-quantised with frozen observers once QAT has started, so the metrics logged
are those of the int8 model that `lightkit export --forms qat` will produce.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lightkit.training.fake_quant import ATTR, is_calibrated, prepare_qat, set_qat


class QuantizationAwareTraining(Callback):
    """Int8 fake quantisation of every nn.Linear (input per-tensor, weight per-channel, symmetric).

    Args:
        start_step: optimizer step at which fake quantisation starts.
        freeze_observers_step: step after which scales stop updating (None: never frozen during fit).
        exclude: skip Linears whose qualified name contains any of these strings.
    """

    def __init__(
        self, start_step: int = 0, freeze_observers_step: int | None = None, exclude: list[str] | None = None
    ) -> None:
        self.start_step = start_step
        self.freeze_observers_step = freeze_observers_step
        self.exclude = tuple(exclude or ())
        self._mode: tuple[bool, bool] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        model = pl_module.model
        if not any(name.endswith(ATTR) for name, _ in model.named_modules()):
            names = prepare_qat(model, self.exclude)
            print(f"lightkit: QAT fake-quantises {len(names)} nn.Linear layers")
        self._set(pl_module, fake_quant=False, observe=False)

    def _set(self, pl_module: L.LightningModule, fake_quant: bool, observe: bool) -> None:
        if self._mode != (fake_quant, observe):
            set_qat(pl_module.model, fake_quant, observe)
            self._mode = (fake_quant, observe)

    def _started(self, trainer: L.Trainer) -> bool:
        return trainer.global_step >= self.start_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int
    ) -> None:
        step = trainer.global_step
        frozen = self.freeze_observers_step is not None and step >= self.freeze_observers_step
        self._set(pl_module, fake_quant=self._started(trainer), observe=self._started(trainer) and not frozen)

    def _evaluate_quantised(self, pl_module: L.LightningModule) -> None:
        # Quantised evaluation needs scales: observers must have seen training data (this run's,
        # or the checkpoint's). Before that the model is evaluated in float.
        calibrated = is_calibrated(pl_module.model)
        if not calibrated and pl_module.trainer.state.fn != "fit":
            rank_zero_warn(
                "QuantizationAwareTraining: the quantisers were never calibrated (QAT had not started); evaluating "
                "in float"
            )
        self._set(pl_module, fake_quant=calibrated, observe=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate_quantised(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate_quantised(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate_quantised(pl_module)
