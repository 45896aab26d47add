"""The constrained Viterbi refiner for NER: valid output always, argmax when argmax is valid, optimal."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_NER

from lightkit.cli.main import main
from lightkit.objectives.word_tags import constrained_viterbi, invalid_transitions, transition_rules

IOB2 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


def valid(path: list[int], labels: list[str]) -> bool:
    start, allowed, end = transition_rules(labels)
    return bool(start[path[0]] and end[path[-1]] and all(allowed[a, b] for a, b in zip(path, path[1:])))


def score(path: list[int], scores: torch.Tensor) -> float:
    return float(sum(scores[t, label] for t, label in enumerate(path)))


@pytest.mark.parametrize("labels", [IOB2, BIOES], ids=["iob2", "bioes"])
def test_viterbi_output_is_always_valid_and_optimal(labels: list[str]) -> None:
    rules = transition_rules(labels)
    g = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 4):
        every = [list(p) for p in itertools.product(range(len(labels)), repeat=length) if valid(list(p), labels)]
        for _ in range(25):
            scores = torch.log_softmax(torch.randn(length, len(labels), generator=g) * 3, dim=-1)
            path = constrained_viterbi(scores, *rules)
            assert valid(path, labels), [labels[i] for i in path]
            best = max(score(p, scores) for p in every)  # brute force over every valid sequence
            assert score(path, scores) == pytest.approx(best, abs=1e-5)


def test_viterbi_equals_argmax_when_argmax_is_valid() -> None:
    rules = transition_rules(IOB2)
    gold = [1, 2, 0, 3, 4, 4, 0]  # B-PER I-PER O B-LOC I-LOC I-LOC O
    scores = torch.log_softmax(
        torch.nn.functional.one_hot(torch.tensor(gold), len(IOB2)).float() * 2 + torch.rand(len(gold), len(IOB2)) * 0.5,
        dim=-1,
    )
    assert scores.argmax(-1).tolist() == gold
    assert constrained_viterbi(scores, *rules) == gold


def test_invalid_transitions_are_counted() -> None:
    assert invalid_transitions(["O", "I-PER", "B-LOC", "I-PER", "I-PER"]) == 2  # after O; after another type
    assert invalid_transitions(["B-PER", "I-PER", "O", "B-LOC"]) == 0


def test_test_reports_invalid_transitions_and_viterbi_removes_them(ner_brief: Path, tmp_path: Path) -> None:
    # A briefly trained model makes invalid argmax sequences; the refiner must leave none.
    ckpt = str(ner_brief / "checkpoints" / "best.ckpt")
    reports = {}
    for decoding in ("argmax", "viterbi"):
        out = tmp_path / decoding
        main(
            [
                "test",
                "--config",
                str(TINY_NER),
                "--trainer.default_root_dir",
                str(out),
                "--ckpt_path",
                ckpt,
                "--model.init_args.decoding",
                decoding,
            ]
        )
        reports[decoding] = json.loads((out / "seqeval_report.json").read_text())
    assert reports["viterbi"]["decoding"] == "viterbi"
    assert reports["viterbi"]["invalid_transitions"] == 0
    # The argmax count is the count in the predictions it wrote (last column, read raw: read_conll
    # would repair them to IOB2). A briefly trained model does make some.
    blocks = (tmp_path / "argmax" / "test_predictions.conll").read_text().strip().split("\n\n")
    raw = [[line.split("\t")[-1] for line in block.splitlines()] for block in blocks]
    assert reports["argmax"]["invalid_transitions"] == sum(invalid_transitions(tags) for tags in raw) > 0
