"""The private Lightning names lightkit.compat relies on: if an upgrade moves one, these fail
first and name it (the behaviour itself is tested by the tests named in each docstring)."""

from __future__ import annotations

import contextvars
import inspect

from lightning.pytorch.cli import LightningCLI

TINY_BERT = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
             "intermediate_size": 8, "vocab_size": 16}  # fmt: skip


def test_lightning_cli_still_merges_checkpoint_hparams_in_parse_ckpt_path() -> None:
    """Behaviour: tests/test_refiner.py (a --model flag wins over the checkpoint's hparams)."""
    assert callable(getattr(LightningCLI, "_parse_ckpt_path", None)), (
        "LightningCLI._parse_ckpt_path is gone: see lightkit/compat.py (1)"
    )
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__), (
        "LightningCLI.__init__ no longer calls _parse_ckpt_path"
    )


def test_lightning_still_hands_hyperparameters_down_through_a_context_variable() -> None:
    """Behaviour: tests/test_distillation.py and tests/test_ppo.py (a teacher or reward model
    loaded from a checkpoint while the CLI builds the task)."""
    from lightning.pytorch.core.mixins import hparams_mixin

    given = getattr(hparams_mixin, "_given_hyperparameters", None)
    assert isinstance(given, contextvars.ContextVar), (
        "hparams_mixin._given_hyperparameters is gone: see lightkit/compat.py (2)"
    )


def test_fresh_hyperparameters_records_the_nested_task_own_arguments() -> None:
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    from lightkit.compat import fresh_hyperparameters
    from lightkit.tasks import SequenceClassificationTask

    with _given_hyperparameters_context(hparams={"learning_rate": 0.5, "_class_path": "Outer"}, instantiator="x"):
        nested = fresh_hyperparameters(
            SequenceClassificationTask, label_names=["a", "b"], model_config=TINY_BERT, learning_rate=0.1
        )
    assert nested.hparams.learning_rate == 0.1 and "_class_path" not in nested.hparams


def test_model_flags_reads_the_task_arguments_of_a_command_line() -> None:
    from lightkit.compat import model_flags

    argv = [
        "test",
        "--config",
        "c.yaml",
        "--model.decoding",
        "viterbi",
        "--model.init_args.top_k=5",
        "--model.class_path",
        "X",
    ]
    assert model_flags(argv) == {"decoding": "viterbi", "top_k": 5}


def test_frozen_companions_follow_the_task_through_public_moves() -> None:
    """Behaviour: tests/test_distillation.py and tests/test_ppo.py (teacher / reference on the
    task's device and dtype)."""
    import torch

    from lightkit.tasks import SequenceClassificationTask

    task = SequenceClassificationTask(label_names=["a", "b"], model_config=TINY_BERT)
    companion = task.add_frozen("companion", torch.nn.Linear(2, 2))
    task.to(torch.float64)
    assert companion.weight.dtype == torch.float64 and not any(p is companion.weight for p in task.parameters())
    assert not any(k.startswith("companion") for k in task.state_dict())
