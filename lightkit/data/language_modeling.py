"""Language-modelling data: raw text packed into fixed blocks, for masked and causal LM.

Documents come from a `.txt` file (documents separated by blank lines), a `.jsonl` file (one
document per line, in `text_column`) or a folder (every `.txt` file below it, sorted, one document
each; non-UTF-8 files decoded as cp1252). They are tokenised without special tokens, joined with a
separator (the tokenizer's SEP for masked LM, EOS for causal LM) and cut into blocks of
`block_size` tokens. The last partial block is kept and padded, never dropped (`pack_blocks`).

Masked LM uses transformers' `DataCollatorForLanguageModeling` (15% selected; 80% [MASK], 10%
random, 10% kept; specials and padding never selected). Its whole-word masking reads word
boundaries from `offset_mapping`, which do not survive packing documents together, so packing
writes a synthetic `offset_mapping` built from the fast tokenizer's `word_ids()`: the tokens of one
word touch, and different words have a gap. That makes whole-word masking work for any fast
tokenizer (WordPiece, BPE, Unigram), not only for `##` continuation pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import DataCollatorForLanguageModeling

from lightkit.data.base import BaseDataModule
from lightkit.data.files import read_corpus_file, read_jsonl, read_text
from lightkit.io.errors import InputError


def read_documents(path: Path, text_column: str = "text", encoding: str = "utf-8") -> list[str]:
    """Documents of a .txt / .jsonl file or a folder of .txt files (see the module docstring)."""
    if path.is_dir():
        docs = [read_corpus_file(file, encoding) for file in sorted(path.rglob("*.txt"))]
    elif path.suffix == ".jsonl":
        docs = []
        for row in read_jsonl(path, [text_column], encoding):
            if not isinstance(row[text_column], str):
                raise InputError(
                    f"{row['_where']}: field {text_column!r} is {type(row[text_column]).__name__}, expected text"
                )
            docs.append(row[text_column])
    else:
        docs = read_text(path, encoding).split("\n\n")
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise InputError(f"{path}: no text found")
    return docs


def pack_blocks(
    token_ids: Sequence[Sequence[int]],
    word_ids: Sequence[Sequence[int]],
    separator: int,
    content_size: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """Join documents (separator after each) and cut the stream into `content_size` pieces.

    Returns (blocks of ids, blocks of global word ids; -1 for separators). The last block may be
    shorter: it is kept, and padded later. Every token appears exactly once, in order.
    """
    stream: list[int] = []
    words: list[int] = []
    offset = 0
    for ids, wids in zip(token_ids, word_ids):
        stream.extend(ids)
        words.extend(offset + w for w in wids)
        offset += (max(wids) + 1) if wids else 0
        stream.append(separator)
        words.append(-1)
    blocks = [stream[i : i + content_size] for i in range(0, len(stream), content_size)]
    word_blocks = [words[i : i + content_size] for i in range(0, len(words), content_size)]
    return blocks, word_blocks


def synthetic_offsets(word_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character-like offsets in which tokens of one word touch and words are separated by a gap.

    That is the only thing transformers' whole-word masking reads from `offset_mapping`.
    """
    offsets, end, previous = [], 0, None
    for w in word_ids:
        start = end if (w == previous and w >= 0) else end + 1
        end = start + 1
        offsets.append((start, end))
        previous = w
    return offsets


