"""Entity-level NER metrics with seqeval, computed once on a whole epoch.

seqeval scores spans, so per-batch F1 averaged over batches is not the epoch's F1. `Seqeval`
therefore keeps every sentence's label ids as torchmetrics list states (`dist_reduce_fx="cat"`):
under DDP they are gathered from every process first, then seqeval runs once on the whole set.

Scoring uses seqeval's default (conlleval-compatible) mode, the one the CoNLL shared tasks and
Hugging Face's run_ner report: an I-X that follows O starts an entity rather than being an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightkit.io.atomic import atomic_write_text


def entity_scores(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 over entities and token accuracy (the numbers logged per stage)."""
    return {
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred, zero_division=0),
        "f1": f1_score(y_true, y_pred, zero_division=0),
        "accuracy": accuracy_score(y_true, y_pred),
    }


def seqeval_report(y_true: list[list[str]], y_pred: list[list[str]], digits: int = 4) -> tuple[str, dict[str, Any]]:
    """seqeval's classification_report as text and as a JSON-ready dict with the same numbers.

    The dict has one entry per entity type and the micro/macro/weighted averages, each with
    precision, recall, f1-score and support, plus the overall token accuracy.
    """
    text = classification_report(y_true, y_pred, digits=digits, zero_division=0)
    table = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    numbers = {name: {k: float(v) if k != "support" else int(v) for k, v in row.items()} for name, row in table.items()}
    numbers["accuracy"] = float(accuracy_score(y_true, y_pred))
    return text, numbers


def write_report(
    out_dir: str | Path, y_true: list[list[str]], y_pred: list[list[str]], extra: dict[str, Any] | None = None
) -> tuple[Path, Path, str]:
    """Write `seqeval_report.txt` and `seqeval_report.json` to `out_dir`; return their paths and the text."""
    text, numbers = seqeval_report(y_true, y_pred)
    if extra:
        numbers.update(extra)
    out_dir = Path(out_dir)
    txt, js = out_dir / "seqeval_report.txt", out_dir / "seqeval_report.json"
    atomic_write_text(txt, text)
    atomic_write_text(js, json.dumps(numbers, indent=2) + "\n")
    return txt, js, text


class Seqeval(Metric):
    """Entity precision/recall/F1 and token accuracy over all sentences seen since reset.

    `update(preds, target)` takes per-sentence lists of label ids (words, not subwords) and
    `compute()` returns `{"precision", "recall", "f1", "accuracy"}`; in a MetricCollection with
    prefix `val_` these log as `val_f1` and so on.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, label_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")
        self.add_state("truncated", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Sequence[int]], target: Sequence[Sequence[int]], truncated: int = 0) -> None:
        for p, t in zip(preds, target, strict=True):
            if len(p) != len(t):
                raise ValueError(f"a sentence has {len(t)} gold labels but {len(p)} predictions")
        self.preds.append(torch.tensor([i for p in preds for i in p], dtype=torch.long, device=self.device))
        self.target.append(torch.tensor([i for t in target for i in t], dtype=torch.long, device=self.device))
        self.lengths.append(torch.tensor([len(t) for t in target], dtype=torch.long, device=self.device))
        self.truncated += truncated

    def sequences(self) -> tuple[list[list[str]], list[list[str]]]:
        """(gold, predicted) tag sequences of every sentence, in the order they were seen."""
        if len(self.lengths) == 0:  # nothing seen; a list before sync, a tensor after
            return [], []
        names = self.label_names
        flat_p, flat_t = dim_zero_cat(self.preds).tolist(), dim_zero_cat(self.target).tolist()
        y_true, y_pred, start = [], [], 0
        for n in dim_zero_cat(self.lengths).tolist():
            y_true.append([names[i] for i in flat_t[start : start + n]])
            y_pred.append([names[i] for i in flat_p[start : start + n]])
            start += n
        return y_true, y_pred

    def compute(self) -> dict[str, torch.Tensor]:
        y_true, y_pred = self.sequences()
        scores = (
            entity_scores(y_true, y_pred) if y_true else dict.fromkeys(("precision", "recall", "f1", "accuracy"), 0.0)
        )
        out = {k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()}
        out["truncated_words"] = self.truncated.float()
        return out
