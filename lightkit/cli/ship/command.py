"""`lightkit ship --config X.yaml`: run the config's `ship:` pipeline into its run folder.

    lightkit ship --config configs/ner_ship.yaml            # runs what is not done yet
    lightkit ship --config configs/ner_ship.yaml --force    # settings changed: rerun from there
    lightkit ship --config configs/ner_ship.yaml --from export
    lightkit ship --config configs/headlines_ship.yaml      # a decoder's chain: SFT, pairs, reward, DPO/PPO/GRPO

The stages run in order (lightkit.cli.ship.settings.STAGES); each one skips when it finished before
with the same inputs (lightkit.cli.ship.state), so rerunning after a failure or a kill resumes at the
stage that did not finish: from scratch, or for a training stage killed part-way with its
config unchanged, from its `last.ckpt` (LastCheckpoint's). A stage's error stops the pipeline with
that error; finished stages stay. The report is written last, every run, from the stage records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightkit.cli.ship import chain
from lightkit.cli.ship import stages as S
from lightkit.cli.ship.chain_report import write_chain_report
from lightkit.cli.ship.report import write_report
from lightkit.cli.ship.settings import MODEL_STAGES, ShipSettings, parse, read_config
from lightkit.cli.ship.state import clear, fingerprint, mark_started, may_resume, plan, write_record
from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError


def fingerprints(settings: ShipSettings) -> dict[str, str]:
    """Each selected stage's fingerprint: its own settings and those of the stages it reads."""
    section = settings.section
    fit = fingerprint("fit", settings.base)
    own = {
        "fit": fit,
        "distill": fingerprint("distill", fit, section("distill")),
        "distill-qat": fingerprint("distill-qat", fit, section("distill"), section("qat").get("callback")),
        "qat": fingerprint("qat", fit, section("qat")),
    }
    models = {s: own[s] for s in MODEL_STAGES if s in settings.stages}
    own["test"] = fingerprint("test", models)
    own["export"] = fingerprint("export", models, section("export"))
    own["evaluate"] = fingerprint("evaluate", own["export"])
    own["benchmark"] = fingerprint("benchmark", own["export"], section("benchmark"))
    return {stage: own[stage] for stage in settings.stages if stage != "report"}  # the report always runs


RUNNERS: dict[str, Callable[[S.Context], dict[str, Any]]] = {
    **{stage: (lambda ctx, stage=stage: S.train(ctx, stage)) for stage in MODEL_STAGES},
    "test": S.test,
    "export": S.export,
    "evaluate": S.evaluate,
    "benchmark": S.benchmark,
}


# Per `ship.pipeline`: its stages' fingerprints, runners, the check for a resumable training stage,
# and its report.
PIPELINES: dict[str, tuple[Callable[..., Any], dict[str, Any], Callable[..., bool], Callable[..., Any]]] = {
    "models": (fingerprints, RUNNERS, S.resumable, write_report),
    "decoder": (chain.fingerprints, chain.RUNNERS, chain.resumable, write_chain_report),
}


def ship(config_file: str, cli: S.Cli, force: bool = False, start: str | None = None) -> Path:
    """Run the pipeline of `config_file`; returns the run folder."""
    path = Path(config_file)
    settings = parse(read_config(path), path)
    if start is not None and start not in settings.stages:
        raise InputError(f"--from: {start!r} is not one of this config's stages {settings.stages}")
    stage_prints, runners, resumable, report = PIPELINES[settings.pipeline]
    prints = stage_prints(settings)
    records, todo = plan(settings.run_dir, prints, force, path, start)
    atomic_write_text(settings.run_dir / "config.yaml", path.read_text())  # the config the run folder holds
    done = list(records)
    ctx = S.Context(settings, cli, records)
    for stage in done:
        print(f"lightkit ship: {stage}: done before with the same inputs, skipped")
    for stage in todo:
        if may_resume(settings.run_dir, stage, prints[stage]) and resumable(ctx, stage):
            print(f"lightkit ship: {stage}: resuming from its last.ckpt (same config)")
        else:
            clear(settings.run_dir, stage)  # a half-written folder of a killed run never mixes in
            print(f"lightkit ship: {stage}: running")
        mark_started(settings.run_dir, stage, prints[stage])
        began = time.perf_counter()
        try:
            outputs = runners[stage](ctx)
        except Exception as e:
            print(f"lightkit ship: {stage}: failed; the stages before it are kept ({settings.run_dir})")
            if isinstance(e, (InputError, FileNotFoundError)):
                raise type(e)(f"ship stage {stage!r}: {e}") from None
            raise
        wall = time.perf_counter() - began
        records[stage] = write_record(settings.run_dir, stage, prints[stage], outputs, wall)
        print(f"lightkit ship: {stage}: done in {wall:.0f} s")
    if "report" in settings.stages:
        markdown, html = report(settings, records)
        print(f"lightkit ship: report: {markdown} and {html}")
    return settings.run_dir
