"""`lightkit export`: a trained checkpoint to checked ONNX artifacts, with a manifest.

    lightkit export --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt \\
        --output runs/ner/onnx --forms '[fp32, int8-cpu]'

The `lightkit` command builds the task and its DataModule exactly as `fit` did (the settings below
may live in a YAML too) and calls `export_checkpoint`; the checkpoint's weights are loaded
(`weights_only=True`). How the model is traced and scored comes from the task's declared contract
(`BaseTask.export_kind`, `primary_metric`, `logits_axes`, `serving`). Each form is scored on
held-out real inputs (the test split) by the task's own `step` and metrics, with the ONNX Runtime
session standing in for the model, beside the PyTorch model on the same batches: max |logit
difference|, argmax agreement and the task metric. A form outside its tolerance fails the export
with the numbers. Everything is written into a temp folder renamed into place at the end; an
existing output needs `--overwrite true`.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lightkit.export.builder.decoder_cpu import quantize_cpu_decoder
from lightkit.export.builder.gather_quant import describe
from lightkit.export.builder.onnx_export import (
    OPSET,
    cache_names,
    cache_shape,
    export_causal_lm,
    export_fp32,
    fuse,
    quantize_int8_cpu,
    quantize_int8_gpu,
    to_fp16,
)
from lightkit.export.builder.parity import GPU_FORMS, check_form, latency_ms, reference_decode, score
from lightkit.export.builder.qdq import compact_qat
from lightkit.export.builder.weight_only import INT4_CPU_DECODER, INT4_GPU, INT8_GPU
from lightkit.export.runtime.checkpoint import load_weights
from lightkit.io.atomic import atomic_dir
from lightkit.io.errors import InputError
from lightkit.io.measure import versions
from lightkit.io.progress import progress
from lightkit.training.fake_quant import set_qat
from lightkit.training.task import BaseTask

FORMS = ("fp32", "fp16", "int8-gpu", "int4-gpu", "int8-cpu", "int4-cpu", "qat")
DECODER_ONLY = ("int4-gpu", "int4-cpu")  # 4-bit weights: the decoders' forms
# min_greedy_agreement (decoders only) is judged on the steps PyTorch's greedy choice is decided
# by more than the form's own logit error (parity.NEAR_TIE_FLOOR): fp32 must follow every one;
# the reduced-precision forms may miss one step in ~30 where a one-token step errs more than the
# full forwards the bound is measured on. A broken cache misses most of them.
DEFAULT_TOLERANCE = {
    "fp32": {
        "max_abs_diff": 1e-3,
        "min_argmax_agreement": 0.999,
        "max_metric_drop": 0.001,
        "min_greedy_agreement": 1.0,
    },
    "fp16": {
        "max_abs_diff": float("inf"),
        "min_argmax_agreement": 0.99,
        "max_metric_drop": 0.005,
        "min_greedy_agreement": 0.97,
    },
    "int8-gpu": {
        "max_abs_diff": float("inf"),
        "min_argmax_agreement": 0.98,
        "max_metric_drop": 0.01,
        "min_greedy_agreement": 0.97,
    },
    "int8-cpu": {
        "max_abs_diff": float("inf"),
        "min_argmax_agreement": 0.95,
        "max_metric_drop": 0.02,
        "min_greedy_agreement": 0.97,
    },
    # 4-bit weights: a small model loses more (docs/export.md has SmolLM2's figures); the metric
    # bound is the perplexity change lightkit promises for its int4 forms, +5%.
    **dict.fromkeys(
        ("int4-cpu", "int4-gpu"),
        {
            "max_abs_diff": float("inf"),
            "min_argmax_agreement": 0.9,
            "max_metric_drop": 0.05,
            "min_greedy_agreement": 0.9,
        },
    ),
    # QDQ from a QAT model, against the same model fake-quantised in PyTorch: ORT's integer
    # kernels round slightly differently from FakeQuantize, so a few near-ties may flip.
    "qat": {
        "max_abs_diff": float("inf"),
        "min_argmax_agreement": 0.98,
        "max_metric_drop": 0.01,
        "min_greedy_agreement": 0.97,
    },
}


def tolerances(overrides: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]]:
    """DEFAULT_TOLERANCE with `overrides` ({form: {key: value}}) applied, each one checked."""
    tol = {form: dict(values) for form, values in DEFAULT_TOLERANCE.items()}
    for form, values in (overrides or {}).items():
        if form not in tol:
            raise InputError(f"tolerance: unknown form {form!r}; expected one of {list(tol)}")
        for name, value in values.items():
            if name not in tol[form]:
                raise InputError(
                    f"tolerance.{form}: unknown key {name!r}; expected one of {list(DEFAULT_TOLERANCE['fp32'])}"
                )
            tol[form][name] = float(value)
    return tol


def objective_name(task: BaseTask) -> str:
    """The class that declares the task's export contract (a KD student's objective, say)."""
    if task.export_kind is None or task.primary_metric is None:
        raise InputError(f"export: {type(task).__name__} declares no export (BaseTask.export_kind / primary_metric)")
    return next(k.__name__ for k in type(task).__mro__ if "export_kind" in vars(k))


def new_form(tmp: Path, form: str) -> Path:
    (tmp / form).mkdir()
    return tmp / form / "model.onnx"


def trace(task: BaseTask, path: Path, opset: int, manifest: dict[str, Any], fused: bool = True) -> tuple[str, ...]:
    """The fp32 graph of the task's model, as its `export_kind` says; returns its input names.
    A decoder's record of how its graph was made goes into `manifest["graph"]`."""
    if task.export_kind == "decoder":
        names, manifest["graph"] = export_causal_lm(task.model, path, opset, task.tokenizer, fused=fused)
        return names
    return export_fp32(task.model, path, opset, task.logits_axes())


