"""What the training benchmarks share (train_throughput.py, sft_vs_trl.py, step_logging.py): the
model shapes they build and the timed-window meters, for a Lightning loop and for transformers'
Trainer or TRL's trainers alike, so every side is timed and counted the same way."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from measure import current_rss_mib, peak_rss_mib
from transformers import Trainer, TrainerCallback

MODELS = {
    "tiny": {
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "minilm": None,  # the packaged pretrained MiniLM-L6 (22.7M parameters)
    "bert-base": {
        "model_type": "bert",
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "tiny-gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2},
    "gpt2-small": {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12},
}


class Meter:
    """Throughput over the timed window: from the start of the first step after warm-up to the end
    of the last, synchronising the device only at those two points. Data loading, the loop's own
    hooks and CPU/GPU overlap between steps all count, as they do for a user; a sync around every
    step would hide the overlap a loop gets or loses. Tokens and samples are counted by the
    collator on the CPU and travel with the batch under `COUNTS` (so they are right with loader
    workers too), and each loop takes them off before its model sees the batch (`take`): counting
    never reads a device tensor either."""

    COUNTS = "_benchmark_counts"

    def __init__(self, warmup: int, total: int, device: torch.device) -> None:
        self.warmup, self.total, self.device = warmup, total, device
        self.pending: tuple[int, int] | None = None
        self.steps, self.seconds, self.tokens, self.samples = 0, 0.0, 0, 0
        self._start = 0.0
        # Memory on the host: the largest RSS at a step's end, and the process's peak when the
        # last step ends (its whole life so far: loading included).
        self.step_rss_mib, self.training_peak_rss_mib = 0.0, 0.0

    def counting(self, collate: Any) -> Any:
        return _Counted(collate, self.COUNTS)

    def take(self, batch: dict[str, Any]) -> None:
        self.pending = batch.pop(self.COUNTS)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def begin(self) -> None:
        if self.steps == self.warmup:
            self.sync()
            self._start = time.perf_counter()

    def end(self) -> None:
        assert self.pending is not None, "a batch reached the step without passing through take()"
        tokens, samples = self.pending
        self.pending = None
        self.steps += 1
        if self.steps > self.warmup:
            self.tokens += tokens
            self.samples += samples
        self.step_rss_mib = max(self.step_rss_mib, current_rss_mib())
        if self.steps == self.total:
            self.sync()
            self.seconds = time.perf_counter() - self._start
            self.training_peak_rss_mib = peak_rss_mib()

    def result(self) -> dict[str, float]:
        return {
            "timed_steps": self.steps - self.warmup,
            "tokens_per_s": self.tokens / self.seconds,
            "samples_per_s": self.samples / self.seconds,
        }


class _Counted:
    """A collate function that also counts non-padding tokens and samples (a class, not a closure,
    so that loader workers started by spawn can pickle it)."""

    def __init__(self, collate: Any, key: str) -> None:
        self.collate, self.key = collate, key

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(features)
        batch[self.key] = (int(batch["attention_mask"].sum()), batch["input_ids"].size(0))
        return batch


class LightningMeter(L.Callback):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.meter.take(batch)
        self.meter.begin()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.meter.end()


class Counting:
    """For a transformers Trainer (or TRL's): take the benchmark's counts off each batch before
    its model sees it."""

    def __init__(self, *args: Any, meter: Meter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = meter

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.meter.take(inputs)
        return super().training_step(model, inputs, *args, **kwargs)


class CountingTrainer(Counting, Trainer):
    """transformers' Trainer with the benchmark's counts taken off each batch."""


class HFMeter(TrainerCallback):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.begin()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.meter.end()


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mib()
