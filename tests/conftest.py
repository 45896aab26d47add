"""Shared fixtures: tests run from the repository root (configs use relative paths) and keep
tokenised-dataset caches in a temp folder, never in the user's ~/.cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TINY_NER = ROOT / "tests" / "conf" / "ner.yaml"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["LIGHTKIT_CACHE"] = str(tmp_path_factory.mktemp("lightkit-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)


# ChatML, as SmolLM2 and Qwen write it.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_bpe(path: Path) -> Path:
    """The tests' byte-level BPE (300 tokens), trained on the LM fixture corpus into `path`."""
    from lightkit.data.causal_lm import train_bpe_tokenizer
    from lightkit.data.language_modeling import read_documents

    train_bpe_tokenizer(read_documents(DATA / "lm" / "corpus.txt"), 300, path)
    return path


def make_chat_tokenizer(path: Path, template: bool = True) -> Path:
    """That BPE with ChatML's special tokens, and its template unless `template` is false."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(make_bpe(path))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if template:
        tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path
