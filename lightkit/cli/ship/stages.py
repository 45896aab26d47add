"""The pipeline's stages, each one a call of an existing `lightkit` command into the run folder.

The training stages (fit, distill, distill-qat, qat) write `<stage>/config.yaml`, an ordinary
lightkit config (the user's, with the stage's settings merged over it and every path it writes
moved into `<stage>/`), and run `lightkit fit` on it; that file is what `lightkit test`, `export`,
`evaluate` and `benchmark` are then given for that model, so a stage can be rerun by hand from
the run folder. Nothing here trains, exports or scores anything itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import CSVLogger

from lightkit.cli.ship.settings import MODEL_STAGES, ShipSettings
from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError
from lightkit.tasks import Distillation

Cli = Callable[[list[str]], Any]
CHECKPOINT_CALLBACKS = ("ModelCheckpoint", "LastCheckpoint")


@dataclass
class Context:
    settings: ShipSettings
    cli: Cli
    records: dict[str, dict[str, Any]]  # the finished stages' records (stage.json), by stage
    datamodule: Any = None  # the SFT config's DataModule, built once per run (chain.datamodule)

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir

    def models(self) -> dict[str, dict[str, Any]]:
        """The trained models so far (fit and the students), by the stage that trained them."""
        return {s: self.records[s] for s in MODEL_STAGES if s in self.records}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, mappings merged key by key, anything else (lists too) replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def relocate(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Every path the config writes to (root dir, checkpoints, loggers, saved model) moved into `folder`."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(folder)
    for entry in trainer.get("callbacks") or []:
        if not isinstance(entry, dict):
            continue
        named = str(entry.get("class_path", "")).rsplit(".", 1)[-1] in CHECKPOINT_CALLBACKS
        if named or "dirpath" in (entry.get("init_args") or {}):
            # A fixed folder, not Lightning's default under the logger's version: a resumed fit
            # finds its last.ckpt there.
            entry.setdefault("init_args", {})["dirpath"] = str(folder / "checkpoints")
    loggers = trainer.get("logger")
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(entry, dict) and "save_dir" in (entry.get("init_args") or {}):
            entry["init_args"]["save_dir"] = str(folder)
    config["model"].setdefault("init_args", {})["save_dir"] = str(folder / "hf_model")
    return config


def stage_config(ctx: Context, stage: str) -> dict[str, Any]:
    """The config `lightkit fit` runs for a training stage."""
    base = ctx.settings.base
    if stage == "fit":
        return relocate(base, ctx.run_dir / stage)
    teacher = ctx.records["fit"]["outputs"]
    objective = base["model"]["class_path"].rsplit(".", 1)[-1]
    init = {k: v for k, v in (base["model"].get("init_args") or {}).items() if k not in ("pretrained", "model_config")}
    callbacks = list((base.get("trainer") or {}).get("callbacks") or [])
    if stage in ("distill", "distill-qat"):
        section = ctx.settings.section("distill")
        student = next((c for c in Distillation.__subclasses__() if c.objective.__name__ == objective), None)
        if student is None:
            raise InputError(f"{ctx.settings.config_file}: ship.distill: no distillation task for {objective}")
        model = {"class_path": student.__name__, "init_args": {**init, "teacher": teacher["ckpt_path"]}}
        model = merge(model, {"init_args": section.get("model", {})})
    else:  # qat: the fitted model fine-tuned with fake quantisation
        section = ctx.settings.section("qat")
        init["pretrained"] = teacher["hf_model_path"]
        model = {"class_path": base["model"]["class_path"], "init_args": init}
        model = merge(model, {"init_args": section.get("model", {})})
    trainer = merge(base.get("trainer") or {}, section.get("trainer", {}))
    if stage in ("distill-qat", "qat"):
        qat = {"class_path": "QuantizationAwareTraining", "init_args": ctx.settings.section("qat").get("callback", {})}
        trainer["callbacks"] = [*callbacks, qat]
    return relocate({**base, "model": model, "trainer": trainer}, ctx.run_dir / stage)


def resumable(ctx: Context, stage: str, config: dict[str, Any] | None = None) -> bool:
    """A training stage killed part-way: its folder holds the same config (`config`, by default
    `stage_config`'s) and a `last.ckpt` (LastCheckpoint's), which `lightkit fit --ckpt_path last`
    continues exactly."""
    folder = ctx.run_dir / stage
    config_path = folder / "config.yaml"
    if (config is None and stage not in MODEL_STAGES) or not (folder / "checkpoints" / "last.ckpt").is_file():
        return False
    config = stage_config(ctx, stage) if config is None else config
    return config_path.is_file() and config_path.read_text() == yaml.safe_dump(config, sort_keys=False)


def train(ctx: Context, stage: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """`lightkit fit` of a training stage's config (`config`, by default `stage_config`'s), written
    to `<stage>/config.yaml` first; returns the stage's outputs."""
    folder = ctx.run_dir / stage
    config_path = folder / "config.yaml"
    config = stage_config(ctx, stage) if config is None else config
    resume = ["--ckpt_path", "last"] if resumable(ctx, stage, config) else []
    atomic_write_text(config_path, yaml.safe_dump(config, sort_keys=False))
    done = ctx.cli(["fit", "--config", str(config_path), *resume])
    trainer = done.trainer
    # The best checkpoint of whichever ModelCheckpoint keeps one (LastCheckpoint keeps only last.ckpt).
    callback = next((c for c in trainer.checkpoint_callbacks if c.best_model_path), trainer.checkpoint_callback)
    ckpt = (callback.best_model_path or callback.last_model_path) if callback else ""
    if not ckpt:
        raise InputError(f"{config_path}: stage {stage!r} wrote no checkpoint; ship needs checkpointing left on")
    csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    outputs = {
        "config_path": str(config_path),
        "ckpt_path": str(ckpt),
        "hf_model_path": str(done.model.hf_save_dir()),
        "monitor": getattr(callback, "monitor", None),
        "best_score": float(callback.best_model_score) if getattr(callback, "best_model_score", None) else None,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
    }
    if csv is not None:
        outputs["metrics_csv_path"] = str(Path(csv.log_dir) / "metrics.csv")
    return outputs


