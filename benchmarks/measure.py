"""What the benchmark scripts share beyond `lightkit.io.measure` (timing, percentiles, the machine
and versions, writing): failing cells, the bf16 peak, the manifest summary, the command line, memory,
running a side in its own process, and the performance targets checked on every result (imported
as `measure`: the scripts' own folder is first on sys.path when run as `python
benchmarks/<script>.py`)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from targets import annotate

from lightkit.io.measure import latency_summary, provenance, time_calls, write_json


def attempt(fn: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """A variant that fails (e.g. a CUDA graph over a node on the CPU) is reported, not fatal."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - the matrix records why a cell is empty
        return {"error": f"{type(error).__name__}: {str(error)[:300]}"}


def timed(fn: Callable[[], Any], warmup: int, repeats: int) -> dict[str, float]:
    """Median and p90 wall milliseconds of `fn` after `warmup` calls (lightkit.io.measure)."""
    return latency_summary(time_calls(fn, warmup, repeats))


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


def forms_summary(manifest: dict[str, Any], forms: list[str]) -> dict[str, Any]:
    """Size, GPU placement and parity (without its tolerance) of each exported form asked for."""
    return {
        f: {
            "bytes": manifest["forms"][f]["bytes"],
            "gpu_ready": manifest["forms"][f].get("gpu_ready"),
            "placement_off_cuda": manifest["forms"][f].get("placement", {}).get("off_provider_ops"),
            "parity": {k: v for k, v in manifest["forms"][f]["parity"].items() if k != "tolerance"},
        }
        for f in forms
        if f in manifest["forms"]
    }


def command_line(script: str, args: argparse.Namespace) -> str:
    """The command that reproduces a run, as the shell takes it (booleans as --flag / --no-flag)."""
    parts = []
    for key, value in vars(args).items():
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no-{key}")
        elif isinstance(value, list):
            parts.append(f"--{key} {' '.join(map(str, value))}")
        elif value is not None:
            parts.append(f"--{key} {value}")
    return f"python benchmarks/{script} " + " ".join(parts)


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, its whole life included (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """The process's resident memory now (MiB)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_side(script: str, argv: list[str], threads: int, name: str, python: str | None = None) -> dict[str, Any]:
    """Run one side of a peer comparison in its own process (`script` with `argv`, under `python`:
    a peer's own venv, or this one), so its peak RSS is its own, and return the JSON it prints on
    its `RESULT ` line; a side that prints none stops the comparison with the end of its output."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([python or sys.executable, script, *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})  # fmt: skip
    line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
    if line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{name} failed")
    return json.loads(line[len("RESULT ") :])


def peer_header(what: str, script: str, threads: int, argv: list[str]) -> dict[str, Any]:
    """What every lightkit-against-TRL result starts with: the job, its command, the machine and
    the versions of the libraries on both sides."""
    command = f"python benchmarks/{script} " + " ".join(argv)
    return {"what": what, "command": command, **provenance("transformers", "peft", "trl", "lightning", threads=threads)}


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """`result` with its performance targets checked (targets.annotate), written whole or not at all."""
    write_json(path, annotate(result))
