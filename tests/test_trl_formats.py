"""TRL's dataset formats read as TRL reads them: implicit prompts split off as its
`extract_prompt` does, and every instruction and preference shape learns only its answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_chat_tokenizer

from lightkit.data import InstructionDataModule, PolicyPreferenceDataModule
from lightkit.data.trl_formats import extract_prompt, is_conversation, preference_parts
from lightkit.io.errors import InputError

USER = {"role": "user", "content": "where did bob go ?"}


def turn(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chat_tokenizer(tmp_path_factory.mktemp("chat") / "tokenizer")


def test_implicit_prompt_is_the_shared_start_as_trl_splits_it() -> None:
    # Text: the space before the answers goes with them (TRL's extract_prompt).
    assert extract_prompt("The sky is blue.", "The sky is green.") == ("The sky is", " blue.", " green.")
    assert extract_prompt([USER, turn("lima")], [USER, turn("oslo")]) == ([USER], [turn("lima")], [turn("oslo")])
    assert is_conversation([USER]) and not is_conversation("text") and not is_conversation([])


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "Q: ", "chosen": "lima", "rejected": "oslo"}, ("Q: ", "lima", "oslo")),
        ({"chosen": "Bob went to lima", "rejected": "Bob went to oslo"}, ("Bob went to", " lima", " oslo")),
        ({"prompt": [USER], "chosen": [turn("lima")], "rejected": [turn("oslo")]},
         ([USER], [turn("lima")], [turn("oslo")])),
        ({"chosen": [USER, turn("lima")], "rejected": [USER, turn("oslo")]}, ([USER], [turn("lima")], [turn("oslo")])),
    ],
    ids=["explicit-text", "implicit-text", "explicit-turns", "implicit-turns"],
)  # fmt: skip
def test_every_preference_shape_splits_into_prompt_and_answers(row: dict, expected: tuple) -> None:
    assert preference_parts(row, "row 0") == expected


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"chosen": "a"}, r"missing column\(s\) \['rejected'\]"),
        ({"chosen": 3, "rejected": "b"}, r"field\(s\) \['chosen'\] must be text or a list"),
        ({"chosen": [USER, turn("a")], "rejected": "b"}, "must both be text or both be lists"),
        ({"chosen": [USER, turn("a")], "rejected": [USER, turn("a")]}, "same response"),
        ({"prompt": "Q", "chosen": [turn("a")], "rejected": [turn("b")]}, "prompt must be a list of turns"),
    ],
)
def test_bad_preference_rows_are_one_line(row: dict, message: str) -> None:
    with pytest.raises(InputError, match=rf"^row 0: .*{message}"):
        preference_parts(row, "row 0")


def learned(dm: InstructionDataModule, split: str = "train") -> list[str]:
    data = dm.build_split(split)
    return [dm.tokenizer.decode([t for t in r["labels"] if t != -100]) for r in data]


def test_trl_prompt_completion_rows_learn_only_the_completion(chat_tokenizer: Path, tmp_path: Path) -> None:
    rows = [
        {"prompt": "where did bob go ?", "completion": "lima"},  # standard: completion is the answer
        # conversational: the answer inside the prompt is context, only the completion is learned
        {"prompt": [USER, turn("lima"), {"role": "user", "content": "and erin ?"}], "completion": [turn("oslo")]},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = InstructionDataModule(tokenizer=str(chat_tokenizer), train_file=str(path), holdout=(0.0, 0.0),
                               cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert learned(dm) == ["lima<|im_end|>\n", "oslo<|im_end|>\n"]


def test_conversational_pairs_label_each_answer_after_the_shared_turns(chat_tokenizer: Path, tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"chosen": [USER, turn("lima")], "rejected": [USER, turn("oslo")]}) + "\n")
    dm = PolicyPreferenceDataModule(tokenizer=str(chat_tokenizer), train_file=str(path), holdout=(0.0, 0.0),
                                    cache_dir=str(tmp_path / "cache"))  # fmt: skip
    row = dm.build_split("train")[0]
    answers = [dm.tokenizer.decode([t for t in row[f"{s}_labels"] if t != -100]) for s in ("chosen", "rejected")]
    assert answers == ["lima<|im_end|>\n", "oslo<|im_end|>\n"]
    assert "bob" in dm.tokenizer.decode(row["chosen_input_ids"])  # the shared user turn is the prompt
