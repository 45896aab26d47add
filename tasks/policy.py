"""What DPO, PPO and GRPO share: a causal LM policy, its frozen reference, and sampled rollouts.

`PolicyTask` owns the policy (a lightkit CLM checkpoint, a Hugging Face folder or a model config)
and the reference it is held to. With LoRA (`peft:`) the reference is the policy with its adapters
disabled (peft's `disable_adapter`), which is exactly the pretrained model, so no second copy is
held; without LoRA it is a frozen copy (`BaseTask.add_frozen`), never optimised or checkpointed.

`RolloutTask` adds what the online objectives (PPO, GRPO) need: a reward (plain callables, weighted,
or a reward model; `lightkit.rewards.scoring`) and sampled responses with their masks. Sampling is
transformers' `generate`: batched, with the KV cache, and rows that reached EOS stop counting.
The policy runs without dropout throughout (dropout would make the probability ratio differ from 1
before any update).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import torch
from torchmetrics import MeanMetric, MetricCollection
from transformers import PreTrainedModel

from lightkit.io.errors import InputError
from lightkit.models.loading import load_trained
from lightkit.models.shared_prefill import shared_prefill
from lightkit.objectives.lm_loss import labelled_logprobs
from lightkit.rewards.scoring import ModelReward, build_reward
from lightkit.tasks.causal_lm import CausalLMTask
from lightkit.tasks.reward_model import REWARD_MODEL_TASKS


class PolicyTask(CausalLMTask):
    """A causal LM policy and its reference (module docstring); subclass it, don't configure it.

    Args:
        **kwargs: pretrained (lightkit CLM checkpoint or HF folder) / model_config, peft,
            sampling and prompt_template; see CausalLMTask.
    """

    def needs_reference(self) -> bool:
        """Whether the objective reads the reference at all (GRPO without its KL term does not,
        so no copy is made for it)."""
        return True

    def check_reference_copy(self, policy: PreTrainedModel) -> None:
        """Called before a full copy of the policy is made as reference (no LoRA); may refuse."""

    def build_model(self) -> PreTrainedModel:
        h = self.hparams
        if h.pretrained is not None:  # a lightkit CLM checkpoint as well as a HF folder
            policy, tokenizer = load_trained(
                h.pretrained, CausalLMTask, "pretrained", revision=h.revision, trust_remote_code=h.trust_remote_code
            )
            if self.tokenizer is None:
                self.tokenizer = tokenizer
        else:
            policy = super().build_model()
        if self.tokenizer is None or self.tokenizer.eos_token_id is None:
            raise InputError(
                f"{type(self).__name__} needs the policy's tokenizer with an EOS token (linked from the DataModule)"
            )
        return policy

    def build_companions(self, model: PreTrainedModel) -> None:
        super().build_companions(model)
        if not self.lora and self.needs_reference():  # with LoRA: the policy with adapters off
            self.check_reference_copy(model)
            self.add_frozen("reference", copy.deepcopy(model))

    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference model to call: with LoRA the policy itself, inside peft's `disable_adapter`
        (so no second model is held in memory), otherwise the frozen copy."""
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.frozen("reference")

    def logprobs(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, reference: bool = False, temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probs (B, T-1) of the labelled tokens under the policy or its reference,
        from the labelled positions' hidden states only (`lightkit.objectives.lm_loss.labelled_logprobs`)."""
        what = type(self).__name__
        if not reference:
            return labelled_logprobs(self.model, inputs, labels, what, temperature)
        with self.reference() as model:
            return labelled_logprobs(model, inputs, labels, what, temperature)


class Samples(NamedTuple):
    """Responses sampled after left-padded prompts, laid out for scoring and log-probs."""

    sequences: torch.Tensor  # (B, P+R) prompt then response ids
    attention_mask: torch.Tensor  # (B, P+R)
    position_ids: torch.Tensor  # (B, P+R)
    prompt_length: int  # P
    response: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) float, 1 up to and including EOS
    ended: torch.Tensor  # (B,) bool, the response reached EOS
    texts: list[str]  # the decoded responses

    @classmethod
    def after(cls, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response: torch.Tensor,
              mask: torch.Tensor, ended: torch.Tensor, texts: list[str]) -> Samples:  # fmt: skip
        """Responses (B, R) laid out after their left-padded prompts: one row's positions start at
        its prompt's first token and run on through its response."""
        attention = torch.cat([prompt_mask, mask.long()], dim=1)
        position_ids = (attention.cumsum(1) - 1).clamp(min=0)
        sequences = torch.cat([prompt_ids, response], dim=1)
        return cls(sequences, attention, position_ids, prompt_ids.size(1), response, mask, ended, texts)

    def labels(self) -> torch.Tensor:
        """(B, P+R) token ids on response tokens, -100 elsewhere (for `PolicyTask.logprobs`)."""
        labels = torch.full_like(self.sequences, -100)
        response = labels[:, self.prompt_length :]
        response[self.mask.bool()] = self.response[self.mask.bool()]
        return labels

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.sequences, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


