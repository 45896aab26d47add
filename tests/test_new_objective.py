"""Adding an objective is one task file and one YAML: a toy task defined outside lightkit runs
fit, test, export and evaluate through the `lightkit` command, with nothing edited in lightkit."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from lightkit.cli.main import main

TOY_TASK = '''
"""A toy objective: text classification judged on macro recall, the way a user would add one."""

from typing import Any

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassRecall
from transformers import AutoModelForSequenceClassification

from lightkit.training.task import BaseTask, StepOutput, label_config


class BalancedRecallTask(BaseTask):
    auto_model = AutoModelForSequenceClassification
    primary_metric = "recall"
    export_kind = "encoder"
    serving = "labels"

    def __init__(self, label_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def logits_axes(self) -> list[str | int]:
        return ["batch", len(self.hparams.label_names)]

    def model_overrides(self) -> dict[str, Any]:
        return label_config(self.hparams.label_names, type(self).__name__)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"recall": MulticlassRecall(len(self.hparams.label_names), average="macro")})

    def step(self, batch: dict[str, Any]) -> StepOutput:
        out = self.run_model(batch, labels=batch["labels"])
        if not self.wants_metrics():
            return StepOutput(out.loss)
        return StepOutput(out.loss, out.logits.detach().argmax(-1), batch["labels"])
'''


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The task module on the import path, and a YAML naming it by import path."""
    (tmp_path / "toy_objective.py").write_text(textwrap.dedent(TOY_TASK))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = yaml.safe_load((ROOT / "tests" / "conf" / "classification.yaml").read_text())
    config["model"]["class_path"] = "toy_objective.BalancedRecallTask"
    config["trainer"]["max_epochs"] = 10
    config["trainer"]["default_root_dir"] = str(tmp_path / "run")
    monitor = next(c for c in config["trainer"]["callbacks"] if c["class_path"] == "ModelCheckpoint")
    monitor["init_args"]["monitor"] = "val_recall"
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_new_objective_trains_tests_exports_and_evaluates_through_the_cli(toy: Path, tmp_path: Path) -> None:
    main(["fit", "--config", str(toy)])
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    main(["test", "--config", str(toy), "--ckpt_path", str(ckpt)])

    # Export settings live in a YAML of their own, beside the training config.
    settings = {"ckpt_path": str(ckpt), "output": str(tmp_path / "onnx"), "forms": ["fp32", "int8-cpu"],
                "tolerance": {"int8-cpu": {"max_metric_drop": 1.0, "min_argmax_agreement": 0.0}}}  # fmt: skip
    (tmp_path / "export.yaml").write_text(yaml.safe_dump(settings))
    main(["export", "--config", str(toy), "--config", str(tmp_path / "export.yaml")])
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["task"] == manifest["objective"] == "BalancedRecallTask"
    assert manifest["export_kind"] == "encoder" and manifest["serving"] == "labels"
    assert manifest["outputs"][0]["shape"] == ["batch", len(manifest["labels"])]
    fp32 = manifest["forms"]["fp32"]["parity"]
    assert fp32["passed"] and fp32["metric"] == "recall" and fp32["onnx"] == pytest.approx(fp32["pytorch"], abs=1e-6)

    out = tmp_path / "eval"
    main(
        [
            "evaluate",
            "--config",
            str(toy),
            "--artifact",
            str(tmp_path / "onnx"),
            "--form",
            "fp32",
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    report = json.loads((out / "evaluation.json").read_text())
    assert report["metrics"]["test_recall"] == pytest.approx(manifest["parity_data"]["pytorch"]["recall"], abs=1e-6)
    assert report["examples"] > 0 and report["batches"] > 0

    # Served from the artifact alone, by what the task declared.
    from lightkit.export.runtime.serving import Artifact

    label, probabilities = next(Artifact(tmp_path / "onnx", form="fp32", device="cpu").classify(["a short text"]))
    assert label in manifest["labels"] and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_task_without_an_export_says_so(toy: Path, tmp_path: Path) -> None:
    main(["fit", "--config", str(toy), "--trainer.max_epochs", "1", "--model.init_args.save_dir", str(tmp_path / "hf")])
    ckpt = next((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    from lightkit.io.errors import InputError

    source = (tmp_path / "toy_objective.py").read_text().replace('export_kind = "encoder"', "export_kind = None")
    (tmp_path / "toy_objective.py").write_text(source)
    import sys

    sys.modules.pop("toy_objective", None)
    with pytest.raises(InputError, match="BalancedRecallTask declares no export"):
        main(["export", "--config", str(toy), "--ckpt_path", str(ckpt), "--output", str(tmp_path / "onnx")])
