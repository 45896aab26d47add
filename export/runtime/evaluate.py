"""`lightkit evaluate`: score an exported artifact like `lightkit test` scores a checkpoint.

    lightkit evaluate --config configs/ner.yaml --artifact runs/ner/onnx --form int8-cpu \\
        --output runs/ner/eval-int8 [--model.init_args.decoding viterbi]

The `lightkit` command builds the task and DataModule from the config and calls
`evaluate_artifact`: the artifact's ONNX Runtime session stands in for the task's model
(`BaseTask.forward_with`) through Lightning's own test loop, so `test` writes the same report files
it writes for a checkpoint (seqeval report and predictions for NER; per-class report and confusion
matrix for classification), and `evaluation.json` adds the metrics, the latency per batch (median
and p90, host copies included) and throughput.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightkit.callbacks import QuantizationAwareTraining
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError
from lightkit.io.measure import latency_summary, stopwatch


def evaluate_artifact(
    trainer: Any, task: Any, datamodule: Any, artifact: str, form: str, output: str, device: str
) -> dict[str, Any]:
    """Run `trainer.test` on `task` with the artifact's `form` as its model; write `evaluation.json`.

    The trainer writes its reports where `lightkit evaluate` points it (its `output`).
    """
    folder = Path(artifact)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"artifact: {folder} has no manifest.json; give a folder written by lightkit export")
    manifest = json.loads(manifest_path.read_text())
    if form not in manifest.get("forms", {}):
        raise InputError(f"form: {form!r} is not in {manifest_path} (forms: {sorted(manifest.get('forms', {}))})")
    out = Path(output)
    if type(task).__name__ != manifest["task"] and manifest["objective"] not in [
        k.__name__ for k in type(task).__mro__
    ]:
        raise InputError(f"config: builds a {type(task).__name__}, but the artifact is a {manifest['task']}")
    labels = list(task.hparams.get("label_names") or [])
    if manifest.get("labels") and labels != manifest["labels"]:
        raise InputError(f"config: its data has labels {labels}, the artifact was exported with {manifest['labels']}")

    session = OrtModel(folder / manifest["forms"][form]["file"], device=device)
    latencies: list[float] = []
    examples = 0

    def timed(**inputs: Any) -> Any:
        nonlocal examples
        with stopwatch(latencies):
            result = session(**inputs)
        examples += result.logits.size(0)
        return result

    # The artifact carries its own quantisation: a QAT config's callback would only fake-quantise a
    # PyTorch model that never runs here (and warn that it was never calibrated).
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, QuantizationAwareTraining)]
    with task.forward_with(timed):  # the artifact serves every forward of `test`
        results = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    latency = latency_summary(latencies)
    report = {
        "artifact": str(folder),
        "form": form,
        "providers": session.providers(),
        "metrics": {k: float(v) for k, v in results.items()},
        "batches": len(latencies),
        "examples": examples,
        "latency_ms_per_batch": {"median": latency["median_ms"], "p90": latency["p90_ms"]},
        "throughput_examples_per_s": examples / (sum(latencies) / 1000) if latencies else 0.0,
        "batch_size": datamodule.eval_batch_size,
    }
    atomic_write_text(out / "evaluation.json", json.dumps(report, indent=2) + "\n")
    print(
        f"lightkit evaluate: {form} on {', '.join(session.providers())}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items())
        + f"; {report['latency_ms_per_batch']['median']:.1f} ms per batch of {report['batch_size']} (median); wrote "
        f"{out / 'evaluation.json'}"
    )
    return report
