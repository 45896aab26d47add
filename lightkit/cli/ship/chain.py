"""The decoder chain of `lightkit ship` (`ship.pipeline: decoder`): what RLHF users run after SFT.

    fit       lightkit fit of the config itself: the SFT run (LoRA, merged into fit/hf_model)
    pairs     the SFT model samples k answers per training prompt, ranked by the reward callables
              (lightkit.data.sampled_pairs): best over worst for DPO, every ranked pair for a
              reward model (a fifth of the prompts held out), and the validation prompts
    reward    lightkit fit of ship.reward.config (a RewardModelTask) on those pairs
    dpo, ppo, grpo
              lightkit fit of each one's config from the SFT model, with fresh adapters (so the
              reference is the SFT model); DPO on the pairs, PPO against the reward model when its
              config names one
    evaluate  every model (zero-shot, SFT, each method) answers the held-out test split greedily:
              reward, ROUGE, KL to SFT, length (lightkit.metrics.answers); the reward model's
              held-out pair accuracy and its correlation with the callables on those answers
    export    lightkit export of the chosen models' merged hf_model (int8-cpu by default)
    generate  lightkit generate with each artifact on the first test prompts, greedy and refined
    report    lightkit.cli.ship.chain_report

Each training stage's config is the stage's own config file (`ship.<stage>.config`) with the
section's `model`, `trainer` and `data` settings merged over it, its inputs pointed at the earlier
stages' outputs (`policy_config`), and every path it writes moved into `<run_dir>/<stage>/`; it is
written to `<stage>/config.yaml`, so any stage can be rerun by hand. The prompts of PPO and GRPO
are carved from the same data as the SFT run when their data module is the same class (its file,
holdout and split seed are taken from the SFT config), so the test split is never trained on.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from lightkit.cli.ship import stages as S
from lightkit.cli.ship.settings import POLICY_STAGES, ShipSettings, read_config
from lightkit.cli.ship.state import fingerprint
from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError
from lightkit.models.hub import load_causal_lm

TRAINED_STAGES = ("fit", "reward", *POLICY_STAGES)
# What the prompts of PPO and GRPO take from the SFT config's data when both use the same class.
SHARED_DATA = ("train_file", "holdout", "split_seed", "prompt_template", "format", "system_prompt")


def fingerprints(settings: ShipSettings) -> dict[str, str]:
    """Each stage's own settings (its config file's text included) and those of what it reads."""
    section = settings.section
    own: dict[str, str] = {"fit": fingerprint("fit", settings.base)}
    own["pairs"] = fingerprint("pairs", own["fit"], section("pairs"))

    def trained(stage: str, *inputs: str) -> str:
        text = Path(section(stage)["config"]).read_text() if Path(section(stage).get("config", "")).is_file() else ""
        return fingerprint(stage, section(stage), text, *(own.get(i) for i in inputs))

    own["reward"] = trained("reward", "pairs")
    own["dpo"] = trained("dpo", "fit", "pairs")
    own["ppo"] = trained("ppo", "fit", "reward")
    own["grpo"] = trained("grpo", "fit")
    models = {s: own[s] for s in TRAINED_STAGES if s in settings.stages}
    own["evaluate"] = fingerprint("evaluate", models, section("evaluate"), section("pairs").get("reward_fn"))
    own["export"] = fingerprint("export", models, section("export"))
    own["generate"] = fingerprint("generate", own["export"], section("generate"), section("pairs").get("reward_fn"))
    return {stage: own[stage] for stage in settings.stages if stage != "report"}


def outputs(ctx: S.Context, stage: str) -> dict[str, Any]:
    return ctx.records[stage]["outputs"]


def policy_config(ctx: S.Context, stage: str) -> dict[str, Any]:
    """The config `lightkit fit` runs for the reward model or a method (module docstring)."""
    section = ctx.settings.section(stage)
    where = f"{ctx.settings.config_file}: ship.{stage}"
    file = Path(section["config"])
    config = {k: v for k, v in read_config(file, f"{where}.config").items() if k != "ship"}
    if not isinstance(config.get("model"), dict):
        raise InputError(f"{file}: expected a lightkit config with model and data sections")
    config["model"] = S.merge(config["model"], {"init_args": section.get("model", {})})
    config["data"] = S.merge(config.get("data") or {}, {"init_args": section.get("data", {})})
    config["trainer"] = S.merge(config.get("trainer") or {}, section.get("trainer", {}))
    model = config["model"].setdefault("init_args", {})
    data = config["data"].setdefault("init_args", {})
    if stage == "reward":
        pairs = outputs(ctx, "pairs")
        data["train_file"], data["val_file"] = pairs["every_path"], pairs["every_val_path"]
        return S.relocate(config, ctx.run_dir / stage)
    sft = outputs(ctx, "fit")["hf_model_path"]
    model["pretrained"] = sft  # fresh adapters on the merged SFT model, which is also the reference
    model.pop("model_config", None)
    data["tokenizer"] = sft
    base = ctx.settings.base["data"]
    base_args = base.get("init_args") or {}
    if stage == "dpo":
        # The pairs hold each prompt's user turn as the SFT data formatted it: rendered as it was
        # (same format and system prompt), not formatted twice.
        data["train_file"] = outputs(ctx, "pairs")["dpo_path"]
        data["prompt_template"] = "{prompt}"
        data.update({k: v for k, v in base_args.items() if k in ("format", "system_prompt")})
    if model.get("reward_model"):
        if "reward" not in ctx.records:
            raise InputError(
                f"{section['config']}: model.init_args.reward_model: {stage} scores with the learned reward; list "
                "the reward stage in ship.stages, or drop reward_model from the config"
            )
        model["reward_model"] = outputs(ctx, "reward")["hf_model_path"]
    if config["data"].get("class_path") == base["class_path"]:
        data.update({k: v for k, v in base_args.items() if k in SHARED_DATA})
    for entry in config["trainer"].get("callbacks") or []:
        if isinstance(entry, dict) and str(entry.get("class_path", "")).endswith("GenerationMetrics"):
            args = entry.setdefault("init_args", {})
            if args.get("prompts") and "pairs" in ctx.records:  # the SFT run's own validation prompts
                args["prompts"] = outputs(ctx, "pairs")["val_prompts_path"]
    return S.relocate(config, ctx.run_dir / stage)


def config_of(ctx: S.Context, stage: str) -> dict[str, Any] | None:
    """The config a training stage runs: the ship config's own for fit, `policy_config` otherwise."""
    if stage == "fit":
        return S.relocate(ctx.settings.base, ctx.run_dir / "fit")
    return policy_config(ctx, stage) if stage in TRAINED_STAGES else None


