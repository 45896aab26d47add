"""How lightkit measures, in one place: the latency figures and the spread of repeats, timed calls
(interleaved, in alternating order), and what every result records beside its numbers (the
machine, the library versions), written whole or not at all.

`lightkit benchmark`, `lightkit evaluate`, the parity gate, the ship report and every script under
benchmarks/ use it, so a median, a p90 or a "spread" means the same in each file they write.
Percentiles are numpy's default: linear interpolation between the sorted values.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lightkit.io.atomic import atomic_write_text


def latency_summary(times_ms: list[float]) -> dict[str, float]:
    """Median and p90 of wall times in milliseconds, rounded to 0.1 microsecond."""
    median, p90 = np.percentile(times_ms, [50, 90])
    return {"median_ms": round(float(median), 4), "p90_ms": round(float(p90), 4)}


def median(values: Iterable[float]) -> float:
    """The median, as every figure here takes it (numpy's 50th percentile: the mean of the middle
    two of an even count)."""
    return float(np.percentile(list(values), 50))


def spread(values: list[float]) -> dict[str, float]:
    """Median, smallest and largest of repeated measurements: how far one run may be trusted."""
    return {"median": median(values), "min": float(min(values)), "max": float(max(values)),
            "n": len(values)}  # fmt: skip


def synchronize() -> None:
    """Wait for queued GPU work, so it is counted where it was launched (nothing on a CPU)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def stopwatch(into: list[float]) -> Iterator[None]:
    """Append the block's wall time in milliseconds to `into`, the GPU synchronised at both ends."""
    synchronize()
    start = time.perf_counter()
    yield
    synchronize()
    into.append((time.perf_counter() - start) * 1000)


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        with stopwatch(times):
            fn()
    return times


def interleaved(fns: Mapping[str, Callable[[], Any]], warmup: int, repeats: int, rounds: int) -> dict[str, list[float]]:
    """Time each of `fns` `repeats` times in all, in `rounds` blocks taken in turn, the order
    reversed every other round (with `warmup` calls before each block): a slow spell of the machine
    then falls on every side alike, and no side always runs first (warm caches) or last."""
    names = list(fns)
    blocks = [len(part) for part in np.array_split(np.arange(repeats), min(rounds, repeats))]
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, block in enumerate(blocks):
        for name in names if i % 2 == 0 else reversed(names):
            times[name] += time_calls(fns[name], warmup, block)
    return times


def cpuinfo(field: str) -> str | None:
    """The first value of `field` in Linux's /proc/cpuinfo (None elsewhere, or where it lacks it)."""
    path = Path("/proc/cpuinfo")
    lines = path.read_text().splitlines() if path.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(field)), None)


def cpu_name() -> str:
    """The CPU's model name, else what `platform` knows."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


# The vector instructions whose presence changes which kernels torch and oneDNN run, and so the
# rounding of a bf16 or fp32 training: two CPUs of one model name can train different weights.
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_features() -> list[str]:
    """Which of `KERNEL_FEATURES` the CPU has (its cpuinfo flags; empty where there are none)."""
    flags = set((cpuinfo("flags") or "").split())
    return [f for f in KERNEL_FEATURES if f in flags]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean nothing without it."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_features": cpu_features(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def device_label(threads: int | None = None) -> str:
    """One line naming the device: the GPU, else the CPU with its cores and the threads used
    (torch's, unless the caller names another count, e.g. ONNX Runtime's)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.machine()}, {os.cpu_count()} cores, {threads or torch.get_num_threads()} threads"


def versions(*packages: str) -> dict[str, str]:
    """lightkit's, Python's and torch's versions, and those of the named packages (import names)."""
    from lightkit import __version__

    found = {"lightkit": __version__, "python": platform.python_version()}
    for name in ("torch", *packages):
        try:
            module = sys.modules.get(name) or importlib.import_module(name)
        except ImportError:
            continue
        found[name] = getattr(module, "__version__", "unknown")
    return found


def provenance(*packages: str, threads: int | None = None) -> dict[str, Any]:
    """What every benchmark result records beside its numbers: the device, the machine, the
    versions of lightkit, torch and the named packages, and the date."""
    return {
        "device": device_label(threads),
        "machine": machine(),
        "versions": versions(*packages),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_json(path: str | Path, result: Mapping[str, Any]) -> None:
    """`result` as indented JSON, written whole or not at all."""
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
