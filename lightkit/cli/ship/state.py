"""What a run folder has finished: one `stage.json` per stage, written when the stage completes.

A stage is done when its `stage.json` exists, its fingerprint equals the one its inputs give now
and every file it lists as output is still there; a done stage is skipped, so a failed or killed
run resumes at the stage that did not finish. A stage's fingerprint hashes its own settings and
its upstream stages' fingerprints, so a change anywhere reaches every stage that depends on it.
Changed settings under a finished stage are refused (the folder would mix two configs) unless
`--force`, which clears that stage and every later one and runs them again.

A training stage killed part-way resumes from its `last.ckpt`. Its `started.json` (the fingerprint
it started with) tells that apart from a finished stage that must run again: only a stage that
never finished, with the inputs it has now, resumes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError

RECORD = "stage.json"
STARTED = "started.json"


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / RECORD


def read_record(run_dir: Path, stage: str) -> dict[str, Any] | None:
    path = record_path(run_dir, stage)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # torn by hand: treated as unfinished, the stage runs again


def output_files(outputs: Any) -> list[Path]:
    """Every path a record's outputs name (values under keys ending in `_path`, at any depth)."""
    found: list[Path] = []
    if isinstance(outputs, dict):
        for key, value in outputs.items():
            if key.endswith("_path") and isinstance(value, str):
                found.append(Path(value))
            else:
                found += output_files(value)
    elif isinstance(outputs, list):
        for value in outputs:
            found += output_files(value)
    return found


def is_done(record: dict[str, Any] | None, expected: str) -> bool:
    return (
        record is not None
        and record.get("fingerprint") == expected
        and all(p.exists() for p in output_files(record.get("outputs")))
    )


def plan(
    run_dir: Path, prints: dict[str, str], force: bool, config_file: Path, start: str | None = None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The finished stages' records and the stages to run; refuse changed settings under a finished stage.

    `prints` holds each selected stage's fingerprint, in pipeline order. Stages after the first
    one that must run (or `start`, `--from`) also run: their inputs are being rewritten.
    """
    done: dict[str, dict[str, Any]] = {}
    stages = list(prints)
    for i, stage in enumerate(stages):
        record = read_record(run_dir, stage)
        if stage != start and is_done(record, prints[stage]):
            done[stage] = record
            continue
        if stage != start and record is not None and record.get("fingerprint") != prints[stage] and not force:
            raise InputError(
                f"{config_file}: the settings of stage {stage!r} changed since it finished in {run_dir} (fingerprint "
                f"{record.get('fingerprint')} -> {prints[stage]}); rerun from it with --force, or set another "
                "ship.run_dir"
            )
        return done, stages[i:]
    return done, []


def clear(run_dir: Path, stage: str) -> None:
    shutil.rmtree(run_dir / stage, ignore_errors=True)


def mark_started(run_dir: Path, stage: str, expected: str) -> None:
    """Note the inputs a stage is starting with, so a kill part-way can be told from a finished
    stage whose inputs have since changed: the checkpoints of both look alike."""
    atomic_write_text(run_dir / stage / STARTED, json.dumps({"stage": stage, "fingerprint": expected}) + "\n")


def may_resume(run_dir: Path, stage: str, expected: str) -> bool:
    """The stage was killed part-way with the inputs it has now: started with this fingerprint and
    never finished. A finished stage that runs again (its inputs changed, `--force`, `--from`)
    starts afresh: resuming its last checkpoint would return the old model without training."""
    path = run_dir / stage / STARTED
    if read_record(run_dir, stage) is not None or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("fingerprint") == expected
    except json.JSONDecodeError:
        return False


def write_record(run_dir: Path, stage: str, expected: str, outputs: dict[str, Any], wall_s: float) -> dict[str, Any]:
    record = {"stage": stage, "fingerprint": expected, "wall_s": round(wall_s, 2), "outputs": outputs}
    atomic_write_text(record_path(run_dir, stage), json.dumps(record, indent=2) + "\n")
    return record
