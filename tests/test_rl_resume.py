"""A PPO or GRPO run SIGKILLed mid-run and resumed from `last.ckpt` ends with exactly the adapters,
value head and metrics of an uninterrupted run: the sampling generator, the minibatch shuffles,
the optimizer, the adaptive KL coefficient and the epoch means all come back (CPU, deterministic,
same seed). TRL's GRPO resume is an open request there (trl#3247)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT
from test_resume import fit  # the same `lightkit fit` subprocess, with tests/ on its path

CONF = ROOT / "tests" / "conf"

pytestmark = pytest.mark.slow  # three lightkit processes per objective


def write_config(name: str, tiny_lm: dict, root: Path, kill: dict | None) -> Path:
    """The tiny objective's config from the tiny pretrained Llama with LoRA (so the reference is
    the adapters-off policy), 2 epochs, LastCheckpoint every 2 updates, final metrics to JSON."""
    config = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    config["trainer"].update(max_epochs=2, default_root_dir=str(root), enable_checkpointing=True)
    init = config["model"]["init_args"]
    init.update(model_config=None, pretrained=str(tiny_lm["hf"]), peft={"r": 4, "alpha": 8, "dropout": 0.0})
    init["save_dir"] = str(root / "hf_model")
    if name == "grpo":
        init.update(beta=0.1, minibatch_size=8)  # 16 samples a batch: 2 updates on shuffled halves
    else:
        init.update(ppo_epochs=2, target_kl=1.0, kl_horizon=100)  # 4 updates a batch; the KL coefficient moves
    config["data"]["init_args"]["tokenizer"] = str(tiny_lm["bpe"])
    callbacks = [
        {"class_path": "LastCheckpoint", "init_args": {"dirpath": str(root / "checkpoints"), "every_n_train_steps": 2}},
        {"class_path": "probes.MetricsAtEnd", "init_args": {"path": str(root / "metrics.json")}},
    ]
    if kill is not None:
        callbacks.append({"class_path": "probes.SigkillAt", "init_args": kill})
    config["trainer"]["callbacks"] = callbacks
    root.mkdir(parents=True, exist_ok=True)
    path = root / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trained_state(root: Path) -> dict[str, torch.Tensor]:
    """What training changed, from the last checkpoint: the LoRA adapters and PPO's value head."""
    state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if "lora_" in k or k.startswith("value_head.")}


@pytest.mark.parametrize(("name", "kill", "saved"), [("grpo", 6, 4), ("ppo", 8, 4)])
def test_a_killed_rl_run_resumes_to_the_uninterrupted_result(
    name: str, kill: int, saved: int, tiny_lm: dict, tmp_path: Path
) -> None:
    whole = fit(write_config(name, tiny_lm, tmp_path / "whole", kill=None))
    assert whole.returncode == 0, whole.stderr[-3000:]

    part = tmp_path / "part"
    killed = fit(write_config(name, tiny_lm, part, kill={"step": kill}))
    assert killed.returncode == -9, killed.stderr[-3000:]
    # Killed at the end of the batch that reached update `kill`, before that batch's checkpoint:
    # the resumed run redoes one batch, sampling included.
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == saved
    assert not (part / "metrics.json").exists()

    resumed = fit(write_config(name, tiny_lm, part, kill=None), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    got = json.loads((part / "metrics.json").read_text())
    assert {"val_reward", "train_reward_epoch"} <= want.keys()
    assert got == want  # exactly, not approximately
    a, b = trained_state(tmp_path / "whole"), trained_state(part)
    assert a and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if name == "ppo":
        whole_ckpt = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
        assert (
            whole_ckpt["kl_coef"] != 0.01
            and whole_ckpt["kl_coef"] == torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["kl_coef"]
        )
