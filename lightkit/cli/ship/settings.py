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

`pipeline: decoder` selects the chain of a decoder instead (lightkit.cli.ship.chain): the config
is the SFT run, and the stages after it sample preference pairs from the SFT model, train a
reward model and DPO, PPO and GRPO from it (each from its own config file), score every model on
the held-out split, export and generate:

    ship:
      pipeline: decoder
      run_dir: runs/headlines_ship
      stages: [fit, pairs, reward, dpo, ppo, grpo, evaluate, export, generate, report]
      pairs: {rows: 256, k: 4, min_margin: 0.2, reward_fn: [...], reward_weights: [...]}
      reward: {config: configs/reward_headlines.yaml}
      dpo: {config: configs/dpo_headlines.yaml, trainer: {max_steps: 40}}
      export: {forms: [int8-cpu], models: [fit, dpo]}
      generate: {rows: 8, refine_calls: 16}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

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

# The decoder chain (`pipeline: decoder`, lightkit.cli.ship.chain), in the order its stages run.
DECODER_STAGES = ("fit", "pairs", "reward", "dpo", "ppo", "grpo", "evaluate", "export", "generate", "report")
# The preference methods, each trained from the fit (SFT) model with its own config file.
POLICY_STAGES = ("dpo", "ppo", "grpo")
DECODER_NEEDS = {
    "pairs": "fit",
    "reward": "pairs",
    "dpo": "pairs",
    "ppo": "fit",
    "grpo": "fit",
    "evaluate": "fit",
    "export": "fit",
    "generate": "export",
}
TRAINED = {"config", "model", "trainer", "data"}  # a stage trained from its own config, with overrides
REWARD = {"reward_fn", "reward_weights"}
DECODER_SECTIONS = {
    "pairs": {"rows", "k", "min_margin", "every_margin", "temperature", "seed", "batch_size", "max_new_tokens"}
    | {"val_fraction"}
    | REWARD,
    "reward": TRAINED,
    "dpo": TRAINED,
    "ppo": TRAINED,
    "grpo": TRAINED,
    "evaluate": {"rows", "batch_size", "max_new_tokens", "samples"} | REWARD,
    "export": {"forms", "tolerance", "parity_batches", "opset", "models"},
    "generate": {"rows", "form", "max_new_tokens", "batch_size", "refine_calls", "refine_top_k"} | REWARD,
}
DECODER_DEFAULT_STAGES = list(DECODER_STAGES)
PIPELINES = {
    "models": (STAGES, NEEDS, SECTIONS, DEFAULT_STAGES),
    "decoder": (DECODER_STAGES, DECODER_NEEDS, DECODER_SECTIONS, DECODER_DEFAULT_STAGES),
}


@dataclasses.dataclass(frozen=True)
class ShipSettings:
    """The parsed `ship:` section (see the module docstring); `base` is the config without it."""

    config_file: Path
    run_dir: Path
    pipeline: str
    stages: list[str]
    sections: dict[str, dict[str, Any]]
    base: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.get(name, {})

    def reward_section(self, stage: str) -> dict[str, Any]:
        """The section whose `reward_fn` and `reward_weights` a decoder chain's `stage` scores with:
        its own where it sets `reward_fn`, else `ship.pairs`'s, which ranks the DPO pairs."""
        for section in (self.section(stage), self.section("pairs")):
            if section.get("reward_fn"):
                return section
        raise InputError(
            f"{self.config_file}: ship.{stage}.reward_fn: the chain ranks and scores answers with reward "
            "callables; set ship.pairs.reward_fn (a list of import paths) and reward_weights"
        )


def parse(config: dict[str, Any], config_file: Path) -> ShipSettings:
    """Check the `ship:` section of `config` (read from `config_file`); every error names its field."""
    where = f"{config_file}: ship"
    ship = config.get("ship")
    if not isinstance(ship, dict):
        raise InputError(f"{config_file}: no `ship:` section; lightkit ship needs one with at least `run_dir`")
    pipeline = ship.get("pipeline", "models")
    if pipeline not in PIPELINES:
        raise InputError(f"{where}.pipeline: expected one of {list(PIPELINES)}, got {pipeline!r}")
    all_stages, needs, all_sections, default_stages = PIPELINES[pipeline]
    unknown = sorted(set(ship) - {"pipeline", "run_dir", "stages", *all_sections})
    if unknown:
        raise InputError(
            f"{where}: unknown keys {unknown}; a {pipeline} pipeline takes pipeline, run_dir, stages, "
            f"{', '.join(all_sections)}"
        )
    if not isinstance(ship.get("run_dir"), str) or not ship["run_dir"]:
        raise InputError(f"{where}.run_dir: expected the run folder's path, got {ship.get('run_dir')!r}")
    stages = ship.get("stages", default_stages)
    if not isinstance(stages, list) or not stages:
        raise InputError(f"{where}.stages: expected a list of stage names from {list(all_stages)}, got {stages!r}")
    for i, name in enumerate(stages):
        if name not in all_stages:
            raise InputError(f"{where}.stages[{i}]: unknown stage {name!r}; expected one of {list(all_stages)}")
    if len(set(stages)) != len(stages):
        raise InputError(f"{where}.stages: lists a stage twice: {stages}")
    for name in stages:
        if needs.get(name) and needs[name] not in stages:
            raise InputError(
                f"{where}.stages: stage {name!r} reads the output of {needs[name]!r}, which is not listed; add it"
            )
    sections: dict[str, dict[str, Any]] = {}
    for name, keys in all_sections.items():
        value = ship.get(name) or {}
        if not isinstance(value, dict):
            raise InputError(f"{where}.{name}: expected a mapping with keys from {sorted(keys)}, got {value!r}")
        extra = sorted(set(value) - keys)
        if extra:
            raise InputError(f"{where}.{name}: unknown keys {extra}; expected some of {sorted(keys)}")
        for key in ("model", "trainer", "callback", "data"):
            if key in value and not isinstance(value[key], dict):
                raise InputError(f"{where}.{name}.{key}: expected a mapping of settings, got {value[key]!r}")
        if keys is TRAINED and name in stages and not isinstance(value.get("config"), str):
            raise InputError(f"{where}.{name}.config: expected the path of the stage's lightkit config (e.g. "
                             f"configs/{name}_headlines.yaml), got {value.get('config')!r}")  # fmt: skip
        sections[name] = value
    base = {k: v for k, v in config.items() if k != "ship"}
    for key in ("model", "data"):
        if not isinstance(base.get(key), dict) or "class_path" not in base[key]:
            raise InputError(f"{config_file}: {key}: expected a `class_path` and its `init_args`, as for lightkit fit")
    ordered = [s for s in all_stages if s in stages]  # they run in pipeline order, whatever order they are listed in
    return ShipSettings(config_file, Path(ship["run_dir"]), pipeline, ordered, sections, base)


def read_config(path: Path, where: str = "--config") -> dict[str, Any]:
    """A config file as a mapping: a missing file is named by `where`, bad YAML by its path."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: '{path}' does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping (trainer, model, data, ship), got {type(config).__name__}")
    return config