def write_forms(
    task: BaseTask,
    forms: list[str],
    tmp: Path,
    opset: int,
    manifest: dict[str, Any],
    embedding_bits: int = 8,
    fused: bool = True,
) -> dict[str, Path]:
    """Write fp32 (the source of every other form) and the requested float / INT8 forms; record IO
    names. `fused=False` traces a decoder with TorchScript (a QAT checkpoint: every form of it
    then takes the same inputs as its qat form)."""
    fp32 = new_form(tmp, "fp32")
    names = trace(task, fp32, opset, manifest, fused)
    if task.export_kind == "decoder":
        kv_heads, head_dim = cache_shape(task.model)
        layers = task.model.config.num_hidden_layers
        manifest["inputs"] = [
            {"name": n, "dtype": "int64", "shape": ["batch", "total" if n == "attention_mask" else "sequence"]}
            for n in names
            if not n.startswith("past.")
        ]
        manifest["inputs"] += [
            {"name": n, "dtype": "float32", "shape": ["batch", kv_heads, "past", head_dim]}
            for n in cache_names(layers, "past")
        ]
        manifest["outputs"] += [
            {"name": n, "dtype": "float32", "shape": ["batch", kv_heads, "total", head_dim]}
            for n in cache_names(layers, "present")
        ]
        manifest["outputs"].append(
            {"name": "next_token", "dtype": "int64", "shape": ["batch"], "note": "argmax of the last position"}
        )
        manifest["outputs"] += [
            {"name": n, "dtype": t, "shape": ["batch", "k"], "note": "the last position's top-k logits, for sampling"}
            for n, t in (("top_logits", "float32"), ("top_ids", "int64"))
        ]
    else:
        manifest["inputs"] = [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in names]
    paths = {"fp32": fp32}
    if "int8-cpu" in forms:
        paths["int8-cpu"] = new_form(tmp, "int8-cpu")
        if task.export_kind == "decoder":
            how = quantize_cpu_decoder(task.model, fp32, paths["int8-cpu"])
            manifest.setdefault("quantization", {})["int8-cpu"] = how
        else:
            fused = tmp / "int8-cpu" / "fused-fp32.onnx"
            quantize_int8_cpu(fused if fuse(task.model, fp32, fused) else fp32, paths["int8-cpu"])
            fused.unlink(missing_ok=True)
    if "int4-cpu" in forms:
        paths["int4-cpu"] = new_form(tmp, "int4-cpu")
        how = quantize_cpu_decoder(task.model, fp32, paths["int4-cpu"], INT4_CPU_DECODER)
        manifest.setdefault("quantization", {})["int4-cpu"] = how
    if "fp16" in forms:
        paths["fp16"] = new_form(tmp, "fp16")
        to_fp16(task.model, fp32, paths["fp16"])
    for form, settings in (("int8-gpu", INT8_GPU), ("int4-gpu", INT4_GPU)):
        if form not in forms:
            continue
        paths[form] = new_form(tmp, form)
        tables = quantize_int8_gpu(task.model, fp32, paths[form], embedding_bits, settings)
        manifest.setdefault("quantization", {})[form] = {
            "MatMul": settings.describe(),
            "embedding tables": {
                "op": "GatherBlockQuantized",
                "tables": {name: describe(bits) for name, bits in tables.items()},
            },
        }
    return paths


