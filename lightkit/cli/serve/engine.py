"""Batching across requests: one worker thread owns the artifact's session and serves waves.

Requests become jobs in a bounded queue (full: the request is refused with 429 at once, never left
to hang). The worker takes the oldest job, then gathers every queued job that can share its
forward passes, up to `batch_size` rows, until no new one has come for `batch_wait_ms` (10 x that
at most), and runs them as one batch: a *wave*. Jobs that cannot share it (a decoder request with
other sampling settings) wait, first in line, for the next wave.

- Decoders (`DecoderEngine`): each choice of each request is a row of the artifact's KV cache
  (`DecodeBatch`, the step of `lightkit generate`'s loop); rows share sampling settings
  (temperature, top_p; a seeded request runs alone, so its seed reproduces its answer). A row
  ends at EOS, at one of its request's stop strings, at its own `max_tokens`, or when its client
  is gone; its answer is sent the moment it ends, and streamed token by token before that, and
  its row leaves the batch. Between steps, queued requests *join* the running wave as rows free
  up (continuous batching): each is prefilled into the running cache and decodes from the next
  step on. A request joins when it shares the wave's sampling settings, there is room for its
  rows, its prompts fit in the cache as it is (`DecodeBatch.fits`), its answer fits the context,
  and the cache has grown less than `join_tokens` past the wave's start; the queue is taken in
  order, so a request that cannot join stops the joining and the wave drains for it. The wave
  ends with its last row. `join_tokens: 0` turns joining off (a request waits for the next wave).
- Encoders (`EncoderEngine`): the texts of every gathered request are tagged or classified as one
  batch (`Artifact.tag` / `Artifact.classify`) and handed back per request.

Results go back to the request's event loop through `call_soon_threadsafe`: the HTTP side never
blocks on the model.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lightkit.cli.serve.protocol import ApiError
from lightkit.export.runtime.decode_batch import DecodeBatch
from lightkit.export.runtime.decode_loop import sample_candidates
from lightkit.export.runtime.generation import Generator, Prompt, RefineSettings, cut_at_stop


@dataclass(eq=False)
class Job:
    """One request: its size in rows, what it may share a wave with, and where its events go."""

    size: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def key(self) -> Any:
        return None

    def post(self, *event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Batcher:
    """The bounded queue and the wave-gathering worker (module docstring); `serve` runs a wave."""

    def __init__(self, queue_size: int, batch_size: int, batch_wait_ms: float, metrics: Any) -> None:
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.pending: deque[Job] = deque()
        self.batch_size, self.wait = batch_size, batch_wait_ms / 1000
        self.metrics = metrics
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lightkit-serve-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    def depth(self) -> int:
        return self.queue.qsize() + len(self.pending)

    def submit(self, job: Job) -> None:
        if job.size > self.batch_size:
            raise ApiError(400, f"the request needs {job.size} rows; this server decodes at most {self.batch_size}")
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise ApiError(
                429, f"the server is busy ({self.depth()} requests queued); retry later", kind="rate_limit_error"
            ) from None
        self.metrics.queue_depth.set(self.depth())

    def _wave(self) -> list[Job]:
        first = self.pending.popleft() if self.pending else self.queue.get(timeout=0.1)
        wave, rows = [first], first.size
        for job in list(self.pending):
            if job.key() == first.key() and rows + job.size <= self.batch_size:
                self.pending.remove(job)
                wave.append(job)
                rows += job.size
        # A burst of requests arrives over some milliseconds: the wave waits `wait` after the last
        # arrival (not after the first), up to 10 x `wait` in all.
        began = time.perf_counter()
        deadline = began + self.wait
        while rows < self.batch_size:
            try:
                job = self.queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if job.key() == first.key() and rows + job.size <= self.batch_size:
                wave.append(job)
                rows += job.size
            else:
                self.pending.append(job)
            deadline = min(time.perf_counter() + self.wait, began + 10 * self.wait)
        return [job for job in wave if not job.cancelled]

    def take(self, key: Any, room: int, fits: Callable[[Job], bool]) -> list[Job]:
        """Queued jobs that join a running wave now, oldest first, never waiting: each shares `key`,
        fits in `room` rows and `fits`; the first that does not stops the taking (it goes next)."""
        taken: list[Job] = []
        while True:
            if self.pending:
                job = self.pending[0]
            else:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                self.pending.append(job)
            if job.cancelled:
                self.pending.popleft()
                continue
            if job.key() != key or job.size > room or not fits(job):
                break
            taken.append(self.pending.popleft())
            room -= job.size
        self.metrics.queue_depth.set(self.depth())
        return taken

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                wave = self._wave()
            except queue.Empty:
                continue
            self.metrics.queue_depth.set(self.depth())
            if not wave:
                continue
            try:
                self.serve(wave)
            except Exception as e:  # one wave failing must not take the server down
                for job in wave:
                    job.post("error", ApiError(500, f"the model failed on this batch: {type(e).__name__}: {e}",
                                               kind="server_error"))  # fmt: skip

    def serve(self, wave: list[Job]) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class DecodeJob(Job):
    """A completion request: its prompts' token ids, `n` choices each, and how to decode them."""

    prompts: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    n: int = 1
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    refine: RefineSettings | None = None

    def key(self) -> Any:
        if self.temperature == 0:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p, self.seed, id(self) if self.seed is not None else None)


