"""The data columns a run needs beyond what its DataModule requires: a setting's (`margin_scale`
needs `margin`) or a reward callable's (`rouge_l` needs `reference`).

A task names them (`BaseTask.needed_columns`) and they are checked where the data is first in
reach: every row of the splits a stage reads, as it starts (training and validation for `fit`,
validation for `validate`, test for `test`), so a missing column or an empty row stops the run
before a minute of training or sampling, naming the file; or a batch, where a DataModule holds
no `datasets.Dataset` to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from datasets import Dataset

from lightkit.io.errors import InputError


def check_columns(
    owner: str,
    needed: Mapping[str, set[str]],
    data: Dataset | Mapping[str, Any],
    where: str,
    hint: Callable[[list[str]], str] = lambda missing: "",
) -> None:
    """Stop, naming `where` and what needs which column, where `data` (a split or a batch) lacks
    one, or a split has a row without a value in it; `hint(missing)` ends the first message (where
    data with those columns comes from)."""
    rows = isinstance(data, Dataset)
    columns = set(data.column_names if rows else data)
    for who, wanted in needed.items():
        if missing := sorted(wanted - columns):
            raise InputError(
                f"{where}: {owner}: {who} needs the data's column(s) {missing}; it has {sorted(columns)}{hint(missing)}"
            )
        for column in sorted(wanted) if rows else ():
            if empty := sum(value is None for value in data[column]):
                raise InputError(
                    f"{where}: {owner}: {who} needs `{column}` in every row; {empty} of its {len(data)} rows have none"
                )
