"""The training step's plumbing: no metric decoding when no metric wants it, and the non-finite
loss guard that reads the loss flag before the optimizer step rather than stalling each step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightkit.training.finite import FiniteLossGuard

CONFIGS = {
    "CausalLMTask": {
        "model_type": "gpt2",
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "vocab_size": 100,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "MaskedLMTask": {
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 100,
    },
}


def lm_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


@pytest.mark.parametrize("task_name", ["CausalLMTask", "MaskedLMTask"])
def test_training_steps_skip_metric_decoding_unless_train_metrics(task_name: str) -> None:
    """Decoding an LM's predictions gathers a (B, T, vocab) slice of the logits and syncs with the
    device (boolean indexing) at every step: it must not happen for metrics nobody computes."""
    import lightkit.tasks

    config = CONFIGS[task_name]
    Task = getattr(lightkit.tasks, task_name)
    batch = lm_batch()
    plain = Task(model_config=config).train()
    out = plain.step(batch)
    assert out.preds is None and out.target is None and torch.isfinite(out.loss)
    measured = Task(model_config=config, train_metrics=True).train()
    out = measured.step(batch)
    assert out.preds.shape == out.target.shape and out.preds.numel() > 0
    plain.eval()  # validation always feeds its metrics
    assert plain.step(batch).preds is not None


@pytest.mark.parametrize("task_name", ["CausalLMTask", "MaskedLMTask"])
def test_the_models_loss_compiles_without_a_graph_break(task_name: str) -> None:
    """A graph break splits a compiled forward (and, with CUDA graphs, the captured graph) in two.
    GPT-2's class name gave transformers no loss type, and its fallback logs on every call."""
    import lightkit.tasks

    model = getattr(lightkit.tasks, task_name)(model_config=CONFIGS[task_name]).train().model
    batch = lm_batch()
    torch.compiler.reset()
    # fullgraph=True makes any graph break an error, which names the break; the eager backend
    # traces with dynamo alone, without compiling kernels.
    loss = torch.compile(lambda ids, mask, labels: model(input_ids=ids, attention_mask=mask, labels=labels).loss,
                         fullgraph=True, backend="eager")  # fmt: skip
    assert torch.isfinite(loss(batch["input_ids"], batch["attention_mask"], batch["labels"]))


def test_guard_names_the_first_non_finite_micro_batch_and_clears() -> None:
    guard = FiniteLossGuard("Task")
    guard.watch(torch.tensor(1.5), "batch 0")
    guard.check()  # finite: nothing raised, nothing pending
    assert guard.pending == []
    guard.watch(torch.tensor(2.0), "batch 1")
    guard.watch(torch.tensor(float("inf")), "batch 2")  # gradient accumulation: several per step
    guard.watch(torch.tensor(float("nan")), "batch 3")
    with pytest.raises(FloatingPointError, match=r"Task: training loss is inf at batch 2;"):
        guard.check()
    assert guard.pending == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_guard_reads_a_gpu_loss_without_a_sync_until_checked() -> None:
    guard = FiniteLossGuard("Task")
    guard.watch(torch.tensor(float("nan"), device="cuda"), "batch 0")
    (p,) = guard.pending
    assert p.flag.device.type == "cpu" and p.flag.is_pinned() and p.ready is not None
    with pytest.raises(FloatingPointError, match="nan at batch 0"):
        guard.check()