class Row:
    """One choice being decoded: its job, choice index, prompt ids, and what was sent of it."""

    def __init__(self, job: DecodeJob, index: int, ids: list[int]) -> None:
        self.job, self.index, self.ids = job, index, ids
        self.tokens: list[int] = []  # decoded so far
        self.sent = ""
        self.finished = False


class DecoderEngine(Batcher):
    """Waves of decoder rows (module docstring)."""

    def __init__(self, generator: Generator, tokenizer: Any, join_tokens: int, *args: Any) -> None:
        super().__init__(*args)
        self.generator, self.tokenizer, self.join_tokens = generator, tokenizer, join_tokens
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos or 0)

    def serve(self, wave: list[Job]) -> None:
        jobs: list[DecodeJob] = wave  # type: ignore[assignment]
        first = jobs[0]
        rows = [row for job in jobs for row in self._rows(job)]
        width = max(len(r.ids) for r in rows)
        input_ids = np.array([[self.pad] * (width - len(r.ids)) + r.ids for r in rows], np.int64)
        mask = np.array([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows], np.int64)
        slots: list[Row | None] = list(rows)  # None: a free slot
        sample = first.temperature > 0
        top_p = first.top_p if sample and first.top_p < 1 else None
        rng = np.random.default_rng(first.seed)
        batch = DecodeBatch(self.generator.session, ["top_logits", "top_ids"] if sample else ["next_token"])
        began, generated = time.perf_counter(), [0]
        values = batch.start(input_ids, mask)
        start = batch.width

        def fits(job: DecodeJob) -> bool:  # the conditions to join (module docstring)
            grown = batch.width - start
            return (grown < self.join_tokens and batch.width + job.max_tokens <= self.generator.context
                    and all(batch.fits(len(ids)) for ids in job.prompts))  # fmt: skip

        while True:
            decoding = [i for i, row in enumerate(slots) if row is not None]
            tokens = np.full(len(slots), self.pad, np.int64)
            if sample:
                tokens[decoding] = sample_candidates(*(v[decoding] for v in values), first.temperature, None, top_p,
                                                     rng)  # fmt: skip
            else:
                tokens[decoding] = values[0][decoding]
            for i in decoding:
                row = slots[i]
                assert row is not None
                if self._step(row, [*row.tokens, int(tokens[i])], generated):
                    batch.free([i])
                    slots[i] = None
            live = len(slots) - len(batch.free_slots)
            if not live:
                break
            values = batch.step(tokens)
            for job in self.take(first.key(), self.batch_size - live, fits):  # type: ignore[arg-type]
                values = self._join(batch, job, slots, values)  # type: ignore[arg-type]
                live += job.size
            if 2 * live <= len(slots):  # half the slots free and no one to take them: compacted (DecodeBatch)
                order = batch.compact()
                slots, values = [slots[i] for i in order], [v[order] for v in values]
        seconds = time.perf_counter() - began
        self.metrics.generated_tokens.inc(generated[0])
        self.metrics.tokens_per_second.set(generated[0] / max(seconds, 1e-9))

    def _join(self, batch: DecodeBatch, job: DecodeJob, slots: list[Row | None], values: list[np.ndarray]
              ) -> list[np.ndarray]:  # fmt: skip
        """Prefill `job`'s prompts into the running `batch`: its rows take their `slots`, and their
        first tokens' outputs their place in `values` (both grown when the batch grew)."""
        for p, ids in enumerate(job.prompts):  # its n choices share one prefill
            taken, new = batch.join(ids, copies=job.n)
            grown = batch.rows - len(slots)
            slots += [None] * grown
            values = [np.concatenate([v, np.zeros((grown, *v.shape[1:]), v.dtype)]) for v in values]
            for k, slot in enumerate(taken):
                slots[slot] = Row(job, p * job.n + k, ids)
                for value, first in zip(values, new):
                    value[slot] = first[k]
        self.metrics.joined_rows.inc(job.size)
        return values

    @staticmethod
    def _rows(job: DecodeJob) -> list[Row]:
        return [Row(job, p * job.n + k, ids) for p, ids in enumerate(job.prompts) for k in range(job.n)]

    def _step(self, row: Row, tokens: list[int], generated: list[int]) -> bool:
        """After a decoding step: finish the row if it is done (True), else stream what is new."""
        job = row.job
        row.tokens = tokens
        if self.eos is not None and self.eos in tokens:
            return self._finish(row, tokens[: tokens.index(self.eos) + 1], "stop", generated)
        text, hit = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), job.stop)
        if hit:
            return self._finish(row, tokens, "stop", generated, text)
        if len(tokens) >= job.max_tokens:
            return self._finish(row, tokens, "length", generated)
        if job.cancelled:
            row.finished = True
            return True
        if job.stream and job.refine is None:
            # Held back: a partial UTF-8 character, and the tail a stop string could still start in.
            hold = max((len(s) - 1 for s in job.stop), default=0)
            safe = text.rstrip("\ufffd")
            safe = safe[: len(safe) - hold] if hold else safe
            if len(safe) > len(row.sent) and safe.startswith(row.sent):
                job.post("delta", row.index, safe[len(row.sent) :])
                row.sent = safe
        return False

    def _finish(self, row: Row, tokens: list[int], reason: str, generated: list[int], text: str | None = None) -> bool:
        job = row.job
        row.finished = True
        generated[0] += len(tokens)
        refined = None
        if job.refine is not None and not job.cancelled:
            prompt = Prompt(job.texts[row.index // job.n], f"choice {row.index}", {})
            refined = self.generator.refine(prompt, row.ids, tokens, job.refine)
            tokens = refined.tokens
            reason = "stop" if tokens and tokens[-1] == self.eos else reason
            text = None
        if text is None:
            text = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), job.stop)[0]
        if job.stream and text.startswith(row.sent) and len(text) > len(row.sent):
            job.post("delta", row.index, text[len(row.sent) :])
        info: dict[str, Any] = {"text": text, "finish_reason": reason, "completion_tokens": len(tokens)}
        if refined is not None:
            info["refined"] = {"before": refined.before, "after": refined.after, "calls": refined.calls}
        job.post("end", row.index, info)
        return True


@dataclass(eq=False)
class EncodeJob(Job):
    """A tag or classify request: its texts, and Viterbi decoding for tags."""

    kind: str = "tag"
    texts: list[str] = field(default_factory=list)
    viterbi: bool = False

    def key(self) -> Any:
        return (self.kind, self.viterbi)


class EncoderEngine(Batcher):
    """Waves of encoder inputs: every gathered request's texts as one batch (module docstring)."""

    def __init__(self, run: dict[str, Callable[..., Any]], *args: Any) -> None:
        super().__init__(*args)
        self.run = run

    def serve(self, wave: list[Job]) -> None:
        jobs: list[EncodeJob] = wave  # type: ignore[assignment]
        texts = [t for job in jobs for t in job.texts]
        first = jobs[0]
        options = {"viterbi": first.viterbi} if first.kind == "tag" else {}
        results = list(self.run[first.kind](texts, batch_size=max(1, len(texts)), **options))
        start = 0
        for job in jobs:
            job.post("result", results[start : start + len(job.texts)])
            start += len(job.texts)
