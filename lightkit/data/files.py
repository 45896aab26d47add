"""Reading tabular text files (CSV, TSV, JSONL) with every row tagged by its file and line.

Shared by the DataModules that read records (classification, instruction tuning, prompts,
preferences), so a bad row is always reported as `path:line`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lightkit.errors import InputError

Rows = list[dict[str, Any]]  # each row keeps its `_where` ("path:line", or the file) for error messages


def read_table(path: Path) -> Rows:
    """Rows of a CSV/TSV (header first) or JSONL file, each tagged with its file:line."""
    rows = []
    if path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{number}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                rows.append({**row, "_where": f"{path}:{number}"})
    elif path.suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            for row in reader:
                rows.append({**row, "_where": f"{path}:{reader.line_num}"})
    else:
        raise InputError(f"{path}: unsupported format {path.suffix!r}; use .csv, .tsv, .jsonl or a folder of class folders")
    return rows
