"""RLHF maths (PPO, DPO, GRPO) on tensors, free of Lightning so each formula is tested on hand-computed values.

Shapes: (B, R) over the R response tokens of B rollouts, right-padded; `mask` is 1 on real response
tokens (up to and including EOS) and 0 after. Conventions follow Schulman et al. (2017) for the
clipped losses and GAE, and Ziegler et al. (2019) for the KL penalty and its adaptive coefficient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over masked entries (unbiased variance, as TRL); padding stays 0."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns (advantages, returns), zero after each rollout's end.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, where V and A
    past a rollout's last token are 0 (the episode ends there).
    """
    steps = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        alive = mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        next_value = values[:, t + 1] * alive if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running * alive) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate; returns (loss, clip fraction, approx KL, ratio)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    # k3 estimator of KL(old || new): unbiased and always >= 0 (Schulman, "Approximating KL").
    approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clip_frac, approx_kl, ratio


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * max((V - R)², (V_clipped - R)²); returns (loss, clip fraction)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    return loss, masked_mean((clipped_err > unclipped_err).float(), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits): logsumexp(z) - sum(p * z)."""
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under softmax(logits): (B, R, V), (B, R) -> (B, R)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class AdaptiveKL:
    """KL coefficient; adaptive when `target` is set (Ziegler et al. 2019, section 2.2).

    After each batch: e = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + e * n_rollouts / horizon.
    """

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10000) -> None:
        self.value = coef
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, n_rollouts: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_rollouts / self.horizon


# -- preference optimisation (DPO, IPO) ---------------------------------------------------------
def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss and the implicit rewards of both sides, from sequence log-probs (B,).

    sigmoid (Rafailov et al. 2023): h = beta * ((chosen - rejected) - (ref_chosen - ref_rejected)),
    loss = -(1 - eps) log σ(h) - eps log σ(-h) (eps: label smoothing, the conservative DPO).
    ipo (Azar et al. 2023): loss = ((chosen - rejected) - (ref_chosen - ref_rejected) - 1/(2 beta))²,
    on per-token mean log-probs (the caller passes them, as TRL does).
    Rewards: beta * (logp - ref_logp) per side; their difference is the reward margin.
    """
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    elif loss_type == "ipo":
        loss = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    return loss, beta * (chosen - ref_chosen).detach(), beta * (rejected - ref_rejected).detach()


# -- GRPO ---------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + 1e-4): rewards (B*G,) laid out group by group.

    Shao et al. (2024), as TRL's GRPOTrainer: the unbiased std of each group of `group_size`
    samples of one prompt; `scale=False` keeps the centred rewards (Dr. GRPO, Liu et al. 2025).
    A group whose samples all score the same gets advantage 0: it teaches nothing.
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(1, keepdim=True) + 1e-4)
    return centred.reshape(-1)


def best_of_groups(rewards: torch.Tensor, group_size: int, margin: float) -> torch.Tensor:
    """(B*G,) bool: each group's highest-reward sample, where it beats the group's lowest by at
    least `margin` (the first of equal best); groups closer than that mark none.

    The same rule that makes the on-policy DPO pairs (`lightkit.data.headline_pairs`): a best
    answer only a rounding error above the rest is not one the reward prefers.
    """
    grouped = rewards.view(-1, group_size)
    best = torch.zeros_like(grouped, dtype=torch.bool)
    keep = (grouped.max(1).values - grouped.min(1).values) >= margin
    best[keep, grouped.argmax(1)[keep]] = True
    return best.reshape(-1)


def chosen_nll(logprobs: torch.Tensor, mask: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Mean NLL over the tokens of the `chosen` rows (bool, (B,)) of per-token log-probs (B, R);
    0 where no row is chosen, so the term then adds nothing."""
    return -masked_mean(logprobs.float(), mask * chosen.unsqueeze(1).to(mask.dtype))


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    loss_type: str = "grpo",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped GRPO objective on per-token log-probs (B, R) and a sequence advantage (B,).

    Per token: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * KL, where KL is the k3
    estimator exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased). `grpo` averages each sequence
    over its tokens and then the sequences (Shao et al. 2024); `dapo` averages over all tokens
    of the batch, so long responses are not down-weighted (Yu et al. 2025).
    Returns the loss and its parts for logging (clip fraction, KL).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    stats: dict[str, torch.Tensor] = {}
    if ref_logprobs is not None:
        diff = ref_logprobs - logprobs
        kl = torch.exp(diff) - diff - 1
        stats["kl"] = masked_mean(kl.detach(), mask)
        if beta:
            per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif loss_type == "dapo":
        loss = masked_mean(per_token, mask)
    else:
        raise ValueError(f"unknown GRPO loss_type {loss_type!r}")
    clipped = ((ratio < 1 - clip) & (adv < 0)) | ((ratio > 1 + clip) & (adv > 0))
    stats["clip_frac"] = masked_mean(clipped.float(), mask)
    return loss, stats
