"""ONNX Runtime sessions that stand in for a transformers model inside a lightkit task.

`OrtModel` takes the same keyword inputs as the Hugging Face model and returns an object with
`.logits` (and `.loss` when labels are given), so a task's own `step`, metrics and reports run on
an exported artifact unchanged: that is how `lightkit export` scores each form for its parity gate.
The CUDA execution provider is used when present, with the CPU as fallback.

For serving fixed shapes fast, `OrtModel.bind` runs the session with IO binding (inputs copied
once into device buffers, outputs left on the device) and, with `cuda_graph=True`, replays a
captured CUDA graph, which removes the per-kernel launch cost that bounds small batches
(benchmarks/results/inference-gpu-*.json).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightkit.errors import InputError

NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


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
    def causal(self) -> bool:
        """A decoder exported with a KV cache (past.*/present.* tensors)."""
        return bool(self.past)

    @property
    def present_names(self) -> list[str]:
        """The cache outputs, in the order of the past inputs they feed."""
        return [i.name.replace("past.", "present.") for i in self.past]

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=np.float32) for i in self.past}

    def feeds(self, **inputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Session inputs for whole sequences (a decoder gets an empty past and mask-derived positions)."""
        missing = [n for n in self.token_inputs if n not in inputs]
        if missing:
            raise ValueError(f"{self.path}: missing inputs {missing}; the model takes {self.token_inputs}")
        feeds = {n: inputs[n].detach().cpu().numpy().astype(np.int64) for n in self.token_inputs}
        if self.causal:
            mask = feeds["attention_mask"]
            feeds["position_ids"] = positions(mask)
            feeds.update(self._empty_past(mask.shape[0]))
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

    def greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Greedy continuation (B, <= max_new_tokens) of left-padded prompts; see `generate`."""
        return self.generate(input_ids, attention_mask, max_new_tokens, eos_token_id)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stopped: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> torch.Tensor:
        """Continuation (B, <= max_new_tokens) of left-padded prompts, reusing the KV cache.

        A row is finished at `eos_token_id`, or when `stopped` (given the (B, t) tokens so far)
        marks it, e.g. on a stop string; a finished row is padded with `eos_token_id` (0 without
        one) and the loop ends when every row is finished.

        Prefill runs the prompts with an empty past; each step then feeds one token and the
        previous step's present tensors (see `_decode`). Only the graph's decoding outputs come
        back to the host, never the logits: `next_token`
        (argmax, B ids) for greedy, or `top_logits`/`top_ids` (the B x k best, k = 64 at export)
        for sampling with `temperature` > 0, `top_k` <= k and/or `top_p`. Sampling draws from
        those k candidates, which is exact for top_k <= k and drops the tail beyond them otherwise.
        """
        sample = temperature > 0
        outputs = {o.name: o for o in self.session.get_outputs()}
        if sample and "top_ids" not in outputs:
            raise InputError(
                f"{self.path}: sampling needs the top_logits/top_ids outputs; re-export the model with this lightkit"
            )
        if sample and top_k is not None and not 0 < top_k <= outputs["top_ids"].shape[1]:
            raise InputError(
                f"top_k={top_k}: the artifact exports the {outputs['top_ids'].shape[1]} best tokens per step; use "
                "1..that"
            )
        rng = np.random.default_rng(seed)
        new, done = [], np.zeros(input_ids.size(0), dtype=bool)

        pad = eos_token_id if eos_token_id is not None else 0

        def choose(values: list[np.ndarray]) -> np.ndarray | None:
            nonlocal done
            token = sample_candidates(values[0], values[1], temperature, top_k, top_p, rng) if sample else values[0]
            token = np.where(done, pad, token)
            if eos_token_id is not None:
                done |= token == eos_token_id
            new.append(token)
            if stopped is not None:
                done |= stopped(np.stack(new, axis=1))
            return None if done.all() or len(new) == max_new_tokens else token

        self._decode(input_ids, attention_mask, ["top_logits", "top_ids"] if sample else ["next_token"], choose)
        return torch.from_numpy(np.stack(new, axis=1))

    def prefill(self, prompt: torch.Tensor) -> PromptCache:
        """One prompt (P,) run once: its KV cache and the next-token log-probs after it, so that
        many continuations can be scored without running the prompt again (`continuation_logprobs`)."""
        ids = prompt.view(1, -1)
        feeds = self.feeds(input_ids=ids, attention_mask=torch.ones_like(ids))
        logits, *present = self.session.run(["logits", *self.present_names], feeds)
        past = {i.name: value for i, value in zip(self.past, present)}
        return PromptCache(past, torch.log_softmax(torch.from_numpy(logits[0, -1]).float(), dim=-1), ids.size(1))

    def continuation_logprobs(self, cache: PromptCache, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs (N, R, V) after each prefix of N right-padded continuations (N, R)
        of a prefilled prompt: row i, step t is the distribution of token t + 1 given the prompt and
        tokens[i, :t + 1]. Padding past `lengths` is masked out and never seen by real tokens (causal)."""
        n, r = tokens.shape
        mask = torch.arange(r).expand(n, r) < lengths.view(-1, 1)
        feeds = {
            "input_ids": tokens.cpu().numpy().astype(np.int64),
            "attention_mask": np.concatenate([np.ones((n, cache.length), np.int64), mask.numpy().astype(np.int64)], 1),
            "position_ids": np.broadcast_to(np.arange(cache.length, cache.length + r), (n, r)).copy(),
        }
        # The prompt's cache is repeated per row: the graph takes one past per row. A copy of the
        # cache, far cheaper than running the prompt again for every candidate.
        feeds.update({name: np.repeat(value, n, axis=0) for name, value in cache.past.items()})
        logits = torch.from_numpy(self.session.run(["logits"], feeds)[0]).float()
        return torch.log_softmax(logits, dim=-1)

    def forced(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) of the KV-cache loop fed `tokens` (B, T) instead of its own picks.

        Step t sees the prompt plus tokens[:, :t], exactly as `generate` would had it chosen them,
        so the loop is checked token by token against a reference path without one early
        near-tie sending the rest of the sequence elsewhere (what the parity gate needs).
        """
        logits: list[np.ndarray] = []

        def choose(values: list[np.ndarray]) -> np.ndarray | None:
            logits.append(values[0][:, -1])
            return None if len(logits) == tokens.size(1) else tokens[:, len(logits) - 1].numpy()

        self._decode(input_ids, attention_mask, ["logits"], choose)
        return torch.from_numpy(np.stack(logits, axis=1)).float()

    def _decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        host_outputs: list[str],
        choose: Callable[[list[np.ndarray]], np.ndarray | None],
    ) -> None:
        """Prefill, then one token per step until `choose` (given the host outputs) returns None.

        With IO binding the present tensors stay where the session computed them (GPU memory on
        the CUDA EP) and are bound as the next step's past; only `host_outputs` come back.
        """
        import onnxruntime as ort

        device = self.io_device
        ids = input_ids.cpu().numpy().astype(np.int64)
        mask = attention_mask.cpu().numpy().astype(np.int64)
        position_ids = positions(mask)
        past = {
            name: ort.OrtValue.ortvalue_from_numpy(value, device, 0)
            for name, value in self._empty_past(ids.shape[0]).items()
        }
        binding = self.session.io_binding()
        while True:
            # bind_cpu_input promises no copy of the array: what it binds stays referenced until
            # the run, never a temporary made by the call itself.
            host = {
                "input_ids": np.ascontiguousarray(ids),
                "attention_mask": np.ascontiguousarray(mask),
                "position_ids": np.ascontiguousarray(position_ids),
            }
            for name, value in host.items():
                binding.bind_cpu_input(name, value)
            for name, value in past.items():
                binding.bind_ortvalue_input(name, value)
            for name in host_outputs:
                binding.bind_output(name, "cpu")
            for name in self.present_names:
                binding.bind_output(name, device)
            self.session.run_with_iobinding(binding)
            values = binding.get_outputs()
            past = {i.name: value for i, value in zip(self.past, values[len(host_outputs) :])}
            token = choose([v.numpy() for v in values[: len(host_outputs)]])
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            if token is None:
                return
            position_ids = position_ids[:, -1:] + 1
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)
            ids = np.array(token, dtype=np.int64).reshape(-1, 1)

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


@dataclass
class PromptCache:
    """A prefilled prompt: its per-layer KV cache (batch 1), the log-probs of the token after it,
    and its length."""

    past: dict[str, np.ndarray]
    next_logprobs: torch.Tensor  # (V,)
    length: int


def sample_candidates(
    logits: np.ndarray,
    ids: np.ndarray,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """One token per row from its (k,) best candidates (sorted best first, as TopK returns them)."""
    scores = logits.astype(np.float64) / temperature
    if top_k is not None:
        scores[:, top_k:] = -np.inf
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p is not None:  # nucleus: the smallest prefix whose mass reaches top_p (always >= 1 token)
        keep = np.cumsum(probs, axis=1) - probs < top_p
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    choice = np.array([rng.choice(probs.shape[1], p=row) for row in probs])
    return ids[np.arange(ids.shape[0]), choice].astype(np.int64)


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
