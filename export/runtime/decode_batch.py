"""Rows of an exported decoder stepping together over one KV cache, where rows may leave and join.

`DecodeBatch` is the step of the KV-cache loop (`lightkit.export.runtime.decode_loop`): `start`
prefills left-padded prompts over an empty past; `step` feeds one token per row with the previous
step's present tensors bound as the past (IO binding: on the CUDA EP the cache stays in GPU
memory, only the decoding outputs come back to the host).

Between steps the batch can change, which is what a server needs to admit requests as rows
finish (continuous batching; `lightkit serve`):
- `free` marks finished rows' slots free. A free slot still runs (one token per step, its output
  unread) until a joining row takes it: dropping a row from the middle of the cache would copy
  every layer's cache, which on 2 CPU cores at 32 rows of 400 slots costs about one step (and
  whole seconds when the copies' fresh pages are first touched), while a free slot costs a
  32nd of one. `compact` drops free slots with that one copy; the caller does it when half the
  slots are free.
- `join` prefills a new prompt *into* the running cache. Its real tokens are laid at the cache's
  last slots, behind a masked past of zeros, so the new row is a left-padded row of the same
  width as the others and decodes from the next step on exactly as if it had been in the batch
  from the start. The prompt is run once, at batch 1 (GroupQueryAttention takes several new
  tokens over a past only at batch 1), and its cache written into free slots (in place: the
  present tensors on the host are the next step's past), or appended when none is free (a copy);
  a request's `n` choices share that one prefill.

Why the new row is padded and not the running rows: on the fused graph the rotary position of a
key is its slot in the cache (`lightkit.export.builder.fused_decoder`), baked into the cached keys.
Padding the running rows would shift their slots and so every later query's distance to their
keys. So a prompt joins only when it fits in the cache as it is (`fits`); a longer one waits.
On the CUDA EP, writing a joining row or compacting moves the cache through the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightkit.export.runtime.sessions import OrtModel, positions


class DecodeBatch:
    """The rows decoding together and their cache (see the module docstring)."""

    def __init__(self, model: OrtModel, outputs: list[str]) -> None:
        """`outputs`: the graph's outputs each run returns to the host, one row per batch row
        (`next_token`, `top_logits`/`top_ids`, or `logits`)."""
        self.model, self.outputs = model, outputs
        self.device = model.io_device
        self.binding = model.session.io_binding()
        self.past: dict[str, Any] = {}  # name -> OrtValue (B, kv_heads, width, head_dim)
        self.mask = np.zeros((0, 0), np.int64)  # (B, width): 0 on padding
        self.position = np.zeros(0, np.int64)  # (B,) each row's last position (graphs with position_ids)
        self.free_slots: list[int] = []  # rows whose decoding is over: slots for joining rows

    @property
    def rows(self) -> int:
        """Slots in the batch, free ones included."""
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        """Cache slots so far: the widest prompt plus the steps since, padding included."""
        return self.mask.shape[1]

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """Prefill left-padded prompts (B, P) over an empty past; the host outputs after them."""
        self.mask = attention_mask.astype(np.int64)
        position_ids = positions(self.mask)
        self.position = position_ids[:, -1]
        values, self.past = self._run(input_ids, self.mask, position_ids, self.model.empty_past(len(input_ids)))
        return values

    def step(self, tokens: np.ndarray) -> list[np.ndarray]:
        """Feed one token per row (B,; anything in a free slot); the host outputs after it."""
        self.mask = np.concatenate([self.mask, np.ones((self.rows, 1), np.int64)], axis=1)
        self.position = self.position + 1
        values, self.past = self._run(tokens.reshape(-1, 1), self.mask, self.position[:, None], self.past)
        return values

    def free(self, slots: list[int]) -> None:
        """These rows are done: their slots take the next joining rows."""
        self.free_slots = sorted({*self.free_slots, *slots})

    def compact(self) -> np.ndarray:
        """Drop the free slots from the cache (one copy of it); the old slot of each row kept, in order."""
        keep = np.ones(self.rows, dtype=bool)
        keep[self.free_slots] = False
        self.mask, self.position, self.free_slots = self.mask[keep], self.position[keep], []
        self.past = {name: self._device(value.numpy()[keep]) for name, value in self.past.items()}
        return np.flatnonzero(keep)

    def fits(self, length: int) -> bool:
        """Whether a prompt of `length` tokens can join now (module docstring: never wider than the cache)."""
        return 0 < length <= self.width

    def join(self, prompt: list[int], copies: int = 1) -> tuple[list[int], list[np.ndarray]]:
        """Prefill `prompt` into the cache as `copies` rows: their slots, and their host outputs
        (copies, ...) after the prompt."""
        if not self.fits(len(prompt)):
            raise ValueError(f"a prompt of {len(prompt)} tokens cannot join a cache of {self.width} slots")
        pad = self.width - len(prompt)
        mask = np.array([0] * pad + [1] * len(prompt), np.int64)
        position_ids = positions(mask[None])
        past = self.model.empty_past(1, pad)
        values, present = self._run(np.array([prompt], np.int64), mask[None], position_ids[:, pad:], past)
        reused, self.free_slots = self.free_slots[:copies], self.free_slots[copies:]
        added = copies - len(reused)
        slots = reused + list(range(self.rows, self.rows + added))
        if added:
            self.mask = np.concatenate([self.mask, np.zeros((added, self.width), np.int64)])
            self.position = np.concatenate([self.position, np.zeros(added, np.int64)])
        self.mask[slots], self.position[slots] = mask, position_ids[0, -1]
        for name, value in self.past.items():
            cache, row = value.numpy(), present[name].numpy()[0]  # on the host: views, not copies
            if added:
                cache = np.concatenate([cache, np.repeat(row[None], added, axis=0)])
            cache[reused] = row
            if added or self.device != "cpu":
                self.past[name] = self._device(cache)
        return slots, [np.repeat(value, copies, axis=0) for value in values]

    def _device(self, value: np.ndarray) -> Any:
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, 0)

    def _run(
        self, ids: np.ndarray, mask: np.ndarray, position_ids: np.ndarray, past: dict[str, Any]
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """One session run: the host outputs, and the present tensors left where they were computed."""
        # bind_cpu_input promises no copy of the array: what it binds stays referenced until the run.
        host = {"input_ids": np.ascontiguousarray(ids, np.int64), "attention_mask": np.ascontiguousarray(mask)}
        if not self.model.positions_inside:
            host["position_ids"] = np.ascontiguousarray(position_ids, np.int64)
        for name, value in host.items():
            self.binding.bind_cpu_input(name, value)
        # An OrtValue made from a host array holds a view of it, kept alive by the `past` dict until the run.
        past = {name: self._device(value) if isinstance(value, np.ndarray) else value for name, value in past.items()}
        for name, value in past.items():
            self.binding.bind_ortvalue_input(name, value)
        for name in self.outputs:
            self.binding.bind_output(name, "cpu")
        for name in self.model.present_names:
            self.binding.bind_output(name, self.device)
        self.model.session.run_with_iobinding(self.binding)
        values = self.binding.get_outputs()
        self.binding.clear_binding_inputs()
        self.binding.clear_binding_outputs()
        present = {i.name: value for i, value in zip(self.model.past, values[len(self.outputs) :])}
        return [v.numpy() for v in values[: len(self.outputs)]], present
