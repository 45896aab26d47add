"""Scale-out is Lightning's: seqeval scores under DDP (2 CPU processes, gloo) equal one process's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightkit.main import main

from conftest import TINY_NER

LIGHTKIT = str(Path(sys.executable).with_name("lightkit"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp-fit")
    main(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "3"])
    return next((root / "checkpoints").glob("*.ckpt"))


def run_test(ckpt: Path, root: Path, devices: int) -> dict:
    # A subprocess: Lightning's DDP launcher re-runs the command line once per extra process.
    subprocess.run(
        [LIGHTKIT, "test", "--config", str(TINY_NER), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(root),
         "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", str(devices)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return json.loads((root / "seqeval_report.json").read_text())


def test_seqeval_under_ddp_equals_one_process(ckpt: Path, tmp_path: Path) -> None:
    one, two = run_test(ckpt, tmp_path / "one", 1), run_test(ckpt, tmp_path / "two", 2)
    assert two["sentences"] == one["sentences"] == 16  # every sentence gathered once from both ranks
    for key in ("micro avg", "macro avg", "weighted avg", "LOC", "ORG", "PER"):
        assert two[key] == pytest.approx(one[key]), key
    assert sorted(p.name for p in (tmp_path / "two").glob("test_predictions*.conll")) == ["test_predictions.rank0.conll", "test_predictions.rank1.conll"]