def export_checkpoint(
    task: BaseTask,
    datamodule: Any,
    *,
    ckpt_path: str | None,
    output: str,
    forms: list[str] | str | None,
    overwrite: bool,
    parity_batches: int | None,
    tolerance: dict[str, dict[str, float]] | None,
    opset: int | None,
    embedding_bits: int,
    config_files: list[str],
) -> Path:
    """Write the checked ONNX forms of `task` with the weights of `ckpt_path` (or, without one, the
    weights the task was built with) into `output`.

    The settings are those of `lightkit export`, documented and defaulted in one place,
    `lightkit.cli.main.LightkitTrainer.export`. A form outside its tolerance fails the whole export
    and nothing is written. `config_files` (the YAML the task was built from) go into the manifest.
    """
    opset = opset or OPSET
    forms = [forms] if isinstance(forms, str) else forms
    unknown = [f for f in forms or [] if f not in FORMS]
    if unknown:
        raise InputError(f"forms: unknown {unknown}; available: {list(FORMS)}")
    tol = tolerances(tolerance)
    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError(f"output: {out} exists; pass --overwrite true to replace it")
    objective = objective_name(task)
    qat = load_weights(task, ckpt_path) if ckpt_path else False
    task.eval()  # scored and traced as it will run: no dropout (load_weights also sets it)
    gpu = torch.cuda.is_available()
    # A QAT checkpoint's CPU int8 artifact is the qat form, the one it was trained for (compacted,
    # also the faster); post-training int8-cpu of its weights is another model, written when asked
    # for, and by default its gate could refuse the whole export over a form nobody wanted.
    forms = forms or ["fp32", *(GPU_FORMS if gpu else ()), "qat" if qat else "int8-cpu"]
    if task.export_kind != "decoder" and (four := [f for f in forms if f in DECODER_ONLY]):
        raise InputError(f"forms: {four} are decoder forms (4-bit weights); {objective} exports an encoder")
    if "qat" in forms and not qat:
        raise InputError(
            f"forms: qat needs a checkpoint trained with the QuantizationAwareTraining callback; {ckpt_path} was not"
        )
    if qat:
        set_qat(task.model, fake_quant=False, observe=False)  # the float forms export the float model
    primary, decoder = task.primary_metric, task.export_kind == "decoder"
    datamodule.setup("test")
    n_batches = parity_batches or task.parity_batches
    batches = [b for _, b in zip(range(n_batches), datamodule.test_dataloader())]
    reference, ref_logits, masks = score(task, task.model, batches)

    manifest: dict[str, Any] = {
        "task": type(task).__name__,
        "objective": objective,
        "export_kind": task.export_kind,
        "serving": task.serving,
        "primary_metric": primary,
        "primary_mode": task.primary_mode,
        "opset": opset,
        "labels": list(task.hparams.get("label_names") or []),
        "max_length": datamodule.hparams.get("max_length"),  # the truncation the model was trained and checked with
        # A decoder's prompt plus its answer must fit its position embeddings (`lightkit generate` checks).
        "context": getattr(task.model.config, "max_position_embeddings", None) if decoder else None,
        "outputs": [{"name": "logits", "dtype": "float32", "shape": task.logits_axes()}],
        "parity_data": {
            "split": "test",
            "batches": len(batches),
            "examples": sum(b["input_ids"].size(0) for b in batches),
            "pytorch": reference,
        },
        "source": {
            "config": (config_files or [None])[0],
            "configs": config_files or [],
            "ckpt_path": ckpt_path,
            # the pretrained model the checkpoint was tuned from: name, Hub id and commit
            "model": source.record() if (source := task.model_source()) else None,
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions("transformers", "onnx", "onnxruntime"),
        "forms": {},
    }
    failures = []
    with atomic_dir(out) as tmp, progress("export", 1 + len(forms)) as step:
        paths = write_forms(task, forms, tmp, opset, manifest, embedding_bits, fused=not qat)
        step("forms written")
        # The greedy path is PyTorch's own, from the same model the form is scored against: the float
        # model for the float and post-training forms, the fake-quantised one for qat.
        decode = reference_decode(task.model, batches[0]) if decoder else None
        expected = {form: (reference, ref_logits, decode) for form in FORMS if form != "qat"}
        if "qat" in forms:  # QuantizeLinear/DequantizeLinear from the fake-quantised model
            set_qat(task.model, fake_quant=True, observe=False)
            paths["qat"] = new_form(tmp, "qat")
            trace(task, paths["qat"], opset, {}, fused=False)
            manifest.setdefault("quantization", {})["qat"] = compact_qat(paths["qat"])
            qat_reference, qat_logits, _ = score(task, task.model, batches)
            qat_decode = reference_decode(task.model, batches[0]) if decoder else None
            expected["qat"] = (qat_reference, qat_logits, qat_decode)
            manifest["parity_data"]["pytorch_fake_quantised"] = qat_reference
        for form in forms:
            info, problems = check_form(task, form, paths[form], expected[form], masks, batches, tol[form])
            step(f"{form} gated")
            manifest["forms"][form] = info
            failures += [f"{form}: " + "; ".join(problems)] if problems else []
        set_qat(task.model, fake_quant=False, observe=False)
        manifest["pytorch_latency_ms_median"] = latency_ms(task.model, batches[0], task)
        if failures:
            raise InputError("export: parity gate failed, nothing written:\n  " + "\n  ".join(failures))
        if "fp32" not in forms and (tmp / "fp32").exists():  # written as the source of other forms only
            shutil.rmtree(tmp / "fp32")
        if task.tokenizer is not None:
            task.tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for form, info in manifest["forms"].items():
        p = info["parity"]
        print(
            f"lightkit export: {form}: {info['bytes'] / 2**20:.1f} MiB, max|diff| {p['max_abs_diff']:.2e}, argmax "
            f"agreement {p['argmax_agreement']:.4f}, "
            f"{primary} {p['onnx']:.4f} (PyTorch {p['pytorch']:.4f})"
        )
    print(f"lightkit export: wrote {out} (manifest.json)")
    return out
