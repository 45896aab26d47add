"""How good a policy's greedy answers are, and how far it moved from its reference.

One scoring path for every decoder a chain produces (zero-shot, SFT, DPO, PPO, GRPO), so that
`lightkit ship`'s decoder report and `benchmarks/align_report.py` compare models on exactly the
same numbers:

- `greedy_answers`: each prompt answered greedily (transformers' `generate`, KV cache, left
  padding), and, given a reference model, each answer's KL(model || reference) summed over its
  own tokens: the exact KL of the two next-token distributions at every position the model
  chose, through its first EOS (the reference reads each batch of prompts once:
  `lightkit.models.prompt_cache`). (TRL logs a sampled estimate of this during training; a report
  comparing finished models can afford the exact one.)
- `answer_scores`: mean reward (and its parts), ROUGE-1/L (torchmetrics, as `lightkit test`
  reports), answer length in words, the share ending with EOS, mean KL.
- `PolicyComparison`: both of those for several policies against the reference they all started
  from (the SFT model), the reference reading each batch of prompts once for all of them.
- `pearson` / `spearman`, and `reward_agreement` with them: how one reward tracks another on the
  same answers; `reward_model_report`: that and a reward model's held-out pair accuracy.

The reward is passed in (a `lightkit.rewards.scoring.build_reward` callable), never built here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics.text.rouge import ROUGEScore

from lightkit.models.batched_generate import autocast, generate_batches
from lightkit.models.hub import load_causal_lm
from lightkit.models.prompt_cache import CachedPrompts
from lightkit.rewards.scoring import ModelReward


@torch.no_grad()
def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    batch_size: int = 16,
    reference: Any | None = None,
    context: Callable[[], Any] | None = None,
) -> dict[str, list[Any]]:
    """Greedy answers to `prompts` (rendered as the model is fed them), whether each ended with
    EOS, and each one's summed KL to `reference` (0 without one, or when `reference` is `model`).
    Pass the reference as `CachedPrompts` to score several models against it: it then reads each
    batch of prompts once, and each model costs only its answer tokens. The model's own
    distributions are the logits `generate` computed as it answered, so scoring adds no forward of
    the model. `context` makes the context the model runs in (default `autocast`; a Lightning run
    passes its precision plugin's)."""
    context = context or (lambda: autocast(model))
    answers: list[str] = []
    kls: list[float] = []
    ended: list[bool] = []
    eos = tokenizer.eos_token_id
    # A plain reference model serves this call alone: nothing it reads is read again, so nothing is kept.
    read = reference if reference is None or isinstance(reference, CachedPrompts) else CachedPrompts(reference, 0)
    scored = read is not None and read.model is not model  # a model's KL to itself is exactly 0: not computed
    extra = {"output_logits": True, "return_dict_in_generate": True} if scored else {}
    for enc, out in generate_batches(model, tokenizer, prompts, batch_size, context, max_new_tokens=max_new_tokens,
                                     do_sample=False, **extra):  # fmt: skip
        width = enc["input_ids"].size(1)
        response = (out.sequences if scored else out)[:, width:]
        is_eos = response == eos
        mask = ((is_eos.long().cumsum(1) - is_eos.long()) == 0).float()  # through the first EOS
        ended += is_eos.any(1).tolist()
        answers += [a.strip() for a in tokenizer.batch_decode(response, skip_special_tokens=True)]
        if not scored:
            kls += [0.0] * len(response)
            continue
        with context():
            ref = read.answer_logits(enc["input_ids"], enc["attention_mask"], response, mask)
        logp = torch.log_softmax(torch.stack(out.logits, 1).float(), -1)
        logq = torch.log_softmax(ref, -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        kls += (kl * mask).sum(1).tolist()
    return {"answers": answers, "kl": kls, "ended": ended}


def answer_scores(
    out: dict[str, list[Any]], prompts: Sequence[str], references: Sequence[str], reward: Callable[..., Any]
) -> dict[str, Any]:
    """The means a report shows for one model's `greedy_answers`, and the per-answer `rewards`."""
    answers = out["answers"]
    rouge = ROUGEScore(rouge_keys=("rouge1", "rougeL"))(answers, list(references))
    rewards = reward(list(prompts), answers, reference=list(references))
    n = len(answers)
    return {
        "reward": float(rewards.mean()),
        "rewards": rewards.tolist(),
        **{name: float(mean) for name, mean in getattr(reward, "last_parts", {}).items()},  # reward_<callable>
        "rouge1": float(rouge["rouge1_fmeasure"]),
        "rougeL": float(rouge["rougeL_fmeasure"]),
        "answer_words": sum(len(a.split()) for a in answers) / n,
        "ended_frac": sum(out["ended"]) / n,
        "kl_to_sft": sum(out["kl"]) / n,
        "answers": n,
    }


class PolicyComparison:
    """Greedy answers of several policies to the same prompts, each scored (`answer_scores`) and
    measured against one reference, the model they all started from: what `lightkit ship`'s
    evaluate stage and `benchmarks/align_report.py` both report, so that they compare models on
    the same numbers. The reference is loaded once, reads each batch of prompts once for every
    policy (`CachedPrompts`), and answers as itself when named as a policy."""

    def __init__(
        self,
        reference: str | Path,
        tokenizer: Any,
        prompts: Sequence[str],
        references: Sequence[str],
        reward: Callable[..., Any],
        max_new_tokens: int = 24,
        batch_size: int = 16,
    ) -> None:
        self.reference_name = str(reference)
        self.reference = load_causal_lm(reference)
        self.reader = CachedPrompts(self.reference)
        self.tokenizer, self.prompts, self.references, self.reward = tokenizer, list(prompts), list(references), reward
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def score(self, policy: str | Path) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """A policy's (packaged name, folder or Hub id) `greedy_answers` and their `answer_scores`."""
        model = self.reference if str(policy) == self.reference_name else load_causal_lm(policy)
        out = greedy_answers(model, self.tokenizer, self.prompts, self.max_new_tokens, self.batch_size, self.reader)
        return out, answer_scores(out, self.prompts, self.references, self.reward)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    return float(torch.corrcoef(torch.tensor([list(x), list(y)], dtype=torch.float64))[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson of the ranks, ties sharing their mean rank."""

    def ranks(v: Sequence[float]) -> list[float]:
        t = torch.tensor(list(v), dtype=torch.float64)
        r = torch.empty_like(t)
        r[t.argsort()] = torch.arange(len(t), dtype=torch.float64)
        for value in t.unique():
            r[t == value] = r[t == value].mean()
        return r.tolist()

    return pearson(ranks(x), ranks(y))


@torch.no_grad()
def reward_agreement(
    scorer: Callable[..., torch.Tensor],
    prompts: Sequence[str],
    answers: dict[str, list[str]],
    callable_rewards: Sequence[float],
    batch_size: int = 16,
    columns: dict[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """How a learned reward (`scorer`, e.g. a `ModelReward`) tracks the callable reward on the
    same answers: every model's answers to `prompts`, in `answers`' order, against
    `callable_rewards` listed alike. `columns` are per-prompt texts the scorer may read (a
    reward model's reference answers).

    Each model's answers' spread (sd) under both rewards is reported too: a reward mixed with
    weights (PPO's `reward_model_weight` beside `reward_weights`) weighs raw scores, and a reward
    model's scale is whatever its training left, so the spreads say which term a mix follows."""
    columns = columns or {}
    learned: list[float] = []
    for texts in answers.values():
        for i in range(0, len(prompts), batch_size):
            part = {k: list(v[i : i + batch_size]) for k, v in columns.items()}
            learned += scorer(list(prompts[i : i + batch_size]), texts[i : i + batch_size], **part).tolist()
    enough = len(learned) > 1
    n = len(prompts)
    spread = {
        name: {"learned_sd": statistics.stdev(learned[k * n : (k + 1) * n]),
               "callable_sd": statistics.stdev(callable_rewards[k * n : (k + 1) * n])}
        for k, name in enumerate(answers)
    } if n > 1 else {}  # fmt: skip
    return {
        "answers_scored": len(learned),
        "pearson_with_callable_reward": pearson(learned, callable_rewards) if enough else None,
        "spearman_with_callable_reward": spearman(learned, callable_rewards) if enough else None,
        "sd_per_model": spread,
    }


def reward_model_report(
    path: str | Path,
    tasks: tuple[type, ...],
    accuracy: Sequence[float],
    prompts: Sequence[str],
    answers: dict[str, list[str]],
    callable_rewards: Sequence[float],
    references: Sequence[str],
) -> dict[str, Any]:
    """What `lightkit ship`'s decoder report and `make align`'s report both say of a trained
    reward model (its `hf_model` at `path`): its held-out pair accuracy (`accuracy`, its logged
    `val_accuracy` per validation; the last counts), and `reward_agreement` on every model's
    held-out answers, the reference answers given for a reward model that reads them. It is
    scored as PPO scores it (`ModelReward`, loading it with `tasks`: the caller names them, as
    there)."""
    scorer = ModelReward(str(path), tasks)
    return {
        "model": str(path),
        "held_out_pair_accuracy": accuracy[-1] if accuracy else None,
        "pair_accuracy_per_validation": list(accuracy),
        **reward_agreement(scorer, prompts, answers, callable_rewards, columns={"reference": list(references)}),
    }