class RolloutTask(PolicyTask):
    """A policy improved online from sampled responses and their reward (PPO, GRPO).

    Args:
        reward_fn: import path of `reward(prompts, responses) -> list[float]`
            (`package.module:function`), or a list of them, summed with `reward_weights`.
            reward_fn, reward_model, or both (their mix).
        reward_weights: one weight per reward_fn (default: all 1).
        reward_model: a sequence classification/regression model (lightkit checkpoint, HF
            folder or Hub id); the score is its scalar output or the logit of `reward_label`.
        reward_model_weight: with reward_fn too, the reward model's weight in the sum.
        reward_model_revision: the Hub revision of a reward_model Hub id.
        reward_label: label name or index to reward, for a reward model with several labels.
        reward_text: what the reward model reads: `prompt_and_response` or `response`.
        missing_eos_penalty: subtracted from the score of responses without EOS (None: off).
        **kwargs: sampling (max_new_tokens, temperature, top_k, top_p), prompt_template, peft and
            pretrained / model_config; see CausalLMTask.
    """

    def __init__(
        self,
        reward_fn: str | list[str] | None = None,
        reward_weights: list[float] | None = None,
        reward_model: str | None = None,
        reward_model_weight: float = 1.0,
        reward_model_revision: str | None = None,
        reward_label: str | None = None,
        reward_text: Literal["prompt_and_response", "response"] = "prompt_and_response",
        missing_eos_penalty: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        reward = build_reward(
            reward_fn,
            reward_model,
            weights=reward_weights,
            model_weight=reward_model_weight,
            tasks=REWARD_MODEL_TASKS,
            label=reward_label,
            text=reward_text,
            revision=reward_model_revision,
            trust_remote_code=self.hparams.trust_remote_code,
        )
        model = reward if isinstance(reward, ModelReward) else getattr(reward, "model", None)
        if model is not None:
            self.add_frozen("reward", model)  # moves with the policy, never trained or saved
        self.__dict__["_reward"] = reward  # unregistered either way

    def needed_columns(self) -> dict[str, set[str]]:
        """The prompt data's text columns the run needs, by what needs them: the reward callables'
        (e.g. `rouge_l`'s `reference`); subclasses add their own."""
        return dict(getattr(self.__dict__["_reward"], "needs", {}))

    def column_hint(self, missing: list[str]) -> str:
        if "reference" in missing:
            return " (HeadlineDataModule or InstructionDataModule with prompts_only: true keeps `reference`)"
        return ""

    def reward_parts(self) -> dict[str, torch.Tensor]:
        """Each weighted reward callable's mean over the last scored batch (empty for one reward)."""
        return getattr(self.__dict__["_reward"], "last_parts", {})

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, repeats: int = 1) -> Samples:
        """Responses to the prompts; `repeats`: the rows come in groups of that many equal prompts,
        each group's prompt then read once (`lightkit.models.shared_prefill`; same samples)."""
        h = self.hparams
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        with shared_prefill(self.model, repeats):
            sequences = self.model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                do_sample=True,
                temperature=h.temperature,
                top_k=h.top_k,
                top_p=h.top_p,
                max_new_tokens=h.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        P = prompt_ids.size(1)
        response = sequences[:, P:]
        is_eos = response == eos
        after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
        mask = (~after_eos).float()
        texts = [self.tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(response, mask)]
        return Samples.after(prompt_ids, prompt_mask, response, mask, is_eos.any(1), texts)

    def response_logprobs(self, samples: Samples, idx: torch.Tensor | None = None, reference: bool = False):
        """(B, R) log-probs of the sampled response tokens (rows `idx`) under the policy or its
        reference, at the sampling temperature; 0 after a response's EOS."""
        inputs, labels = samples.inputs(), samples.labels()
        if idx is not None:
            inputs, labels = {k: v[idx] for k, v in inputs.items()}, labels[idx]
        per_token = self.logprobs(inputs, labels, reference=reference, temperature=self.hparams.temperature)
        return per_token[:, samples.prompt_length - 1 :]

    def scores(self, batch: dict[str, Any], samples: Samples, repeat: int = 1) -> torch.Tensor:
        """The reward of each sample (`repeat` per prompt of `batch`), less `missing_eos_penalty`
        where it never ended; the batch's text columns beside `prompt` go to the reward too."""
        texts = {k: [x for x in v for _ in range(repeat)] for k, v in batch.items() if isinstance(v, list)}
        prompts = texts.pop("prompt")
        scores = self.__dict__["_reward"](prompts, samples.texts, **texts).to(self.device).float()
        if self.hparams.missing_eos_penalty is not None:
            scores = scores - self.hparams.missing_eos_penalty * (~samples.ended).float()
        return scores

    # -- evaluation ----------------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"reward": MeanMetric()})

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        """One sampled response per prompt, no update: the reward feeds the stage's epoch metric,
        and, where there is a reference, the summed log-ratio to it (a sampled estimate of the KL)
        is logged as `<stage>_kl`."""
        samples = self.sample(batch["input_ids"], batch["attention_mask"])
        rewards = self.scores(batch, samples)
        if self.lora or self.needs_reference():
            diff = (self.response_logprobs(samples) - self.response_logprobs(samples, reference=True)) * samples.mask
            self.log(f"{stage}_kl", diff.sum(1).mean(), batch_size=rewards.size(0), sync_dist=True)
        self.metrics_for(stage)["reward"].update(rewards)

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    @torch.no_grad()
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")
