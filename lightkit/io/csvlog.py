"""A run's CSV log read whole: Lightning's CSVLogger starts a new `version_N/metrics.csv` each
time a fit starts, and a fit resumed from `last.ckpt` goes on at the checkpoint's step, so its
curve is spread over versions, with the killed run's last steps logged twice."""

from __future__ import annotations

import csv
from pathlib import Path


def version_logs(folder: Path) -> list[Path]:
    """`folder/version_*/metrics.csv`, oldest first (version_10 after version_9)."""
    logs = [p for p in folder.glob("version_*/metrics.csv") if p.parent.name.split("_", 1)[1].isdigit()]
    return sorted(logs, key=lambda p: int(p.parent.name.split("_", 1)[1]))


def logged_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of every version under `folder`, as one run: each version replaces the earlier
    rows from its first step on. A resumed fit keeps the rows before its checkpoint and its own
    after; a fit started over (its first step 0) keeps only its own."""
    rows: list[dict[str, str]] = []
    for path in version_logs(folder):
        with path.open(newline="") as f:
            new = list(csv.DictReader(f))
        steps = [row_step(row) for row in new]
        if steps:
            rows = [row for row in rows if row_step(row) < min(steps)]
        rows += new
    return rows


def row_step(row: dict[str, str]) -> int:
    """A row's `step` (CSVLogger writes it as an integer; older logs as a float)."""
    return int(float(row.get("step") or 0))
