"""Sequence classification: report maths, the real CLI end to end, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import DATA, ROOT
from sklearn.metrics import classification_report

from lightkit.cli.main import main
from lightkit.data import TextClassificationDataModule
from lightkit.io.errors import InputError
from lightkit.metrics.class_report import per_class_report, report_text

CONF = ROOT / "tests" / "conf" / "classification.yaml"


def test_per_class_report_matches_sklearn() -> None:
    gold = [0, 0, 1, 1, 1, 2, 2, 2, 2, 0]
    pred = [0, 1, 1, 1, 2, 2, 2, 0, 2, 0]
    names = ["a", "b", "c"]
    matrix = torch.zeros(3, 3, dtype=torch.long)
    for g, p in zip(gold, pred):
        matrix[g, p] += 1
    ours = per_class_report(matrix, names)
    theirs = classification_report(gold, pred, target_names=names, output_dict=True)
    for key in [*names, "macro avg", "weighted avg"]:
        for col in ("precision", "recall", "f1-score", "support"):
            assert ours[key][col] == pytest.approx(theirs[key][col]), (key, col)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    assert "weighted avg" in report_text(ours)


def test_class_without_predictions_scores_zero_not_nan() -> None:
    report = per_class_report(torch.tensor([[2, 0], [1, 0]]), ["x", "y"])
    assert report["y"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cls-run")
    main(["fit", "--config", str(CONF), "--trainer.default_root_dir", str(root)])
    return root


def test_fit_test_predict_through_the_cli(run: Path) -> None:
    ckpt = str(run / "checkpoints" / "best.ckpt")
    main(["test", "--config", str(CONF), "--trainer.default_root_dir", str(run), "--ckpt_path", ckpt])
    report = json.loads((run / "classification_report.json").read_text())
    confusion = json.loads((run / "confusion_matrix.json").read_text())
    gold = [json.loads(line)["label"] for line in (DATA / "cls" / "test.jsonl").read_text().splitlines()]
    assert confusion["labels"] == ["politics", "sport", "tech"]
    matrix = torch.tensor(confusion["matrix"])
    assert matrix.sum(1).tolist() == [gold.count(n) for n in confusion["labels"]]  # rows are gold counts
    assert report["accuracy"] == pytest.approx(matrix.diag().sum().item() / len(gold))
    assert report["accuracy"] >= 0.9  # keywords decide the topic: a trained tiny model gets them
    assert (run / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = run / "predictions.jsonl"
    main(
        [
            "predict",
            "--config",
            str(CONF),
            "--trainer.default_root_dir",
            str(run),
            "--ckpt_path",
            ckpt,
            "--prediction_writer.output",
            str(out),
        ]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    texts = [t for t in (DATA / "cls" / "predict.txt").read_text().splitlines() if t.strip()]
    assert [r["text"] for r in rows] == texts
    for r in rows:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


def datamodule(tmp_path: Path, **files: str) -> TextClassificationDataModule:
    paths = {}
    for key, text in files.items():
        name = {"train_file": "train.jsonl", "test_file": "test.jsonl"}.get(key, key)
        (tmp_path / name).write_text(text)
        paths[key] = str(tmp_path / name)
    return TextClassificationDataModule(tokenizer=str(DATA / "tokenizer"), cache_dir=str(tmp_path / "cache"), **paths)


GOOD = '{"text": "goal", "label": "sport"}\n{"text": "chip", "label": "tech"}\n'


def test_missing_column_names_file_line_and_columns(tmp_path: Path) -> None:
    # Checked as the files are read (the label names are read from all splits at construction).
    with pytest.raises(
        InputError, match=r"test\.jsonl:2: missing column\(s\) \['text'\]; the row has \['label', 'txt'\]"
    ):
        datamodule(
            tmp_path,
            train_file=GOOD,
            test_file='{"text": "goal", "label": "sport"}\n{"txt": "vote", "label": "tech"}\n',
        ).setup("test")


def test_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    dm = datamodule(tmp_path, train_file=GOOD, test_file='{"text": "vote", "label": "politics"}\n')
    with pytest.raises(InputError, match=r"test\.jsonl:1: label 'politics' is not among the 2 labels \(sport, tech\)"):
        dm.setup("test")


def test_malformed_json_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"train\.jsonl:3: not a JSON object"):
        datamodule(tmp_path, train_file=GOOD + '{"text": "oops"\n')


def test_class_folders_and_a_stratified_holdout(tmp_path: Path) -> None:
    for label, n in (("a", 10), ("b", 20)):
        (tmp_path / "corpus" / label).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "corpus" / label / f"{i:03}.txt").write_bytes(b"caf\xe9 goal" if i == 0 else b"goal match")
    dm = TextClassificationDataModule(
        tokenizer=str(DATA / "tokenizer"), train_file=str(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache")
    )
    splits = dm.rows()
    assert dm.label_names == ["a", "b"]
    assert [sum(r["label"] == "a" for r in splits[s]) for s in ("train", "validation", "test")] == [8, 1, 1]
    assert [sum(r["label"] == "b" for r in splits[s]) for s in ("train", "validation", "test")] == [16, 2, 2]
    texts = [r["text"] for s in splits.values() for r in s]
    assert "café goal" in texts  # a cp1252 byte decoded, not a crash


def test_text_pairs_are_encoded_as_pairs(tmp_path: Path) -> None:
    rows = '{"a": "goal match", "b": "vote law", "label": "no"}\n{"a": "chip", "b": "phone", "label": "yes"}\n'
    (tmp_path / "pairs.jsonl").write_text(rows)
    dm = TextClassificationDataModule(
        tokenizer=str(DATA / "tokenizer"),
        train_file=str(tmp_path / "pairs.jsonl"),
        val_file=str(tmp_path / "pairs.jsonl"),
        text_column="a",
        text_pair_column="b",
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["token_type_ids"].max() == 1  # the second text is segment B
    assert sorted(batch["labels"].tolist()) == [0, 1]


def test_early_stopping_stops_on_patience_and_the_best_weights_are_saved(tmp_path: Path) -> None:
    """EarlyStopping (Lightning's) ends the run `patience` validations after the best one, and
    RestoreBestWeights puts that best epoch's weights in the model fit saves, not the last ones."""
    from safetensors.torch import load_file

    last = tmp_path / "last-weights.pt"
    callbacks = tmp_path / "early-stopping.yaml"  # a second --config replaces the tiny config's callbacks
    callbacks.write_text(f"""trainer:
  callbacks:
    - class_path: probes.ScriptedScore  # peaks at epoch 1: patience 2 stops after epoch 3
      init_args: {{scores: [0.1, 0.5, 0.3, 0.2, 0.9, 0.9], path: {last}}}
    - class_path: EarlyStopping
      init_args: {{monitor: val_scripted, mode: max, patience: 2}}
    - class_path: LastCheckpoint  # listed first: RestoreBestWeights must take the monitoring one
    - class_path: ModelCheckpoint
      init_args: {{monitor: val_scripted, mode: max, filename: scripted-best}}
    - class_path: RestoreBestWeights
""")
    main(
        [
            "fit",
            "--config",
            str(CONF),
            "--config",
            str(callbacks),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.max_epochs",
            "20",
        ]
    )
    best_ckpt = torch.load(tmp_path / "checkpoints" / "scripted-best.ckpt", weights_only=True)
    assert best_ckpt["epoch"] == 1  # the epoch the scripted score peaked
    ended = torch.load(last, weights_only=True)
    assert ended["epochs_run"] == 4  # stopped by patience: epochs 2 and 3 did not improve; 20 allowed
    saved = load_file(tmp_path / "hf_model" / "model.safetensors")
    best = {k.removeprefix("model."): v for k, v in best_ckpt["state_dict"].items()}
    ended = {k.removeprefix("model."): v for k, v in ended["state_dict"].items()}
    name = next(k for k in saved if "classifier" in k and k in best)
    assert torch.equal(saved[name], best[name]) and not torch.equal(saved[name], ended[name])
