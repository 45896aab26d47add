"""`lightkit export`: a trained checkpoint to checked ONNX artifacts, with a manifest.

    lightkit export --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt \\
        --output runs/ner/onnx --forms fp32 int8-cpu

The config builds the task and its DataModule exactly as `fit` did; the checkpoint's weights are
loaded (`weights_only=True`). Each form is scored on held-out real inputs (the test split) by the
task's own `step` and metrics, with the ONNX Runtime session standing in for the model, beside the
PyTorch model on the same batches: max |logit difference|, argmax agreement and the task metric.
A form outside its tolerance fails the export with the numbers. Everything is written into a temp
folder renamed into place at the end; an existing output needs `--overwrite`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lightkit.errors import InputError
from lightkit.io import atomic_dir
from lightkit.export.onnx_export import OPSET, cache_names, cache_shape, export_causal_lm, export_fp32, fuse, quantize_int8_cpu, quantize_int8_gpu, to_fp16
from lightkit.export.placement import placement
from lightkit.export.runtime import OrtModel
from lightkit.quantization import ATTR as QAT_ATTR
from lightkit.quantization import prepare_qat, set_qat

FORMS = ("fp32", "fp16", "int8-gpu", "int8-cpu", "qat")
GPU_FORMS = ("fp16", "int8-gpu")
# The primary metric each task's parity is judged on, as logged without the stage prefix.
PRIMARY = {"TokenClassificationTask": "f1", "SequenceClassificationTask": "accuracy", "CausalLMTask": "perplexity"}
# How a worse metric shows: F1/accuracy fall (absolute drop), perplexity rises (relative increase).
LOWER_IS_BETTER = {"perplexity"}
DEFAULT_TOLERANCE = {
    "fp32": {"max_abs_diff": 1e-3, "min_argmax_agreement": 0.999, "max_metric_drop": 0.001},
    "fp16": {"max_abs_diff": float("inf"), "min_argmax_agreement": 0.99, "max_metric_drop": 0.005},
    "int8-gpu": {"max_abs_diff": float("inf"), "min_argmax_agreement": 0.98, "max_metric_drop": 0.01},
    "int8-cpu": {"max_abs_diff": float("inf"), "min_argmax_agreement": 0.95, "max_metric_drop": 0.02},
    # QDQ from a QAT model, against the same model fake-quantised in PyTorch: ORT's integer
    # kernels round slightly differently from FakeQuantize, so a few near-ties may flip.
    "qat": {"max_abs_diff": float("inf"), "min_argmax_agreement": 0.98, "max_metric_drop": 0.01},
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lightkit export", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the YAML the model was trained with")
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by lightkit fit")
    p.add_argument("--output", required=True, help="folder to create (model files, tokenizer, manifest.json)")
    p.add_argument("--forms", nargs="+", default=None, help=f"any of {', '.join(FORMS)}; default fp32 int8-cpu, plus fp16 int8-gpu with CUDA and qat for a QAT checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--parity_batches", type=int, default=None, help="test-split batches for the parity gate (default 20; 4 for causal LMs, whose logits span the vocabulary)")
    p.add_argument("--tolerance", action="append", default=[], metavar="FORM.KEY=VALUE",
                   help="e.g. int8-cpu.max_metric_drop=0.05 (keys: max_abs_diff, min_argmax_agreement, max_metric_drop)")
    p.add_argument("--opset", type=int, default=OPSET)
    return p.parse_args(argv)


def tolerances(overrides: list[str]) -> dict[str, dict[str, float]]:
    tol = {form: dict(values) for form, values in DEFAULT_TOLERANCE.items()}
    for item in overrides:
        key, _, value = item.partition("=")
        form, _, name = key.partition(".")
        if form not in tol or name not in tol[form] or not value:
            raise InputError(f"--tolerance {item!r}: expected FORM.KEY=VALUE with FORM in {list(tol)} and KEY in {list(DEFAULT_TOLERANCE['fp32'])}")
        tol[form][name] = float(value)
    return tol


def build(config: str, ckpt_path: str) -> tuple[Any, Any, bool]:
    """The task and DataModule of `config`, with the checkpoint's weights; and whether it is QAT-trained."""
    from lightkit.data import BaseDataModule
    from lightkit.main import LightkitCLI
    from lightkit.task import BaseTask

    path = Path(ckpt_path)
    if not path.is_file():  # before building the task, which may load pretrained weights
        raise FileNotFoundError(f"--ckpt_path: '{ckpt_path}' does not exist")
    cli = LightkitCLI(BaseTask, BaseDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                      args=["--config", config, "--trainer.logger", "false"], save_config_callback=None)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")["state_dict"]
    except Exception as e:  # noqa: BLE001
        raise InputError(f"--ckpt_path: {path} is not a readable lightkit checkpoint ({type(e).__name__}: {e})") from None
    task = cli.model
    qat = any(f".{QAT_ATTR}." in k for k in state)
    if qat:  # the quantisers' scales are in the checkpoint: attach them, then load
        prepare_qat(task.model)
    try:
        task.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"--ckpt_path: {path} does not fit the task of {config} ({str(e).splitlines()[0]})") from None
    return task.eval(), cli.datamodule, qat


