"""TextClassificationDataModule: labelled texts (or text pairs) from CSV, TSV, JSONL or class folders.

Formats, chosen by the path:
- `.csv`, `.tsv`: a header row naming the columns; `.jsonl` / `.json`: one object per line;
- a folder: one sub-folder per label holding one `.txt` file per example (the layout of BBC News
  and of many hand-made corpora), read in sorted order. A file that does not decode with
  `encoding` (UTF-8 by default) is decoded as cp1252 (which also covers latin-1's printable range),
  since that is what such corpora hold: BBC News has one. CSV, TSV and JSONL files decode
  strictly: a bad byte stops with its file and line.
A `dataset` (see BaseDataModule) gives the same columns; a `ClassLabel` label column gives the
label names in its own order (IMDB's neg, pos), and its integers are read as those names.
Label names come from the training data (sorted) unless `labels` is given or the dataset has a
ClassLabel; an unknown label in another split is an error naming the file and its row.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import DataCollatorWithPadding

from lightkit.data import sources
from lightkit.data.base import BaseDataModule
from lightkit.data.files import Rows, read_corpus_file, read_lines, read_table
from lightkit.io.errors import InputError


def read_folder(path: Path, text_column: str, label_column: str, encoding: str = "utf-8") -> Rows:
    rows = []
    for label_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        for file in sorted(label_dir.glob("*.txt")):
            rows.append(
                {
                    text_column: read_corpus_file(file, encoding).strip(),
                    label_column: label_dir.name,
                    "_where": str(file),
                }
            )
    if not rows:
        raise InputError(f"{path}: no <label>/<name>.txt files in this folder")
    return rows


class TextClassificationDataModule(BaseDataModule):
    """Sequence classification data.

    Files (see BaseDataModule) in the formats of the module docstring; carved splits are
    stratified by label; `predict_file` may also be a `.txt` file with one text per line.

    Args:
        text_column: column holding the text.
        text_pair_column: column holding the second text of a pair (NLI, paraphrase), if any.
        label_column: column holding the label name.
        labels: label names, overriding those read from train_file; needed to predict without it.
        **kwargs: tokenizer, files, holdout, batch sizes, max_length, ... (see BaseDataModule).
    """

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        labels: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if labels is not None:
            self.label_names = list(labels)
        elif self.files["train"] is not None or self.dataset is not None:
            found = sorted({str(r[label_column]) for r in self.rows()["train"]})  # read now: errors come first
            self.label_names = self.class_names(label_column) or found
        else:
            raise InputError("TextClassificationDataModule: give `train_file` or `labels` (label names)")
        self.label2id = {name: i for i, name in enumerate(self.label_names)}

    # -- reading -------------------------------------------------------------------------------
    def _read(self, path: Path, split: str = "train") -> Rows:
        h = self.hparams
        if path.is_dir():
            return read_folder(path, h.text_column, h.label_column, h.encoding)
        if split == "predict" and path.suffix == ".txt":
            return [{h.text_column: t, "_where": f"{path}:{i}"} for i, t in read_lines(path, h.encoding)]
        return read_table(path, self._columns(split, labelled=split != "predict"), h.encoding)

    def from_rows(self, rows: Rows, split: str) -> Rows:
        columns = {"text_column": self.hparams.text_column, "label_column": self.hparams.label_column}
        if self.hparams.text_pair_column:
            columns["text_pair_column"] = self.hparams.text_pair_column
        self.require_columns(split, columns)
        names, label = self.class_names(self.hparams.label_column), self.hparams.label_column
        return [{**row, label: sources.label_name(row[label], names, label, row["_where"])} for row in rows]

    def rows(self) -> dict[str, Rows]:
        return self.splits(self._read, key=lambda r: str(r.get(self.hparams.label_column)))

    def _columns(self, split: str, labelled: bool) -> list[str]:
        cols = [self.hparams.text_column]
        if self.hparams.text_pair_column:
            cols.append(self.hparams.text_pair_column)
        return cols + [self.hparams.label_column] if labelled else cols

    def _check(self, split: str, rows: Rows) -> None:
        where = self.source(split)
        if not rows:
            raise InputError(f"{where}: the {split} split has no examples")
        labelled = split != "predict"
        for row in rows:
            missing = [c for c in self._columns(split, labelled) if row.get(c) in (None, "")]
            if missing:
                present = sorted(k for k in row if not k.startswith("_"))
                raise InputError(f"{row['_where']}: missing or empty column(s) {missing}; the row has {present}")
            if labelled and str(row[self.hparams.label_column]) not in self.label2id:
                raise InputError(
                    f"{row['_where']}: label {row[self.hparams.label_column]!r} is not among the "
                    f"{len(self.label_names)} labels ({', '.join(self.label_names)})"
                )

    # -- tokenising ----------------------------------------------------------------------------
    def _encode(self, batch: dict[str, list]) -> dict[str, list]:
        text, pair = self.hparams.text_column, self.hparams.text_pair_column
        enc = self.tokenizer(
            batch[text], batch[pair] if pair else None, truncation=True, max_length=self.hparams.max_length
        )
        out = {k: list(v) for k, v in enc.items()}
        if "label" in batch:
            out["labels"] = [self.label2id[str(x)] for x in batch["label"]]
        else:  # predict: keep the text for the output file
            out["text"] = batch[text]
        return out

    def build_split(self, split: str) -> Dataset:
        rows = self.rows()[split] if split != "predict" else self._read(self.source("predict"), "predict")
        self._check(split, rows)
        data = {c: [str(r[c]) for r in rows] for c in self._columns(split, labelled=False)}
        if split != "predict":
            data["label"] = [str(r[self.hparams.label_column]) for r in rows]
        key = {
            "split": split,
            "data": hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
            "labels": self.label_names,
            "max_length": self.hparams.max_length,
        }
        return self.tokenize_cached(Dataset.from_dict(data), self._encode, key)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [f.pop("text") for f in features] if "text" in features[0] else None
        batch = DataCollatorWithPadding(
            self.tokenizer, pad_to_multiple_of=self.hparams.pad_to_multiple_of, return_tensors="pt"
        )(features)
        if texts is not None:
            batch["text"] = texts
        return batch
