"""ONNX Runtime sessions that stand in for a transformers model inside a lightkit task.

`OrtModel` takes the same keyword inputs as the Hugging Face model and returns an object with
`.logits` (and `.loss` when labels are given), so a task's own `step`, metrics and reports run on
an exported artifact unchanged: that is how `lightkit export` scores each form for its parity gate.
The CUDA execution provider is used when present, with the CPU as fallback.

For serving fixed shapes fast, `OrtModel.bind` runs the session with IO binding (inputs copied
once into device buffers, outputs left on the device) and, with `cuda_graph=True`, replays a
captured CUDA graph, which removes the per-kernel launch cost that bounds small batches
(benchmarks/results/inference-gpu-*.json). What runs a decoder's session token by token (the
KV-cache loop: generation, forced decoding, prefilled prompts) is `lightkit.export.runtime.decode_loop`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightkit.io.errors import InputError

NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


# Forms made for the CPU EP's integer kernels: run on the CPU even where a GPU is present.
CPU_FORMS = ("int8-cpu", "int4-cpu", "qat")


def positions(mask: np.ndarray) -> np.ndarray:
    """Position ids (B, T) of a left-padded batch from its attention mask: each row counts from 0
    at its first real token (padding gets 0), as transformers' generate derives them."""
    return np.clip(mask.cumsum(-1) - 1, 0, None)


