"""BaseTask: the plumbing every lightkit objective shares.

A task subclass defines only what is particular to its objective:
- `auto_model` and `model_overrides()`: the transformers Auto class and the config fields the
  task knows (labels, special tokens); `build_model()` can be overridden where that is not enough;
- `configure_metrics()`: one `MetricCollection`, cloned here per stage with `train_`/`val_`/`test_`
  prefixes so that logged names read `val_f1`, `test_loss`, ...;
- `step(batch)`: loss plus what the metrics consume.

Everything else lives here: hyperparameters, model construction from a pretrained folder or a
transformers config, AdamW with weight-decay groups, per-stage logging, and saving the trained
model in Hugging Face format at the end of fit so `transformers` loads it with no lightkit code.

A task also declares, as class attributes, what `lightkit export`, `lightkit evaluate` and serving
need to know about it (its primary metric, how its model is exported, how a served batch is
decoded; see "the export contract" below). The export side reads only these, never a class name,
so a new objective is one task file, one DataModule if its data is new, and one YAML.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from datasets import Dataset
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MetricCollection
from transformers import AutoConfig, PreTrainedModel

from lightkit.compat import MovesUnregistered
from lightkit.io.atomic import atomic_dir
from lightkit.io.errors import InputError
from lightkit.models.hub import ModelRef, load_tokenizer, model_card, resolve_model
from lightkit.models.loading import SETTINGS_FILE
from lightkit.models.lora import apply_lora, check_adapter_state, merged_copy, trainable_state
from lightkit.training.columns import check_columns
from lightkit.training.epoch_means import EpochMeans
from lightkit.training.fake_quant import strip_qat_state
from lightkit.training.finite import FiniteLossGuard
from lightkit.training.sharding import full_state_dict, shard_blocks, shard_companions

STAGES = ("train", "val", "test")

# Epoch metrics are torchmetrics objects that gather their state across processes inside
# compute(), so the values logged are already global; Lightning's advice to add sync_dist there
# would only average identical numbers again.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


@dataclass
class StepOutput:
    """What `step` returns: the loss, what the metrics update on (preds, target, extras), and
    parts of the loss to log beside it (e.g. `kd_loss`, logged as `val_kd_loss`). A training step
    that feeds no metrics (`wants_metrics()` false) returns preds and target None: decoding them
    would cost a pass over the logits and, often, a host sync per step."""

    loss: torch.Tensor
    preds: Any = None
    target: Any = None
    metric_kwargs: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    output: Any = None  # the model's output, for a wrapper that scores it again (KD's student logits)


def label_config(names: list[str] | None, task: str) -> dict[str, Any]:
    """The transformers config fields of a head over `names` (num_labels, id2label, label2id)."""
    if not names:
        raise InputError(f"{task} needs label_names (linked from the DataModule)")
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
    }


class BaseTask(MovesUnregistered, L.LightningModule):
    """Shared plumbing for lightkit objectives; subclass it, don't configure it directly.

    Args:
        pretrained: a packaged model name (`sentence-transformers/all-MiniLM-L6-v2`), a local
            Hugging Face folder, or a Hub id (`bert-base-cased`), tried in that order
            (`lightkit.models.hub`). Mutually exclusive with `model_config`.
        revision: the Hub revision (branch, tag or commit) of a `pretrained` Hub id.
        trust_remote_code: let transformers run the model repository's own Python code (for
            models it does not implement). Off: a Hub id cannot run code on your machine unasked.
        model_config: keyword arguments for `transformers.AutoConfig.for_model` (must include
            `model_type`), to train from scratch; tests build tiny models this way. `vocab_size`
            defaults to the tokenizer's.
        tokenizer: tokenizer folder, packaged name or Hub id; linked from the DataModule by the CLI.
        tokenizer_revision: its Hub revision; linked from the DataModule too.
        learning_rate: peak AdamW learning rate (the warmup callback scales it per step).
        weight_decay: AdamW weight decay for matrices; biases and norm weights get none.
        betas: AdamW betas.
        train_metrics: also compute the task's metrics on training batches (train_f1, ...). Off by
            default: it costs a pass over every batch's predictions, and the Hugging Face
            Trainer does not do it either; the training loss is always logged.
        save_dir: where fit writes the Hugging Face model (`save_pretrained` + tokenizer);
            default `<log_dir>/hf_model`.
        compile: `torch.compile` the model (in place, `nn.Module.compile`, so parameter
            names and checkpoints are unchanged). Pays a compile at start; worth it for long GPU
            runs, not for short or CPU ones, so it is off by default.
        compile_mode: `torch.compile`'s mode. `reduce-overhead` replays CUDA graphs, which
            removes the per-kernel launch cost of small steps (short sequences, small batches);
            it captures one graph per input shape, so pair it with the DataModule's
            `pad_to_multiple_of`.
        fused_activation: build models whose config says `gelu_new` (GPT-2) with the identical
            one-kernel `gelu_pytorch_tanh` (see `fuse_activation`); false keeps the config as is.
        peft: train LoRA adapters instead of every weight (`lightkit.models.lora`): `{}` for the
            defaults, or any of `r`, `alpha`, `dropout`, `target_modules` (`all-linear` by
            default, or a list of layer names), `bias`. Checkpoints then hold only what trains,
            and fit saves the adapter (`<save_dir>/adapter`, PEFT format) beside the merged model.
        gradient_checkpointing: recompute activations in the backward pass instead of keeping
            them (transformers' gradient checkpointing): less memory, about a third more compute.
    """

    auto_model: ClassVar[Any] = None  # the transformers Auto class of the objective
    peft_task_type: ClassVar[str | None] = None  # peft's name for the objective (keeps new heads trainable)

    # -- the export contract: all that lightkit.export reads about a task ------------------------
    primary_metric: ClassVar[str | None] = None
    """The metric the task is judged on, as logged without its stage prefix (`val_f1` -> "f1"); the parity
    gate of `lightkit export` compares PyTorch and ONNX on it.
    """

    primary_mode: ClassVar[Literal["max", "min"]] = "max"
    """`max` when a higher primary metric is better (F1, accuracy), `min` when lower is (perplexity): the
    gate reads a drop as an absolute fall or a relative rise accordingly.
    """

    export_kind: ClassVar[Literal["encoder", "decoder"] | None] = None
    """How `lightkit export` traces the model: `encoder` (token ids in, logits out) or `decoder` (logits
    plus a KV cache in and out, and next-token outputs for a decode loop). None: the task has no export
    yet, and `lightkit export` says so.
    """

    serving: ClassVar[Literal["labels", "word_tags", "tokens"] | None] = None
    """How a served batch of the artifact is decoded (`lightkit.export.runtime.serving.Artifact`): `labels` (one
    label per text), `word_tags` (one tag per word, read at first subwords) or `tokens` (a decode loop);
    recorded in the artifact's manifest.
    """

    parity_batches: ClassVar[int] = 20
    """Test-split batches the parity gate scores by default."""

    def logits_axes(self) -> list[str | int]:
        """The logits' shape as the exported graph declares it: a name per dynamic axis
        (`batch`, `sequence`), a number per fixed one (labels, vocabulary)."""
        raise NotImplementedError(f"{type(self).__name__} declares no logits_axes")

    def __init__(
        self,
        pretrained: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        model_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        tokenizer_revision: str | None = None,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        train_metrics: bool = False,
        save_dir: str | None = None,
        compile: bool = False,
        compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default",
        fused_activation: bool = True,
        peft: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        # Collects the subclass's arguments too (Lightning walks the chain of __init__ frames).
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(tokenizer, tokenizer_revision, trust_remote_code) if tokenizer else None
        # transformers returns models in eval mode, and Lightning keeps the submodules' mode:
        # without train() dropout would silently stay off for the whole fit.
        self.model = self.build_model().train()
        self.build_companions(self.model)  # once: build_model runs again for unsharded copies
        if gradient_checkpointing:
            # Non-reentrant: correct with frozen inputs (LoRA) and no input-grad workaround needed.
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if peft is not None:
            self.model = apply_lora(self.model, peft, self.peft_task_type)
            # Checkpoints hold the adapters only (on_save_checkpoint); Lightning loads them
            # non-strictly, and on_load_checkpoint checks that they fit this base model.
            self.strict_loading = False
        metrics = self.configure_metrics()
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")
        self._finite = FiniteLossGuard(type(self).__name__)
        # Running sums of the training values; checkpointed by the ExactResume callback.
        self.epoch_means = EpochMeans()
        self.__dict__["_stand_in"] = None  # not a registered submodule, whatever stands in

    # -- what a task defines -------------------------------------------------------------------
    def build_model(self) -> PreTrainedModel:
        return self.from_pretrained_or_config(self.auto_model, **self.model_overrides())

    def build_companions(self, model: PreTrainedModel) -> None:
        """Build, once, what trains or scores beside `model` (a KD projection, a PPO value head, a
        frozen reference), from the freshly built model, before any adapters. `build_model` builds
        only the network that is saved, and runs again whenever an unsharded copy of it is needed
        (FSDP2, at the end of fit): were companions built there, the live task would change."""

    def model_overrides(self) -> dict[str, Any]:
        """Config fields the task sets on any model it builds (labels, special token ids)."""
        return {}

    def configure_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def step(self, batch: dict[str, Any]) -> StepOutput:
        raise NotImplementedError

    def needed_columns(self) -> dict[str, set[str]]:
        """The data columns the run needs beyond its DataModule's, by what needs them
        (`{"margin_scale": {"margin"}}`); each stage checks every row of the splits it reads for
        them as it starts (`lightkit.training.columns`). None by default."""
        return {}

    def column_hint(self, missing: list[str]) -> str:
        """Said after a missing column's error: where data with it comes from. Nothing by default."""
        return ""

    # -- data checks ---------------------------------------------------------------------------
    def check_columns(self, data: Any, where: str) -> None:
        """Stop where `data` (a split, or a batch a DataModule could not show at the start) lacks a
        column `needed_columns` names, or a split has a row without it."""
        check_columns(type(self).__name__, self.needed_columns(), data, where, self.column_hint)

    def check_splits(self, *splits: str) -> None:
        """`check_columns` on each of the DataModule's `splits` that is a `datasets.Dataset` (a
        stream's rows are not in reach), named by its file."""
        datamodule = self.trainer.datamodule
        source = getattr(datamodule, "source", lambda split: f"the {split} data")
        for split in splits:
            data = getattr(datamodule, "datasets", {}).get(split)
            if isinstance(data, Dataset):
                self.check_columns(data, str(source(split)))

    # Before the first step of a stage: a missing column would otherwise stop the run minutes in,
    # at a batch, naming no file.
    def on_fit_start(self) -> None:
        self.check_splits("train", "validation")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == TrainerFn.VALIDATING:  # in fit, on_fit_start checked it
            self.check_splits("validation")

    def on_test_start(self) -> None:
        self.check_splits("test")

    # -- model construction --------------------------------------------------------------------
    def from_pretrained_or_config(self, auto_class: Any, **overrides: Any) -> PreTrainedModel:
        """Build `auto_class` from `pretrained` or `model_config`, with task overrides applied.

        `overrides` carry what the task knows (num_labels, id2label, ...). A pretrained model
        whose head has another shape gets a fresh head (`ignore_mismatched_sizes`), which is what
        fine-tuning on a new label set needs.
        """
        if (self.hparams.pretrained is None) == (self.hparams.model_config is None):
            raise InputError(
                f"{type(self).__name__}: set exactly one of `pretrained` (a model folder or "
                "packaged name) and `model_config` (a transformers config to train from scratch)"
            )
        source = self.model_source()
        if source is not None:
            config = self.fuse_activation(source.from_pretrained(AutoConfig, "pretrained", **overrides))
            return source.from_pretrained(auto_class, "pretrained", config=config, ignore_mismatched_sizes=True)
        kwargs = dict(self.hparams.model_config)
        if "model_type" not in kwargs:
            raise InputError("model_config needs `model_type` (e.g. bert, llama)")
        if self.tokenizer is not None:
            kwargs.setdefault("vocab_size", len(self.tokenizer))
            kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        config = self.fuse_activation(AutoConfig.for_model(**{**kwargs, **overrides}))
        return auto_class.from_config(config)

    def model_source(self) -> ModelRef | None:
        """Where `pretrained` resolves to (None when training from `model_config`), resolved once:
        every later load uses the commit the first one found."""
        h = self.hparams
        if h.get("pretrained") is None:
            return None
        if "_source" not in self.__dict__:
            self.__dict__["_source"] = resolve_model(
                h.pretrained, "pretrained", h.get("revision"), h.get("trust_remote_code", False)
            )
        return self.__dict__["_source"]

    def fuse_activation(self, config: Any) -> Any:
        """GPT-2's `gelu_new` is the tanh GELU written as five elementwise ops; `gelu_pytorch_tanh`
        is the same function as one kernel, so on a GPU a memory-bound step gets much faster
        (benchmarks/results/clm-step-levers-*.json) while weights and outputs stay the same to
        float rounding."""
        if self.hparams.get("fused_activation", True):
            for attr in ("activation_function", "hidden_act"):
                if getattr(config, attr, None) == "gelu_new":
                    setattr(config, attr, "gelu_pytorch_tanh")
        return config

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The tensors of `batch` that the model's forward takes (input_ids, attention_mask, ...)."""
        names = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
        return {k: batch[k] for k in names if k in batch}

    def run_model(self, batch: dict[str, Any], **kwargs: Any) -> Any:
        """The model's forward on `batch`; tasks call it in `step` so wrappers (KD) can see it,
        and so another model can stand in for it (`forward_with`)."""
        model = self.model if self._stand_in is None else self._stand_in
        return model(**self.model_inputs(batch), **kwargs)

    @contextmanager
    def forward_with(self, model: Callable[..., Any]) -> Iterator[None]:
        """Run the task's `step` with `model` standing in for its transformers model.

        `model` is called like one (the batch's model inputs as keywords, plus the task's own,
        such as `labels`) and returns an object with `.logits` (and `.loss` when given labels).
        This is how `lightkit export` and `lightkit evaluate` score an ONNX Runtime session with
        the task's own step, metrics and reports, so the numbers are those `lightkit test` reports.
        """
        previous, self.__dict__["_stand_in"] = self._stand_in, model
        try:
            yield
        finally:
            self.__dict__["_stand_in"] = previous

    def batch_size(self, batch: dict[str, Any]) -> int:
        """Rows in `batch`, for weighting logged means: the first tensor's first dimension."""
        return next(v.size(0) for v in batch.values() if isinstance(v, torch.Tensor))

    # -- frozen companions (KD teacher, PPO reference and reward model) -------------------------
    def add_frozen(self, name: str, model: torch.nn.Module) -> torch.nn.Module:
        """Keep `model` beside the task, frozen and in eval mode, deliberately unregistered.

        A registered submodule would reach the optimizer, DDP's gradient sync, `train()` and
        every checkpoint (doubling its size); kept here it reaches none of them, while it still
        moves with the task between devices and dtypes (`lightkit.compat.MovesUnregistered`).
        """
        model.eval().requires_grad_(False)
        self.__dict__.setdefault("_frozen", {})[name] = model
        return model

    def frozen(self, name: str) -> torch.nn.Module:
        return self.__dict__["_frozen"][name]

    def configure_model(self) -> None:
        # Lightning calls this hook again for every trainer entry point (fit, then test, ...);
        # the model is sharded and compiled once.
        if self.device_mesh is not None and not self.__dict__.get("_sharded"):
            blocks = shard_blocks(self.model, self.device_mesh)
            companions = shard_companions(self, self.model, self.device_mesh)
            self.__dict__["_sharded"] = True
            if self.global_rank == 0:
                beside = f", and {', '.join(companions)} beside it" if companions else ""
                print(f"lightkit: sharded {blocks}{beside} over {self.device_mesh.size()} processes (FSDP2)")
        if self.hparams.get("compile") and not self.__dict__.get("_compiled"):
            self.model.compile(mode=self.hparams.get("compile_mode", "default"))
            self.__dict__["_compiled"] = True

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Decay only matrices (linear and embedding weights): decaying biases and norm gains
        # hurts and is what BERT, GPT-2 and the HF Trainer all avoid. Frozen parameters (a KD
        # teacher, a PPO reference) never enter the optimizer.
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # Fused AdamW (one kernel for all parameters; CPU and CUDA in torch >= 2.4) is what the HF
        # Trainer uses by default too, and measurably faster than the per-tensor loop. Lightning's
        # mixed-precision plugin refuses to clip the gradients of an optimizer that unscales them
        # itself (a fused one), so with clipping (trainer.gradient_clip_val, or manual
        # optimisation as in PPO) under "-mixed" precision the unfused AdamW is used.
        kwargs = {"lr": self.hparams.learning_rate, "betas": self.hparams.betas}
        trainer = self.attached_trainer()
        clipped = not self.automatic_optimization or bool(trainer and trainer.gradient_clip_val)
        if not (clipped and trainer is not None and "mixed" in str(trainer.precision)):
            try:
                return torch.optim.AdamW(groups, fused=True, **kwargs)
            except RuntimeError:  # a device without the fused kernel
                pass
        return torch.optim.AdamW(groups, **kwargs)

    def attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this task, or None outside one (a task built and stepped by hand)."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning's public answer to "not attached to a Trainer"
            return None

    # -- the loop ------------------------------------------------------------------------------
    def metrics_for(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def _shared_step(self, batch: dict[str, Any], stage: str) -> StepOutput:
        out = self.step(batch)
        values, size = {"loss": out.loss, **out.logs}, self.batch_size(batch)
        if stage == "train":
            self.log_train(values, size)
        else:
            for name, value in values.items():
                self.log(
                    f"{stage}_{name}", value, on_epoch=True, prog_bar=name == "loss", batch_size=size, sync_dist=True
                )
        if self.wants_metrics(stage):
            self.metrics_for(stage).update(out.preds, out.target, **out.metric_kwargs)
        return out

    def log_train(self, values: dict[str, torch.Tensor], batch_size: int, bar: tuple[str, ...] = ("loss",)) -> None:
        """Log training values as `train_<name>_step` and, at epoch end, `train_<name>_epoch`
        (and `train_<name>` for callbacks), the names `self.log(on_step=True, on_epoch=True)`
        gives, but with the epoch mean kept by `EpochMeans`, which is exact across a mid-epoch
        resume.

        Lightning turns every prog_bar value into a Python number after each batch, bar or no bar
        (Lightning-AI/pytorch-lightning#21232): on a GPU a host sync per step. So values go to
        the progress bar only when there is one.
        """
        self.epoch_means.add(values, batch_size)
        trainer = self.attached_trainer()
        shown = trainer is None or trainer.progress_bar_callback is not None
        for name, value in values.items():
            self.log(
                f"train_{name}_step",
                value,
                on_step=True,
                on_epoch=False,
                prog_bar=shown and name in bar,
                batch_size=batch_size,
            )

    def updates_per_batch(self) -> int:
        """Optimizer updates one training batch makes, for schedules that count updates (LRWarmup):
        one under automatic optimisation; a task that steps by hand several times per batch says
        how many."""
        return 1

    def wants_metrics(self, stage: str | None = None) -> bool:
        """Whether this step's predictions feed metrics (tasks may skip decoding them if not)."""
        training = self.training if stage is None else stage == "train"
        return not training or self.hparams.get("train_metrics", False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train").loss
        where = f"optimizer step {self.trainer.global_step}, epoch {self.current_epoch}, batch {batch_idx}"
        self._finite.watch(loss, where)  # read in on_before_optimizer_step, without a per-step stall
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._finite.check()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> StepOutput:
        return self._shared_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        # Metrics gather their state across processes inside compute(), then compute once on the
        # whole epoch (exact under DDP), so the values are logged without a second reduction.
        metrics = self.metrics_for(stage)
        values = metrics.compute()
        self.log_dict(values, prog_bar=stage == "val")
        metrics.reset()
        return values

    # -- checkpoints -----------------------------------------------------------------------------
    @property
    def lora(self) -> bool:
        """Whether the model trains LoRA adapters (`peft`) instead of its own weights."""
        return self.hparams.get("peft") is not None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.lora:  # the base weights come from `pretrained` again
            checkpoint["state_dict"] = trainable_state(self, checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.lora:
            check_adapter_state(self, checkpoint["state_dict"], "ckpt_path")

    def load_trained_state(self, state: dict[str, torch.Tensor], where: str) -> None:
        """Load a `lightkit fit` checkpoint's state dict outside a Trainer, as Lightning does:
        whole, or a LoRA run's adapters onto the base model (checked to fit)."""
        if self.lora:
            check_adapter_state(self, state, where)
        self.load_state_dict(state, strict=self.strict_loading)

    def plain_model(self, keep_adapters: bool = True) -> PreTrainedModel:
        """The task's model as plain transformers: with LoRA, the adapters merged into a copy
        (the task trains on), or, with `keep_adapters=False`, into the model itself (for a task
        built only to hand its model on: no second copy in memory)."""
        model = self.unsharded_model()
        if not self.lora:
            return model
        # A gathered copy is already a copy: merge into it rather than copying it again.
        return merged_copy(model) if keep_adapters and model is self.model else model.merge_and_unload()

    def unsharded_model(self) -> torch.nn.Module:
        """The model (adapters unmerged), as one unsharded copy when `configure_model` sharded it.

        FSDP2 modules copy only through their state dict: it is gathered from every process (a
        collective: all of them must call this), and a freshly built model loads it.
        """
        if not self.__dict__.get("_sharded"):
            return self.model
        state = full_state_dict(self.model)
        model = self.build_model()
        if self.lora:
            model = apply_lora(model, self.hparams.peft, self.peft_task_type)
        model.load_state_dict(state)
        return model

    # -- epoch means (checkpointed by lightkit.callbacks.ExactResume) ---------------------------
    def on_train_epoch_start(self) -> None:
        # The one place the sums are cleared. Not called when a run resumes mid-epoch, so the
        # restored sums are kept; a run resumed from any checkpoint taken at an epoch's end
        # (before or after on_train_epoch_end) starts the next epoch here, with nothing carried.
        self.epoch_means.reset()

    def on_train_epoch_end(self) -> None:
        for name, mean in self.epoch_means.means().items():
            self.log(f"train_{name}_epoch", mean, on_epoch=True)
            self.log(f"train_{name}", mean, on_epoch=True, logger=False)  # what callbacks monitor
        if self.wants_metrics("train"):
            self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # -- output --------------------------------------------------------------------------------
    def hf_save_dir(self) -> Path:
        if self.hparams.save_dir:
            return Path(self.hparams.save_dir)
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "hf_model"

    def saved_settings(self) -> dict[str, Any]:
        """What loading the saved model must know of its training (e.g. a prompt template), saved
        as `lightkit.json` beside it and read back by `lightkit.models.loading.trained_settings`."""
        return {}

    def save_extras(self, directory: Path) -> None:
        """Write other task files beside the Hugging Face model; none by default."""

    def on_fit_end(self) -> None:
        # Callbacks' on_fit_end runs before this hook, so RestoreBestWeights has already put the
        # best checkpoint's weights back: the saved model is the best one, not the last.
        # Every process takes the state dict: under FSDP it is a collective (the shards are
        # gathered), and rank 0 alone asking for it would wait forever.
        model = self.unsharded_model()
        plain = merged_copy(model) if self.lora else model
        state = strip_qat_state(plain.state_dict())  # QAT quantiser state stays in the checkpoint
        if not self.trainer.is_global_zero:
            return
        target = self.hf_save_dir()
        with atomic_dir(target) as tmp:
            plain.save_pretrained(tmp, state_dict=state)  # safetensors
            if self.lora:  # the adapter too, for PEFT's own loaders
                model.save_pretrained(tmp / "adapter")
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            if settings := self.saved_settings():
                (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
            self.save_extras(tmp)
            (tmp / "README.md").write_text(model_card(self.model_source(), type(self).__name__), encoding="utf-8")
        print(f"lightkit: saved the trained model in Hugging Face format to {target}")
