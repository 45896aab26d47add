"""Precision: an unset `trainer.precision` is bf16-mixed on a GPU with native bf16, 32-true
elsewhere; an explicit one always wins; the objectives train under bf16 autocast."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TINY_NER

import lightkit.training.precision as precision
from lightkit.cli.main import cli


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A pretend CUDA machine; `native` says whether its GPU has native bf16 (Ampere or newer)."""
    state: dict[str, object] = {"native": True, "asked": 0}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        assert not including_emulation, "an emulated bf16 is slower than fp32: it must not count"
        state["asked"] = int(state["asked"]) + 1
        return bool(state["native"])

    monkeypatch.setattr(precision.CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(precision.torch.cuda, "is_bf16_supported", is_bf16_supported)
    return state


def test_bf16_mixed_only_where_the_run_lands_on_a_gpu_with_native_bf16(gpu: dict[str, object]) -> None:
    assert precision.default_precision("auto") == "bf16-mixed"
    assert precision.default_precision("gpu") == "bf16-mixed"
    assert precision.default_precision("cuda", "ddp") == "bf16-mixed"
    assert precision.default_precision("cpu") == "32-true"
    gpu["native"] = False  # e.g. a V100 or T4: bf16 would be emulated
    assert precision.default_precision("auto") == "32-true"


def test_no_gpu_means_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision.CUDAAccelerator, "is_available", staticmethod(lambda: False))
    assert precision.default_precision("auto") == "32-true"


def test_forking_strategies_never_initialise_cuda_to_choose(gpu: dict[str, object]) -> None:
    # Asking for the compute capability would initialise CUDA, after which ddp_fork refuses to fork.
    assert precision.default_precision("auto", "ddp_fork") == "32-true"
    assert precision.default_precision("auto", "ddp_notebook") == "32-true"
    assert gpu["asked"] == 0


def test_the_cli_fills_an_unset_precision_and_keeps_an_explicit_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tiny config pins accelerator: cpu, so stand in for the GPU answer at the CLI's call.
    seen: list[tuple[object, object]] = []

    def on_a_gpu(accelerator: object = "auto", strategy: object = "auto") -> str:
        seen.append((accelerator, strategy))
        return "bf16-mixed"

    monkeypatch.setattr("lightkit.cli.main.default_precision", on_a_gpu)
    built = cli(["--config", str(TINY_NER), "--trainer.strategy", "ddp"], run=False)
    assert seen == [("cpu", "ddp")]  # asked about the accelerator and strategy the config names
    assert built.trainer.precision == "bf16-mixed"
    assert built.config.trainer.precision == "bf16-mixed"  # what the saved config.yaml records

    seen.clear()
    built = cli(["--config", str(TINY_NER), "--trainer.precision", "32-true"], run=False)
    assert built.trainer.precision == "32-true" and seen == []


def test_ner_with_qat_and_ppo_train_under_bf16_autocast(tmp_path: Path) -> None:
    """What a GPU user gets by default, run on CPU autocast: the same code paths (autocast around
    the step, fp32 master weights, fake quantisers and PPO's manual optimisation under it)."""
    import torch

    root = tmp_path / "ner"
    run = cli([
        "--config", str(TINY_NER), "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "3",
        "--trainer.default_root_dir", str(root), "--trainer.logger", "true",
        "--model.init_args.save_dir", str(root / "hf"),
        "--trainer.callbacks+=QuantizationAwareTraining", "--trainer.callbacks.start_step=4",
    ], run=False)  # fmt: skip
    dtypes: list[torch.dtype] = []
    run.model.model.classifier.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast really ran the (fake-quantised) head
    assert type(run.model.model.classifier).__name__ == "QATLinear"
    saved = yaml.safe_load((root / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "bf16-mixed"
    rows = list(csv.DictReader((root / "lightning_logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]

    from helpers import ppo, series

    from lightkit.data.causal_lm import train_bpe_tokenizer
    from lightkit.data.language_modeling import read_documents

    bpe = tmp_path / "bpe"
    train_bpe_tokenizer(read_documents(ROOT / "tests" / "data" / "lm" / "corpus.txt"), 300, bpe)
    ppo(
        bpe,
        tmp_path / "ppo",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_epochs",
        "2",
        "--trainer.logger",
        "true",
    )
    rewards = series(tmp_path / "ppo", "train_reward_epoch")
    assert len(rewards) == 2 and all(math.isfinite(x) for x in rewards)
    kl = series(tmp_path / "ppo", "train_kl_epoch")
    assert len(kl) == 2 and all(math.isfinite(x) for x in kl)


@pytest.mark.gpu
@pytest.mark.skipif(not precision.torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_an_unset_precision_trains_in_bf16_autocast_with_fp32_weights(tmp_path: Path) -> None:
    """With QAT from step 2, so the fake quantisers see bf16 activations on CUDA too (their bf16
    CUDA kernels are recent: pytorch/pytorch#139306)."""
    import torch

    native = torch.cuda.get_device_capability()[0] >= 8
    run = cli([
        "--config", str(TINY_NER), "--trainer.accelerator", "cuda", "--trainer.max_epochs", "2",
        "--trainer.deterministic", "false", "--trainer.default_root_dir", str(tmp_path),
        "--model.init_args.save_dir", str(tmp_path / "hf"),
        "--trainer.callbacks+=QuantizationAwareTraining", "--trainer.callbacks.start_step=2",
    ], run=False)  # fmt: skip
    assert run.trainer.precision == ("bf16-mixed" if native else "32-true")
    seen: list[torch.dtype] = []
    hook = run.model.model.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    run.trainer.fit(run.model, datamodule=run.datamodule)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16 if native else torch.float32}  # autocast ran the head's matmul
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # master weights stay fp32
    assert math.isfinite(run.trainer.callback_metrics["train_loss_epoch"].item())
