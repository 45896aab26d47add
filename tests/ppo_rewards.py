"""Reward callables for the PPO tests, named by import path in tests/conf/ppo.yaml."""

from __future__ import annotations


def count_e(prompts: list[str], responses: list[str]) -> list[float]:
    """The number of letters 'e' in each response: easy to check, easy for a tiny policy to chase."""
    return [float(r.count("e")) for r in responses]


def raises(prompts: list[str], responses: list[str]) -> list[float]:
    raise RuntimeError("reward service unavailable")


def one_short(prompts: list[str], responses: list[str]) -> list[float]:
    return [0.0] * (len(responses) - 1)


def not_finite(prompts: list[str], responses: list[str]) -> list[float]:
    return [float("nan")] + [0.0] * (len(responses) - 1)


def reference_overlap(prompts: list[str], responses: list[str], reference: list[str]) -> list[float]:
    """1 where the response contains its reference answer: takes the prompt data's `reference`."""
    return [float(ref in r) for r, ref in zip(responses, reference)]


def reference_or_default(
    prompts: list[str], responses: list[str], reference: list[str], scale: float = 1.0
) -> list[float]:
    """Needs `reference`; `scale` has a default, so no column of that name is needed."""
    return [scale * float(ref in r) for r, ref in zip(responses, reference)]
