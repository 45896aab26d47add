"""Knowledge distillation: a student trained from a frozen teacher, for every objective with logits.

    lightkit fit  --config configs/distill_ner.yaml
    lightkit test --config configs/distill_ner.yaml --ckpt_path runs/distill_ner/checkpoints/best.ckpt

One mixin, `Distillation`, holds all of it: loading and freezing the teacher, building the student
(from a config, from pretrained weights, or from a subset of the teacher's layers), checking that
both share a vocabulary and label set, and the loss

    alpha_kd * T² * KL(softmax(z_t/T) ‖ softmax(z_s/T)) + alpha_ce * CE(hard labels)
    [+ alpha_hidden * distance(proj(h_s), h_t) over chosen layer pairs]

It is combined with each objective below, so the student keeps its objective's metrics, test
report and predict output unchanged (seqeval F1 for NER, perplexity for LMs, ...). The objectives
differ only in which positions the KL covers (`kd_mask`).

The teacher is kept with `BaseTask.add_frozen`, deliberately not a registered submodule: it never
reaches the optimizer, DDP's gradient sync, `state_dict` (so checkpoints hold only the student,
plus any hidden-state projections) or `train()`, yet moves with the student between devices.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from lightkit.io.errors import InputError
from lightkit.models.loading import load_trained
from lightkit.objectives.kd import hidden_loss, kd_loss, student_from_layers
from lightkit.tasks.causal_lm import CausalLMTask
from lightkit.tasks.masked_lm import MaskedLMTask
from lightkit.tasks.sequence_classification import SequenceClassificationTask
from lightkit.tasks.token_classification import TokenClassificationTask
from lightkit.training.task import BaseTask, StepOutput


class Distillation:
    """Mixin that turns an objective's task into a student distilled from a teacher.

    Args:
        teacher: the teacher: a lightkit checkpoint of the same objective, a Hugging Face folder,
            a packaged model name or a Hub id.
        teacher_revision: the Hub revision of a teacher Hub id (`trust_remote_code` applies too).
        kd_temperature: softening temperature T of both distributions (named apart from the
            causal LM's sampling `temperature`).
        alpha_kd: weight of the KL term.
        alpha_ce: weight of the hard-label loss (the objective's own loss).
        scale_by_t2: multiply the KL by T² (Hinton et al. 2015), so alpha_kd means the same at
            any T; on by default, off to match toolkits that omit it.
        student_layers: build the student as a copy of the teacher that keeps these teacher
            layers (e.g. [0, 2, 4], DistilBERT-style); leave `pretrained`/`model_config` unset.
        hidden_layers: [teacher, student] pairs of hidden-state indices to match (0 is the
            embedding output, k the output of layer k); a learned linear projection maps the
            student's width to the teacher's when they differ.
        hidden_distance: `mse` or `cosine` distance for `hidden_layers`.
        alpha_hidden: weight of the hidden-state term.
        **kwargs: the objective's arguments (label_names, pretrained / model_config, ...).
    """

    objective: ClassVar[type[BaseTask]]

    def __init__(
        self,
        teacher: str,
        teacher_revision: str | None = None,
        kd_temperature: float = 2.0,
        alpha_kd: float = 0.5,
        alpha_ce: float = 0.5,
        scale_by_t2: bool = True,
        student_layers: list[int] | None = None,
        hidden_layers: list[tuple[int, int]] | None = None,
        hidden_distance: Literal["mse", "cosine"] = "mse",
        alpha_hidden: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if kd_temperature <= 0:
            raise InputError(f"kd_temperature must be > 0, got {kd_temperature}")
        if kwargs.get("chunked_loss"):
            raise InputError("chunked_loss: distillation compares the student's full logits with the teacher's")
        super().__init__(**kwargs)

    # -- model construction --------------------------------------------------------------------
    @property
    def teacher(self) -> PreTrainedModel:
        return self.frozen("teacher")

    def load_teacher(self) -> tuple[PreTrainedModel, Any]:
        """The teacher and its tokenizer, loaded on first use only, so a student rebuilt for an
        unsharded copy (FSDP2) is cut from the same teacher and nothing beside it changes."""
        if "teacher" not in self.__dict__.get("_frozen", {}):
            h = self.hparams
            teacher, tokenizer = load_trained(
                h.teacher, self.objective, "teacher", revision=h.teacher_revision, trust_remote_code=h.trust_remote_code
            )
            self.add_frozen("teacher", teacher)  # unregistered: see the module docstring
            self.__dict__["_teacher_tokenizer"] = tokenizer
        return self.teacher, self.__dict__["_teacher_tokenizer"]

    def build_model(self) -> PreTrainedModel:
        h = self.hparams
        teacher, teacher_tokenizer = self.load_teacher()
        if h.student_layers:
            if h.pretrained is not None or h.model_config is not None:
                raise InputError(
                    "set either student_layers (copy teacher layers) or pretrained / model_config, not both"
                )
            student = student_from_layers(teacher, list(h.student_layers))
            student.config.update(self.model_overrides())
        else:
            student = super().build_model()
        self._check_compatible(teacher, teacher_tokenizer, student)
        return student

    def build_companions(self, model: PreTrainedModel) -> None:
        super().build_companions(model)
        pairs = self.hparams.hidden_layers or []
        self.hidden_proj = nn.ModuleList(self._projection(self.teacher, model, t, s) for t, s in pairs)

    def _projection(self, teacher: PreTrainedModel, student: PreTrainedModel, t: int, s: int) -> nn.Module:
        for who, model, i in (("teacher", teacher, t), ("student", student, s)):
            if not 0 <= i <= model.config.num_hidden_layers:
                raise InputError(f"hidden_layers: {who} index {i} is outside 0..{model.config.num_hidden_layers}")
        s_width, t_width = student.config.hidden_size, teacher.config.hidden_size
        return nn.Identity() if s_width == t_width else nn.Linear(s_width, t_width)

    def _check_compatible(self, teacher: PreTrainedModel, teacher_tokenizer: Any, student: PreTrainedModel) -> None:
        """KD compares distributions entry by entry: same vocabulary, same labels in the same order."""
        spec = self.hparams.teacher
        if teacher_tokenizer is not None and self.tokenizer is not None:
            t_vocab, s_vocab = teacher_tokenizer.get_vocab(), self.tokenizer.get_vocab()
            if t_vocab != s_vocab:
                differ = len(set(t_vocab.items()) ^ set(s_vocab.items()))
                raise InputError(
                    f"teacher '{spec}' and the student's tokenizer '{self.hparams.tokenizer}' have different "
                    f"vocabularies ({len(t_vocab)} vs {len(s_vocab)} tokens, {differ} entries differ); "
                    "distillation needs one shared tokenizer"
                )
        t_rows, s_rows = teacher.get_input_embeddings().num_embeddings, student.get_input_embeddings().num_embeddings
        if t_rows != s_rows:
            raise InputError(
                f"teacher '{spec}' has {t_rows} token embeddings, the student {s_rows}; they must share a vocabulary"
            )
        names = self.hparams.get("label_names")
        if names:
            t_names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
            if t_names != list(names):
                raise InputError(
                    f"teacher '{spec}' predicts labels {t_names}, but the data has {list(names)} (same names, same "
                    "order needed)"
                )

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.trainer.is_global_zero:
            t, s = self.param_counts()
            print(f"lightkit: distilling a {t:,}-parameter teacher into a {s:,}-parameter student ({s / t:.1%})")

    def param_counts(self) -> tuple[int, int]:
        return sum(p.numel() for p in self.teacher.parameters()), sum(p.numel() for p in self.model.parameters())

    # -- the loss ------------------------------------------------------------------------------
    def kd_mask(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """(B, T) bool: the positions whose distributions are compared; None compares every row."""
        raise NotImplementedError

    def run_model(self, batch: dict[str, Any], **kwargs: Any) -> Any:
        # The objective's step calls this for the student's forward; the KD terms need its hidden states.
        return super().run_model(batch, output_hidden_states=bool(self.hparams.hidden_layers), **kwargs)

    def step(self, batch: dict[str, Any]) -> StepOutput:
        h = self.hparams
        base = super().step(batch)  # the objective's own loss (CE on hard labels) and metric inputs
        student = base.output
        with torch.no_grad():
            teacher = self.teacher(**self.model_inputs(batch), output_hidden_states=bool(h.hidden_layers))
        kd = kd_loss(student.logits, teacher.logits, h.kd_temperature, self.kd_mask(batch), h.scale_by_t2)
        loss = h.alpha_kd * kd + h.alpha_ce * base.loss
        logs = {"kd_loss": kd.detach(), "ce_loss": base.loss.detach()}
        if h.hidden_layers:
            mask = batch["attention_mask"]
            distances = [
                hidden_loss(proj(student.hidden_states[s]), teacher.hidden_states[t], mask, h.hidden_distance)
                for proj, (t, s) in zip(self.hidden_proj, h.hidden_layers)
            ]
            hidden = torch.stack(distances).mean()
            loss = loss + h.alpha_hidden * hidden
            logs["hidden_loss"] = hidden.detach()
        return dataclasses.replace(base, loss=loss, logs=logs)

    # -- output --------------------------------------------------------------------------------
    def save_extras(self, directory: Path) -> None:
        super().save_extras(directory)
        t, s = self.param_counts()
        h = self.hparams
        info = {
            "teacher": str(h.teacher),
            "teacher_parameters": t,
            "student_parameters": s,
            "kd_temperature": h.kd_temperature,
            "alpha_kd": h.alpha_kd,
            "alpha_ce": h.alpha_ce,
            "student_layers": h.student_layers,
            "kd_prompt": h.get("kd_prompt"),
            "hidden_layers": h.hidden_layers,
            "optimizer_steps": self.trainer.global_step if self.attached_trainer() is not None else None,
        }
        (directory / "distillation.json").write_text(json.dumps(info, indent=2) + "\n")


class TokenClassificationDistillation(Distillation, TokenClassificationTask):
    """NER student: KL over labelled subwords (labels != -100), seqeval metrics as usual."""

    objective = TokenClassificationTask

    def kd_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["labels"] != -100


class SequenceClassificationDistillation(Distillation, SequenceClassificationTask):
    """Classifier student: KL over every example's class distribution."""

    objective = SequenceClassificationTask

    def kd_mask(self, batch: dict[str, Any]) -> None:
        return None


class MaskedLMDistillation(Distillation, MaskedLMTask):
    """MLM student: KL over the masked positions only (the only ones with labels)."""

    objective = MaskedLMTask

    def kd_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["labels"] != -100


class CausalLMDistillation(Distillation, CausalLMTask):
    """Causal LM student: KL over the positions that predict a labelled next token.

    Position t predicts token t+1, so the mask is the labels shifted left: on packed text that is
    every non-padding position but the last, on instruction data only the answer.

    Args:
        kd_prompt: on instruction data, also match the teacher at the prompt's positions (every
            non-padding one). The hard-label loss stays on the answer. A student that has to
            relearn language, such as one cut from the teacher's layers, then gets a target at
            every token (a 150-word article against a 6-word headline) instead of at the answer's
            few.
        **kwargs: Distillation's and CausalLMTask's arguments.
    """

    objective = CausalLMTask

    def __init__(self, kd_prompt: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def kd_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        labels = batch["labels"]
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[:, :-1] = labels[:, 1:] != -100
        if self.hparams.get("kd_prompt"):
            attention = batch["attention_mask"].bool()
            mask[:, :-1] |= attention[:, 1:] & attention[:, :-1]
        return mask
