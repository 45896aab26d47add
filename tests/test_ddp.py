"""Scale-out is Lightning's: seqeval scores under DDP (2 CPU processes, gloo) equal one process's,
both when fit validates under DDP and when a trained checkpoint is tested under DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_NER

from lightkit.main import cli, main

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
    assert sorted(p.name for p in (tmp_path / "two").glob("test_predictions*.conll")) == [
        "test_predictions.rank0.conll",
        "test_predictions.rank1.conll",
    ]


def test_fit_under_ddp_logs_the_seqeval_scores_one_process_computes(tmp_path: Path) -> None:
    """fit on 2 processes (each trains on its shard; validation metrics are gathered across both)
    logs the same val_f1/precision/recall as validating its final weights in one process."""
    config = yaml.safe_load(TINY_NER.read_text())
    config["trainer"].update(max_epochs=4, default_root_dir=str(tmp_path))
    config["model"]["init_args"]["save_dir"] = str(tmp_path / "hf_model")
    config["trainer"]["callbacks"] = [
        {"class_path": "LastCheckpoint", "init_args": {"dirpath": str(tmp_path / "checkpoints")}},
        {"class_path": "probes.MetricsAtEnd", "init_args": {"path": str(tmp_path / "ddp_metrics.json")}},
    ]
    path = tmp_path / "ddp.yaml"  # not config.yaml: the CLI saves its resolved config under that name
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [LIGHTKIT, "fit", "--config", str(path), "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
         "--trainer.devices", "2"],
        check=True, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )  # fmt: skip
    under_ddp = json.loads((tmp_path / "ddp_metrics.json").read_text())

    one = cli(["validate", "--config", str(path), "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt")])
    single = {k: float(v) for k, v in one.trainer.callback_metrics.items()}
    for key in ("val_f1", "val_precision", "val_recall", "val_accuracy"):
        assert under_ddp[key] == pytest.approx(single[key], abs=1e-6), key
    assert 0.0 < single["val_f1"] < 1.0  # a real score, not a degenerate one