def providers(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu" or "CUDAExecutionProvider" not in available or not torch.cuda.is_available():
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtModel:
    """A session over `model.onnx` with a transformers-like call (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        cuda_graph: bool = False,
        tf32: bool = True,
        fpa_intb_gemm: bool = False,
    ) -> None:
        """
        Args:
            cuda_graph: capture the first `bind(...).run()` as a CUDA graph and replay it after;
                only for fixed shapes through `bind`, and only when every node runs on CUDA.
            tf32: let the CUDA EP use TF32 tensor cores for fp32 MatMul (ORT's default; ~1e-3
                relative error). Off gives true fp32 arithmetic.
            fpa_intb_gemm: ORT's CUTLASS mixed-precision kernels for 8-bit MatMulNBits (the
                `ep.cuda.fpa_intb_gemm` session config entry read by its MatMulNBits CUDA kernel).
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if fpa_intb_gemm:
            options.add_session_config_entry("ep.cuda.fpa_intb_gemm", "1")
        self.path = Path(path)
        chosen: list[Any] = providers(device)
        if chosen[0] == "CUDAExecutionProvider":
            cuda_options = {"use_tf32": "1" if tf32 else "0"}
            if cuda_graph:
                cuda_options["enable_cuda_graph"] = "1"
            chosen = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        elif cuda_graph:
            raise InputError(
                f"{path}: cuda_graph=True needs ONNX Runtime's CUDA execution provider and a GPU; this session would "
                f"run on {chosen[0]}"
            )
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past.")]
        self.token_inputs = [n for n in self.inputs if not n.startswith("past.") and n != "position_ids"]

    @property
    def positions_inside(self) -> bool:
        """A decoder whose graph derives positions itself (the fused GroupQueryAttention graph,
        `lightkit.export.builder.fused_decoder`): it takes no `position_ids`, and more than one new
        token over a non-empty past only at batch 1."""
        return self.causal and "position_ids" not in self.inputs

    @property
    def causal(self) -> bool:
        """A decoder exported with a KV cache (past.*/present.* tensors)."""
        return bool(self.past)

    @property
    def present_names(self) -> list[str]:
        """The cache outputs, in the order of the past inputs they feed."""
        return [i.name.replace("past.", "present.") for i in self.past]

    def empty_past(self, batch: int, length: int = 0) -> dict[str, np.ndarray]:
        """The cache a prefill starts from: every past tensor with no positions yet, or `length`
        slots of zeros that the attention mask hides (a row joining a running batch)."""
        return {i.name: np.zeros((batch, i.shape[1], length, i.shape[3]), dtype=np.float32) for i in self.past}

    def feeds(self, **inputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Session inputs for whole sequences (a decoder gets an empty past and mask-derived positions)."""
        missing = [n for n in self.token_inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.path}: missing inputs {missing}; the model takes {self.token_inputs}")
        feeds = {n: inputs[n].detach().cpu().numpy().astype(np.int64) for n in self.token_inputs}
        if self.causal:
            mask = feeds["attention_mask"]
            if not self.positions_inside:
                feeds["position_ids"] = positions(mask)
            feeds.update(self.empty_past(mask.shape[0]))
        return feeds

    def __call__(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SimpleNamespace:
        feeds = self.feeds(**inputs)
        logits = torch.from_numpy(self.session.run(["logits"], feeds)[0]).float()
        loss = None
        if labels is not None:
            labels = labels.cpu()
            if self.causal:  # as transformers' causal LM loss: position t predicts token t+1
                logits_, labels = logits[:, :-1], labels[:, 1:]
            else:
                logits_ = logits
            loss = F.cross_entropy(logits_.reshape(-1, logits_.size(-1)), labels.reshape(-1), ignore_index=-100)
        return SimpleNamespace(logits=logits, loss=loss)

    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def io_device(self) -> str:
        """Where IO binding keeps buffers: "cuda" under the CUDA EP, else "cpu" (an ORT device
        name, deliberately not `.device`, which Lightning code reads as a torch.device)."""
        return "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def bind(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...] = ("logits",)) -> BoundRun:
        """A fixed-shape runner over device buffers (IO binding; a CUDA graph when enabled)."""
        return BoundRun(self, feeds, outputs)


class BoundRun:
    """One fixed input shape, bound once: `update` copies new host values into the same device
    buffers, `run` executes without any host copy, `output` fetches a result to the host.

    Buffers keep their addresses for the runner's life, which is what a captured CUDA graph
    replays against; output shapes are resolved from the graph's symbolic dimensions (the same
    names as the inputs': batch, sequence), so nothing has to run before the capture.
    """

    def __init__(self, model: OrtModel, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> None:
        import onnxruntime as ort

        self.model, self.device = model, model.io_device
        self.binding = model.session.io_binding()
        dims: dict[str, int] = {}
        self.inputs, self.dtypes = {}, {}
        for meta in model.session.get_inputs():
            if meta.name not in feeds:
                raise InputError(
                    f"{model.path}: bind() needs input {meta.name!r}; the model takes "
                    f"{[i.name for i in model.session.get_inputs()]}"
                )
            if meta.type not in NUMPY_TYPES:
                raise InputError(
                    f"{model.path}: input {meta.name!r} has type {meta.type}; bind() handles {sorted(NUMPY_TYPES)}"
                )
            self.dtypes[meta.name] = NUMPY_TYPES[meta.type]
            value = np.ascontiguousarray(feeds[meta.name], dtype=self.dtypes[meta.name])
            dims.update({d: n for d, n in zip(meta.shape, value.shape) if isinstance(d, str)})
            self.inputs[meta.name] = ort.OrtValue.ortvalue_from_numpy(value, self.device, 0)
            self.binding.bind_ortvalue_input(meta.name, self.inputs[meta.name])
        self.outputs = {}
        metas = {o.name: o for o in model.session.get_outputs()}
        for name in outputs:
            shape = [dims.get(d, -1) if isinstance(d, str) else d for d in metas[name].shape]
            if any(not isinstance(d, int) or d < 0 for d in shape):
                raise InputError(
                    f"{model.path}: cannot tell the shape of output {name!r} ({metas[name].shape}) from the inputs' "
                    f"dimensions {dims}"
                )
            self.outputs[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, NUMPY_TYPES[metas[name].type], self.device, 0
            )
            self.binding.bind_ortvalue_output(name, self.outputs[name])

    def update(self, feeds: dict[str, np.ndarray]) -> None:
        for name, value in feeds.items():
            self.inputs[name].update_inplace(np.ascontiguousarray(value, dtype=self.dtypes[name]))

    def run(self) -> None:
        self.model.session.run_with_iobinding(self.binding)

    def output(self, name: str = "logits") -> np.ndarray:
        return self.outputs[name].numpy()
