"""Every shipped YAML parses against the real signatures, so no config can drift from the code."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from lightkit.cli.main import main
from lightkit.io.errors import InputError

# Overlays: settings laid over a training config (`--config job.yaml --config overlay.yaml`).
EXPORT_CONFIGS = sorted((ROOT / "configs" / "export").glob("*.yaml"))
SCALE_CONFIGS = sorted((ROOT / "configs" / "scale").glob("*.yaml"))
OVERLAYS = EXPORT_CONFIGS + SCALE_CONFIGS
CONFIGS = [p for p in sorted((ROOT / "configs").rglob("*.yaml")) if p not in OVERLAYS]
CONFIGS += sorted((ROOT / "tests" / "conf").rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert any(p.parent.name == "configs" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses(path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert printed["model"]["class_path"].startswith("lightkit.tasks.")
    assert printed["data"]["class_path"].startswith("lightkit.data.")


SHIPPED = [p for p in CONFIGS if p.parent.name == "configs"] + OVERLAYS


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_start_with_their_command(path: Path) -> None:
    first = path.read_text().splitlines()[:4]
    assert any(f"--config {path.relative_to(ROOT)}" in line for line in first), (
        "head each config with the command that runs it"
    )


@pytest.mark.parametrize("path", EXPORT_CONFIGS, ids=lambda p: p.name)
def test_export_configs_parse_beside_their_training_config(path: Path) -> None:
    out = io.StringIO()
    training = ROOT / "configs" / path.name
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["export", "--config", str(training), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert printed["output"] and printed["ckpt_path"] and printed["model"]["class_path"].startswith("lightkit.tasks.")


def test_unknown_key_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "tests/conf/ner.yaml"), "--model.init_args.learnin_rate", "0.1"])
    assert "learnin_rate" in capsys.readouterr().err


@pytest.mark.parametrize("path", SCALE_CONFIGS, ids=lambda p: p.name)
def test_scale_configs_parse_over_the_job_their_header_names(path: Path) -> None:
    header = path.read_text().splitlines()[1]
    job = header.split("--config ")[1].strip()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / job), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert printed["trainer"]["strategy"]["class_path"].startswith("lightning.pytorch.strategies.")


def test_one_parser_lists_and_reads_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    """generate and ship sit on the one LightningCLI parser: listed by --help, settings from flags
    or --config, --print_config as for the others."""
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "export", "evaluate", "benchmark", "generate", "ship"):
        assert f"\n    {name} " in listed, name
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["generate", "runs/x/onnx", "--chat", "--max_new_tokens", "8", "--print_config"])
    printed = yaml.safe_load(out.getvalue())
    assert (printed["artifact"], printed["chat"], printed["max_new_tokens"]) == ("runs/x/onnx", True, 8)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["ship", "--config", str(ROOT / "configs" / "ner_ship.yaml"), "--from", "export", "--print_config"])
    printed = yaml.safe_load(out.getvalue())
    assert printed["start"] == "export" and printed["ship"]["run_dir"] and printed["model"]["class_path"]


def test_a_command_that_builds_a_task_says_when_there_is_none() -> None:
    with pytest.raises(InputError, match=r"lightkit fit: no model and no data to build; give a config"):
        main(["fit", "--trainer.fast_dev_run", "true"])