def test(ctx: Context) -> dict[str, Any]:
    models = {}
    for name, record in ctx.models().items():
        folder = ctx.run_dir / "test" / name
        model = record["outputs"]
        done = ctx.cli([
            "test", "--config", model["config_path"], "--ckpt_path", model["ckpt_path"],
            "--trainer.default_root_dir", str(folder), "--trainer.logger", "false",
        ])  # fmt: skip
        metrics = {k: float(v) for k, v in done.trainer.callback_metrics.items() if k.startswith("test_")}
        atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        models[name] = {"metrics_path": str(folder / "metrics.json")}  # the task's reports lie beside it
    return {"models": models}


def settings_file(folder: Path, name: str, settings: dict[str, Any]) -> str:
    """A command's own settings as a YAML `--config` (lists and mappings pass intact, unlike flags)."""
    path = folder / f"{name}.settings.yaml"
    atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))
    return str(path)


def export(ctx: Context) -> dict[str, Any]:
    section = dict(ctx.settings.section("export"))
    models = {}
    folder = ctx.run_dir / "export"
    for name, record in ctx.models().items():
        model = record["outputs"]
        settings = {**section, "ckpt_path": model["ckpt_path"], "output": str(folder / name), "overwrite": True}
        if section.get("forms") and name in ("distill-qat", "qat") and "qat" not in section["forms"]:
            settings["forms"] = [*section["forms"], "qat"]  # the form a QAT model was trained for
        ctx.cli(["export", "--config", model["config_path"], "--config", settings_file(folder, name, settings)])
        models[name] = {"manifest_path": str(folder / name / "manifest.json")}
    return {"models": models}


def artifacts(ctx: Context) -> dict[str, Path]:
    """The export stage's artifact folders, by model."""
    return {name: Path(a["manifest_path"]).parent for name, a in ctx.records["export"]["outputs"]["models"].items()}


def evaluate(ctx: Context) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, artifact in artifacts(ctx).items():
        config = ctx.records[name]["outputs"]["config_path"]
        for form in json.loads((artifact / "manifest.json").read_text())["forms"]:
            output = ctx.run_dir / "evaluate" / name / form
            ctx.cli(["evaluate", "--config", config, "--artifact", str(artifact), "--form", form,
                     "--output", str(output)])  # fmt: skip
            models.setdefault(name, {})[form] = {"evaluation_path": str(output / "evaluation.json")}
    return {"models": models}


def benchmark(ctx: Context) -> dict[str, Any]:
    section = ctx.settings.section("benchmark")
    models = {}
    folder = ctx.run_dir / "benchmark"
    for name, artifact in artifacts(ctx).items():
        model = ctx.records[name]["outputs"]
        settings = {**section, "artifact": str(artifact), "ckpt_path": model["ckpt_path"], "output": str(folder / name)}
        ctx.cli(["benchmark", "--config", model["config_path"], "--config", settings_file(folder, name, settings)])
        models[name] = {"benchmark_path": str(folder / name / "benchmark.json")}
    return {"models": models}
