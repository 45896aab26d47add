"""Serve an exported artifact on raw text: the saved tokenizer, batching, and readable outputs.

    from lightkit.export.runtime.serving import Artifact
    ner = Artifact("runs/ner/onnx", form="int8-cpu")
    for tags in ner.tag(["Apple opens a store in Paris", ...], batch_size=64): ...
    clf = Artifact("runs/classification/onnx")
    for label, probs in clf.classify(texts): ...
    lm = Artifact("runs/sft_headlines/onnx", form="int8-cpu")
    for answer in lm.generate(["Write a headline for: ..."], chat=True, max_new_tokens=32): ...

Input streams through in batches (an iterable is consumed lazily and results are yielded as
each batch finishes), so a long file is served with flat memory. Label names, the task and the
input names come from the artifact's manifest; nothing from the training code is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from lightkit.export.runtime.generation import GenerationSettings, Generator, Prompt, RefineSettings
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.errors import InputError
from lightkit.objectives.word_tags import decode_words, transition_rules


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class Artifact:
    """One form of a `lightkit export` folder, with its tokenizer and labels.

    Args:
        folder: the export folder (holds manifest.json, tokenizer/ and one folder per form).
        form: which form to run; default the first of int8-gpu / fp16 (GPU-ready), qat (the int8
            form a QAT checkpoint was trained for), int8-cpu, fp32.
        device: `auto` (CUDA EP when present) or `cpu`.
        max_length: longest input in tokens (default: the manifest's, as trained); longer text is
            truncated and words past it are tagged O.
    """

    def __init__(
        self, folder: str | Path, form: str | None = None, device: str = "auto", max_length: int | None = None
    ) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise InputError(f"{self.folder}: no manifest.json; give a folder written by lightkit export")
        self.manifest = json.loads(manifest_path.read_text())
        forms = self.manifest["forms"]
        if form is None:
            ready = [f for f in ("int8-gpu", "fp16") if forms.get(f, {}).get("gpu_ready")]
            form = next(iter(ready + [f for f in ("qat", "int8-cpu", "fp32") if f in forms] + list(forms)))
        if form not in forms:
            raise InputError(f"{manifest_path}: no form {form!r} (forms: {sorted(forms)})")
        self.form = form
        self.session = OrtModel(self.folder / forms[form]["file"], device=device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder / "tokenizer")
        self.labels: list[str] = self.manifest.get("labels", [])
        self.max_length = max_length or self.manifest.get("max_length") or 128
        self._rules = transition_rules(self.labels) if self.labels else None

    def _encode(self, texts: list[Any], split_words: bool) -> dict[str, Any]:
        return self.tokenizer(
            texts,
            is_split_into_words=split_words,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )

    def classify(self, texts: Iterable[str], batch_size: int = 32) -> Iterator[tuple[str, dict[str, float]]]:
        """(label, probabilities) per text, for a sequence classification artifact."""
        self._expect("labels")
        for chunk in batched(texts, batch_size):
            enc = self._encode(chunk, split_words=False)
            probs = torch.softmax(self.session(**enc).logits, dim=-1).numpy()
            for row in probs:
                yield self.labels[int(row.argmax())], dict(zip(self.labels, map(float, row)))

    def tag(
        self, sentences: Iterable[str | list[str]], batch_size: int = 32, viterbi: bool = False
    ) -> Iterator[list[tuple[str, str]]]:
        """(word, IOB2 tag) per word, for a token classification artifact; words split on whitespace."""
        self._expect("word_tags")
        for chunk in batched(sentences, batch_size):
            words = [s.split() if isinstance(s, str) else list(s) for s in chunk]
            enc = self._encode(words, split_words=True)
            logits = self.session(**enc).logits
            for i, sentence in enumerate(words):
                ids = decode_words(logits[i], enc.word_ids(i), len(sentence), self._rules if viterbi else None)
                yield [(word, self.labels[label]) for word, label in zip(sentence, ids)]

    def generate(
        self,
        prompts: Iterable[str | Prompt],
        chat: bool = False,
        system_prompt: str | None = None,
        refine: RefineSettings | None = None,
        **decoding: Any,
    ) -> Iterator[dict[str, Any]]:
        """One record per prompt for a decoder artifact: response, tokens, finish reason (and the
        refiner's result with `refine`). `decoding` are `lightkit.export.runtime.generation.GenerationSettings`'s
        settings: max_new_tokens, temperature, top_k, top_p, seed, stop, batch_size."""
        if self.manifest.get("export_kind") != "decoder":
            what = "--refine" if refine is not None else "generation"
            raise InputError(
                f"{self.folder}: a {self.manifest['objective']} artifact is not a decoder; {what} needs one "
                "exported from a causal LM"
            )
        context = self.manifest.get("context") or self.max_length
        generator = Generator(self.session, self.tokenizer, context, str(self.folder / self.form))
        rows = (p if isinstance(p, Prompt) else Prompt(p, f"prompt {i}", {}) for i, p in enumerate(prompts, 1))
        yield from generator.run(rows, GenerationSettings(**decoding), chat, system_prompt, refine)

    def _expect(self, serving: str) -> None:
        # The task declared how its served batches are decoded (BaseTask.serving); the manifest
        # records it, so serving needs no training code.
        if self.manifest.get("serving") != serving:
            raise InputError(
                f"{self.folder}: a {self.manifest['objective']} artifact serves {self.manifest.get('serving')!r}, "
                f"not {serving!r}"
            )


__all__ = ["Artifact", "batched"]
