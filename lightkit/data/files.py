"""Reading text files (CSV, TSV, JSONL, plain text) with every row tagged by its file and line.

Shared by every DataModule that reads records or lines (classification, instruction tuning,
prompts, preferences, language modelling), so each bad input is reported the same way: the file,
the line, and what was expected. Files are decoded with the DataModule's `encoding` ("utf-8" by
default); a byte that does not decode is named with its line, never left to a codec traceback.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightkit.io.errors import InputError

Rows = list[dict[str, Any]]  # each row keeps its `_where` ("path:line", or the file) for error messages


def undecodable(where: str, byte: int, column: int, encoding: str) -> str:
    """The message for a byte that does not decode (shared with the streaming CoNLL reader)."""
    name = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
    return (
        f"{where}: not valid {name} (byte {byte:#04x} at column {column}); "
        "set the data's `encoding` to the file's (e.g. latin-1) or re-encode it as UTF-8"
    )


def decode(raw: bytes, path: Path, encoding: str = "utf-8") -> str:
    """`raw` decoded; an undecodable byte is an error naming its line and column."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(undecodable(f"{path}:{line}", raw[e.start], column, encoding)) from None


def read_text(path: Path, encoding: str = "utf-8") -> str:
    return decode(path.read_bytes(), path, encoding)


def read_corpus_file(file: Path, encoding: str = "utf-8") -> str:
    """One document of a folder corpus: `encoding`, else cp1252 with replacement characters.

    Folders of .txt files (BBC News and many hand-made corpora) mix encodings file by file; one
    odd file should not stop the corpus, so here alone the fallback is deliberate and documented.
    """
    raw = file.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_lines(path: Path, encoding: str = "utf-8") -> list[tuple[int, str]]:
    """(line number, text) of every non-empty line."""
    return [(n, line) for n, line in enumerate(read_text(path, encoding).splitlines(), start=1) if line.strip()]


def read_table(path: Path, columns: Sequence[str] = (), encoding: str = "utf-8") -> Rows:
    """Rows of a CSV/TSV (header first) or JSONL file, each tagged with its file:line.

    `columns` must be present: in a CSV/TSV header (checked once, before any row), or in every
    JSONL object. A CSV row with more or fewer fields than its header is an error, not a row with
    a `None` key or a silently empty column (what `csv.DictReader` gives).
    """
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl(path, columns, encoding)
    if path.suffix not in (".csv", ".tsv"):
        raise InputError(
            f"{path}: unsupported format {path.suffix!r}; use .csv, .tsv, .jsonl or a folder of class folders"
        )
    reader = csv.reader(
        io.StringIO(read_text(path, encoding), newline=""), delimiter="\t" if path.suffix == ".tsv" else ","
    )
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file; expected a header row naming the columns") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(
            f"{path}:1: the header has no column(s) {missing}; it has {header} (set the DataModule's column names to "
            "match)"
        )
    rows = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                raise InputError(
                    f"{path}:{reader.line_num}: {len(fields)} field(s), but the header has {len(header)} "
                    f"({', '.join(header)}); "
                    "quote fields that contain the delimiter"
                )
            rows.append({**dict(zip(header, fields)), "_where": f"{path}:{reader.line_num}"})
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: malformed {path.suffix[1:].upper()} ({e})") from None
    return rows


def read_jsonl(path: Path, columns: Sequence[str] = (), encoding: str = "utf-8") -> Rows:
    rows = []
    for number, line in read_lines(path, encoding):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{number}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        missing = [c for c in columns if c not in row]
        if missing:
            raise InputError(f"{path}:{number}: missing column(s) {missing}; the row has {sorted(row)}")
        rows.append({**row, "_where": f"{path}:{number}"})
    return rows
