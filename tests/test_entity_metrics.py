"""seqeval scores and reports: known inputs give known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightkit.metrics.entities import Seqeval, write_report

NAMES = ["O", "B-LOC", "B-PER", "I-PER"]
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "O"], ["B-PER", "O", "B-PER"]]


def ids(seqs: list[list[str]]) -> list[list[int]]:
    return [[NAMES.index(t) for t in s] for s in seqs]


def test_gold_equal_predictions_give_perfect_scores(tmp_path: Path) -> None:
    txt, js, text = write_report(tmp_path, GOLD, GOLD)
    report = json.loads(js.read_text())
    assert report["micro avg"] == {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 5}
    assert report["PER"]["support"] == 3 and report["LOC"]["support"] == 2
    assert report["accuracy"] == 1.0
    assert txt.read_text() == text and "micro avg" in text


def test_known_corruption_gives_known_scores(tmp_path: Path) -> None:
    # Cut the first PER short (a wrong span) and miss the second LOC: 5 gold entities, 4
    # predicted, 3 right -> precision 3/4, recall 3/5, F1 = 2PR/(P+R) = 2/3.
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "O", "O"], ["B-PER", "O", "B-PER"]]
    _, js, _ = write_report(tmp_path, GOLD, pred)
    micro = json.loads(js.read_text())["micro avg"]
    assert micro["precision"] == pytest.approx(0.75)
    assert micro["recall"] == pytest.approx(0.6)
    assert micro["f1-score"] == pytest.approx(2 / 3)
    per = json.loads(js.read_text())["PER"]
    assert per["precision"] == pytest.approx(2 / 3) and per["recall"] == pytest.approx(2 / 3)


def test_metric_over_batches_equals_one_computation_on_the_epoch() -> None:
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "O", "O"], ["B-PER", "O", "B-PER"]]
    metric = Seqeval(NAMES)
    metric.update(ids(pred[:1]), ids(GOLD[:1]))
    metric.update(ids(pred[1:]), ids(GOLD[1:]), truncated=2)
    out = metric.compute()
    # Averaging per-batch F1 would give (1/2 + ... ) / 2; the epoch value is the span-level 2/3.
    assert out["f1"].item() == pytest.approx(2 / 3)
    assert out["precision"].item() == pytest.approx(0.75)
    assert out["truncated_words"].item() == 2
    assert metric.sequences() == (GOLD, pred)


def test_metric_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="3 gold labels but 2 predictions"):
        Seqeval(NAMES).update([[0, 0]], [[0, 0, 0]])


def test_empty_metric_computes_zeros() -> None:
    out = Seqeval(NAMES).compute()
    assert torch.equal(out["f1"], torch.tensor(0.0))
