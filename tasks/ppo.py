"""PPO for causal LMs (RLHF) against a reward model or a plain Python reward function.

    lightkit fit --config configs/ppo.yaml
    lightkit predict --config configs/ppo.yaml --ckpt_path ... --data.predict_file prompts.txt

Each training step takes a batch of prompts (`PromptDataModule`) and
1. samples a response per prompt from the policy (temperature / top-k / top-p, stop at EOS);
2. the policy's and the frozen reference's log-probs, the values, and the score (reward model or
   callable), minus `missing_eos_penalty` for responses that never ended; the policy's come from
   the first minibatch's forward (the policy has not changed yet), the rest with no gradient;
3. per-token rewards `-kl_coef * (logp - logp_ref)`, plus the score on the last token;
4. GAE advantages (gamma, lam), whitened; returns = advantages + values;
5. `ppo_epochs` passes over shuffled minibatches: clipped policy loss + `vf_coef` * clipped value
   loss - `entropy_coef` * entropy, one optimizer step per minibatch (manual optimisation, so
   `trainer.global_step` counts minibatch updates). A minibatch whose probability ratio exceeds
   `ratio_threshold` (or whose loss is not finite) is skipped and counted, not applied.

Validation samples responses to the validation prompts and logs `val_reward` and `val_kl`, so
checkpoints can monitor reward. The policy runs without dropout throughout (dropout would make the
ratio differ from 1 before any update). The reference and a reward model are frozen companions
(`BaseTask.add_frozen`): never optimised, never checkpointed. With LoRA (`peft:`) there is no
reference copy: the reference is the policy with its adapters disabled. The value head (or a separate value
model) is checkpointed with the policy but not saved in the Hugging Face output, which is the policy
alone, loadable with `AutoModelForCausalLM`.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel

from lightkit.objectives.rlhf import (
    AdaptiveKL,
    entropy_from_logits,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_logprobs,
    value_loss,
)
from lightkit.tasks.policy import RolloutTask, Samples


class Rollout(NamedTuple):
    """Sampled responses with what PPO computes on them before its updates."""

    samples: Samples
    logprobs: torch.Tensor  # (B, R) policy at sampling time
    ref_logprobs: torch.Tensor  # (B, R)
    values: torch.Tensor  # (B, R)
    scores: torch.Tensor  # (B,) reward per response
    rewards: torch.Tensor  # (B, R) KL penalty per token + score on the last token


class PPOTask(RolloutTask):
    """PPO on a causal LM policy with a value head and a frozen reference (module docstring).

    Args:
        ppo_epochs: passes over each rollout batch.
        minibatch_size: rollouts per optimizer step.
        clip_range: PPO ratio clip epsilon.
        clip_range_value: value clip range.
        vf_coef: weight of the value loss.
        entropy_coef: weight of the entropy bonus.
        gamma: discount.
        lam: GAE lambda.
        whiten_advantages: normalise advantages over each rollout batch.
        kl_coef: initial coefficient of the per-token KL penalty.
        target_kl: adaptive KL target (per rollout, summed over tokens); None keeps kl_coef fixed.
        kl_horizon: adaptive KL horizon, in rollouts.
        value_model: `head` (a linear layer on the policy's last hidden state) or `separate` (a
            copy of the initial policy as value trunk, with its own head).
        max_grad_norm: gradient clipping norm per update.
        ratio_threshold: skip a minibatch whose ratio on any response token exceeds this.
        **kwargs: the reward (reward_fn and reward_weights, or reward_model), missing_eos_penalty,
            sampling, prompt_template, peft and pretrained / model_config; see RolloutTask.
    """

    primary_metric = "reward"
    primary_mode = "max"
    # Its step is a rollout and an update, not a forward the parity gate can score; the policy is
    # a plain causal LM in its hf_model folder, exported like any other.
    export_kind = None
    serving = None

    def __init__(
        self,
        ppo_epochs: int = 4,
        minibatch_size: int = 8,
        clip_range: float = 0.2,
        clip_range_value: float = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        gamma: float = 1.0,
        lam: float = 0.95,
        whiten_advantages: bool = True,
        kl_coef: float = 0.05,
        target_kl: float | None = None,
        kl_horizon: int = 10000,
        value_model: Literal["head", "separate"] = "head",
        max_grad_norm: float = 1.0,
        ratio_threshold: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.kl_ctl = AdaptiveKL(kl_coef, target_kl, kl_horizon)

    # -- models --------------------------------------------------------------------------------
    def build_companions(self, model: PreTrainedModel) -> None:
        super().build_companions(model)  # the reference (PolicyTask)
        self.value_trunk = copy.deepcopy(model) if self.hparams.value_model == "separate" else None
        self.value_head = nn.Linear(model.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward_policy(
        self, samples: Samples, idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the samples' rows `idx` (all by default): the log-probs of the response tokens
        (B, R), the logits that predict them at the sampling temperature, in fp32 (B, R, V), and
        the values of the states before them (B, R). The LM head runs on the response's positions
        only (`logits_to_keep`): over a 320-token prompt it is about a fifth of the forward's
        multiply-adds, all wasted."""
        inputs = samples.inputs()
        response = samples.response
        if idx is not None:
            inputs, response = {k: v[idx] for k, v in inputs.items()}, response[idx]
        keep = response.size(1) + 1  # positions P-1 .. P+R-1; position t predicts token t+1
        out = self.model(**inputs, output_hidden_states=True, logits_to_keep=keep)
        trunk = (
            out if self.value_trunk is None else self.value_trunk(**inputs, output_hidden_states=True, logits_to_keep=1)
        )
        window = slice(samples.prompt_length - 1, -1)
        values = self.value_head(trunk.hidden_states[-1][:, window].float()).squeeze(-1)
        logits = out.logits[:, :-1].float() / self.hparams.temperature
        return token_logprobs(logits, response), logits, values

    # -- rollouts ------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, batch: dict[str, Any], sampled: Samples, logprobs: torch.Tensor, values: torch.Tensor) -> Rollout:
        """What PPO computes on the samples before its updates, from the policy's log-probs and
        values on them (`first_update` in training)."""
        mask = sampled.mask
        ref_logprobs = self.response_logprobs(sampled, reference=True)
        scores = self.scores(batch, sampled)
        rewards = -self.kl_ctl.value * (logprobs - ref_logprobs) * mask
        last = mask.sum(1).long() - 1
        rewards[torch.arange(len(last), device=rewards.device), last] += scores
        return Rollout(sampled, logprobs, ref_logprobs, values * mask, scores, rewards)

    def first_update(
        self, sampled: Samples, first: torch.Tensor, rest: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The forward of the first minibatch (rows `first`), with gradient, and the policy's
        log-probs and values on every sample for the rollout: before the first update the policy
        is the one that sampled, so the rows of `first` take them from that forward (detached) and
        only the `rest` run again, without gradient. With one minibatch per batch (`rest` empty)
        this saves a whole forward a step."""
        graph = self.forward_policy(sampled, first)
        logprobs = torch.empty_like(sampled.mask)
        values = torch.empty_like(sampled.mask)
        logprobs[first], values[first] = graph[0].detach(), graph[2].detach().float()  # bf16 under autocast
        if len(rest):
            with torch.no_grad():
                rest_logprobs, _, rest_values = self.forward_policy(sampled, rest)
            logprobs[rest], values[rest] = rest_logprobs, rest_values.float()
        return graph, (logprobs, values)

    # -- training ------------------------------------------------------------------------------
    def updates_per_batch(self) -> int:
        """`ppo_epochs` passes over the batch's rollouts, one update per minibatch (the last may
        be short); a skipped minibatch makes no update, so schedules then end a little late."""
        rows = self.trainer.datamodule.hparams.batch_size
        return self.hparams.ppo_epochs * math.ceil(rows / self.hparams.minibatch_size)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        h = self.hparams
        self.model.eval()  # no dropout in PPO (module docstring); gradients still flow
        sampled = self.sample(batch["input_ids"], batch["attention_mask"])
        n = sampled.sequences.size(0)
        # The first pass's order is drawn here, where the rollout used to end: scoring draws no
        # random numbers, so a run samples exactly as before.
        order = torch.randperm(n, device=sampled.sequences.device)
        graph, (logprobs, values) = self.first_update(sampled, order[: h.minibatch_size], order[h.minibatch_size :])
        ro = self.rollout(batch, sampled, logprobs, values)
        advantages, returns = gae(ro.rewards, ro.values, ro.samples.mask, h.gamma, h.lam)
        if h.whiten_advantages:
            advantages = masked_whiten(advantages, ro.samples.mask)
        optimizer = self.optimizers()
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        skipped = 0
        for epoch in range(h.ppo_epochs):
            if epoch:
                order = torch.randperm(n, device=sampled.sequences.device)
            for idx in order.split(h.minibatch_size):
                # The first minibatch's forward already ran, in first_update; later ones run here.
                logprobs, logits, values = graph if graph is not None else self.forward_policy(sampled, idx)
                graph = None
                m = sampled.mask[idx]
                pg, clip_frac, approx_kl, ratio = policy_loss(
                    logprobs, ro.logprobs[idx], advantages[idx], m, h.clip_range
                )
                vf, vf_clip_frac = value_loss(values, ro.values[idx], returns[idx], m, h.clip_range_value)
                entropy = masked_mean(entropy_from_logits(logits), m)
                loss = pg + h.vf_coef * vf - h.entropy_coef * entropy
                if not torch.isfinite(loss) or (ratio * m).max() > h.ratio_threshold:
                    skipped += 1  # an exploded ratio would wreck the policy: drop this update
                    continue
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(optimizer, gradient_clip_val=h.max_grad_norm, gradient_clip_algorithm="norm")
                optimizer.step()
                for name, value in (
                    ("policy_loss", pg),
                    ("value_loss", vf),
                    ("clip_frac", clip_frac),
                    ("approx_kl", approx_kl),
                    ("entropy", entropy),
                    ("value_clip_frac", vf_clip_frac),
                ):
                    stats[name].append(value.detach())
        kl = ((ro.logprobs - ro.ref_logprobs) * ro.samples.mask).sum(1).mean()
        self.kl_ctl.update(float(kl), n)
        logs = {name: torch.stack(values).mean() for name, values in stats.items()}
        logs.update(
            reward=ro.scores.mean(),
            kl=kl,
            kl_coef=torch.tensor(self.kl_ctl.value),
            response_length=ro.samples.mask.sum(1).mean(),
            ended_frac=ro.samples.ended.float().mean(),
            skipped_minibatches=torch.tensor(float(skipped)),
        )
        self.log_train(logs, n, bar=())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["kl_coef"] = self.kl_ctl.value  # the adaptive coefficient resumes where it was

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.kl_ctl.value = checkpoint.get("kl_coef", self.kl_ctl.value)
