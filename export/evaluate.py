"""`lightkit evaluate`: score an exported artifact like `lightkit test` scores a checkpoint.

    lightkit evaluate --config configs/ner.yaml --artifact runs/ner/onnx --form int8-cpu \\
        --output runs/ner/eval-int8 [--split test] [--model.init_args.decoding viterbi]

The config builds the task and DataModule; the task's forward is served by the artifact's ONNX
Runtime session, so `test` writes the same report files it writes for a checkpoint (seqeval report
and predictions for NER; per-class report and confusion matrix for classification), and
`evaluation.json` adds the metrics, the latency per batch (median and p90, host copies included)
and throughput. Further `--model...`/`--data...` flags go to the config as with `lightkit test`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lightkit.errors import InputError
from lightkit.export.runtime import OrtModel
from lightkit.io import atomic_write_text


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="lightkit evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the YAML the model was trained with")
    p.add_argument("--artifact", required=True, help="folder written by lightkit export")
    p.add_argument("--form", required=True, help="which form of the artifact (see its manifest.json)")
    p.add_argument("--output", required=True, help="folder for the reports and evaluation.json")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: CUDA EP when present")
    return p.parse_known_args(argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def evaluate_main(argv: list[str]) -> dict[str, Any]:
    from lightkit.data import BaseDataModule
    from lightkit.main import LightkitCLI
    from lightkit.task import BaseTask

    args, rest = parse(argv)
    artifact = Path(args.artifact)
    manifest_path = artifact / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"--artifact: {artifact} has no manifest.json; give a folder written by lightkit export")
    manifest = json.loads(manifest_path.read_text())
    if args.form not in manifest.get("forms", {}):
        raise InputError(f"--form: {args.form!r} is not in {manifest_path} (forms: {sorted(manifest.get('forms', {}))})")
    out = Path(args.output)
    cli = LightkitCLI(BaseTask, BaseDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False, save_config_callback=None,
                      args=["--config", args.config, "--trainer.logger", "false", "--trainer.default_root_dir", str(out), *rest])
    task, dm, trainer = cli.model, cli.datamodule, cli.trainer
    if type(task).__name__ != manifest["task"] and manifest["objective"] not in [k.__name__ for k in type(task).__mro__]:
        raise InputError(f"--config: builds a {type(task).__name__}, but the artifact is a {manifest['task']}")
    labels = list(task.hparams.get("label_names") or [])
    if manifest.get("labels") and labels != manifest["labels"]:
        raise InputError(f"--config: its data has labels {labels}, the artifact was exported with {manifest['labels']}")

    session = OrtModel(artifact / manifest["forms"][args.form]["file"], device=args.device)
    latencies: list[float] = []
    examples = 0

    def run_model(batch: dict[str, Any], **kwargs: Any) -> Any:
        nonlocal examples
        start = time.perf_counter()
        result = session(**task.model_inputs(batch), **kwargs)
        latencies.append((time.perf_counter() - start) * 1000)
        examples += batch["input_ids"].size(0)
        return result

    task.run_model = run_model  # the artifact serves every forward of `test`
    results = trainer.test(task, datamodule=dm, verbose=False)[0]
    report = {
        "artifact": str(artifact), "form": args.form, "providers": session.providers(),
        "metrics": {k: float(v) for k, v in results.items()},
        "batches": len(latencies), "examples": examples,
        "latency_ms_per_batch": {"median": percentile(latencies, 0.5), "p90": percentile(latencies, 0.9)},
        "throughput_examples_per_s": examples / (sum(latencies) / 1000) if latencies else 0.0,
        "batch_size": dm.eval_batch_size,
    }
    atomic_write_text(out / "evaluation.json", json.dumps(report, indent=2) + "\n")
    print(f"lightkit evaluate: {args.form} on {', '.join(session.providers())}: "
          + ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items())
          + f"; {report['latency_ms_per_batch']['median']:.1f} ms per batch of {report['batch_size']} (median); wrote {out / 'evaluation.json'}")
    return report
