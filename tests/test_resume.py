"""A crash loses nothing: a fit SIGKILLed mid-epoch (or between epochs) and resumed with
`--ckpt_path last` ends with exactly the weights and metrics of an uninterrupted run (CPU,
deterministic, same seed). Checkpoint files are whole or absent, never half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, TINY_NER
from safetensors.torch import load_file

from lightkit.cli.main import cli
from lightkit.training.checkpointing import AtomicCheckpointIO

LIGHTKIT = str(Path(sys.executable).with_name("lightkit"))
STEPS_PER_EPOCH = 8  # 64 training sentences, batch 8


def write_config(root: Path, kill: dict | None) -> Path:
    """The tiny NER config: 2 epochs, dropout on, LastCheckpoint every 3 steps, final metrics to
    metrics.json, and without RestoreBestWeights, so the saved model is the final one."""
    config = yaml.safe_load(TINY_NER.read_text())
    config["trainer"].update(max_epochs=2, default_root_dir=str(root))
    config["data"]["init_args"]["batch_size"] = 8
    config["model"]["init_args"]["save_dir"] = str(root / "hf_model")
    callbacks = [c for c in config["trainer"]["callbacks"] if c["class_path"] != "RestoreBestWeights"]
    callbacks += [
        {"class_path": "LastCheckpoint", "init_args": {"dirpath": str(root / "checkpoints"), "every_n_train_steps": 3}},
        {"class_path": "probes.MetricsAtEnd", "init_args": {"path": str(root / "metrics.json")}},
    ]
    if kill is not None:
        callbacks.append({"class_path": "probes.SigkillAt", "init_args": kill})
    config["trainer"]["callbacks"] = callbacks
    path = root / "resume.yaml"  # not config.yaml: the CLI saves its resolved config under that name
    path.write_text(yaml.safe_dump(config))
    return path


def fit(config: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run([LIGHTKIT, "fit", "--config", str(config), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    done = fit(write_config(root, kill=None))
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.parametrize(
    ("kill", "saved_step"),
    [
        ({"step": 5}, 3),
        # Two more lightkit processes each: in the slow suite (CI runs it).
        pytest.param({"epoch": 1}, STEPS_PER_EPOCH, marks=pytest.mark.slow),
        pytest.param({"step": 11}, 9, marks=pytest.mark.slow),
    ],
    ids=["mid-epoch", "between-epochs", "mid-last-epoch"],
)
def test_sigkill_then_resume_equals_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, kill: dict, saved_step: int
) -> None:
    killed = fit(write_config(tmp_path, kill=kill))
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "metrics.json").exists()
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == saved_step
    assert list((tmp_path / "checkpoints").glob(".*")) == []  # no temp file left beside it

    resumed = fit(write_config(tmp_path, kill=None), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr

    want = json.loads((uninterrupted / "metrics.json").read_text())
    got = json.loads((tmp_path / "metrics.json").read_text())
    assert {"val_f1", "val_loss", "train_loss", "train_loss_epoch"} <= want.keys()
    assert got == want  # exactly, not approximately
    a = load_file(uninterrupted / "hf_model" / "model.safetensors")
    b = load_file(tmp_path / "hf_model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 2 * STEPS_PER_EPOCH  # saved at the last epoch end, not only every 3 steps


def test_the_cli_writes_checkpoints_atomically() -> None:
    trainer = cli(["--config", str(TINY_NER)], run=False).trainer
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_checkpoint_write_interrupted_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 3}, path)

    def dies_halfway(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # any interruption between the first byte and the rename

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 6}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_last_checkpoint_needs_a_positive_step_count() -> None:
    from lightkit.callbacks import LastCheckpoint
    from lightkit.io.errors import InputError

    with pytest.raises(InputError, match=r"LastCheckpoint: every_n_train_steps must be >= 1, got 0"):
        LastCheckpoint(every_n_train_steps=0)
