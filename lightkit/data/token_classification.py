"""CoNLLDataModule: CoNLL-style NER files to aligned, dynamically padded batches.

Labels are per word, models see subwords. Alignment (`align_labels`) follows the fast tokenizer's
`word_ids()`: the first subword of a word carries the word's label; later subwords get -100 so the
loss and the metrics count each word once (or, with `label_all_tokens`, the word's label with B-X
mapped to I-X, since a later subword is inside the entity, never its start); special tokens get
-100 because they are not words at all.

Evaluation is always on words, never subwords: every example keeps its full list of gold word
labels (`word_labels`) and a `word_ids` map, and predictions are read back from each word's first
subword. Words cut off by truncation at `max_length` have no subword; they are predicted `O` and so
count as missed entities, never silently dropped from the gold (the count is logged as
`<stage>_truncated_words`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import DataCollatorForTokenClassification

from lightkit.data import sources
from lightkit.data.base import BaseDataModule, file_digest
from lightkit.data.conll import CoNLLFormatError, Sentence, TagScheme, label_list, read_conll, read_lines, to_iob2
from lightkit.io.errors import InputError

IGNORE = -100  # the index torch's cross-entropy ignores
NO_WORD = -1  # word_ids value for special and padding tokens


def align_labels(
    word_ids: Sequence[int | None],
    word_labels: Sequence[int],
    label_all_tokens: bool = False,
    b_to_i: dict[int, int] | None = None,
) -> list[int]:
    """Token labels for one encoded sentence; see the module docstring for the rules."""
    labels: list[int] = []
    previous = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(word_labels[word])
        elif label_all_tokens:
            label = word_labels[word]
            labels.append((b_to_i or {}).get(label, label))
        else:
            labels.append(IGNORE)
        previous = word
    return labels


class CoNLLDataModule(BaseDataModule):
    """Token classification data from CoNLL-style files (see `lightkit.data.conll`).

    Files (see BaseDataModule): CoNLL for train/val/test (label names come from train_file
    unless `labels` is given; carved splits are cut by sentence); `predict_file` is raw text,
    one sentence per line, whitespace-tokenised, blank lines skipped.

    A `dataset` gives one sentence per row: a list of words (`tokens_column`) and a list of
    tags (`tags_column`), as text or as integers of a `Sequence(ClassLabel)` feature, whose
    names are then the label names (CoNLL-2003's `ner_tags`).

    Args:
        labels: label names (IOB2), overriding those read from train_file; needed to predict
            without a train file.
        tag_scheme: scheme of the files' tags; all are converted to IOB2. `auto` reads BIOES when
            S-/E- tags occur, else IOB1/IOB2.
        label_all_tokens: label every subword (B-X becomes I-X after the first) instead of only
            the first; evaluation stays on words either way.
        tokens_column: a dataset's column of words.
        tags_column: a dataset's column of tags.
        **kwargs: tokenizer, files, holdout, batch sizes, max_length, ... (see BaseDataModule).
    """

    def __init__(
        self,
        labels: list[str] | None = None,
        tag_scheme: TagScheme = "auto",
        label_all_tokens: bool = False,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if labels is not None:
            self.label_names = list(labels)
        elif self.files["train"] is not None or self.dataset is not None:
            # Carved splits share one source, so its whole label set is known; with separate
            # files, the labels are the train file's and a test tag outside them is an error.
            splits = self.sentences()
            found = label_list(splits["train"] + (splits["validation"] + splits["test"] if self.carved else []))
            # A ClassLabel keeps its own order (ids match the dataset's); tags that IOB2
            # conversion adds (from IOB1 data) follow it.
            names = self.class_names(tags_column)
            self.label_names = names + [t for t in found if t not in names] if names else found
        else:
            raise InputError("CoNLLDataModule: give `train_file` or `labels` (label names)")
        self.label2id = {name: i for i, name in enumerate(self.label_names)}

    # -- reading -------------------------------------------------------------------------------
    def sentences(self) -> dict[str, list[Sentence]]:
        return self.splits(lambda path: read_conll(path, self.hparams.tag_scheme, self.hparams.encoding))

    def from_rows(self, rows: list[dict[str, Any]], split: str) -> list[Sentence]:
        h = self.hparams
        self.require_columns(split, {"tokens_column": h.tokens_column, "tags_column": h.tags_column})
        names = self.class_names(h.tags_column) or (list(h.labels) if h.labels else None)
        sentences = []
        for row in rows:
            where, tokens, tags = row["_where"], row[h.tokens_column], row[h.tags_column]
            if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
                raise CoNLLFormatError(
                    f"{where}: expected equally long lists of words and tags, got {tokens!r} and {tags!r}"
                )
            tags = [sources.label_name(t, names, h.tags_column, where) for t in tags]
            if not tokens:
                continue  # datasets keep CoNLL's document separators as empty rows
            try:
                sentences.append(Sentence([str(t) for t in tokens], to_iob2(tags, h.tag_scheme), 0, where))
            except ValueError as e:
                raise CoNLLFormatError(f"{where}: {e}") from None
        return sentences

    def _check(self, split: str, sentences: list[Sentence]) -> None:
        if not sentences:
            raise CoNLLFormatError(f"{self.source(split)}: the {split} split has no sentences")
        for s in sentences:
            for offset, tag in enumerate(s.tags):
                if tag not in self.label2id:
                    where = f"{s.where} word {offset}" if s.where else f"{self.source(split)}:{s.line + offset}"
                    raise CoNLLFormatError(
                        f"{where}: tag {tag!r} is not among the "
                        f"{len(self.label_names)} labels the model was built with "
                        f"({', '.join(self.label_names)})"
                    )

    # -- tokenising ----------------------------------------------------------------------------
    def _encode(self, batch: dict[str, list]) -> dict[str, list]:
        enc = self.tokenizer(
            batch["tokens"], is_split_into_words=True, truncation=True, max_length=self.hparams.max_length
        )
        b_to_i = {
            i: self.label2id.get("I-" + name[2:], i) for i, name in enumerate(self.label_names) if name.startswith("B-")
        }
        out: dict[str, list] = {k: list(v) for k, v in enc.items()}
        out["word_ids"], out["tokens"] = [], batch["tokens"]
        if "tags" in batch:
            out["labels"], out["word_labels"] = [], []
        for i in range(len(batch["tokens"])):
            ids = enc.word_ids(i)
            out["word_ids"].append([NO_WORD if w is None else w for w in ids])
            if "tags" in batch:
                word_labels = [self.label2id[t] for t in batch["tags"][i]]
                out["word_labels"].append(word_labels)
                out["labels"].append(align_labels(ids, word_labels, self.hparams.label_all_tokens, b_to_i))
        return out

    def build_split(self, split: str) -> Dataset:
        if split == "predict":
            # Read through a generator into an on-disk Arrow file, never as one Python list: a
            # long input file is tagged in flat memory (the tokenised result is memory-mapped too).
            path = self.files["predict"]
            encoding = self.hparams.encoding
            if not any(line.strip() for _, line in read_lines(path, encoding)):
                raise CoNLLFormatError(f"{path}: no sentences to tag (file is empty)")
            source = Dataset.from_generator(
                _predict_sentences,
                gen_kwargs={
                    "path": str(path),
                    "digest": file_digest(path),
                    "encoding": encoding,
                },  # the digest keys the cache
                cache_dir=str(self.cache_dir / "datasets"),
            )
        else:
            sentences = self.sentences()[split]
            self._check(split, sentences)
            source = Dataset.from_dict({"tokens": [s.tokens for s in sentences], "tags": [s.tags for s in sentences]})
        key = {
            "split": split,
            "source": file_digest(self.source(split)) if self.dataset is None else None,
            "holdout": [self.hparams.holdout, self.hparams.split_seed] if self.carved else None,
            "labels": self.label_names,
            "max_length": self.hparams.max_length,
            "label_all_tokens": self.hparams.label_all_tokens,
            "scheme": self.hparams.tag_scheme,
        }
        return self.tokenize_cached(source, self._encode, key)

    # -- batching ------------------------------------------------------------------------------
    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad to the longest sequence in the batch (dynamic padding, rounded up to
        `pad_to_multiple_of`); keep word-level fields as lists."""
        extra = ("tokens", "word_labels", "word_ids")
        padded = DataCollatorForTokenClassification(
            self.tokenizer, pad_to_multiple_of=self.hparams.pad_to_multiple_of, return_tensors="pt"
        )([{k: v for k, v in f.items() if k not in extra} for f in features])
        length = padded["input_ids"].size(1)
        padded["word_ids"] = torch.tensor([f["word_ids"] + [NO_WORD] * (length - len(f["word_ids"])) for f in features])
        padded["tokens"] = [f["tokens"] for f in features]
        if "word_labels" in features[0]:
            padded["word_labels"] = [f["word_labels"] for f in features]
        return padded


def _predict_sentences(path: str, digest: str, encoding: str = "utf-8") -> Iterator[dict[str, list[str]]]:
    """The non-blank lines of a predict file, split on whitespace (`digest` only keys the cache)."""
    for _, line in read_lines(path, encoding):
        if line.strip():
            yield {"tokens": line.split()}
