"""The parity gate of `lightkit export`: an artifact scored against PyTorch by the task itself.

The task's own `step` and metrics run with an ONNX Runtime session standing in for its model
(`BaseTask.forward_with`), on the same held-out batches as PyTorch, so the metric compared is
exactly the one `lightkit test` reports. What is compared comes from the task's declared contract
(`primary_metric`, `primary_mode`, `export_kind`), never from its class name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightkit.export.builder.placement import placement
from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import CPU_FORMS, OrtModel
from lightkit.io.measure import latency_summary, time_calls

GPU_FORMS = ("fp16", "int8-gpu", "int4-gpu")


def score(
    task: Any, model: Any, batches: list[dict[str, Any]]
) -> tuple[dict[str, float], list[torch.Tensor], list[torch.Tensor]]:
    """The task's metrics with `model` standing in for its transformers model; plus logits and masks."""
    metrics = task.configure_metrics()
    logits, masks = [], []

    def recorded(**inputs: Any) -> Any:
        out = model(**inputs)
        logits.append(out.logits.detach().float())
        # Compared where the task reads predictions: labelled tokens (first subwords), or every row.
        labels, per_token = inputs.get("labels"), out.logits.dim() == 3
        if per_token:
            masks.append(labels != -100 if labels is not None else inputs["attention_mask"].bool())
        else:
            masks.append(torch.ones(out.logits.size(0), dtype=torch.bool))
        return out

    with task.forward_with(recorded), torch.no_grad():
        for batch in batches:
            out = task.step(batch)
            metrics.update(out.preds, out.target, **out.metric_kwargs)
    return {k: float(v) for k, v in metrics.compute().items()}, logits, masks


def compare(ref: list[torch.Tensor], got: list[torch.Tensor], masks: list[torch.Tensor]) -> dict[str, float]:
    diff, agree, total = 0.0, 0, 0
    for r, g, m in zip(ref, got, masks):
        diff = max(diff, float((r - g).abs()[m].max()))
        agree += int((r.argmax(-1) == g.argmax(-1))[m].sum())
        total += int(m.sum())
    return {"max_abs_diff": diff, "argmax_agreement": agree / max(total, 1)}


def metric_drop(mode: str, pytorch: float, onnx: float) -> float:
    """How much worse the artifact scores: an absolute fall of a metric where higher is better
    (F1, accuracy), a relative rise of one where lower is (perplexity)."""
    return onnx / pytorch - 1.0 if mode == "min" else pytorch - onnx


# A step's greedy token counts as decided when PyTorch's top-2 logit gap exceeds twice the form's
# measured logit error (each of the two logits may move by that much). Near-ties below it flip
# with the CPU's kernels (AVX-512 vs AMX, and the weights a machine trains), not with the export,
# so free-running greedy agreement measures the machine; this measures the cache. The floor covers
# fp32, whose cached one-token steps sum in another order than the full forwards the error is
# measured on.
NEAR_TIE_FLOOR = 1e-4


def reference_decode(
    model: Any, batch: dict[str, Any], prompt_tokens: int = 8, new_tokens: int = 16
) -> dict[str, torch.Tensor]:
    """PyTorch's greedy path from a few prompts, by plain full-sequence forwards (no cache tricks)."""
    ids, mask = batch["input_ids"][:4, :prompt_tokens], batch["attention_mask"][:4, :prompt_tokens]
    sequence, steps = ids, []
    with torch.no_grad():
        for _ in range(new_tokens):
            steps.append(
                model(input_ids=sequence, attention_mask=torch.ones_like(sequence)).logits[:, -1].float()
            )  # (B, V)
            sequence = torch.cat([sequence, steps[-1].argmax(-1, keepdim=True)], dim=1)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "tokens": sequence[:, prompt_tokens:],
        "logits": torch.stack(steps, dim=1),
    }


