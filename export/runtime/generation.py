"""Text generation from a decoder artifact: prompts in, one JSON-ready record per prompt out.

Prompts are encoded as the model was tuned (the tokenizer's chat template with `chat`), batched
and left-padded, and decoded with the artifact's KV cache (`DecodeLoop.generate`: greedy or seeded
sampling; a row stops at EOS or at a stop string, and the batch ends when every row has). With
`refine`, each answer is then moved toward a better objective by `lightkit.export.runtime.refiner`.
Used by `Artifact.generate` and by `lightkit generate`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightkit.data.chat import generation_prompt
from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.refiner import TokenReward, check_budget, refine
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.errors import InputError


@dataclass
class Prompt:
    """One prompt, with its source line and any other text fields of its row (for a reward)."""

    text: str
    where: str
    columns: dict[str, str]


@dataclass
class GenerationSettings:
    """How to decode: greedy at temperature 0, else seeded sampling from the top-k / top-p tokens."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        self.stop = check_stop(self.stop)
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise InputError(
                f"max_new_tokens and batch_size must be >= 1, got {self.max_new_tokens} and {self.batch_size}"
            )
        if self.temperature < 0:
            raise InputError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")


@dataclass
class RefineSettings:
    """`lightkit.export.runtime.refiner.refine`'s settings, and the reward it adds (text in, floats out)."""

    max_calls: int | None = 32
    max_ms: float | None = None
    top_k: int = 4
    length_weight: float | None = None  # None: Y0's mean token cost (see lightkit.export.runtime.refiner)
    batch_size: int = 32
    reward: Callable[..., Sequence[float]] | None = None

    def __post_init__(self) -> None:
        check_budget(self.max_calls, self.max_ms)


def read_prompts(source: str | Path) -> Iterator[Prompt]:
    """Prompts from a text file (one per non-empty line), a JSON-lines file of `{"prompt": ...}`
    rows (other string fields are kept as columns), or standard input for `-`."""
    name = str(source)
    if name == "-":
        lines: Iterable[str] = sys.stdin
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"prompts: {path} does not exist")
        lines = path.open(encoding="utf-8")
    jsonl = name.endswith(".jsonl")
    for number, line in enumerate(lines, 1):
        where = f"{name}:{number}"
        if not line.strip():
            continue
        if not jsonl:
            yield Prompt(line.rstrip("\n"), where, {})
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise InputError(f'{where}: expected a JSON object with a "prompt" string, got {line.strip()[:80]!r}')
        columns = {k: v for k, v in row.items() if k != "prompt" and isinstance(v, str)}
        yield Prompt(row["prompt"], where, columns)


