"""lightkit's performance targets (training tokens/s against the Trainer, MFU, int8-gpu latency,
size and F1, int8-cpu speed-up), checked in the result file itself, so a missed one says by how
much there.

    python benchmarks/targets.py benchmarks/results/*.json    # adds or refreshes each file's "targets"

The scripts call `annotate` before writing; this command does the same for results written before
it existed (the numbers checked are the file's own, so nothing is re-measured). Each target reads
`{"what", "target", "measured", "met", "short_by"}`; `short_by` is 0 when met, else the distance
to the target in the measured unit. A file the targets do not cover (a CPU training run: the
training targets are for a GPU) gets an empty list and a line saying why.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRAIN_RATIO = 1.3  # lightkit tokens/s over the Trainer's, on the GPU
CLM_MFU = 0.45  # on an H100
INT8_VS_PYTORCH = 0.25  # int8-gpu latency over PyTorch eager fp32 at 1x128
INT8_SIZE = 0.25  # int8-gpu file over the fp32 ONNX file
F1_LOSS = 0.003  # seqeval F1 (a fraction), int8-gpu against PyTorch
CPU_INT8_SPEEDUP = 2.0  # ORT int8-cpu over PyTorch fp32, batch 1, 2 cores
LLM_VS_OPTIMUM = 1.0  # the LLM's int8-cpu decode ms/token over optimum-onnx int8's
LLM_VS_GENAI = 1.0  # ... over onnxruntime-genai int4's, at batch 1 and 8
LLM_PREFILL = 1.0  # int8-cpu prefill over lightkit fp32's and over optimum's weight-only int8's
LLM_INT4_PPL_CHANGE = 0.05  # int4-cpu perplexity change (articles, and held-out headlines)
LLM_PPL_CHANGE = 0.01  # |perplexity change| of int8-cpu against PyTorch fp32
LLM_INT8_SIZE = 0.3  # int8-cpu file over the fp32 ONNX file


def check(what: str, op: str, target: float, measured: float | None) -> dict[str, Any]:
    if measured is None:
        return {"what": what, "target": f"{op} {target}", "measured": None, "met": False, "short_by": None}
    met = measured >= target if op == ">=" else measured <= target
    return {
        "what": what,
        "target": f"{op} {target}",
        "measured": measured,
        "met": met,
        "short_by": 0.0 if met else abs(measured - target),
    }


def training(result: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    if str(result.get("device", "")).startswith("CPU"):
        return [], "the training-throughput targets are for a GPU; this run is on a CPU"
    rows = [check("lightkit / Trainer tokens/s", ">=", TRAIN_RATIO, result["ratio_tokens_per_s"])]
    if result.get("task") == "clm":
        mfu = (result.get("mfu") or {}).get("lightkit_mfu")
        rows.append(check("lightkit MFU (6N per token over the measured bf16 peak)", ">=", CLM_MFU, mfu))
    return rows, None


def cell(row: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        row = row.get(key) if isinstance(row, dict) else None
    return row if isinstance(row, (int, float)) else None


def gpu_inference(result: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    encoder = result["encoder"]
    row = next((r for r in encoder["rows"] if r["shape"] == "1x128"), None)
    if row is None:
        return [], "no 1x128 row"
    forms = encoder["forms"]
    rows = []
    for way in ("io_binding", "io_binding_cuda_graph"):
        int8, fp16 = cell(row, "ort_int8-gpu", way, "median_ms"), cell(row, "ort_fp16", way, "median_ms")
        rows.append(
            check(f"int8-gpu ms at 1x128 ({way}) over ORT fp16's", "<=", 1.0, int8 / fp16 if int8 and fp16 else None)
        )
    int8, eager = cell(row, "ort_int8-gpu", "io_binding", "median_ms"), cell(row, "pytorch_fp32", "device", "median_ms")
    rows.append(
        check(
            "int8-gpu ms at 1x128 over PyTorch eager fp32's",
            "<=",
            INT8_VS_PYTORCH,
            int8 / eager if int8 and eager else None,
        )
    )
    size = forms.get("int8-gpu", {}).get("bytes"), forms.get("fp32", {}).get("bytes")
    rows.append(
        check("int8-gpu file over the fp32 ONNX file", "<=", INT8_SIZE, size[0] / size[1] if all(size) else None)
    )
    rows.append(
        check("int8-gpu F1 loss against PyTorch", "<=", F1_LOSS, cell(forms, "int8-gpu", "parity", "metric_drop"))
    )
    return rows, None


def cpu_inference(result: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    row = next((r for r in result["rows"] if r["shape"] == "1x128"), None)
    if row is None:
        return [], "no 1x128 row"
    return [
        check(
            "ORT int8-cpu speed-up over PyTorch fp32, batch 1",
            ">=",
            CPU_INT8_SPEEDUP,
            cell(row, "speedup_vs_pytorch", "ort_int8-cpu"),
        )
    ], None


def llm_peers(result: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    rows_by_role = {role: result["results"].get(name) for role, name in result["roles"].items()}
    ours, optimum, genai, fp32 = (rows_by_role[role] for role in ("ours", "optimum", "genai", "fp32"))
    rows = []
    for b in (1, 8):
        key = f"decode_ms_per_token_b{b}"
        rows.append(check(f"int8-cpu decode ms/token at batch {b} over optimum int8's", "<=", LLM_VS_OPTIMUM,
                          ours[key] / optimum[key]))  # fmt: skip
        rows.append(check(f"int8-cpu decode ms/token at batch {b} over onnxruntime-genai int4's", "<=", LLM_VS_GENAI,
                          ours[key] / genai[key]))  # fmt: skip
        prefill = f"prefill_ms_b{b}"
        rows.append(check(f"int8-cpu prefill (128 tokens) at batch {b} over lightkit fp32's", "<=", LLM_PREFILL,
                          ours[prefill] / fp32[prefill]))  # fmt: skip
        rows.append(check(f"int8-cpu prefill (128 tokens) at batch {b} over optimum weight-only int8's", "<=",
                          LLM_PREFILL, ours[prefill] / optimum[prefill]))  # fmt: skip
    rows.append(check("int8-cpu perplexity change against PyTorch fp32, absolute", "<=", LLM_PPL_CHANGE,
                      abs(ours["perplexity_change"])))  # fmt: skip
    rows.append(check("int8-cpu file over lightkit's fp32 file", "<=", LLM_INT8_SIZE, ours["size_vs_lightkit_fp32"]))
    int4 = rows_by_role.get("int4")
    if int4 is not None:  # results from before the int4 form have no row
        rows.append(check("int4-cpu file over onnxruntime-genai int4's", "<=", 1.0, int4["bytes"] / genai["bytes"]))
        for b in (1, 8):
            key = f"decode_ms_per_token_b{b}"
            rows.append(check(f"int4-cpu decode ms/token at batch {b} over onnxruntime-genai int4's", "<=", 1.0,
                              int4[key] / genai[key]))  # fmt: skip
        for key, text in (("perplexity_change", "articles"), ("answer_perplexity_change", "held-out headlines")):
            if key in int4:
                rows.append(check(f"int4-cpu perplexity change on {text}", "<=", LLM_INT4_PPL_CHANGE, int4[key]))
    return rows, None


def checker(result: dict[str, Any]) -> Callable[[dict[str, Any]], tuple[list[dict[str, Any]], str | None]] | None:
    if "pytorch_fp32_perplexity" in result:  # benchmarks/llm_peers.py
        return llm_peers
    if "ratio_tokens_per_s" in result:
        return training
    if "encoder" in result:
        return gpu_inference
    if result.get("rows") and "speedup_vs_pytorch" in result["rows"][0]:  # benchmarks/inference_cpu.py
        return cpu_inference
    return None


def annotate(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with its "targets" (and "targets_note" where they do not apply) set."""
    check_with = checker(result)
    if check_with is None:
        return result
    rows, note = check_with(result)
    result["targets"] = rows
    result.pop("targets_note", None)
    if note:
        result["targets_note"] = note
    return result


def main(paths: list[str]) -> None:
    from measure import write_result  # measure imports this module: import it only when run

    for path in map(Path, paths):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: not a readable JSON result ({e})") from None
        if checker(result) is None:
            continue
        write_result(path, result)  # annotates it
        missed = [t for t in result["targets"] if not t["met"]]
        if not result["targets"]:
            print(f"{path}: {result['targets_note']}")
            continue
        print(
            f"{path}: {len(result['targets']) - len(missed)} of {len(result['targets'])} targets met"
            + "".join(
                f"; missed {t['what']} ({t['target']}, measured {t['measured']:.4g})"
                for t in missed
                if t["measured"] is not None
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