def greedy_agreement(reference: dict[str, torch.Tensor], loop: DecodeLoop, logit_error: float) -> dict[str, Any]:
    """How the artifact's KV-cache decode loop follows PyTorch's greedy path.

    The loop is fed PyTorch's tokens (`DecodeLoop.forced`), so one flipped near-tie cannot send
    the rest of the sequence elsewhere, and its argmax is compared on the decided steps only
    (see NEAR_TIE_FLOOR). A broken cache (wrong positions, stale past) disagrees on decided steps.
    """
    logits = loop.forced(reference["input_ids"], reference["attention_mask"], reference["tokens"])  # (B, T, V)
    top2 = reference["logits"].topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > 2 * logit_error + NEAR_TIE_FLOOR
    agree = logits.argmax(-1) == reference["tokens"]
    return {
        "greedy_agreement": float(agree[decided].float().mean()) if decided.any() else None,
        "greedy_decided_steps": int(decided.sum()),
        "greedy_near_ties": int((~decided).sum()),
        "greedy_near_tie_flips": int((~agree & ~decided).sum()),
        "decode_max_abs_diff": float((logits - reference["logits"]).abs().max()),
    }


def latency_ms(model: Any, batch: dict[str, Any], task: Any, repeats: int = 10) -> float:
    inputs = task.model_inputs(batch)
    with torch.no_grad():
        return latency_summary(time_calls(lambda: model(**inputs), 0, repeats))["median_ms"]


def check_form(
    task: Any,
    form: str,
    path: Path,
    expected: tuple[dict[str, float], list[torch.Tensor], dict[str, torch.Tensor] | None],
    masks: list[torch.Tensor],
    batches: list[dict[str, Any]],
    limits: dict[str, float],
) -> tuple[dict[str, Any], list[str]]:
    """Score one artifact against PyTorch; its manifest entry and what breaks its tolerance."""
    # TF32 off: the gate checks the export, and the CUDA EP's default TF32 MatMul alone moves a
    # 6-layer encoder's logits by ~1e-2, above the fp32 tolerance.
    session = OrtModel(path, device="cpu" if form in CPU_FORMS else "auto", tf32=False)
    metrics, logits, _ = score(task, session, batches)
    ref_metrics, ref_logits, ref_decode = expected
    primary = task.primary_metric
    parity = {
        **compare(ref_logits, logits, masks),
        "metric": primary,
        "pytorch": ref_metrics[primary],
        "onnx": metrics[primary],
    }
    parity["metric_drop"] = metric_drop(task.primary_mode, parity["pytorch"], parity["onnx"])
    checks = [
        (
            parity["max_abs_diff"] > limits["max_abs_diff"],
            f"max_abs_diff {parity['max_abs_diff']:.3g} > {limits['max_abs_diff']}",
        ),
        (
            parity["argmax_agreement"] < limits["min_argmax_agreement"],
            f"argmax agreement {parity['argmax_agreement']:.4f} < {limits['min_argmax_agreement']}",
        ),
        (
            parity["metric_drop"] > limits["max_metric_drop"],
            f"{primary} drop {parity['metric_drop']:.4f} > {limits['max_metric_drop']}",
        ),
    ]
    if session.causal:
        parity.update(greedy_agreement(ref_decode, DecodeLoop(session), parity["max_abs_diff"]))
        greedy = parity["greedy_agreement"]
        checks += [
            (
                parity["decode_max_abs_diff"] > limits["max_abs_diff"],
                f"cached decode max_abs_diff {parity['decode_max_abs_diff']:.3g} > {limits['max_abs_diff']}",
            ),
            (
                greedy is not None and greedy < limits["min_greedy_agreement"],
                f"greedy agreement {greedy} < {limits['min_greedy_agreement']} on {parity['greedy_decided_steps']} "
                "decided steps",
            ),
        ]
    problems = [message for failed, message in checks if failed]
    if form in GPU_FORMS:  # GPU-ready only when the placement check ran and found every compute node on CUDA
        place = placement(path, session.feeds(**task.model_inputs(batches[0])))
    else:
        place = {"checked": False, "reason": "not a GPU form (fp32 runs anywhere; int8-cpu and qat are CPU artifacts)"}
    info = {
        "file": f"{form}/model.onnx",
        "bytes": path.stat().st_size,
        "parity": {**parity, "tolerance": limits, "passed": not problems},
        "providers": session.providers(),
        "gpu_ready": place.get("ok") if form in GPU_FORMS else False,
        "placement": place,
        "latency_ms_median": latency_ms(session, batches[0], task),
    }
    return info, problems
