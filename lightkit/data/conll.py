"""CoNLL-style files: reading, tag-scheme conversion and writing.

Format read: one token per line, the token in the first column and its tag in the last, columns
split by tabs when the line has a tab, else by whitespace; a blank (or whitespace-only) line ends a
sentence; `-DOCSTART-` lines are skipped. Every error names the file and the line.

lightkit trains and evaluates in IOB2 (every entity starts with B-). IOB1 and BIOES input is
converted on read, so labels, metrics and reports all use one scheme:
- IOB1 -> IOB2: an I-X that starts an entity (after O or after another type) becomes B-X. On
  IOB2 input this changes nothing, so it also repairs stray I- starts in hand-labelled data.
- BIOES -> IOB2: S-X -> B-X, E-X -> I-X (L-/U- as in BILOU are accepted as E-/S-).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lightkit.data.files import undecodable
from lightkit.io.errors import InputError

TagScheme = Literal["auto", "IOB1", "IOB2", "BIOES"]


class CoNLLFormatError(InputError):
    """A CoNLL file that cannot be read; the message names the file and line."""


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of the first token, for error messages
    where: str = ""  # a dataset row's place ("dataset 'x' [train] row 3"), for error messages


def read_lines(path: str | Path, encoding: str = "utf-8") -> Iterable[tuple[int, str]]:
    """Yield (line number, text) of a file in `encoding`, naming the line of a byte that isn't."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise CoNLLFormatError(undecodable(f"{path}:{number}", raw[e.start], e.start + 1, encoding)) from None


def read_conll(path: str | Path, scheme: TagScheme = "auto", encoding: str = "utf-8") -> list[Sentence]:
    """Read sentences from a CoNLL file and convert their tags to IOB2."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    columns = None  # column count fixed by the first token line

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags), start))
            tokens.clear()
            tags.clear()

    for number, line in read_lines(path, encoding):
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if columns is None:
            columns = len(fields)
            if columns < 2:
                raise CoNLLFormatError(
                    f"{path}:{number}: expected a token and a tag separated by a tab or spaces, got {line!r}"
                )
        if len(fields) != columns:
            raise CoNLLFormatError(
                f"{path}:{number}: expected {columns} columns like the file's first line "
                f"(token ... tag), got {len(fields)}: {line!r}"
            )
        if not tokens:
            start = number
        tokens.append(fields[0])
        tags.append(fields[-1].strip())
    flush()
    for sentence in sentences:
        try:
            sentence.tags = to_iob2(sentence.tags, scheme)
        except ValueError as e:
            raise CoNLLFormatError(f"{path}:{sentence.line}: {e}") from None
    return sentences


def detect_scheme(tags: Iterable[str]) -> TagScheme:
    """BIOES if any S-/E-/L-/U- tag is present, else IOB1 (whose conversion is a no-op on IOB2)."""
    return "BIOES" if any(t[:2] in ("S-", "E-", "L-", "U-") for t in tags) else "IOB1"


def to_iob2(tags: Sequence[str], scheme: TagScheme = "auto") -> list[str]:
    """Convert one sentence's tags to IOB2; raises ValueError naming the first bad tag."""
    if scheme == "auto":
        scheme = detect_scheme(tags)
    allowed = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIESLU"}[scheme]
    out: list[str] = []
    prev_type = None  # entity type of the previous token, None after O
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append(tag)
            prev_type = None
            continue
        prefix, sep, etype = tag.partition("-")
        if not sep or not etype or prefix not in allowed:
            raise ValueError(
                f"token {i + 1}: tag {tag!r} is not valid {scheme} "
                f"(expected O or one of {', '.join(p + '-TYPE' for p in allowed)})"
            )
        if prefix in ("S", "U"):
            prefix = "B"
        elif prefix in ("E", "L"):
            prefix = "I"
        if prefix == "I" and prev_type != etype:
            prefix = "B"  # an entity never starts with I- in IOB2
        out.append(f"{prefix}-{etype}")
        prev_type = etype
    return out


def label_list(sentences: Iterable[Sentence]) -> list[str]:
    """Label names in a stable order: O first, then by entity type, B- before I-."""
    tags = {t for s in sentences for t in s.tags}
    tags.discard("O")
    return ["O", *sorted(tags, key=lambda t: (t[2:], t[:1]))]


def conll_lines(tokens: Sequence[str], *columns: Sequence[str]) -> Iterable[str]:
    """Lines of one sentence (token, then each column), tab-separated, ending with a blank line."""
    for i, token in enumerate(tokens):
        yield "\t".join([token, *(c[i] for c in columns)]) + "\n"
    yield "\n"
