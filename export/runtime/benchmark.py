"""`lightkit benchmark`: each exported form's latency beside the PyTorch model it came from.

    lightkit benchmark --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt \\
        --artifact runs/ner/onnx --output runs/ner/benchmark

Every side runs the same real inputs (the first test batch, cut to each batch size) on this
machine, in interleaved rounds (PyTorch, then each form; the next round in reverse order), so a
slow stretch of the machine lands on all sides rather than on one, and no side always goes first.
Within a round each side runs a block of calls that starts with `warmup` untimed ones: ONNX
Runtime's and PyTorch's worker threads keep spinning for a while after a call, and would otherwise
take the cores from whichever side came next.

PyTorch is the float model in eager mode, the baseline a user would otherwise serve; a QAT
checkpoint is timed as that float model too, its fake quantisers removed, since they only simulate
int8 and cost time even when switched off. `benchmark.json` names the machine and the versions."""

from __future__ import annotations

import functools
import gc
import json
from pathlib import Path
from typing import Any

import torch

from lightkit.export.runtime.checkpoint import load_weights
from lightkit.export.runtime.sessions import CPU_FORMS, OrtModel
from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError
from lightkit.io.measure import interleaved, latency_summary, machine, versions
from lightkit.io.progress import progress
from lightkit.training.fake_quant import remove_qat

PYTORCH = "pytorch"


def benchmark_artifact(
    task: Any,
    datamodule: Any,
    artifact: str,
    ckpt_path: str,
    output: str,
    batch_sizes: list[int],
    repeats: int,
    warmup: int,
    rounds: int,
) -> dict[str, Any]:
    """Time PyTorch and every form of `artifact` on the same batches; write `benchmark.json`."""
    folder = Path(artifact)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"artifact: {folder} has no manifest.json; give a folder written by lightkit export")
    if repeats < 1 or rounds < 1 or warmup < 0 or not batch_sizes or min(batch_sizes) < 1:
        raise InputError(
            f"benchmark: repeats and rounds must be >= 1, warmup >= 0 and batch_sizes positive; got repeats={repeats}, "
            f"rounds={rounds}, warmup={warmup}, batch_sizes={batch_sizes}"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("export_kind") == "decoder":
        raise InputError(f"artifact: {folder} is a decoder; time its generation with `lightkit generate` instead")
    if load_weights(task, ckpt_path):
        remove_qat(task.model)  # served float, its Linears plain: the quantisers' checks cost time even when off
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    rows = batch["input_ids"].size(0)
    too_big = [b for b in batch_sizes if b > rows]
    if too_big:
        raise InputError(f"benchmark: batch_sizes {too_big} exceed the test batch of {rows} (data.eval_batch_size)")

    gc.collect()  # sessions of earlier commands in this process (lightkit ship) release their threads
    sides: dict[str, Any] = {PYTORCH: task.model}
    for form, info in manifest["forms"].items():
        sides[form] = OrtModel(folder / info["file"], device="cpu" if form in CPU_FORMS else "auto")
    results: dict[str, dict[str, Any]] = {name: {} for name in sides}
    blocks = min(rounds, repeats)
    with progress("benchmark", len(batch_sizes)) as step, torch.no_grad():
        for size in batch_sizes:
            inputs = task.model_inputs({k: v[:size] if torch.is_tensor(v) else v for k, v in batch.items()})
            calls = {name: functools.partial(model, **inputs) for name, model in sides.items()}
            times = interleaved(calls, warmup, repeats, blocks)
            for name in sides:
                results[name][str(size)] = latency_summary(times[name])
            step(f"batch {size}")
    report = {
        "artifact": str(folder),
        "ckpt_path": ckpt_path,
        "sequence_length": int(batch["input_ids"].size(1)),
        "batch_sizes": batch_sizes,
        "repeats": repeats,
        "rounds": blocks,
        "warmup_per_round": warmup,
        "forms": {
            name: {
                "bytes": None if name == PYTORCH else manifest["forms"][name]["bytes"],
                "latency": results[name],
                "speedup": {
                    size: round(results[PYTORCH][size]["median_ms"] / results[name][size]["median_ms"], 3)
                    for size in results[name]
                },
            }
            for name in sides
        },
        "machine": machine(),
        "versions": versions("transformers", "onnx", "onnxruntime"),
    }
    out = Path(output)
    atomic_write_text(out / "benchmark.json", json.dumps(report, indent=2) + "\n")
    for name in sides:
        cells = ", ".join(f"batch {s}: {results[name][s]['median_ms']:.2f} ms" for s in results[name])
        print(f"lightkit benchmark: {name}: {cells}")
    print(f"lightkit benchmark: wrote {out / 'benchmark.json'}")
    return report
