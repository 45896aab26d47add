"""Scale-out is Lightning's: seqeval scores under DDP (2 CPU processes, gloo) equal one process's,
both when fit validates under DDP and when a trained checkpoint is tested under DDP; and FSDP2
sharding (ModelParallelStrategy) trains a LoRA model as DDP does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, TINY_NER, lora_args
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lightkit.cli.main import cli, main

# Each spawns two training processes: `make test-slow` (and CI, through .ci/run) runs them.
pytestmark = pytest.mark.slow

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


def test_lora_sharded_by_fsdp2_on_two_cpu_processes_trains_as_ddp_does(tiny_lm: dict, tmp_path: Path) -> None:
    """Lightning's FSDPStrategy refuses CPUs; its ModelParallelStrategy shards with FSDP2 on gloo
    (configs/scale/fsdp2.yaml).
    Sharding changes where the weights live, not the training: the same adapters as DDP on the
    same two processes, a checkpoint of adapters only, and a merged save transformers loads."""

    def fit(out: Path, *strategy: str) -> str:
        return subprocess.run(
            [LIGHTKIT, "fit", *lora_args(tiny_lm, out, "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                                         "--trainer.devices", "2", "--trainer.enable_checkpointing", "true",
                                         "--trainer.callbacks+=LastCheckpoint", *strategy)],
            check=True, capture_output=True, text=True, timeout=300,
        ).stdout  # fmt: skip

    fit(tmp_path / "ddp", "--trainer.strategy", "ddp")
    sharded = fit(tmp_path / "fsdp", "--config", str(ROOT / "configs" / "scale" / "fsdp2.yaml"))
    assert "sharded 2 LlamaDecoderLayer blocks over 2 processes (FSDP2)" in sharded
    ddp, fsdp = (
        load_file(tmp_path / side / "hf" / "adapter" / "adapter_model.safetensors") for side in ("ddp", "fsdp")
    )
    assert ddp.keys() == fsdp.keys() and all(torch.allclose(ddp[k], fsdp[k], atol=1e-5) for k in ddp)
    pretrained = load_file(tiny_lm["hf"] / "model.safetensors")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "hf").eval()
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "ddp" / "hf").eval()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5)
    assert not all(torch.equal(merged.state_dict()[k], v) for k, v in pretrained.items())  # it did train
    state = torch.load(tmp_path / "fsdp" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)


# The fit's arguments come in the environment: Lightning's launcher starts the second process with
# the command line `cli` stood in (the fit's own). After fit, every process gathers the live task's
# state (a collective), and the first saves what trained beside the model.
LIVE_COMPANIONS = """
import json, os, torch
from lightkit.cli.main import cli
from lightkit.training.sharding import full_state_dict
task = cli(json.loads(os.environ["LIVE_ARGS"])).model
state = full_state_dict(task)
if task.global_rank == 0:
    keep = ("value_head.", "hidden_proj.")
    torch.save({k: v for k, v in state.items() if k.startswith(keep)}, os.environ["LIVE_OUT"])
# Leave the process group before the interpreter exits: with its gloo threads still running at
# exit, a process can abort ("terminate called without an active exception"), as it once did here.
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


def test_companions_after_an_fsdp2_fit_are_the_ones_trained(bpe: Path, tmp_path: Path) -> None:
    """Under FSDP2 the end of fit rebuilds the model for an unsharded copy: the PPO value head and
    the KD projection beside it must stay the trained ones (and train as one, on both processes)."""
    teacher = tmp_path / "teacher"
    main(["fit", "--config", str(TINY_NER), "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(teacher),
          "--model.init_args.save_dir", str(teacher / "hf")])  # fmt: skip
    student = ("{model_type: bert, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, "
               "intermediate_size: 32, max_position_embeddings: 64}")  # fmt: skip
    jobs = {
        "ppo": ["--config", str(ROOT / "tests" / "conf" / "ppo.yaml"), "--data.tokenizer", str(bpe),
                "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true",
                "--trainer.callbacks+=LastCheckpoint"],
        "kd": ["--config", str(ROOT / "tests" / "conf" / "distill_ner.yaml"), "--trainer.max_epochs", "1",
               "--model.init_args.teacher", str(teacher / "hf"), "--model.init_args.student_layers", "null",
               "--model.init_args.model_config", student, "--model.init_args.hidden_layers", "[[2, 2]]",
               "--model.init_args.alpha_hidden", "1.0"],
    }  # fmt: skip
    script = tmp_path / "live_companions.py"
    script.write_text(LIVE_COMPANIONS)
    for name, args in jobs.items():
        out = tmp_path / name
        fit = ["fit", *args, "--config", str(ROOT / "configs" / "scale" / "fsdp2.yaml"),
               "--trainer.default_root_dir", str(out), "--model.init_args.save_dir", str(out / "hf")]  # fmt: skip
        env = {**os.environ, "LIVE_ARGS": json.dumps(fit), "LIVE_OUT": str(out / "live.pt"),
               "PYTHONPATH": str(ROOT / "tests")}  # the reward callables of tests/conf/ppo.yaml  # fmt: skip
        run = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        assert "beside it over 2 processes (FSDP2)" in run.stdout
        live = torch.load(out / "live.pt", weights_only=True)
        trained = torch.load(next(out.rglob("last.ckpt")), weights_only=True)["state_dict"]
        assert live, name
        for key, value in live.items():
            assert torch.equal(value, trained[key]), f"{name}: {key} changed at the end of fit"
        assert any(v.abs().sum() > 0 for k, v in live.items() if k.endswith("weight")), f"{name}: nothing trained"