@pytest.mark.parametrize("bar", [False, True])
def test_the_training_loss_reaches_the_progress_bar_only_when_there_is_one(tmp_path, bar: bool) -> None:  # noqa: ANN001
    """Lightning converts progress-bar values to numbers after every batch even without a bar (a
    host sync per step on a GPU), so without a bar the training loss is logged but not for it."""
    from helpers import TINY_NER

    from lightkit.cli.main import cli

    run = cli(
        [
            "fit",
            "--config",
            str(TINY_NER),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            str(bar).lower(),
            "--model.init_args.save_dir",
            str(tmp_path / "hf"),
        ]
    )
    trainer = run.trainer
    assert "train_loss" in trainer.callback_metrics and "train_loss_epoch" in trainer.logged_metrics
    assert ("train_loss_step" in trainer.progress_bar_metrics) is bar
    assert "val_loss" in trainer.progress_bar_metrics  # evaluation keeps its bar entries either way


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_training_step_never_waits_on_the_gpu(tmp_path) -> None:  # noqa: ANN001
    from helpers import TINY_NER
    from probes import NoSyncInStep

    from lightkit.cli.main import cli

    probe = NoSyncInStep()
    run = cli(
        [
            "--config",
            str(TINY_NER),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.max_epochs",
            "2",
            "--trainer.accelerator",
            "cuda",
            "--trainer.deterministic",
            "false",
            "--model.init_args.save_dir",
            str(tmp_path / "hf"),
        ],
        run=False,
    )
    run.trainer.callbacks.append(probe)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert probe.watched == run.trainer.global_step > 0


def test_training_values_are_logged_each_step_and_epoch_means_are_exact(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Each step's values reach Lightning, the logger writes every `log_every_n_steps`, and the
    epoch mean (kept by lightkit, see lightkit.training.epoch_means) is over every batch."""
    import csv

    from helpers import TINY_NER

    from lightkit.cli.main import cli
    from lightkit.training.task import BaseTask

    seen: list[tuple[int, float, int]] = []
    logged: list[str] = []
    shared_step, log = BaseTask._shared_step, BaseTask.log

    def spy_step(self, batch, stage):  # noqa: ANN001, ANN202
        out = shared_step(self, batch, stage)
        if stage == "train":
            seen.append((self.current_epoch, out.loss.item(), batch["input_ids"].size(0)))
        return out

    def spy_log(self, name, *args, **kwargs):  # noqa: ANN001, ANN202
        logged.append(name)
        return log(self, name, *args, **kwargs)

    monkeypatch.setattr(BaseTask, "_shared_step", spy_step)
    monkeypatch.setattr(BaseTask, "log", spy_log)
    cli(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "2",
         "--trainer.enable_progress_bar", "false", "--trainer.logger", "true", "--trainer.log_every_n_steps", "3",
         "--model.init_args.save_dir", str(tmp_path / "hf")])  # fmt: skip
    steps = len(seen)
    assert steps >= 6 and logged.count("train_loss_step") == steps
    rows = list(csv.DictReader((tmp_path / "lightning_logs" / "version_0" / "metrics.csv").open()))
    assert len([r for r in rows if r.get("train_loss_step")]) == steps // 3
    epochs = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    for epoch, got in enumerate(epochs):
        batches = [(loss, size) for e, loss, size in seen if e == epoch]
        assert got == pytest.approx(
            sum(loss * size for loss, size in batches) / sum(size for _, size in batches), rel=1e-5
        )
    assert len(epochs) == 2


@pytest.mark.parametrize(("precision", "fused"), [("32-true", True), ("bf16-mixed", None)])
def test_clipped_gradients_keep_fused_adamw_except_under_mixed_precision(
    tmp_path: Path, precision: str, fused: bool | None
) -> None:
    # The HF Trainer clips at 1.0 by default and still steps with fused AdamW; lightkit does the
    # same, except where Lightning's mixed-precision plugin refuses to clip a fused optimizer.
    from helpers import TINY_NER

    from lightkit.cli.main import cli

    run = cli(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(tmp_path),
               "--trainer.max_steps", "3", "--trainer.gradient_clip_val", "1.0", "--trainer.precision", precision,
               "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
               "--model.init_args.save_dir", str(tmp_path / "hf")])  # fmt: skip
    (optimizer,) = run.trainer.optimizers
    assert optimizer.defaults["fused"] is fused
    assert run.trainer.global_step == 3  # clipped and stepped, no refusal
