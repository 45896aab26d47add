"""BaseDataModule: files or datasets, splits, tokenizer, cached tokenisation and loaders for every task.

A subclass builds one split's `datasets.Dataset` in `build_split(split)` (reading through
`self.splits(read)`, tokenising with `self.tokenize_cached(...)`) and batches it in `collate`;
this class resolves the files, or loads a `dataset:` source (`lightkit.data.sources`) whose rows
the subclass turns into the same items in `from_rows`, carves missing held-out splits, runs
`setup` and makes the loaders.
What the task must know about the data (label names, the tokenizer) is exposed as attributes the
CLI links into the task, so a config never states it twice.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Hashable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import Dataset, IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from lightkit import __version__
from lightkit.data import sources
from lightkit.data.sampling import LengthGroupedSampler, sequence_lengths
from lightkit.data.sources import DatasetSpec
from lightkit.data.splits import holdout_split
from lightkit.io.errors import InputError
from lightkit.models.hub import load_tokenizer
from lightkit.models.resources import default_cache_dir, resolve_path

# torchdata 0.11 calls torch.set_vital on every iterator, which newer torch deprecates (harmless).
warnings.filterwarnings("ignore", message=r".*'set_vital' is deprecated.*")

STREAM_BATCH = 1000  # documents tokenised (and packed) together when streaming

SPLITS_OF_STAGE = {
    "fit": ("train", "validation"),
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class BaseDataModule(L.LightningDataModule):
    """Shared data plumbing; subclass it.

    Args:
        tokenizer: a packaged model name such as `sentence-transformers/all-MiniLM-L6-v2`, a
            tokenizer folder, or a Hub id (a fast tokenizer is required).
        tokenizer_revision: the Hub revision of a tokenizer Hub id.
        trust_remote_code: let transformers run the tokenizer repository's own code.
        dataset: a `datasets` source instead of the files (`lightkit.data.sources.DatasetSpec`):
            `{path: lhoestq/conll2003}`, `{path: parquet, data_files: {train: a.parquet}}`, a
            local dataset folder, with `name`, `revision`, `splits` and `streaming`. Its own
            splits are used; missing validation/test splits are carved from train with
            `holdout` and `split_seed`. `predict_file` stays a file.
        train_file: training data; `pkg://module/path` reads a file shipped in an installed
            package. The format is the subclass's.
        val_file: validation data. If neither val_file nor test_file is given, both are carved
            from train_file with `holdout` and `split_seed`.
        test_file: test data (see val_file).
        predict_file: input of `lightkit predict`.
        holdout: (validation, test) fractions carved from train_file when needed.
        split_seed: seed of that split, fixed so every run sees the same held-out examples.
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict; default `batch_size`.
        max_length: longest tokenised sequence; longer input is truncated (how a task accounts
            for truncation is documented in the task's DataModule).
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: pad each batch's length up to a multiple of this (e.g. 16), for the
            DataModules that pad dynamically (token and text classification, instruction
            tuning). Fewer distinct shapes: what `torch.compile` with CUDA graphs
            (`compile_mode: reduce-overhead`) needs, since it captures one graph per shape.
        group_by_length: build training batches of similar lengths (shuffled, then sorted by
            length within mega-batches of 50 batches; `lightkit.data.sampling`), so dynamic
            padding pads little (docs: Performance). Packed LM blocks (all of one length but the last) and
            rows tokenised in the collator (PPO prompts, preference pairs) keep the plain
            shuffle. False gives the Trainer's default order: uniformly shuffled batches.
        cache_dir: folder for tokenised datasets; default `$LIGHTKIT_CACHE` or
            `~/.cache/lightkit`. Entries are keyed by file content, tokenizer and settings.
        encoding: text encoding of the data files (e.g. `latin-1` for an older CSV export);
            a byte that does not decode stops with its file and line.
    """

    # What the CLI links into the task; DataModules that know them override these.
    label_names: list[str] | None = None
    prompt_template: str | None = None

    def __init__(
        self,
        tokenizer: str,
        tokenizer_revision: str | None = None,
        trust_remote_code: bool = False,
        dataset: DatasetSpec | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        holdout: tuple[float, float] = (0.1, 0.1),
        split_seed: int = 13,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_length: int = 128,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        cache_dir: str | None = None,
        group_by_length: bool = True,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(
                f"encoding: {encoding!r} is not a codec Python knows (e.g. utf-8, latin-1, cp1252)"
            ) from None
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise InputError(f"pad_to_multiple_of: expected a positive integer, got {pad_to_multiple_of}")
        self.tokenizer_name = tokenizer  # linked into the task as written, not resolved
        self.tokenizer_revision = tokenizer_revision
        self.tokenizer = load_tokenizer(tokenizer, tokenizer_revision, trust_remote_code)
        # Fingerprint it now: encoding with truncation writes that setting into the backend
        # tokenizer's JSON, which would change the cache key between the first call and later ones.
        self._tokenizer_digest = hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.files: dict[str, Path | None] = {
            split: resolve_path(f, what=f"{arg}") if f else None
            for split, arg, f in (
                ("train", "train_file", train_file),
                ("validation", "val_file", val_file),
                ("test", "test_file", test_file),
                ("predict", "predict_file", predict_file),
            )
        }
        self.dataset = sources.as_spec(dataset)
        # Kept as plain data: checkpoints record hyperparameters and load with weights_only=True.
        self.hparams["dataset"] = asdict(self.dataset) if self.dataset else None
        if self.dataset is not None and (train_file or val_file or test_file):
            raise InputError(f"{type(self).__name__}: give either `dataset` or train_file/val_file/test_file, not both")
        self.datasets: dict[str, Dataset] = {}
        self._splits: dict[str, list] | None = None
        self._source: dict[str, Any] | None = None  # the loaded `dataset` splits, by lightkit split

    # -- files and splits ----------------------------------------------------------------------
    @property
    def carved(self) -> bool:
        """Whether validation and test are carved from train_file (or some split from a dataset's train)."""
        if self.dataset is not None:
            return None in self.source_splits().values()
        return self.files["train"] is not None and not (self.files["validation"] or self.files["test"])

    def source(self, split: str) -> Path | str:
        """The file a split is read from (train_file for carved splits), or the dataset split as
        error messages name it; a clear error if none."""
        if self.dataset is not None and split != "predict":
            names = self.source_splits()
            return f"{self.dataset} [{names[split] or 'carved from ' + str(names['train'])}]"
        path = self.files[split] or (self.files["train"] if split != "predict" else None)
        if path is None:
            arg = {"validation": "val_file"}.get(split, f"{split}_file")
            raise InputError(f"{type(self).__name__}: set `{arg}` (--data.{arg}) to use the {split} split")
        return path

    # -- dataset sources -----------------------------------------------------------------------
    def source_splits(self) -> dict[str, str | None]:
        """lightkit split -> the `dataset` split it reads (None: carved from train)."""
        self.load_source()
        return self._source["names"]

    def load_source(self) -> dict[str, Any]:
        """The `dataset` source's splits, loaded once: {"names": ..., "data": {lightkit split: Dataset}}."""
        if self._source is None:
            loaded = sources.load(self.dataset)
            names = sources.split_names(self.dataset, list(loaded))
            if self.dataset.streaming and None in (names["train"], names["validation"]):
                raise InputError(
                    f"{self.dataset}: streaming reads the dataset's own train and validation splits (nothing is "
                    f"carved from a stream); its splits are {list(loaded)}"
                )
            self._source = {"names": names, "data": {s: loaded[n] for s, n in names.items() if n is not None}}
        return self._source

    def require_columns(self, split: str, columns: dict[str, str]) -> None:
        """The `dataset` split has each column a setting names ({setting: column}), or a one-line error."""
        sources.require_columns(self.dataset, split, self.load_source()["data"][split], columns)

    def class_names(self, column: str) -> list[str] | None:
        """The names of a `dataset`'s ClassLabel `column` (or sequence of them); None for files."""
        if self.dataset is None:
            return None
        return sources.class_names(next(iter(self.load_source()["data"].values())), column)

    def from_rows(self, rows: list[dict[str, Any]], split: str) -> list:
        """The items `read` would give, from a dataset split's rows (each tagged with `_where`)."""
        raise InputError(f"{type(self).__name__} reads files only; it does not take a `dataset`")

    def dataset_fingerprint(self) -> str | None:
        """What tokenised caches of a `dataset` source are keyed by (None for files)."""
        if self.dataset is None:
            return None
        return sources.fingerprint(self.dataset, self.load_source()["data"])

    def splits(self, read: Callable[[Path], list], key: Callable[[Any], Hashable] | None = None) -> dict[str, list]:
        """Items of train/validation/test, read once with `read(path)` (or `from_rows` for a
        dataset); missing held-out splits carved from train.

        `key` stratifies the carving (e.g. by label) so rare classes reach every split.
        """
        if self._splits is None:
            if self.dataset is not None:
                self._splits = self._dataset_splits(key)
            elif self.carved:
                parts = holdout_split(read(self.files["train"]), self.hparams.holdout, self.hparams.split_seed, key)
                self._splits = dict(zip(("train", "validation", "test"), parts))
            else:
                parts = tuple(read(self.files[s]) if self.files[s] else [] for s in ("train", "validation", "test"))
                self._splits = dict(zip(("train", "validation", "test"), parts))
        return self._splits

    def _dataset_splits(self, key: Callable[[Any], Hashable] | None) -> dict[str, list]:
        data, names = self.load_source()["data"], self.source_splits()
        items = {s: self.from_rows(sources.rows(self.dataset, names[s], ds), s) for s, ds in data.items()}
        missing = [s for s in ("validation", "test") if names[s] is None]
        if missing and "train" in items:  # carve only what the dataset lacks, with its own fraction
            val, test = self.hparams.holdout
            fractions = (val if "validation" in missing else 0.0, test if "test" in missing else 0.0)
            items["train"], *carved = holdout_split(items["train"], fractions, self.hparams.split_seed, key)
            items.update({s: part for s, part in zip(("validation", "test"), carved) if s in missing})
        return {s: items.get(s, []) for s in ("train", "validation", "test")}

    def prepare_data(self) -> None:
        # Lightning calls this in one process per node before any process calls setup: the
        # tokenised cache is written once, and under DDP the other ranks read it instead of
        # racing to write the same Arrow file.
        fn = self.trainer.state.fn if self.trainer is not None else None
        if fn is not None and fn.value in SPLITS_OF_STAGE:
            self.setup(fn.value)

    def setup(self, stage: str) -> None:
        for split in SPLITS_OF_STAGE[stage]:
            if split not in self.datasets:
                self.source(split)  # fail early, naming the missing file argument
                self.datasets[split] = self.build_split(split)

    def build_split(self, split: str) -> Dataset:
        raise NotImplementedError

    def tokenize_cached(
        self,
        dataset: Dataset,
        fn: Callable[[dict[str, list]], dict[str, list]],
        key: dict[str, Any],
        **map_kwargs: Any,
    ) -> Dataset:
        """`dataset.map(fn, batched=True)`, cached on disk under a key of everything it depends on.

        `key` must hold what the result depends on besides the tokenizer and lightkit's version
        (the source file's digest, max_length, label names, options...).
        """
        blob = json.dumps(
            {
                "key": key,
                "encoding": self.hparams.encoding,
                "tokenizer": self._tokenizer_digest,
                "dataset": self.dataset_fingerprint(),
                "lightkit": __version__,
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
        path = self.cache_dir / "datasets" / f"{type(self).__name__}-{digest}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        return dataset.map(
            fn,
            batched=True,
            remove_columns=dataset.column_names,
            cache_file_name=str(path),
            load_from_cache_file=True,
            new_fingerprint=digest,
            desc=f"tokenising {key.get('split', '')}".strip(),
            **map_kwargs,
        )

    def stream(
        self, split: str, encode: Callable[[dict[str, list]], dict[str, list]], columns: list[str]
    ) -> IterableDataset:
        """A `streaming: true` dataset split's `columns`, tokenised (`encode`, batched) as they are read.

        Nothing is cached or carved. Training rows are shuffled in a buffer (seeded; the spec's
        `shuffle_buffer`) and, under DDP, sharded by rank (`split_dataset_by_node`). `datasets`'
        IterableDataset saves its position in `state_dict()`, which the StatefulDataLoader, and so
        every Lightning checkpoint, carries: a resumed run reads on from where it stopped.
        """
        from datasets.distributed import split_dataset_by_node

        data = self.load_source()["data"][split]
        data = data.select_columns(columns).map(encode, batched=True, batch_size=STREAM_BATCH, remove_columns=columns)
        if split == "train" and self.dataset.shuffle_buffer > 0:
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            data = data.shuffle(seed=seed, buffer_size=self.dataset.shuffle_buffer)
            trainer = self.trainer
            if trainer is not None and trainer.world_size > 1:
                data = split_dataset_by_node(data, rank=trainer.global_rank, world_size=trainer.world_size)
        return data

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        """A torch DataLoader with `state_dict()`, whose position Lightning saves in every
        checkpoint, so a resumed run sees exactly the batches an uninterrupted run would have.

        Exact resume also needs the loader never to draw from the global generators, which
        dropout and masking use (BaseTask restores them from the checkpoint): each iterator a
        DataLoader starts draws a worker base seed, so the loader gets a generator of its own.
        The training order is a function of (seed, epoch) only and the sampler's state is its
        position; torchdata's default RandomSampler instead saves its generator as it was when
        the epoch began, so a checkpoint taken at an epoch's end would replay that epoch's order
        in the next. The sampler shards by rank itself (Lightning keeps a DistributedSampler it is
        given) and takes Lightning's seed (PL_GLOBAL_SEED, set by seed_everything).
        """
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        dataset, trainer = self.datasets[split], self.trainer
        sampler = None
        if isinstance(dataset, IterableDataset):  # a stream: see stream()
            return StatefulDataLoader(
                dataset,
                batch_size=self.hparams.batch_size if shuffle else self.eval_batch_size,
                collate_fn=self.collate,
                num_workers=self.hparams.num_workers,
                persistent_workers=self.hparams.num_workers > 0,
            )
        if shuffle:
            shard = {
                "num_replicas": trainer.world_size if trainer else 1,
                "rank": trainer.global_rank if trainer else 0,
                "shuffle": True,
                "seed": seed,
            }
            # Packed LM blocks are all full but the last: with fewer short rows than one batch,
            # grouping could save one batch's padding at most, and would only reshuffle. Rows
            # tokenised only in the collator (PPO prompts, preference pairs) have no length yet.
            grouped = self.hparams.get("group_by_length") and "input_ids" in dataset.column_names
            lengths = sequence_lengths(dataset) if grouped else []
            longest = max(lengths, default=0)
            if sum(n < longest for n in lengths) >= self.hparams.batch_size:
                sampler = LengthGroupedSampler(dataset, lengths, self.hparams.batch_size, **shard)
            else:
                sampler = StatefulDistributedSampler(dataset, **shard)
        return StatefulDataLoader(
            dataset,
            batch_size=self.hparams.batch_size if shuffle else self.eval_batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    @property
    def eval_batch_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("predict", shuffle=False)
