"""`dataset:` sources: whatever `datasets.load_dataset` reads, or a `save_to_disk` folder.

Beside its files, every DataModule takes a `dataset:` spec, handed to `datasets` as it is: a Hub id
(read through the datasets cache and `HF_HUB_OFFLINE`, as `load_dataset` always does), a local
dataset-repository folder (parquet/CSV/JSON shards, the README's `configs`), or a builder
(`parquet`, `json`, `csv`, `arrow`, `text`) with `data_files`. A folder written by
`Dataset.save_to_disk` / `DatasetDict.save_to_disk` is read with `load_from_disk`.

The dataset's own splits are used; only missing ones are carved from train, seeded, as for files
(`BaseDataModule.splits`). Rows reach the DataModule as dicts tagged with where they came from
(`dataset 'id' [split] row N`), so its errors read like those of a file. `ClassLabel` features
give label names, and integer labels are turned into those names here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, IterableDataset, IterableDatasetDict

from lightkit.io.errors import InputError

# lightkit's split -> the names datasets commonly give it, first match wins.
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


@dataclass
class DatasetSpec:
    """A `datasets` source (module docstring).

    Args:
        path: a Hub dataset id (`lhoestq/conll2003`), a local dataset-repository folder, a
            builder name (`parquet`, `json`, `csv`, `arrow`, `text`) with `data_files`, or a
            `save_to_disk` folder.
        name: the dataset's configuration (subset), when it has several.
        revision: the Hub revision (branch, tag or commit).
        data_files: a builder's files: one path or glob, a list, or `{split: path(s)}`.
        splits: lightkit's split -> the dataset's, e.g. `{validation: dev}`; by default train,
            validation (or valid, val, dev) and test, each where the dataset has it.
        streaming: read lazily, for LM corpora too big for memory (masked and causal LM
            DataModules only): nothing is carved, so the dataset needs its own validation split
            for fit.
        shuffle_buffer: streaming only: training rows are shuffled within a buffer of this many
            (and the shards' order with the same seed). A resumed run goes on from where the stream
            stopped, but `datasets` does not save the buffer's content (huggingface/datasets#7444):
            the rows in it at the checkpoint are skipped. 0 reads in order and resumes exactly.
    """

    path: str
    name: str | None = None
    revision: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    splits: dict[str, str] | None = None
    streaming: bool = False
    shuffle_buffer: int = 10_000

    def __str__(self) -> str:
        return f"dataset '{self.path}'" + (f" ({self.name})" if self.name else "")


def as_spec(value: DatasetSpec | dict[str, Any] | str | None) -> DatasetSpec | None:
    """A spec from what a config or a caller gives: the dataclass, its fields as a dict, or a path."""
    if value is None or isinstance(value, DatasetSpec):
        return value
    if isinstance(value, str):
        return DatasetSpec(path=value)
    unknown = set(value) - set(DatasetSpec.__dataclass_fields__)
    if unknown or "path" not in value:
        raise InputError(
            f"dataset: expected `path` and any of {sorted(set(DatasetSpec.__dataclass_fields__) - {'path'})}, "
            f"got {sorted(value)}"
        )
    return DatasetSpec(**value)


def is_saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def load(spec: DatasetSpec) -> dict[str, Dataset | IterableDataset]:
    """Every split of the source, by the dataset's own split names."""
    import datasets
    from huggingface_hub import constants

    local = Path(spec.path).expanduser()
    try:
        if local.is_dir() and is_saved_to_disk(local):
            loaded = datasets.load_from_disk(str(local))
            if spec.streaming:
                loaded = (
                    loaded.to_iterable_dataset()
                    if isinstance(loaded, Dataset)
                    else IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
                )
        else:
            loaded = datasets.load_dataset(
                spec.path, spec.name, revision=spec.revision, data_files=spec.data_files, streaming=spec.streaming
            )
    except (OSError, ValueError) as e:  # ConnectionError and FileNotFoundError are OSErrors
        mode = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "offline mode is off"
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        todo = (
            "run once with network access to fill the datasets cache, or give a local folder"
            if isinstance(e, ConnectionError)
            else "check path, name and data_files"
        )
        raise InputError(f"{spec} did not load ({mode}): {detail}; {todo}") from None
    if isinstance(loaded, (Dataset, IterableDataset)):
        return {"train": loaded}
    return dict(loaded)


def split_names(spec: DatasetSpec, available: list[str]) -> dict[str, str | None]:
    """lightkit split -> the dataset's split, or None where the dataset has none (carved then)."""
    chosen: dict[str, str | None] = {}
    for split, names in SPLIT_NAMES.items():
        asked = (spec.splits or {}).get(split)
        if asked is not None and asked not in available:
            raise InputError(
                f"{spec}: splits.{split} names split '{asked}', which it does not have; its splits are {available}"
            )
        chosen[split] = asked or next((n for n in names if n in available), None)
    unknown = set(spec.splits or {}) - set(SPLIT_NAMES)
    if unknown:
        raise InputError(f"dataset.splits: unknown key(s) {sorted(unknown)}; expected any of {list(SPLIT_NAMES)}")
    if chosen["train"] is None and not (chosen["validation"] or chosen["test"]):
        raise InputError(
            f"{spec} has no train, validation or test split (its splits are {available}); "
            "map them with splits: {train: <name>, ...}"
        )
    return chosen


def require_columns(spec: DatasetSpec, split: str, dataset: Dataset | IterableDataset, columns: dict[str, str]) -> None:
    """Each needed column exists; `columns` maps the setting that names one to its value. (A stream
    whose columns are not known before it is read is checked on its first rows instead.)"""
    if dataset.column_names is None:
        return
    have = list(dataset.column_names)
    missing = {setting: column for setting, column in columns.items() if column not in have}
    if missing:
        named = ", ".join(f"'{c}' ({s})" for s, c in missing.items())
        raise InputError(f"{spec} [{split}] has no column {named}; its columns are {have}")


def rows(spec: DatasetSpec, split: str, dataset: Dataset) -> list[dict[str, Any]]:
    """The split's rows as dicts, each tagged with `_where` for error messages."""
    return [{**row, "_where": f"{spec} [{split}] row {i}"} for i, row in enumerate(dataset)]


def class_names(dataset: Dataset | IterableDataset, column: str) -> list[str] | None:
    """The names of a `ClassLabel` column, or of a sequence of them (NER tags); None otherwise."""
    feature = (dataset.features or {}).get(column)
    feature = getattr(feature, "feature", feature)  # Sequence/List(ClassLabel)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def label_name(value: Any, names: list[str] | None, column: str, where: str) -> str:
    """A label as its name: an integer through the ClassLabel names, anything else as text."""
    if names is None or isinstance(value, str):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
        raise InputError(
            f"{where}: label {value!r} is outside the ClassLabel feature '{column}' "
            f"({len(names)} names: {', '.join(names)})"
        )
    return names[value]


def fingerprint(spec: DatasetSpec, splits: dict[str, Any]) -> str:
    """What tokenised caches are keyed by: the spec and each loaded split's `datasets` fingerprint."""
    prints = {name: getattr(ds, "_fingerprint", None) for name, ds in splits.items()}
    blob = json.dumps({"spec": asdict(spec), "splits": prints}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