def objective_name(task: Any) -> str:
    for klass in type(task).__mro__:
        if klass.__name__ in PRIMARY:
            return klass.__name__
    raise InputError(f"export: {type(task).__name__} is not exportable yet; token/sequence classification and causal LM tasks are")


def output_shape(task: Any, objective: str) -> list[Any]:
    if objective == "CausalLMTask":
        return ["batch", "sequence", task.model.config.vocab_size]
    classes = len(task.hparams.label_names)
    return ["batch", "sequence", classes] if objective == "TokenClassificationTask" else ["batch", classes]


def score(task: Any, model: Any, batches: list[dict[str, Any]]) -> tuple[dict[str, float], list[torch.Tensor], list[torch.Tensor]]:
    """The task's metrics with `model` standing in for its transformers model; plus logits and masks."""
    metrics = task.configure_metrics()
    logits, masks = [], []

    def run_model(batch: dict[str, Any], **kwargs: Any) -> Any:
        out = model(**task.model_inputs(batch), **kwargs)
        logits.append(out.logits.detach().float())
        # Compared where the task reads predictions: labelled tokens (first subwords), or every row.
        labels = batch.get("labels")
        per_token = out.logits.dim() == 3
        masks.append((labels != -100) if per_token and labels is not None else batch["attention_mask"].bool() if per_token else torch.ones(out.logits.size(0), dtype=torch.bool))
        return out

    task.run_model = run_model  # an instance attribute shadows the method for this scoring only
    try:
        with torch.no_grad():
            for batch in batches:
                out = task.step(batch)
                metrics.update(out.preds, out.target, **out.metric_kwargs)
    finally:
        del task.run_model
    return {k: float(v) for k, v in metrics.compute().items()}, logits, masks


def compare(ref: list[torch.Tensor], got: list[torch.Tensor], masks: list[torch.Tensor]) -> dict[str, float]:
    diff, agree, total = 0.0, 0, 0
    for r, g, m in zip(ref, got, masks):
        diff = max(diff, float((r - g).abs()[m].max()))
        agree += int((r.argmax(-1) == g.argmax(-1))[m].sum())
        total += int(m.sum())
    return {"max_abs_diff": diff, "argmax_agreement": agree / max(total, 1)}


def metric_drop(metric: str, pytorch: float, onnx: float) -> float:
    return onnx / pytorch - 1.0 if metric in LOWER_IS_BETTER else pytorch - onnx


def greedy_agreement(task: Any, session: OrtModel, batch: dict[str, Any], prompt_tokens: int = 8, new_tokens: int = 16) -> float:
    """Fraction of greedy tokens where the artifact's KV-cache decode loop matches PyTorch."""
    ids, mask = batch["input_ids"][:4, :prompt_tokens], batch["attention_mask"][:4, :prompt_tokens]
    reference = ids
    with torch.no_grad():
        for _ in range(new_tokens):  # plain full-sequence forwards: the reference has no cache tricks
            logits = task.model(input_ids=reference, attention_mask=torch.ones_like(reference)).logits[:, -1]
            reference = torch.cat([reference, logits.argmax(-1, keepdim=True)], dim=1)
    got = session.greedy(ids, mask, new_tokens)
    return float((got == reference[:, prompt_tokens:]).float().mean())


