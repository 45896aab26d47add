"""CoNLLDataModule: cached tokenisation, held-out splits, dynamic padding and truncation accounting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import DATA

from lightkit.data import CoNLLDataModule
from lightkit.data.conll import read_conll
from lightkit.data.token_classification import IGNORE, NO_WORD

NER = DATA / "ner"


def datamodule(tmp_path: Path, **kwargs) -> CoNLLDataModule:  # noqa: ANN003
    args = dict(
        tokenizer=str(DATA / "tokenizer"),
        train_file=str(NER / "train.conll"),
        val_file=str(NER / "val.conll"),
        test_file=str(NER / "test.conll"),
        cache_dir=str(tmp_path),
        batch_size=4,
    )
    return CoNLLDataModule(**{**args, **kwargs})


def test_tokenisation_is_cached_on_disk_and_reused(tmp_path: Path) -> None:
    datamodule(tmp_path).setup("fit")
    cached = sorted((tmp_path / "datasets").glob("*.arrow"))
    assert len(cached) == 2  # train and validation
    stamps = [os.stat(p).st_mtime_ns for p in cached]
    datamodule(tmp_path).setup("fit")  # same files and settings: read back, not rewritten
    assert sorted((tmp_path / "datasets").glob("*.arrow")) == cached
    assert [os.stat(p).st_mtime_ns for p in cached] == stamps
    datamodule(tmp_path, max_length=16).setup("fit")  # a setting changes the key
    assert len(list((tmp_path / "datasets").glob("*.arrow"))) == 4


def test_batches_are_padded_to_their_longest_sequence(tmp_path: Path) -> None:
    dm = datamodule(tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max()  # dynamic, not max_length
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == IGNORE).all() and (batch["word_ids"][pad] == NO_WORD).all()
    assert len(batch["tokens"]) == len(batch["word_labels"]) == 4


def test_pad_to_multiple_of_rounds_every_padded_field_up(tmp_path: Path) -> None:
    dm = datamodule(tmp_path, pad_to_multiple_of=16)
    dm.setup("fit")
    for batch in dm.train_dataloader():
        longest = int(batch["attention_mask"].sum(1).max())
        assert batch["input_ids"].shape[1] == -(-longest // 16) * 16  # the next multiple, not max_length
        assert batch["labels"].shape == batch["word_ids"].shape == batch["input_ids"].shape
    with pytest.raises(ValueError, match="pad_to_multiple_of: expected a positive integer, got 0"):
        datamodule(tmp_path, pad_to_multiple_of=0)


def test_single_file_is_split_by_sentence_with_a_fixed_seed(tmp_path: Path) -> None:
    dm = datamodule(tmp_path, val_file=None, test_file=None, holdout=(0.25, 0.25), split_seed=3)
    parts = dm.sentences()
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes == {"train": 32, "validation": 16, "test": 16}
    all_lines = sorted(s.line for p in parts.values() for s in p)
    assert all_lines == [s.line for s in read_conll(NER / "train.conll")]  # each sentence exactly once
    again = datamodule(tmp_path, val_file=None, test_file=None, holdout=(0.25, 0.25), split_seed=3).sentences()
    assert [s.line for s in again["test"]] == [s.line for s in parts["test"]]


def test_predict_needs_labels_or_train_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give `train_file` or `labels`"):
        datamodule(tmp_path, train_file=None, val_file=None, test_file=None)
    dm = datamodule(
        tmp_path,
        train_file=None,
        val_file=None,
        test_file=None,
        labels=["O", "B-PER", "I-PER"],
        predict_file=str(NER / "predict.txt"),
    )
    dm.setup("predict")
    assert "labels" not in next(iter(dm.predict_dataloader()))


# -- length-grouped batches ------------------------------------------------------------------------
def padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    return sum(
        max(lengths[i] for i in order[b : b + batch_size]) * len(order[b : b + batch_size])
        for b in range(0, len(order), batch_size)
    )


def test_length_grouped_order_is_a_resumable_sharded_permutation_with_less_padding() -> None:
    import random

    from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

    from lightkit.data.sampling import LengthGroupedSampler

    rnd = random.Random(0)
    lengths = [rnd.randint(5, 60) for _ in range(1003)]
    data = list(range(len(lengths)))

    def grouped(rank: int = 0, replicas: int = 1) -> LengthGroupedSampler:
        return LengthGroupedSampler(data, lengths, 8, num_replicas=replicas, rank=rank, shuffle=True, seed=3)

    sampler = grouped()
    order = list(sampler)
    assert sorted(order) == data and list(sampler) == order  # a permutation, fixed by (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != order
    plain = list(StatefulDistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3))
    assert padded_tokens(order, lengths, 8) < 0.8 * padded_tokens(plain, lengths, 8)
    # Resume from a position, as Lightning does from a mid-epoch checkpoint.
    first = grouped()
    it = iter(first)
    head = [next(it) for _ in range(37)]
    resumed = grouped()
    resumed.load_state_dict(first.state_dict())
    assert head + list(resumed) == order
    # Each DDP rank groups its own shard; together they cover the epoch once.
    shards = [list(grouped(rank, 2)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 502 and set(shards[0] + shards[1]) == set(
        data
    )  # DistributedSampler pads 1003 to 1004


def test_length_grouping_is_the_default_for_variable_lengths_only(tmp_path: Path) -> None:
    from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

    from lightkit.data.sampling import LengthGroupedSampler, sequence_lengths

    dm = datamodule(tmp_path)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert sequence_lengths(train) == [len(ids) for ids in train["input_ids"]]
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)
    batches = list(loader)
    assert sum(len(b["tokens"]) for b in batches) == len(train)
    plain = datamodule(tmp_path, group_by_length=False)
    plain.setup("fit")
    assert not isinstance(plain.train_dataloader().sampler, LengthGroupedSampler)
    # Packed LM blocks: all full but the last, nothing to group, the plain shuffle stays.
    from lightkit.data import MaskedLMDataModule

    lm = MaskedLMDataModule(
        tokenizer=str(DATA / "tokenizer"),
        train_file=str(DATA / "lm" / "corpus.txt"),
        block_size=16,
        cache_dir=str(tmp_path / "lm"),
    )
    lm.setup("fit")
    lengths = sequence_lengths(lm.datasets["train"])
    assert lm.hparams.group_by_length and sum(n < 16 for n in lengths) == 1
    assert type(lm.train_dataloader().sampler) is StatefulDistributedSampler