def check_stop(stop: Any) -> list[str]:
    """Stop strings as a list of non-empty strings (one string is a list of one)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise InputError(f"stop: expected a string or a list of non-empty strings, got {stop!r}")
    return list(stop)


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop string it contains, and whether it had one."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class Generator:
    """A decoder session and its tokenizer, with what they need to turn prompts into answers."""

    def __init__(self, session: OrtModel, tokenizer: Any, context: int, where: str) -> None:
        if not session.causal:
            raise InputError(f"{where}: this form is not a decoder with a KV cache, so it cannot generate text")
        self.session, self.tokenizer, self.context, self.where = session, tokenizer, context, where
        self.loop = DecodeLoop(session)
        self.eos = tokenizer.eos_token_id

    def encode(self, prompt: Prompt, chat: bool, system_prompt: str | None) -> list[int]:
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise InputError(
                    f"{self.where}: the artifact's tokenizer has no chat template; drop --chat to use prompts as "
                    "plain text"
                )
            text = generation_prompt(self.tokenizer, prompt.text, system_prompt)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(prompt.text)["input_ids"]

    def run(
        self,
        prompts: Iterable[Prompt],
        decoding: GenerationSettings,
        chat: bool = False,
        system_prompt: str | None = None,
        refine_with: RefineSettings | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One record per prompt, in order: the row's other string fields (JSON-lines prompts), prompt,
        response, tokens, finish (eos / stop / length), and with `refine_with` the refiner's
        before/after objective, calls and moves."""
        batch: list[tuple[Prompt, list[int]]] = []
        batches = 0
        for prompt in prompts:
            ids = self.encode(prompt, chat, system_prompt)
            if len(ids) + decoding.max_new_tokens > self.context:
                raise InputError(
                    f"{prompt.where}: the prompt is {len(ids)} tokens; with max_new_tokens {decoding.max_new_tokens} "
                    f"that is over the model's context of {self.context} tokens"
                )
            batch.append((prompt, ids))
            if len(batch) == decoding.batch_size:
                yield from self._batch(batch, decoding, batches, refine_with)
                batch, batches = [], batches + 1
        if batch:
            yield from self._batch(batch, decoding, batches, refine_with)

    def _batch(
        self,
        batch: list[tuple[Prompt, list[int]]],
        decoding: GenerationSettings,
        number: int,
        refine_with: RefineSettings | None,
    ) -> Iterator[dict[str, Any]]:
        width = max(len(ids) for _, ids in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.eos or 0)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch])
        stop = decoding.stop
        ends: list[int | None] = [None] * len(batch)  # tokens up to the step a row's stop string appeared

        def stopped(tokens: np.ndarray) -> np.ndarray:
            hit = np.zeros(len(tokens), dtype=bool)
            for i in (i for i, end in enumerate(ends) if end is None):  # finished rows are padding from here on
                hit[i] = cut_at_stop(self.tokenizer.decode(tokens[i], skip_special_tokens=True), stop)[1]
                if hit[i]:
                    ends[i] = tokens.shape[1]
            return hit

        new = self.loop.generate(
            input_ids, mask, decoding.max_new_tokens, self.eos, decoding.temperature, decoding.top_k, decoding.top_p,
            None if decoding.seed is None else decoding.seed + number, stopped if stop else None,
        )  # fmt: skip
        for (prompt, ids), row, end in zip(batch, new.tolist(), ends):
            # A row ends at its stop string, at its EOS, or at max_new_tokens; what follows is padding.
            tokens = row[:end] if end is not None else row[: row.index(self.eos) + 1] if self.eos in row else row
            record: dict[str, Any] = {**prompt.columns, "prompt": prompt.text}  # a row's other fields ride along
            if refine_with is not None:
                refined = self.refine(prompt, ids, tokens, refine_with)
                record["refined"] = {
                    "before": refined.before, "after": refined.after, "calls": refined.calls,
                    "length_weight": refined.length_weight, "moves": refined.moves, "ms": 1000 * refined.seconds,
                    "response_before": self._text(tokens, stop)[0],
                }  # fmt: skip
                tokens = refined.tokens
            text, hit = self._text(tokens, stop)
            finish = "eos" if tokens and tokens[-1] == self.eos else "stop" if hit else "length"
            yield {**record, "response": text, "tokens": len(tokens), "finish": finish}

    def refine(self, prompt: Prompt, ids: list[int], tokens: list[int], settings: RefineSettings) -> Any:
        """One decoded answer (`tokens` after the prompt's `ids`) refined with `settings`
        (lightkit.export.runtime.refiner.refine; its `Refined` result)."""
        return refine(
            self.session, torch.tensor(ids), tokens, top_k=settings.top_k, length_weight=settings.length_weight,
            reward=self._token_reward(prompt, settings), max_calls=settings.max_calls, max_ms=settings.max_ms,
            batch_size=settings.batch_size, eos_token_id=self.eos,
        )  # fmt: skip

    def _text(self, tokens: list[int], stop: list[str]) -> tuple[str, bool]:
        return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)

    def _token_reward(self, prompt: Prompt, settings: RefineSettings) -> TokenReward | None:
        """The text reward as the refiner takes it: candidates' token ids in, one float each out."""
        if settings.reward is None:
            return None
        reward = settings.reward

        def on_tokens(candidates: list[list[int]]) -> Sequence[float]:
            texts = self.tokenizer.batch_decode(candidates, skip_special_tokens=True)
            columns = {k: [v] * len(texts) for k, v in prompt.columns.items()}
            return [float(v) for v in reward([prompt.text] * len(texts), texts, **columns)]

        return on_tokens
