"""GRPO: group relative policy optimisation of a causal LM against reward callables or a reward model.

    lightkit fit --config configs/grpo_headlines.yaml

Each training step takes a batch of B prompts (`PromptDataModule`, or the test prompts of an
instruction DataModule) and
1. samples `num_generations` (G) responses per prompt (temperature / top-k / top-p, batched with
   the KV cache, stopping rows at EOS; each prompt prefilled once, `lightkit.models.shared_prefill`);
2. scores them: the weighted sum of the reward callables (or a reward model), less
   `missing_eos_penalty` for responses that never ended;
3. advantages: each reward minus its group's mean, over the group's std (`lightkit.objectives.rlhf.
   group_advantages`); no value model;
4. `num_iterations` passes over minibatches of the B*G samples (one optimizer step each) on the
   clipped ratio loss, plus `beta` x the k3 KL to the reference (`lightkit.objectives.rlhf.grpo_loss`),
   plus `sft_alpha` x the NLL of the prompts' reference answers, and `best_alpha` x the NLL of each
   group's best response, where set.

With one pass and one minibatch (the defaults) the ratio is exactly 1 and the old log-probs are
not computed (the loss's gradient is then the policy gradient), as in TRL's GRPOTrainer. With
`beta` 0 (TRL's default too) the reference is never run in training. Log-probs are taken from the
response positions' hidden states only, never the (B, T, V) logits.

`sft_alpha` is InstructGPT's PPO-ptx mix (Ouyang et al. 2022) on the answers the policy was tuned
on: the reward alone can be climbed by what is cheapest to change (a headline's length, say) at
the cost of what the data asked for; the NLL term holds the policy to the reference answers, as
RPO's does for DPO (`lightkit.tasks.dpo`).

`best_alpha` is RPO's term itself, with each group's best response (by at least `best_margin` over
its worst, as the on-policy DPO pairs are chosen) as the chosen answer. The policy gradient pushes
the worse responses down as hard as it pulls the better up; at a learning rate that moves the model,
that mass goes to answers nobody sampled, as DPO without RPO showed. The NLL of the best response
holds up what the reward preferred, in the policy's own words rather than the reference's.

Validation samples one response per prompt and logs `val_reward`, and `val_kl` (summed over the
response) where a reference exists (LoRA, or beta > 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Literal

import torch
from torch.nn.utils.rnn import pad_sequence

from lightkit.io.errors import InputError
from lightkit.objectives.rlhf import best_of_groups, chosen_nll, group_advantages, grpo_loss
from lightkit.tasks.policy import RolloutTask, Samples


class GRPOTask(RolloutTask):
    """GRPO on a causal LM policy (module docstring).

    Args:
        num_generations: responses sampled per prompt (the group); at least 2.
        beta: weight of the KL to the reference in the loss (0: no KL term, no reference pass).
        clip_range: ratio clip epsilon.
        num_iterations: passes over each batch of samples (mu in the GRPO paper).
        minibatch_size: samples per optimizer step (default: all B x G of a batch, one step).
        loss_type: `grpo` (mean over each response, then over responses) or `dapo` (mean over
            all tokens).
        scale_rewards: divide advantages by the group's std (false: centred rewards only).
        max_grad_norm: gradient clipping norm per update.
        sft_alpha: weight of the prompts' reference answers' NLL (the data's `reference` column, a
            mean over their tokens) added to every update's loss; None or 0: off.
        best_alpha: weight of the NLL of each group's best response (a mean over the tokens of the
            chosen responses of the update, at the sampling temperature as the policy loss) added to
            its loss; None or 0: off.
        best_margin: how far a group's best reward must be above its worst for its best response
            to count in `best_alpha`'s term.
        **kwargs: the reward (reward_fn with reward_weights, or reward_model), missing_eos_penalty,
            sampling (max_new_tokens, temperature, top_k, top_p), peft, pretrained; see RolloutTask.
    """

    primary_metric = "reward"
    primary_mode = "max"
    export_kind = None  # the policy is a plain causal LM in its hf_model folder
    serving = None

    def __init__(
        self,
        num_generations: int = 4,
        beta: float = 0.0,
        clip_range: float = 0.2,
        num_iterations: int = 1,
        minibatch_size: int | None = None,
        loss_type: Literal["grpo", "dapo"] = "grpo",
        scale_rewards: bool = True,
        max_grad_norm: float = 1.0,
        sft_alpha: float | None = None,
        best_alpha: float | None = None,
        best_margin: float = 0.2,
        **kwargs: Any,
    ) -> None:
        for name, alpha in (("sft_alpha", sft_alpha), ("best_alpha", best_alpha)):
            if alpha is not None and alpha < 0:
                raise InputError(f"GRPOTask: {name} must be >= 0 or null, got {alpha}")
        if best_margin < 0:
            raise InputError(f"GRPOTask: best_margin must be >= 0, got {best_margin}")
        if num_generations < 2:
            raise InputError(
                f"GRPOTask: num_generations must be at least 2, got {num_generations}: advantages are rewards "
                "relative to the other responses to the same prompt"
            )
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def needs_reference(self) -> bool:
        return self.hparams.beta > 0

    def updates_for(self, samples: int) -> int:
        """Optimizer updates made on a batch of `samples` responses: passes x minibatches."""
        return self.hparams.num_iterations * math.ceil(samples / (self.hparams.minibatch_size or samples))

    def updates_per_batch(self) -> int:
        return self.updates_for(self.trainer.datamodule.hparams.batch_size * self.hparams.num_generations)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        h = self.hparams
        self.model.eval()  # no dropout (see lightkit.tasks.policy); gradients still flow
        G = h.num_generations
        prompt_ids, prompt_mask = (batch[k].repeat_interleave(G, 0) for k in ("input_ids", "attention_mask"))
        samples = self.sample(prompt_ids, prompt_mask, repeats=G)
        rewards = self.scores(batch, samples, repeat=G)
        parts = self.reward_parts()
        advantages = group_advantages(rewards, G, h.scale_rewards)
        n = samples.sequences.size(0)
        with torch.no_grad():  # one update: the old log-probs are the new ones, detached
            old = self.response_logprobs(samples) if self.updates_for(n) > 1 else None
            ref = self.response_logprobs(samples, reference=True) if h.beta > 0 else None
        answers = self.reference_answers(batch) if h.sft_alpha else None
        best = best_of_groups(rewards, G, h.best_margin) if h.best_alpha else None
        optimizer = self.optimizers()
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        for _ in range(h.num_iterations):
            for idx in torch.randperm(n, device=samples.sequences.device).split(h.minibatch_size or n):
                logprobs = self.response_logprobs(samples, idx)
                loss, parts_ = grpo_loss(
                    logprobs,
                    old[idx] if old is not None else logprobs.detach(),
                    advantages[idx],
                    samples.mask[idx],
                    h.clip_range,
                    ref[idx] if ref is not None else None,
                    h.beta,
                    h.loss_type,
                )
                stats["policy_loss"].append(loss.detach())
                if best is not None:
                    nll = chosen_nll(logprobs, samples.mask[idx], best[idx])
                    loss = loss + h.best_alpha * nll
                    stats["nll_best"].append(nll.detach())
                if answers is not None:
                    nll = self.reference_nll(answers)
                    loss = loss + h.sft_alpha * nll
                    stats["nll_reference"].append(nll.detach())
                self._finite.watch(loss, f"GRPO update {self.trainer.global_step}, batch {batch_idx}")
                self._finite.check()  # before the update: a NaN step would wreck the policy
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(optimizer, gradient_clip_val=h.max_grad_norm, gradient_clip_algorithm="norm")
                optimizer.step()
                for name, value in parts_.items():
                    stats[name].append(value)
        logs = {name: torch.stack(values).mean() for name, values in stats.items()}
        logs.update(
            reward=rewards.mean(),
            reward_std=rewards.view(-1, G).std(1).mean(),
            response_length=samples.mask.sum(1).mean(),
            ended_frac=samples.ended.float().mean(),
            **{k: v.to(self.device) for k, v in parts.items()},
        )
        self.log_train(logs, n, bar=("reward",))

    def needed_columns(self) -> dict[str, set[str]]:
        return super().needed_columns() | ({"sft_alpha": {"reference"}} if self.hparams.sft_alpha else {})

    def reference_answers(self, batch: dict[str, Any]) -> Samples:
        """Each prompt's reference answer and EOS (as the SFT data ends an answer), laid out after
        its left-padded prompt as a sampled response is: built once per batch for `sft_alpha`."""
        self.check_columns(batch, "a batch")  # a DataModule whose data the stage's start could not read
        eos, prompt_ids = self.tokenizer.eos_token_id, batch["input_ids"]
        answers = [torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])
                   for text in batch["reference"]]  # fmt: skip
        response = pad_sequence(answers, batch_first=True, padding_value=eos).to(prompt_ids)
        mask = pad_sequence([torch.ones(len(a)) for a in answers], batch_first=True).to(prompt_ids.device)
        ended = torch.ones(len(answers), dtype=torch.bool, device=prompt_ids.device)
        return Samples.after(prompt_ids, batch["attention_mask"], response, mask, ended, list(batch["reference"]))

    def reference_nll(self, answers: Samples) -> torch.Tensor:
        """The policy's NLL of the reference answers, a mean over their tokens."""
        per_token = self.logprobs(answers.inputs(), answers.labels())
        return -per_token.float().sum() / answers.mask.sum()