class PackedTextDataModule(BaseDataModule):
    """Raw text packed into blocks; base of the masked and causal LM DataModules.

    Files (see BaseDataModule): .txt, .jsonl or folders of text; carved splits are cut by
    document. `predict_file` (causal LM) holds prompts: one per line in a .txt file, or rows
    with the template's fields in a .jsonl file. A `dataset` gives one document per row, in
    `text_column`; with `streaming: true` it is read, tokenised and packed lazily (per thousand
    documents), for corpora too big for memory: set `trainer.max_steps`, since a stream has no
    length to plan a schedule by.

    Args:
        text_column: the text field of .jsonl files.
        block_size: tokens per block, special tokens included.
        **kwargs: tokenizer, files, holdout, batch sizes, ... (see BaseDataModule; max_length is
            not used).
    """

    def __init__(
        self,
        text_column: str = "text",
        block_size: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    # -- what masked and causal LM differ in ---------------------------------------------------
    @property
    def separator_id(self) -> int:
        raise NotImplementedError

    def wrap(self, block: list[int]) -> tuple[list[int], list[int]]:
        """(ids with the model's special tokens, their special-tokens mask) for one content block."""
        return block, [0] * len(block)

    @property
    def n_special(self) -> int:
        return 0

    # -- reading and packing -------------------------------------------------------------------
    def from_rows(self, rows: list[dict[str, Any]], split: str) -> list[str]:
        self.require_columns(split, {"text_column": self.hparams.text_column})
        return [doc for row in rows for doc in self.documents([row[self.hparams.text_column]], row["_where"])]

    def documents(self, texts: list[Any], where: str) -> list[str]:
        """The non-empty documents among a `text_column`'s values; anything but text is an error."""
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            column = self.hparams.text_column
            raise InputError(f"{where}: field {column!r} is {type(bad).__name__}, expected text")
        return [t.strip() for t in texts if t.strip()]

    def _encode_stream(self, batch: dict[str, list]) -> dict[str, list]:
        """`_encode` on a streamed batch of rows: their non-empty `text_column` documents."""
        column = self.hparams.text_column
        if column not in batch:
            raise InputError(f"{self.dataset} has no column '{column}' (text_column); its columns are {list(batch)}")
        docs = self.documents(batch[column], str(self.dataset))
        return self._encode({"text": docs}) if docs else {"input_ids": [], "special_tokens_mask": [], "word_ids": []}

    def _encode(self, batch: dict[str, list]) -> dict[str, list]:
        enc = self.tokenizer(batch["text"], add_special_tokens=False)
        word_ids = [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(batch["text"]))]
        blocks, word_blocks = pack_blocks(
            enc["input_ids"], word_ids, self.separator_id, self.hparams.block_size - self.n_special
        )
        out: dict[str, list] = {"input_ids": [], "special_tokens_mask": [], "word_ids": []}
        for block, words in zip(blocks, word_blocks):
            ids, special = self.wrap(block)
            out["input_ids"].append(ids)
            out["special_tokens_mask"].append(special)
            pad = len(ids) - len(words)  # specials added around the content
            out["word_ids"].append([-1] * (pad // 2 + pad % 2) + words + [-1] * (pad // 2))
        return out

    def build_split(self, split: str) -> Dataset | IterableDataset:
        if split == "predict":
            return self.prompt_dataset()
        if self.dataset is not None and self.dataset.streaming:
            # Packed per STREAM_BATCH documents: one short (padded) block per thousand documents.
            self.require_columns(split, {"text_column": self.hparams.text_column})
            return self.stream(split, self._encode_stream, [self.hparams.text_column])
        docs = self.splits(lambda path: read_documents(path, self.hparams.text_column, self.hparams.encoding))[split]
        if not docs:
            raise InputError(f"{self.source(split)}: the {split} split has no text")
        key = {
            "split": split,
            "docs": [len(docs), hash_texts(docs)],
            "block_size": self.hparams.block_size,
            "separator": self.separator_id,
        }
        # One batched map over all documents: packing must see the whole stream.
        return self.tokenize_cached(Dataset.from_dict({"text": docs}), self._encode, key, batch_size=None)

    def prompt_dataset(self) -> Dataset:
        raise InputError(f"{type(self).__name__} does not support predict")

    def pad_blocks(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad blocks to the longest in the batch; only the last block of a split is short."""
        length = max(len(f["input_ids"]) for f in features)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.separator_id
        batch: dict[str, list] = {"input_ids": [], "attention_mask": [], "special_tokens_mask": [], "word_ids": []}
        for f in features:
            n = length - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [pad_id] * n)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * n)
            batch["special_tokens_mask"].append(f["special_tokens_mask"] + [1] * n)
            batch["word_ids"].append(f["word_ids"] + [-1] * n)
        return {k: torch.tensor(v) for k, v in batch.items()}


def hash_texts(texts: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


class MaskedLMDataModule(PackedTextDataModule):
    """Packed text with BERT-style masking (see the module docstring).

    Args:
        mlm_probability: fraction of tokens (or, with whole_word_mask, of words) selected.
        mask_replace_prob: of the selected, the fraction replaced by [MASK].
        random_replace_prob: of the selected, the fraction replaced by a random token; the rest
            stay unchanged.
        whole_word_mask: select whole words (all their subwords) instead of single tokens.
        mask_seed: seed of the masking generator, for reproducible masks; None draws from torch's
            global generator (seeded by `seed_everything`).
        **kwargs: files, block_size, tokenizer, ... (see PackedTextDataModule).
    """

    def __init__(
        self,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_mask: bool = False,
        mask_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.tokenizer.mask_token is None:
            raise InputError(f"tokenizer '{self.tokenizer_name}' has no mask token; masked LM needs one")
        self.collator = DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm=True,
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            whole_word_mask=whole_word_mask,
            seed=mask_seed,
            return_tensors="pt",
        )

    @property
    def separator_id(self) -> int:
        return self.tokenizer.sep_token_id if self.tokenizer.sep_token_id is not None else self.tokenizer.eos_token_id

    @property
    def n_special(self) -> int:
        return 2

    def wrap(self, block: list[int]) -> tuple[list[int], list[int]]:
        # BERT-style `[CLS] ... [SEP]` (RoBERTa's `<s> ... </s>` are its cls/sep tokens). Written
        # out because transformers 5's generic fast tokenizer has no build_inputs_with_special_tokens.
        tok = self.tokenizer
        first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        ids = [first, *block, self.separator_id]
        # The separators inside the block are special too: never selected for masking.
        special = [1, *(1 if i == self.separator_id else 0 for i in block), 1]
        return ids, special

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        padded = self.pad_blocks(features)
        examples = [
            {
                "input_ids": ids,
                "special_tokens_mask": special,
                "offset_mapping": torch.tensor(synthetic_offsets(words.tolist())),
            }
            for ids, special, words in zip(padded["input_ids"], padded["special_tokens_mask"], padded["word_ids"])
        ]
        if not self.collator.whole_word_mask:
            for e in examples:
                del e["offset_mapping"]
        batch = self.collator(examples)  # input_ids (masked), labels (-100 off the selected)
        batch["attention_mask"] = padded["attention_mask"]
        return batch