def latency_ms(model: Any, batch: dict[str, Any], task: Any, repeats: int = 10) -> float:
    inputs = task.model_inputs(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            model(**inputs)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    from lightkit import __version__

    return {"lightkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def export_main(argv: list[str]) -> Path:
    args = parse(argv)
    unknown = [f for f in args.forms or [] if f not in FORMS]
    if unknown:
        raise InputError(f"--forms: unknown {unknown}; available: {list(FORMS)}")
    tol = tolerances(args.tolerance)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"--output: {out} exists; pass --overwrite to replace it")
    task, dm, qat = build(args.config, args.ckpt_path)
    gpu = torch.cuda.is_available()
    forms = args.forms or ["fp32", *(GPU_FORMS if gpu else ()), "int8-cpu", *(["qat"] if qat else [])]
    if "qat" in forms and not qat:
        raise InputError(f"--forms qat: {args.ckpt_path} was not trained with the QuantizationAwareTraining callback")
    if qat:
        set_qat(task.model, fake_quant=False, observe=False)  # the float forms export the float model
    objective = objective_name(task)
    primary = PRIMARY[objective]
    dm.setup("test")
    n_batches = args.parity_batches or (4 if objective == "CausalLMTask" else 20)
    batches = [b for _, b in zip(range(n_batches), dm.test_dataloader())]
    reference, ref_logits, masks = score(task, task.model, batches)

    manifest: dict[str, Any] = {
        "task": type(task).__name__, "objective": objective, "opset": args.opset,
        "labels": list(task.hparams.get("label_names") or []),
        "max_length": dm.hparams.get("max_length"),  # the truncation the model was trained and checked with
        "outputs": [{"name": "logits", "dtype": "float32", "shape": output_shape(task, objective)}],
        "parity_data": {"split": "test", "batches": len(batches), "examples": sum(b["input_ids"].size(0) for b in batches), "pytorch": reference},
        "source": {"config": args.config, "ckpt_path": args.ckpt_path},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "forms": {},
    }
    failures = []
    with atomic_dir(out) as tmp:
        (tmp / "fp32").mkdir()
        fp32 = tmp / "fp32" / "model.onnx"
        if objective == "CausalLMTask":
            names = export_causal_lm(task.model, fp32, args.opset)
            kv_heads, head_dim = cache_shape(task.model)
            layers = task.model.config.num_hidden_layers
            manifest["inputs"] = [
                {"name": n, "dtype": "int64", "shape": ["batch", "total" if n == "attention_mask" else "sequence"]} for n in names[:3]
            ] + [{"name": n, "dtype": "float32", "shape": ["batch", kv_heads, "past", head_dim]} for n in cache_names(layers, "past")]
            manifest["outputs"] += [{"name": n, "dtype": "float32", "shape": ["batch", kv_heads, "total", head_dim]} for n in cache_names(layers, "present")]
            manifest["outputs"].append({"name": "next_token", "dtype": "int64", "shape": ["batch"], "note": "argmax of the last position"})
        else:
            names = export_fp32(task.model, fp32, args.opset)
            manifest["inputs"] = [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in names]
        paths = {"fp32": fp32}
        if "int8-cpu" in forms:
            (tmp / "int8-cpu").mkdir()
            fused = tmp / "int8-cpu" / "fused-fp32.onnx"
            source = fused if fuse(task.model, fp32, fused) else fp32
            quantize_int8_cpu(source, tmp / "int8-cpu" / "model.onnx")
            fused.unlink(missing_ok=True)
            paths["int8-cpu"] = tmp / "int8-cpu" / "model.onnx"
        if any(f in forms for f in GPU_FORMS):
            (tmp / "fp16").mkdir()
            paths["fp16"] = tmp / "fp16" / "model.onnx"
            to_fp16(task.model, fp32, paths["fp16"])
            if "int8-gpu" in forms:
                (tmp / "int8-gpu").mkdir()
                paths["int8-gpu"] = tmp / "int8-gpu" / "model.onnx"
                quantize_int8_gpu(paths["fp16"], paths["int8-gpu"])
        expected = {form: (reference, ref_logits) for form in ("fp32", "fp16", "int8-gpu", "int8-cpu")}
        if "qat" in forms:  # QuantizeLinear/DequantizeLinear from the fake-quantised model
            set_qat(task.model, fake_quant=True, observe=False)
            (tmp / "qat").mkdir()
            paths["qat"] = tmp / "qat" / "model.onnx"
            (export_causal_lm if objective == "CausalLMTask" else export_fp32)(task.model, paths["qat"], args.opset)
            qat_reference, qat_logits, _ = score(task, task.model, batches)
            expected["qat"] = (qat_reference, qat_logits)
            manifest["parity_data"]["pytorch_fake_quantised"] = qat_reference
        for form in forms:
            session = OrtModel(paths[form], device="cpu" if form in ("int8-cpu", "qat") else "auto")
            metrics, logits, _ = score(task, session, batches)
            ref_metrics, ref_form_logits = expected[form]
            parity = {**compare(ref_form_logits, logits, masks), "metric": primary, "pytorch": ref_metrics[primary], "onnx": metrics[primary]}
            parity["metric_drop"] = metric_drop(primary, parity["pytorch"], parity["onnx"])
            if session.causal:
                parity["greedy_agreement"] = greedy_agreement(task, session, batches[0])
            limits = tol[form]
            problems = [
                f"max_abs_diff {parity['max_abs_diff']:.3g} > {limits['max_abs_diff']}" * (parity["max_abs_diff"] > limits["max_abs_diff"]),
                f"argmax agreement {parity['argmax_agreement']:.4f} < {limits['min_argmax_agreement']}" * (parity["argmax_agreement"] < limits["min_argmax_agreement"]),
                f"{primary} drop {parity['metric_drop']:.4f} > {limits['max_metric_drop']}" * (parity["metric_drop"] > limits["max_metric_drop"]),
            ]
            problems = [p for p in problems if p]
            if problems:
                failures.append(f"{form}: " + "; ".join(problems))
            manifest["forms"][form] = {
                "file": f"{form}/model.onnx",
                "bytes": paths[form].stat().st_size,
                "parity": {**parity, "tolerance": limits, "passed": not problems},
                "providers": session.providers(),
                # GPU-ready only when the placement check ran and found every compute node on CUDA.
                "gpu_ready": (place := placement(paths[form], session.feeds(**task.model_inputs(batches[0])))).get("ok") if form in GPU_FORMS else False,
                "placement": place if form in GPU_FORMS else {"checked": False, "reason": "not a GPU form (fp32 runs anywhere; int8-cpu and qat are CPU artifacts)"},
                "latency_ms_cpu_median": latency_ms(session, batches[0], task),
            }
        set_qat(task.model, fake_quant=False, observe=False)
        manifest["pytorch_latency_ms_cpu_median"] = latency_ms(task.model, batches[0], task)
        if failures:
            raise InputError("export: parity gate failed, nothing written:\n  " + "\n  ".join(failures))
        for source in ("fp32", "fp16"):  # written as sources of other forms only
            if source not in forms and (tmp / source).exists():
                shutil.rmtree(tmp / source)
        if task.tokenizer is not None:
            task.tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for form, info in manifest["forms"].items():
        p = info["parity"]
        print(f"lightkit export: {form}: {info['bytes'] / 2**20:.1f} MiB, max|diff| {p['max_abs_diff']:.2e}, argmax agreement {p['argmax_agreement']:.4f}, "
              f"{primary} {p['onnx']:.4f} (PyTorch {p['pytorch']:.4f})")
    print(f"lightkit export: wrote {out} (manifest.json)")
    return out
