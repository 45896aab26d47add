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
