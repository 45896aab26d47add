"""Every reader fails the same way on malformed input: the file, the line, and what was expected.

One row per malformed file, per reader, as a new user would write them: each is read through the
DataModule that takes it (the same call `lightkit fit` makes), and the error text is asserted.
docs/errors.md lists these cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import DATA

from lightkit.data import (
    CoNLLDataModule,
    InstructionDataModule,
    MaskedLMDataModule,
    PreferenceDataModule,
    PromptDataModule,
    TextClassificationDataModule,
)
from lightkit.io.errors import InputError

TOKENIZER = str(DATA / "tokenizer")
LATIN1 = "café".encode("latin-1")  # b"caf\xe9": a real-world export that is not UTF-8

# (reader, DataModule and its settings, file name, content, expected error)
CASES: list[tuple[str, type, dict[str, Any], str, bytes, str]] = [
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"text,category\nhello,a\n",
        r"train\.csv:1: the header has no column\(s\) \['label'\]; it has \['text', 'category'\]",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"text,label\n" + LATIN1 + b",a\n",
        r"train\.csv:2: not valid UTF-8 \(byte 0xe9 at column 4\); set the data's `encoding`",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"text,label\nhello,a\nhello,a,extra\n",
        r"train\.csv:3: 3 field\(s\), but the header has 2 \(text, label\)",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"text,label\nhello,a\nhello\n",
        r"train\.csv:3: 1 field\(s\), but the header has 2",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"text,label\nhello,a\n,a\n",
        r"train\.csv:3: missing or empty column\(s\) \['text'\]",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"text,label\nhello,a\nbye,\n",
        r"train\.csv:3: missing or empty column\(s\) \['label'\]",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b"",
        r"train\.csv: empty file; expected a header row naming the columns",
    ),
    (
        "csv",
        TextClassificationDataModule,
        {},
        "train.csv",
        b'text,label\n"never closed,a\n',
        r"train\.csv:\d+: .*field\(s\)|train\.csv:\d+: malformed CSV",
    ),
    (
        "tsv",
        TextClassificationDataModule,
        {},
        "train.tsv",
        b"text\tlabel\nhello\ta\textra\n",
        r"train\.tsv:2: 3 field\(s\), but the header has 2",
    ),
    (
        "tsv",
        TextClassificationDataModule,
        {"text_pair_column": "pair"},
        "train.tsv",
        b"text\tlabel\nhello\ta\n",
        r"train\.tsv:1: the header has no column\(s\) \['pair'\]",
    ),
    (
        "jsonl",
        TextClassificationDataModule,
        {},
        "train.jsonl",
        b'{"text": "a", "label": "x"}\n{"text": \n',
        r"train\.jsonl:2: not a JSON object",
    ),
    (
        "jsonl",
        TextClassificationDataModule,
        {},
        "train.jsonl",
        b"[1, 2]\n",
        r"train\.jsonl:1: expected a JSON object, got list",
    ),
    (
        "jsonl",
        TextClassificationDataModule,
        {},
        "train.jsonl",
        b'{"text": "a", "label": "x"}\n{"text": "b"}\n',
        r"train\.jsonl:2: missing column\(s\) \['label'\]; the row has \['text'\]",
    ),
    (
        "jsonl",
        TextClassificationDataModule,
        {},
        "train.jsonl",
        b'{"text": "' + LATIN1 + b'", "label": "x"}\n',
        r"train\.jsonl:1: not valid UTF-8 \(byte 0xe9 at column 14\)",
    ),
    (
        "prompts.txt",
        PromptDataModule,
        {},
        "prompts.txt",
        b"hello\n" + LATIN1 + b"\n",
        r"prompts\.txt:2: not valid UTF-8 \(byte 0xe9 at column 4\)",
    ),
    ("prompts.txt", PromptDataModule, {}, "prompts.txt", b"\n  \n", r"prompts\.txt: no prompts"),
    (
        "prompts.jsonl",
        PromptDataModule,
        {"prompt_template": "Q: {question}"},
        "prompts.jsonl",
        b'{"prompt": "x"}\n',
        r"prompts\.jsonl:1: prompt_template needs field 'question'; the row has \['prompt'\]",
    ),
    (
        "instruction",
        InstructionDataModule,
        {},
        "sft.jsonl",
        b'{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n',
        r"sft\.jsonl:2: missing column\(s\) \['response'\]; the row has \['prompt'\]",
    ),
    (
        "instruction",
        InstructionDataModule,
        {},
        "sft.jsonl",
        b'{"prompt": "a", "response": "' + LATIN1 + b'"}\n',
        r"sft\.jsonl:1: not valid UTF-8",
    ),
    (
        "preference",
        PreferenceDataModule,
        {},
        "pairs.jsonl",
        b'{"prompt": "p", "chosen": "c"}\n',
        r"pairs\.jsonl:1: missing column\(s\) \['rejected'\]",
    ),
    (
        "preference",
        PreferenceDataModule,
        {},
        "pairs.jsonl",
        b'{"prompt": "p", "chosen": 1, "rejected": "r"}\n',
        r"pairs\.jsonl:1: field\(s\) \['chosen'\] must be text",
    ),
    (
        "lm.txt",
        MaskedLMDataModule,
        {},
        "corpus.txt",
        b"one doc\n\nanother\n" + LATIN1 + b"\n",
        r"corpus\.txt:4: not valid UTF-8 \(byte 0xe9 at column 4\)",
    ),
    (
        "lm.jsonl",
        MaskedLMDataModule,
        {},
        "corpus.jsonl",
        b'{"body": "x"}\n',
        r"corpus\.jsonl:1: missing column\(s\) \['text'\]; the row has \['body'\]",
    ),
    (
        "lm.jsonl",
        MaskedLMDataModule,
        {},
        "corpus.jsonl",
        b'{"text": ["not", "text"]}\n',
        r"corpus\.jsonl:1: field 'text' is list, expected text",
    ),
    ("lm.txt", MaskedLMDataModule, {}, "corpus.txt", b"\n\n", r"corpus\.txt: no text found"),
    (
        "conll",
        CoNLLDataModule,
        {},
        "train.conll",
        b"alice B-PER\n" + LATIN1 + b" O\n",
        r"train\.conll:2: not valid UTF-8 \(byte 0xe9 at column 4\)",
    ),
]


def build(module: type, settings: dict[str, Any], path: Path) -> Any:
    """What `lightkit fit` does with the file: construct the DataModule, then set up fit."""
    dm = module(tokenizer=TOKENIZER, train_file=str(path), val_file=str(path), batch_size=2, **settings)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    ("reader", "module", "settings", "name", "content", "message"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_a_malformed_file_names_its_file_line_and_what_was_expected(
    tmp_path: Path, reader: str, module: type, settings: dict, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        build(module, settings, path)


def test_a_folder_corpus_names_the_empty_file_and_the_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "corpus" / "sport").mkdir(parents=True)
    (tmp_path / "corpus" / "sport" / "001.txt").write_text("a match report")
    (tmp_path / "corpus" / "sport" / "002.txt").write_text("  \n")
    with pytest.raises(InputError, match=r"corpus/sport/002\.txt: missing or empty column\(s\) \['text'\]"):
        build(TextClassificationDataModule, {}, tmp_path / "corpus")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no <label>/<name>\.txt files in this folder"):
        build(TextClassificationDataModule, {}, tmp_path / "empty")


def test_encoding_reads_a_latin1_export_and_an_unknown_codec_is_named(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_bytes(b"text,label\n" + LATIN1 + b",food\nhello,greeting\n")
    dm = build(TextClassificationDataModule, {"encoding": "latin-1"}, csv)
    assert sorted(r["text"] for r in dm.rows()["train"]) == ["café", "hello"]
    conll = tmp_path / "train.conll"
    conll.write_bytes(b"alice B-PER\n" + LATIN1 + b" O\n")
    assert [s.tokens for s in build(CoNLLDataModule, {"encoding": "latin-1"}, conll).sentences()["train"]] == [
        ["alice", "café"]
    ]
    with pytest.raises(InputError, match=r"encoding: 'utf-9' is not a codec Python knows"):
        build(TextClassificationDataModule, {"encoding": "utf-9"}, csv)


def test_the_cli_reports_a_reader_error_as_it_is(tmp_path: Path) -> None:
    """Through `lightkit fit` (LightningCLI instantiating the DataModule), the reader's own
    message reaches the user, not a wrapper's."""
    from helpers import ROOT

    from lightkit.cli.main import main

    bad = tmp_path / "train.csv"
    bad.write_bytes(b"text,category\nhello,a\n")
    with pytest.raises(InputError, match=r"train\.csv:1: the header has no column\(s\) \['label'\]"):
        main(
            [
                "fit",
                "--config",
                str(ROOT / "tests" / "conf" / "classification.yaml"),
                "--trainer.default_root_dir",
                str(tmp_path),
                "--data.init_args.train_file",
                str(bad),
            ]
        )
