"""CoNLL reading, IOB conversion and their error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightkit.data.conll import CoNLLFormatError, Sentence, conll_lines, label_list, read_conll, to_iob2


def write(tmp_path: Path, text: str | bytes, name: str = "x.conll") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_reads_sentences_skips_docstart_and_whitespace_separators(tmp_path: Path) -> None:
    path = write(tmp_path, "-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\t\nPeter\tB-PER\nBlackburn\tI-PER\n")
    sents = read_conll(path)
    assert [s.tokens for s in sents] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sents] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert [s.line for s in sents] == [3, 6]


def test_multi_column_files_take_first_and_last_column(tmp_path: Path) -> None:
    path = write(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_conll(path)[0].tags == ["B-ORG", "O"]


@pytest.mark.parametrize(
    ("tags", "scheme", "expected"),
    [
        (["I-PER", "I-PER", "O", "I-LOC"], "IOB1", ["B-PER", "I-PER", "O", "B-LOC"]),
        (["I-PER", "B-PER", "I-LOC"], "IOB1", ["B-PER", "B-PER", "B-LOC"]),  # adjacent same-type entities
        (["B-PER", "I-PER", "O"], "IOB2", ["B-PER", "I-PER", "O"]),
        (["S-LOC", "O", "B-PER", "I-PER", "E-PER"], "BIOES", ["B-LOC", "O", "B-PER", "I-PER", "I-PER"]),
        (["U-LOC", "B-PER", "L-PER"], "auto", ["B-LOC", "B-PER", "I-PER"]),  # BILOU detected as BIOES
        (["I-ORG", "O"], "auto", ["B-ORG", "O"]),  # auto on I-starts: IOB1 repair
    ],
)
def test_to_iob2(tags: list[str], scheme: str, expected: list[str]) -> None:
    assert to_iob2(tags, scheme) == expected


def test_iob2_is_a_fixed_point_of_conversion() -> None:
    tags = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC"]
    assert to_iob2(tags, "IOB1") == tags == to_iob2(tags, "auto")


def test_label_list_puts_o_first_and_pairs_b_i() -> None:
    labels = label_list([Sentence(["a", "b", "c"], ["I-PER", "B-PER", "B-LOC"], 1)])
    assert labels == ["O", "B-LOC", "B-PER", "I-PER"]


def test_conll_lines_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.conll"
    path.write_text("".join(conll_lines(["a", "b"], ["B-X", "I-X"], ["B-X", "O"])))
    assert path.read_text() == "a\tB-X\tB-X\nb\tI-X\tO\n\n"


# -- errors name the file and the line -----------------------------------------------------------
def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "EU\tB-ORG\nrejects\tO\n\nbad line\twith\textra\n")
    with pytest.raises(CoNLLFormatError, match=rf"{path}:4: expected 2 columns.*got 3"):
        read_conll(path)


def test_single_column_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "EU\n")
    with pytest.raises(CoNLLFormatError, match=rf"{path}:1: expected a token and a tag"):
        read_conll(path)


def test_invalid_tag_names_file_and_sentence_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a O\n\nb O\nc PERSON\n")
    with pytest.raises(CoNLLFormatError, match=rf"{path}:3: token 2: tag 'PERSON' is not valid"):
        read_conll(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.conll: no such file"):
        read_conll(tmp_path / "nope.conll")


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"a O\n\xa3 O\n")
    with pytest.raises(CoNLLFormatError, match=rf"{path}:2: not valid UTF-8 \(byte 0xa3"):
        read_conll(path)
