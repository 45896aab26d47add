"""NER through the real CLI: fit, test and predict on the tiny config, then check the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import DATA, TINY_NER
from safetensors.torch import load_file
from seqeval.metrics import f1_score
from transformers import AutoModelForTokenClassification

from lightkit.cli.main import main
from lightkit.data.conll import CoNLLFormatError, read_conll
from lightkit.models.hub import load_tokenizer


def lightkit(*args: str) -> None:
    main([*args])


@pytest.fixture
def run(ner_run: Path) -> Path:
    return ner_run


def test_fit_saves_best_weights_in_hugging_face_format(run: Path) -> None:
    model = AutoModelForTokenClassification.from_pretrained(run / "hf_model")
    labels = [s.tags for s in read_conll(DATA / "ner" / "train.conll")]
    assert sorted(model.config.id2label.values()) == sorted({t for s in labels for t in s})
    assert (run / "hf_model" / "model.safetensors").is_file()
    assert (run / "hf_model" / "tokenizer.json").is_file()
    # RestoreBestWeights: the saved model is the best checkpoint, not the last epoch.
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    saved = load_file(run / "hf_model" / "model.safetensors")
    for name, tensor in saved.items():
        assert torch.equal(best[f"model.{name}"], tensor), name


def test_test_writes_a_seqeval_report_consistent_with_its_predictions(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lightkit(
        "test",
        "--config",
        str(TINY_NER),
        "--trainer.default_root_dir",
        str(run),
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
    )
    assert "micro avg" in capsys.readouterr().out  # the report is printed
    report = json.loads((run / "seqeval_report.json").read_text())
    text = (run / "seqeval_report.txt").read_text()
    assert {"LOC", "ORG", "PER", "micro avg", "macro avg", "weighted avg"} <= report.keys()
    assert f"{report['micro avg']['f1-score']:.4f}" in text
    # The synthetic corpus is learnable: a trained tiny model must tag it well.
    assert report["micro avg"]["f1-score"] >= 0.9
    # The predictions file holds every test word with its gold tag, and re-scoring it gives the report.
    predicted = read_conll(run / "test_predictions.conll")  # token, gold, predicted: last column = predicted
    gold = read_conll(DATA / "ner" / "test.conll")
    assert [s.tokens for s in predicted] == [s.tokens for s in gold]
    rescored = f1_score([s.tags for s in gold], [s.tags for s in predicted])
    assert rescored == pytest.approx(report["micro avg"]["f1-score"])
    assert report["micro avg"]["support"] == sum(t.startswith("B-") for s in gold for t in s.tags)


def test_predict_tags_raw_text_in_conll(run: Path) -> None:
    out = run / "tagged.conll"
    lightkit(
        "predict",
        "--config",
        str(TINY_NER),
        "--trainer.default_root_dir",
        str(run),
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
        "--prediction_writer.output",
        str(out),
    )
    sentences = read_conll(out)
    lines = [line.split() for line in (DATA / "ner" / "predict.txt").read_text().splitlines() if line.strip()]
    assert [s.tokens for s in sentences] == lines
    # Names in the fixture are always tagged as people: "dave brown visited ..." starts with one.
    visitors = [s for s in sentences if s.tokens[2:3] == ["visited"]]
    assert len(visitors) == 2 and [s.tags[:2] for s in visitors] == [["B-PER", "I-PER"]] * 2


# -- bad input: each error names the file and line -----------------------------------------------
def tiny_with(tmp_path: Path, **files: str) -> list[str]:
    args = ["test", "--config", str(TINY_NER), "--trainer.default_root_dir", str(tmp_path)]
    for key, text in files.items():
        path = tmp_path / f"{key}.conll"
        path.write_text(text)
        args += [f"--data.init_args.{key}", str(path)]
    return args


def test_unknown_tag_at_test_time(tmp_path: Path) -> None:
    with pytest.raises(CoNLLFormatError, match=r"test_file\.conll:4: tag 'B-MISC' is not among the 6 labels"):
        lightkit(*tiny_with(tmp_path, test_file="alice B-PER\n\nparis B-LOC\nacme B-MISC\n"))


def test_empty_split(tmp_path: Path) -> None:
    with pytest.raises(CoNLLFormatError, match=r"test_file\.conll: the test split has no sentences"):
        lightkit(*tiny_with(tmp_path, test_file="-DOCSTART- O\n\n"))


def test_malformed_line_through_the_cli(tmp_path: Path) -> None:
    with pytest.raises(CoNLLFormatError, match=r"test_file\.conll:2: expected 2 columns"):
        lightkit(*tiny_with(tmp_path, test_file="alice\tB-PER\nsmith I-PER extra\n"))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"test_file: '.*nope\.conll' does not exist"):
        lightkit("test", "--config", str(TINY_NER), "--data.init_args.test_file", str(tmp_path / "nope.conll"))


def test_truncated_words_count_as_missed_not_dropped(run: Path) -> None:
    # max_length 8 keeps 6 subwords of each sentence; the words past them stay in the gold as misses.
    out = run / "truncated"
    lightkit(
        "test",
        "--config",
        str(TINY_NER),
        "--trainer.default_root_dir",
        str(out),
        "--ckpt_path",
        str(run / "checkpoints" / "best.ckpt"),
        "--data.init_args.max_length",
        "8",
    )
    report = json.loads((out / "seqeval_report.json").read_text())
    gold = read_conll(DATA / "ner" / "test.conll")
    assert report["micro avg"]["support"] == sum(t.startswith("B-") for s in gold for t in s.tags)
    tok = load_tokenizer(str(DATA / "tokenizer"))
    kept = [
        max(
            w
            for w in tok(s.tokens, is_split_into_words=True, truncation=True, max_length=8).word_ids()
            if w is not None
        )
        + 1
        for s in gold
    ]
    assert report["truncated_words"] == sum(len(s.tokens) - k for s, k in zip(gold, kept)) > 0
    assert report["micro avg"]["recall"] < 0.9
    predicted = read_conll(out / "test_predictions.conll")
    assert [s.tokens for s in predicted] == [s.tokens for s in gold]
    assert all(set(s.tags[k:]) <= {"O"} for s, k in zip(predicted, kept))


def test_a_non_finite_loss_stops_training_and_names_the_step(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"training loss is nan at optimizer step \d+, epoch 0, batch \d+"):
        lightkit(
            "fit",
            "--config",
            str(TINY_NER),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--model.init_args.learning_rate",
            "1e12",
        )
    assert not (tmp_path / "hf_model").exists()  # nothing saved from a diverged run


@pytest.mark.slow  # a long input file, to show memory stays flat: end-to-end, so make test-slow
def test_predict_streams_a_long_file_in_flat_memory(run: Path, tmp_path: Path) -> None:
    """Predictions are streamed to the file batch by batch and not also kept by Lightning's
    predict loop: 4x more sentences raise peak memory by less than keeping them would take."""
    from memory import assert_flat, traced

    from lightkit.cli.main import cli

    sentences = [line for line in (DATA / "ner" / "predict.txt").read_text().splitlines() if line.strip()]

    def predict(n: int, keep: bool = False) -> tuple[dict[str, int], Path, object]:
        long_file, out = tmp_path / f"long{n}.txt", tmp_path / f"long{n}-{keep}.conll"
        long_file.write_text("".join(sentences[i % len(sentences)] + "\n" for i in range(n)))
        with traced() as seen:
            done = cli([
                "predict", "--config", str(TINY_NER), "--ckpt_path", str(run / "checkpoints" / "best.ckpt"),
                "--trainer.default_root_dir", str(tmp_path), "--data.init_args.predict_file", str(long_file),
                "--data.init_args.eval_batch_size", "64", "--prediction_writer.output", str(out),
                *(["--return_predictions", "true"] if keep else []),
            ])  # fmt: skip
        return seen, out, done

    predict(2_500)  # warm up: first-call caches are not the stream's
    (small, _, _), (large, out, done) = predict(2_500), predict(10_000)
    assert done.trainer.predict_loop.predictions == []
    # The reference: Lightning keeping every prediction holds ~7.5 MiB here; streaming 4x the
    # sentences grows the traced peak by ~1.8 MiB (measured at the lock and at the floors).
    kept, _, kept_run = predict(10_000, keep=True)
    assert len(kept_run.trainer.predict_loop.predictions) == -(-10_000 // 64)
    assert_flat(small, large, kept, "sentences")
    blocks = out.read_text().strip().split("\n\n")
    assert len(blocks) == 10_000
    assert [line.split("\t")[0] for line in blocks[-1].splitlines()] == sentences[(10_000 - 1) % len(sentences)].split()


@pytest.mark.slow  # a torch.compile of the model: 15 s
def test_compile_trains_a_compiled_model_with_unchanged_checkpoint_names(run: Path, tmp_path: Path) -> None:
    """`compile: true` compiles in place (nn.Module.compile): same parameter names, so its
    checkpoints load into an uncompiled task and export like any other. With CUDA graphs
    (`reduce-overhead`; on CPU inductor skips the graphs) batches are padded to a few shapes."""
    lightkit(
        "fit",
        "--config",
        str(TINY_NER),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.max_epochs",
        "1",
        "--model.init_args.compile",
        "true",
        "--model.init_args.compile_mode",
        "reduce-overhead",
        "--data.init_args.pad_to_multiple_of",
        "16",
        "--trainer.callbacks+=probes.CompileProbe",
        "--trainer.callbacks.path",
        str(tmp_path / "probe.json"),
    )
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["compiled"] is True and probe["lengths"] and all(n % 16 == 0 for n in probe["lengths"])
    compiled = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    plain = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert (
        compiled["hyper_parameters"]["compile"] is True
        and compiled["hyper_parameters"]["compile_mode"] == "reduce-overhead"
    )
    assert list(compiled["state_dict"]) == list(plain["state_dict"])


def test_fit_logs_to_csv_and_tensorboard_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["fit", "--config", "tests/conf/ner.yaml", "--trainer.logger", "null", "--trainer.max_epochs", "1",
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert f"CSVLogger logs to {tmp_path / 'lightning_logs' / 'version_0'}" in out
    assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in out
    assert (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