def resumable(ctx: S.Context, stage: str) -> bool:
    config = config_of(ctx, stage)
    return config is not None and S.resumable(ctx, stage, config)


def datamodule(ctx: S.Context) -> Any:
    """The SFT config's DataModule, on the SFT model's tokenizer: the prompts every stage reads
    (built once per run of the pipeline)."""
    if ctx.datamodule is not None:
        return ctx.datamodule
    spec = ctx.settings.base["data"]
    name = str(spec["class_path"])
    module, _, cls = name.rpartition(".")
    found = getattr(importlib.import_module(module or "lightkit.data"), cls, None)
    if found is None:
        raise InputError(f"{ctx.settings.config_file}: data.class_path: no DataModule {name!r}")
    args = {**(spec.get("init_args") or {}), "tokenizer": outputs(ctx, "fit")["hf_model_path"]}
    ctx.datamodule = found(**args)
    return ctx.datamodule


def split_rows(ctx: S.Context, dm: Any, split: str) -> list[dict[str, str]]:
    """`{user, rendered, reference}` for each row of a split of the SFT run's data (`dm`, `datamodule`'s)."""
    from lightkit.data.sampled_pairs import prompt_rows

    return prompt_rows(dm.splits(dm._read, dm.split_key)[split], f"{ctx.settings.config_file}: data ({split})")


def reward_of(ctx: S.Context, stage: str) -> Any:
    """The reward callables of `ship.<stage>` or, when it sets none, of `ship.pairs`."""
    from lightkit.rewards.scoring import build_reward

    section = ctx.settings.reward_section(stage)
    return build_reward(section["reward_fn"], None, weights=section.get("reward_weights"))


