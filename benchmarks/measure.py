"""Timing helpers the benchmark scripts share (imported as `measure`: the scripts' own folder is
first on sys.path when run as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def timed(fn: Callable[[], Any], warmup: int, repeats: int) -> dict[str, float]:
    """Median and p90 wall milliseconds of `fn` after `warmup` calls; with CUDA present each call
    is bracketed by synchronisations, so queued GPU work is counted where it was launched."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(times[len(times) // 2], 4), "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4)}


def bf16_matmul_tflops() -> float | None:
    """This GPU's dense bf16 matmul rate, measured now (10 8192^3 products after 3): the MFU
    denominator. None without CUDA."""
    if not torch.cuda.is_available():
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ a
    torch.cuda.synchronize()
    return 2 * 8192**3 * n / (time.perf_counter() - start) / 1e12
