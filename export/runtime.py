"""ONNX Runtime sessions that stand in for a transformers model inside a lightkit task.

`OrtModel` takes the same keyword inputs as the Hugging Face model and returns an object with
`.logits` (and `.loss` when labels are given), so a task's own `step`, metrics and reports run on
an exported artifact unchanged: that is how `lightkit export` scores each form for its parity gate.
The CUDA execution provider is used when present, with the CPU as fallback.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def providers(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu" or "CUDAExecutionProvider" not in available or not torch.cuda.is_available():
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtModel:
    """A session over `model.onnx` with a transformers-like call (see the module docstring)."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=providers(device))
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SimpleNamespace:
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.path}: missing inputs {missing}; the model takes {self.inputs}")
        feeds = {n: inputs[n].detach().cpu().numpy().astype(np.int64) for n in self.inputs}
        logits = torch.from_numpy(self.session.run(["logits"], feeds)[0]).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1).cpu(), ignore_index=-100)
        return SimpleNamespace(logits=logits, loss=loss)

    def providers(self) -> list[str]:
        return self.session.get_providers()

    # A task calls .eval()/.train() and reads .device through Lightning; an artifact has neither.
    def eval(self) -> OrtModel:
        return self

    def train(self, mode: bool = True) -> OrtModel:
        return self


def run_all(model: Any, batches: list[dict[str, Any]]) -> list[torch.Tensor]:
    return [model(**{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}).logits for b in batches]