def pairs(ctx: S.Context) -> dict[str, Any]:
    from lightkit.data.sampled_pairs import pair_files, policy_pairs, write_pairs

    section = ctx.settings.section("pairs")
    folder = ctx.run_dir / "pairs"
    seed = int(section.get("seed", 13))
    dm = datamodule(ctx)
    train = split_rows(ctx, dm, "train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: section.get("rows", 256)]
    rows = [train[i] for i in order.tolist()]

    def progress(done: int, total: int) -> None:
        print(f"lightkit ship: pairs: sampled {done}/{total} prompts", flush=True)

    best, every = policy_pairs(
        load_causal_lm(outputs(ctx, "fit")["hf_model_path"]), dm.tokenizer, rows, reward_of(ctx, "pairs"),
        k=section.get("k", 4), min_margin=section.get("min_margin", 0.2),
        max_new_tokens=section.get("max_new_tokens", 24), temperature=section.get("temperature", 1.0),
        batch_size=section.get("batch_size", 8), seed=seed, progress=progress,
        every_margin=section.get("every_margin"),
    )  # fmt: skip
    if not best:
        raise InputError(
            f"{ctx.settings.config_file}: ship.pairs: no prompt's answers were min_margin apart; lower min_margin "
            "or sample more answers (k)"
        )
    counts = write_pairs(folder / "pairs.jsonl", best, every, len(rows), section.get("val_fraction", 0.2),
                         val_margin=section.get("min_margin", 0.2))  # fmt: skip
    # DPO's GenerationMetrics answers these: the SFT run's own validation prompts, as a prompts file.
    val = split_rows(ctx, dm, "validation")
    val_path = folder / "val_prompts.jsonl"
    atomic_write_text(val_path, "".join(json.dumps({"prompt": r["user"], "reference": r["reference"]},
                                                   ensure_ascii=False) + "\n" for r in val))  # fmt: skip
    files = pair_files(folder / "pairs.jsonl")
    return {
        "dpo_path": str(files["dpo"]),
        "every_path": str(files["every"]),
        "every_val_path": str(files["every_val"]),
        "val_prompts_path": str(val_path),
        "prompts": len(rows),
        "pairs": {Path(p).name: n for p, n in counts.items()},
    }


def trained_models(ctx: S.Context) -> dict[str, str]:
    """The chain's policies so far, by stage: their merged `hf_model` folders."""
    return {s: outputs(ctx, s)["hf_model_path"] for s in ("fit", *POLICY_STAGES) if s in ctx.records}


def evaluate(ctx: S.Context) -> dict[str, Any]:
    from lightkit.metrics.answers import PolicyComparison

    section = ctx.settings.section("evaluate")
    folder = ctx.run_dir / "evaluate"
    dm = datamodule(ctx)
    rows = split_rows(ctx, dm, "test")[: section.get("rows")]
    prompts, references = [r["rendered"] for r in rows], [r["reference"] for r in rows]
    comparison = PolicyComparison(outputs(ctx, "fit")["hf_model_path"], dm.tokenizer, prompts, references,
                                  reward_of(ctx, "evaluate"), section.get("max_new_tokens", 24),
                                  section.get("batch_size", 16))  # fmt: skip
    models = {}
    base = (ctx.settings.base["model"].get("init_args") or {}).get("pretrained")
    if base:
        models["zero_shot"] = str(base)
    models |= {"sft" if s == "fit" else s: path for s, path in trained_models(ctx).items()}
    found: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    rewards: list[float] = []
    for name, path in models.items():
        out, scores = comparison.score(path)
        rewards += scores.pop("rewards")
        answers[name] = out["answers"]
        file = folder / f"{name}.json"
        atomic_write_text(file, json.dumps({"model": path, "scores": scores, "answers": out["answers"],
                                            "references": references}, indent=2) + "\n")  # fmt: skip
        found[name] = {"evaluation_path": str(file)}
        print(f"lightkit ship: evaluate: {name}: reward {scores['reward']:+.3f}, ROUGE-L {scores['rougeL']:.3f}, "
              f"KL to SFT {scores['kl_to_sft']:.2f}", flush=True)  # fmt: skip
    result: dict[str, Any] = {"models": found, "rows": len(rows)}
    if "reward" in ctx.records:
        result["reward_model_path"] = str(reward_model(ctx, prompts, references, answers, rewards, folder))
    return result


def reward_model(ctx: S.Context, prompts: list[str], references: list[str], answers: dict[str, list[str]],
                 callable_: list[float], folder: Path) -> Path:  # fmt: skip
    """`reward_model_report` of the reward stage's model on the evaluated answers, as a file of the
    evaluate stage."""
    from lightkit.cli.ship.report import read_curves
    from lightkit.metrics.answers import reward_model_report
    from lightkit.tasks import REWARD_MODEL_TASKS

    trained = outputs(ctx, "reward")
    accuracy = [v for _, v in read_curves(trained.get("metrics_csv_path")).get("val_accuracy", [])]
    result = reward_model_report(
        trained["hf_model_path"], REWARD_MODEL_TASKS, accuracy, prompts, answers, callable_, references
    )
    path = folder / "reward_model.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def export(ctx: S.Context) -> dict[str, Any]:
    """Each chosen model's merged `hf_model`, exported with the SFT run's config (the same data for
    the parity gate); `ship.export.models` names them (default: SFT and every method)."""
    section = dict(ctx.settings.section("export"))
    chosen = section.pop("models", None) or list(trained_models(ctx))
    available = trained_models(ctx)
    folder = ctx.run_dir / "export"
    config = outputs(ctx, "fit")["config_path"]
    found = {}
    for i, name in enumerate(chosen):
        if name not in available:
            raise InputError(
                f"{ctx.settings.config_file}: ship.export.models[{i}]: {name!r} is not a model of this run; "
                f"expected some of {list(available)}"
            )
        settings = {"forms": ["int8-cpu"], **section, "output": str(folder / name), "overwrite": True}
        overrides = ["--model.init_args.pretrained", available[name], "--model.init_args.peft", "null"]
        ctx.cli(["export", "--config", config, "--config", S.settings_file(folder, name, settings), *overrides])
        found[name] = {"manifest_path": str(folder / name / "manifest.json")}
    return {"models": found}


def generate(ctx: S.Context) -> dict[str, Any]:
    """`lightkit generate` with every exported artifact on the first test prompts, greedy and then
    refined toward the reward, each file then scored with the chain's reward."""
    section = ctx.settings.section("generate")
    folder = ctx.run_dir / "generate"
    dm = datamodule(ctx)
    rows = split_rows(ctx, dm, "test")[: section.get("rows", 8)]
    prompts = folder / "prompts.jsonl"
    atomic_write_text(prompts, "".join(json.dumps({"prompt": r["user"], "reference": r["reference"]},
                                                  ensure_ascii=False) + "\n" for r in rows))  # fmt: skip
    reward_section = ctx.settings.reward_section("generate")
    reward = reward_of(ctx, "generate")
    chat = dm.chat
    found: dict[str, Any] = {}
    for name, entry in outputs(ctx, "export")["models"].items():
        artifact = Path(entry["manifest_path"]).parent
        form = section.get("form") or next(iter(json.loads(Path(entry["manifest_path"]).read_text())["forms"]))
        for mode in ("greedy", "refined"):
            out = folder / name / f"{mode}.jsonl"
            settings: dict[str, Any] = {
                "artifact": str(artifact), "form": form, "prompts": str(prompts), "output": str(out),
                "chat": chat, "max_new_tokens": section.get("max_new_tokens", 24),
                "batch_size": section.get("batch_size", 8),
            }  # fmt: skip
            if mode == "refined":
                settings |= {"refine": True, "refine_calls": section.get("refine_calls", 16),
                             "refine_top_k": section.get("refine_top_k", 4),
                             "reward_fn": reward_section["reward_fn"],
                             "reward_weights": reward_section.get("reward_weights")}  # fmt: skip
            ctx.cli(["generate", "--config", S.settings_file(folder / name, mode, settings)])
            written = [json.loads(line) for line in out.read_text().splitlines()]
            scores = reward([r["rendered"] for r in rows], [w["response"] for w in written],
                            reference=[r["reference"] for r in rows])  # fmt: skip
            scored = folder / name / f"{mode}.scores.json"
            atomic_write_text(scored, json.dumps({"form": form, "mean_reward": float(scores.mean()),
                                                  "rewards": scores.tolist()}, indent=2) + "\n")  # fmt: skip
            found.setdefault(name, {})[mode] = {"answers_path": str(out), "scores_path": str(scored)}
    return {"models": found, "rows": len(rows)}


RUNNERS = {
    **{stage: (lambda ctx, stage=stage: S.train(ctx, stage, config_of(ctx, stage))) for stage in TRAINED_STAGES},
    "pairs": pairs,
    "evaluate": evaluate,
    "export": export,
    "generate": generate,
}
