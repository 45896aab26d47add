"""The `ship:` section of a config: which stages run, where, and with what settings.

    ship:
      run_dir: runs/ner_ship
      stages: [fit, test, distill-qat, qat, export, evaluate, benchmark, report]
      distill: {model: {student_layers: [0, 2, 4]}, trainer: {max_epochs: 4}}
      qat: {callback: {freeze_observers_step: 120}, model: {learning_rate: 2.0e-5}, trainer: {max_epochs: 2}}
      export: {forms: [fp32, int8-cpu]}
      benchmark: {batch_sizes: [1, 64], repeats: 20}

Each key maps onto something that already exists: `model` and `trainer` onto the same sections of
the config (merged over them), `qat.callback` onto QuantizationAwareTraining's arguments, `export`
and `benchmark` onto the settings of `lightkit export` and `lightkit benchmark`. The rest of the
file is an ordinary lightkit config: the `fit` stage trains exactly what `lightkit fit` would.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lightkit.io.errors import InputError

# Every stage, in the order they run; a config lists the ones it wants.
STAGES = ("fit", "distill", "distill-qat", "qat", "test", "export", "evaluate", "benchmark", "report")
# The stages that train a model of their own (each one's model is tested, exported, evaluated, timed).
MODEL_STAGES = ("fit", "distill", "distill-qat", "qat")
# What a stage reads, by stage: listing a stage without its input is refused up front.
NEEDS = {
    "distill": "fit",
    "distill-qat": "fit",
    "qat": "fit",
    "test": "fit",
    "export": "fit",
    "evaluate": "export",
    "benchmark": "export",
}
DEFAULT_STAGES = ["fit", "test", "export", "evaluate", "benchmark", "report"]
SECTIONS = {
    "distill": {"model", "trainer"},
    "qat": {"callback", "model", "trainer"},
    "export": {"forms", "tolerance", "parity_batches", "opset"},
    "benchmark": {"batch_sizes", "repeats", "warmup", "rounds"},
}


@dataclasses.dataclass(frozen=True)
class ShipSettings:
    """The parsed `ship:` section (see the module docstring); `base` is the config without it."""

    config_file: Path
    run_dir: Path
    stages: list[str]
    sections: dict[str, dict[str, Any]]
    base: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.get(name, {})


def parse(config: dict[str, Any], config_file: Path) -> ShipSettings:
    """Check the `ship:` section of `config` (read from `config_file`); every error names its field."""
    where = f"{config_file}: ship"
    ship = config.get("ship")
    if not isinstance(ship, dict):
        raise InputError(f"{config_file}: no `ship:` section; lightkit ship needs one with at least `run_dir`")
    unknown = sorted(set(ship) - {"run_dir", "stages", *SECTIONS})
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; expected run_dir, stages, {', '.join(SECTIONS)}")
    if not isinstance(ship.get("run_dir"), str) or not ship["run_dir"]:
        raise InputError(f"{where}.run_dir: expected the run folder's path, got {ship.get('run_dir')!r}")
    stages = ship.get("stages", DEFAULT_STAGES)
    if not isinstance(stages, list) or not stages:
        raise InputError(f"{where}.stages: expected a list of stage names from {list(STAGES)}, got {stages!r}")
    for i, name in enumerate(stages):
        if name not in STAGES:
            raise InputError(f"{where}.stages[{i}]: unknown stage {name!r}; expected one of {list(STAGES)}")
    if len(set(stages)) != len(stages):
        raise InputError(f"{where}.stages: lists a stage twice: {stages}")
    for name in stages:
        if NEEDS.get(name) and NEEDS[name] not in stages:
            raise InputError(
                f"{where}.stages: stage {name!r} reads the output of {NEEDS[name]!r}, which is not listed; add it"
            )
    sections: dict[str, dict[str, Any]] = {}
    for name, keys in SECTIONS.items():
        value = ship.get(name) or {}
        if not isinstance(value, dict):
            raise InputError(f"{where}.{name}: expected a mapping with keys from {sorted(keys)}, got {value!r}")
        extra = sorted(set(value) - keys)
        if extra:
            raise InputError(f"{where}.{name}: unknown keys {extra}; expected some of {sorted(keys)}")
        for key in ("model", "trainer", "callback"):
            if key in value and not isinstance(value[key], dict):
                raise InputError(f"{where}.{name}.{key}: expected a mapping of settings, got {value[key]!r}")
        sections[name] = value
    base = {k: v for k, v in config.items() if k != "ship"}
    for key in ("model", "data"):
        if not isinstance(base.get(key), dict) or "class_path" not in base[key]:
            raise InputError(f"{config_file}: {key}: expected a `class_path` and its `init_args`, as for lightkit fit")
    ordered = [s for s in STAGES if s in stages]  # they run in pipeline order, whatever order they are listed in
    return ShipSettings(config_file, Path(ship["run_dir"]), ordered, sections, base)
