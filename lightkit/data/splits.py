"""Seeded held-out splits for corpora that ship as one file (or one folder)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def holdout_split(
    items: Sequence[T], fractions: tuple[float, float], seed: int, key: Callable[[T], Hashable] | None = None
) -> tuple[list[T], list[T], list[T]]:
    """(train, validation, test) after a seeded shuffle; each part keeps the input order.

    With `key` (e.g. the label), the split is stratified: each group is split with the same
    fractions, so a rare class still appears in validation and test.
    """
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item) if key else None].append(i)
    rng = random.Random(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for name in sorted(groups, key=str):
        order = groups[name]
        rng.shuffle(order)
        n_val, n_test = (round(f * len(order)) for f in fractions)
        parts[1].extend(order[:n_val])
        parts[2].extend(order[n_val : n_val + n_test])
        parts[0].extend(order[n_val + n_test :])
    train, val, test = ([items[i] for i in sorted(p)] for p in parts)
    return train, val, test
