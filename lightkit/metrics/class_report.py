"""Per-class precision/recall/F1/support and a confusion-matrix plot, from one confusion matrix.

Everything derives from the (gold x predicted) count matrix, which torchmetrics sums across
processes, so the report is exact under DDP and needs no second pass over predictions. (Not
torchmetrics' per-class Precision/Recall/F1 metrics: each would keep and sync its own copy of
these counts; the plot is torchmetrics'.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightkit.io.atomic import atomic_open


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def per_class_report(matrix: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """sklearn-style report dict: one row per class, then accuracy, macro and weighted averages."""
    m = matrix.double()
    tp, gold, pred = m.diag(), m.sum(1), m.sum(0)
    precision, recall = _ratio(tp, pred), _ratio(tp, gold)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = gold.sum()
    report: dict[str, Any] = {
        name: {"precision": float(p), "recall": float(r), "f1-score": float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, gold)
    }
    report["accuracy"] = float(tp.sum() / total) if total > 0 else 0.0
    weights = gold / total if total > 0 else gold
    for avg, w in (("macro avg", torch.full_like(gold, 1 / len(names))), ("weighted avg", weights)):
        report[avg] = {
            "precision": float((precision * w).sum()),
            "recall": float((recall * w).sum()),
            "f1-score": float((f1 * w).sum()),
            "support": int(total),
        }
    return report


def report_text(report: dict[str, Any], digits: int = 4) -> str:
    """The report as a fixed-width table, laid out like sklearn's classification_report."""
    rows = [k for k in report if k != "accuracy"]
    width = max(len(k) for k in rows + ["weighted avg"])
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}\n\n"

    def line(k: str) -> str:
        scores = " ".join(f"{report[k][c]:>9.{digits}f}" for c in ("precision", "recall", "f1-score"))
        return f"{k:>{width}} {scores} {report[k]['support']:>9}\n"

    body = "".join(line(k) for k in rows if not k.endswith(" avg"))
    total = report["macro avg"]["support"]
    acc = f"\n{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {total:>9}\n"
    return head + body + acc + line("macro avg") + line("weighted avg")


def plot_confusion_matrix(matrix: torch.Tensor, names: Sequence[str], path: str | Path) -> None:
    """Write the count matrix as a PNG heat map (rows gold, columns predicted): torchmetrics' plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    from torchmetrics.utilities.plot import plot_confusion_matrix as plot

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.6 * n), dpi=100)
    plot(matrix.long(), ax=ax, labels=list(names), cmap="Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
