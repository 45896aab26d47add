"""`dataset:` sources: local dataset repositories (parquet shards and a README, as the Hub stores
them; tests/hub_fakes.py) train every DataModule through the real CLI, loaded exactly as an id
loads; ClassLabel names, the dataset's own splits, TRL's formats, and one-line errors."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_dataset
from helpers import DATA, ROOT, TINY_CLM, TINY_NER

from lightkit.cli.main import cli, main
from lightkit.data import (
    CausalLMDataModule,
    CoNLLDataModule,
    InstructionDataModule,
    PolicyPreferenceDataModule,
    TextClassificationDataModule,
)
from lightkit.io.errors import InputError
from lightkit.models.hub import saved_source

CONF = ROOT / "tests" / "conf"
NO_FILES = ["--data.init_args.train_file", "null", "--data.init_args.val_file", "null",
            "--data.init_args.test_file", "null"]  # fmt: skip


def dataset_args(folder: Path, tmp_path: Path) -> list[str]:
    return [*NO_FILES, "--data.init_args.dataset.path", str(folder), "--trainer.default_root_dir", str(tmp_path),
            "--model.init_args.save_dir", str(tmp_path / "hf")]  # fmt: skip


def test_conll2003_shaped_repository_trains_ner_with_its_classlabel_names(hub_datasets: dict, tmp_path: Path) -> None:
    folder = hub_datasets["conll2003"]
    names = load_dataset(str(folder))["train"].features["ner_tags"].feature.names
    main(["fit", "--config", str(TINY_NER), *dataset_args(folder, tmp_path), "--trainer.max_epochs", "2"])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tmp_path / "hf")
    assert [config.id2label[i] for i in range(len(names))] == names  # the dataset's order, not lightkit's
    # The checkpoint records the source as plain data: it still loads with weights_only=True.
    ckpt = torch.load(next(tmp_path.rglob("best.ckpt")), weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["dataset"]["path"] == str(folder)
    dm = CoNLLDataModule(tokenizer=str(DATA / "tokenizer"), dataset={"path": str(folder)}, cache_dir=str(tmp_path))
    assert dm.source_splits() == {"train": "train", "validation": "validation", "test": "test"}  # nothing carved
    assert [len(dm.sentences()[s]) for s in ("train", "validation", "test")] == [
        load_dataset(str(folder))[s].num_rows for s in ("train", "validation", "test")
    ]


def test_save_to_disk_folder_reads_like_the_repository(hub_datasets: dict, tmp_path: Path) -> None:
    load_dataset(str(hub_datasets["conll2003"])).save_to_disk(str(tmp_path / "saved"))
    kwargs = {"tokenizer": str(DATA / "tokenizer"), "cache_dir": str(tmp_path / "cache")}
    saved = CoNLLDataModule(dataset={"path": str(tmp_path / "saved")}, **kwargs)
    repo = CoNLLDataModule(dataset={"path": str(hub_datasets["conll2003"])}, **kwargs)
    assert saved.label_names == repo.label_names
    assert [s.tags for s in saved.sentences()["test"]] == [s.tags for s in repo.sentences()["test"]]


def test_imdb_shaped_repository_carves_only_the_missing_validation_split(hub_datasets: dict, tmp_path: Path) -> None:
    folder = hub_datasets["imdb"]
    source = load_dataset(str(folder))

    def build() -> TextClassificationDataModule:
        return TextClassificationDataModule(tokenizer=str(DATA / "tokenizer"), dataset={"path": str(folder)},
                                            holdout=(0.25, 0.5), cache_dir=str(tmp_path))  # fmt: skip

    dm = build()
    assert dm.label_names == source["train"].features["label"].names
    assert dm.source_splits() == {"train": "train", "validation": None, "test": "test"}
    rows = dm.rows()
    assert [r["text"] for r in rows["test"]] == source["test"]["text"]  # its own test split, whole
    assert len(rows["validation"]) == pytest.approx(0.25 * source["train"].num_rows, abs=2)  # stratified rounding
    assert len(rows["train"]) + len(rows["validation"]) == source["train"].num_rows
    assert [r["text"] for r in build().rows()["validation"]] == [r["text"] for r in rows["validation"]]  # seeded
    main(["fit", "--config", str(CONF / "classification.yaml"), *dataset_args(folder, tmp_path),
          "--data.init_args.predict_file", "null", "--trainer.fast_dev_run", "true"])  # fmt: skip


def test_a_builder_with_data_files_reads_parquet_and_text(hub_datasets: dict, bpe: Path, tmp_path: Path) -> None:
    shard = next((hub_datasets["imdb"] / "data").glob("train-*.parquet"))
    dm = TextClassificationDataModule(tokenizer=str(DATA / "tokenizer"), cache_dir=str(tmp_path),
                                      dataset={"path": "parquet", "data_files": {"train": str(shard)}})  # fmt: skip
    assert dm.source_splits() == {"train": "train", "validation": None, "test": None}
    assert sum(len(v) for v in dm.rows().values()) == load_dataset(str(hub_datasets["imdb"]))["train"].num_rows
    # An LM corpus through the `text` builder: one row per line, in a `text` column.
    corpus = DATA / "lm" / "corpus.txt"
    main(["fit", "--config", str(TINY_CLM), "--data.tokenizer", str(bpe), *dataset_args(corpus, tmp_path),
          "--data.init_args.dataset.path", "text", "--data.init_args.dataset.data_files", str(corpus),
          "--trainer.fast_dev_run", "true"])  # fmt: skip


def test_trl_conversational_sft_set_tunes_a_hub_chat_model(hub_datasets: dict, hub_chat: dict, tmp_path: Path) -> None:
    folder = hub_datasets["trl_sft"]
    main(["fit", "--config", str(CONF / "instruct.yaml"), *dataset_args(folder, tmp_path),
          "--data.tokenizer", hub_chat["id"], "--model.init_args.model_config", "null",
          "--model.init_args.pretrained", hub_chat["id"], "--model.init_args.peft", "{r: 4, alpha: 8}",
          "--data.init_args.predict_file", "null", "--trainer.fast_dev_run", "true"])  # fmt: skip
    dm = InstructionDataModule(tokenizer=hub_chat["id"], dataset={"path": str(folder)}, holdout=(0.25, 0.0),
                               cache_dir=str(tmp_path))  # fmt: skip
    test = dm.build_split("test")
    assert test.num_rows == load_dataset(str(folder))["test"].num_rows
    assert all(r.startswith("<|im_start|>user") for r in test["gen_prompt"])


def test_trl_implicit_prompt_preferences_train_dpo(hub_datasets: dict, hub_chat: dict, tmp_path: Path) -> None:
    folder = hub_datasets["trl_preferences"]
    dm = PolicyPreferenceDataModule(tokenizer=hub_chat["id"], dataset={"path": str(folder)}, cache_dir=str(tmp_path))
    pair = dm.splits(dm._read)["train"][0]
    row = load_dataset(str(folder))["train"][0]
    # The shared user turn is the prompt: only each side's answer is labelled.
    for side in ("chosen", "rejected"):
        text, (span,) = pair[side]["text"], pair[side]["spans"]
        assert row[side][0]["content"] in text[: span[0]] and row[side][1]["content"] in text[span[0] : span[1]]
    main(["fit", "--config", str(CONF / "dpo.yaml"), *dataset_args(folder, tmp_path),
          "--data.tokenizer", hub_chat["id"], "--model.init_args.pretrained", hub_chat["id"],
          "--trainer.fast_dev_run", "true"])  # fmt: skip


@pytest.mark.parametrize("objective", ["ppo", "grpo"])
def test_trl_prompt_only_set_feeds_online_rl(
    objective: str, hub_datasets: dict, hub_chat: dict, tmp_path: Path
) -> None:
    run = cli(["fit", "--config", str(CONF / f"{objective}.yaml"), *dataset_args(hub_datasets["trl_prompts"], tmp_path),
               "--data.tokenizer", hub_chat["id"], "--trainer.fast_dev_run", "true"])  # fmt: skip
    assert run.trainer.global_step >= 1  # it sampled and updated on these prompts
    prompts = run.datamodule.datasets["train"]["prompt"]
    users = {turns[0]["content"] for turns in load_dataset(str(hub_datasets["trl_prompts"]))["train"]["prompt"]}
    # Each prompt is a dataset row's turns through the chat template, ending where the answer starts.
    assert prompts and all(
        p.startswith("<|im_start|>user\n") and p.endswith("<|im_start|>assistant\n") for p in prompts
    )
    assert {p.split("\n", 1)[1].split("<|im_end|>")[0] for p in prompts} <= users


def test_tokenised_cache_is_keyed_by_the_dataset_fingerprint(hub_datasets: dict, tmp_path: Path) -> None:
    from datasets import Dataset

    from lightkit.data.sources import DatasetSpec, fingerprint

    spec = DatasetSpec(path="any")
    assert fingerprint(spec, {"train": Dataset.from_dict({"text": ["a"]})}) == fingerprint(
        spec, {"train": Dataset.from_dict({"text": ["a"]})}
    )
    assert fingerprint(spec, {"train": Dataset.from_dict({"text": ["a"]})}) != fingerprint(
        spec, {"train": Dataset.from_dict({"text": ["b"]})}
    )

    def cache_file(folder: Path) -> str:
        dm = TextClassificationDataModule(tokenizer=str(DATA / "tokenizer"), dataset={"path": str(folder)},
                                          cache_dir=str(tmp_path / "cache"))  # fmt: skip
        return dm.build_split("test").cache_files[0]["filename"]

    first = cache_file(hub_datasets["imdb"])
    assert cache_file(hub_datasets["imdb"]) == first  # the same data reuses its tokenised cache
    source = load_dataset(str(hub_datasets["imdb"]))
    changed = source["test"].to_dict()
    changed["text"][0] = "a changed review"
    test = Dataset.from_dict(changed, features=source["test"].features)
    from hub_fakes import dataset_repo

    assert cache_file(dataset_repo(tmp_path / "changed", {"train": source["train"], "test": test})) != first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_column": "review"},
         r"\[train\] has no column 'review' \(text_column\); its columns are \['text', 'label'\]"),
        ({"dataset": {"splits": {"validation": "dev"}}},
         r"splits.validation names split 'dev', which it does not have; its splits are \['train', 'test', 'unsup"),
        ({"dataset": {"splits": {"test": "unsupervised"}}},
         r"\[unsupervised\] row 0: label -1 is outside the ClassLabel feature 'label' \(3 names: politics, sport, t"),
        ({"dataset": {"split": "train"}}, r"dataset: expected `path` and any of .*got \['path', 'split'\]"),
        ({"train_file": "tests/data/cls/train.csv"}, "give either `dataset` or train_file/val_file/test_file"),
    ],
    ids=["missing-column", "unknown-split", "label-outside-classlabel", "unknown-key", "dataset-and-files"],
)  # fmt: skip
def test_bad_dataset_input_is_one_line(hub_datasets: dict, tmp_path: Path, kwargs: dict, message: str) -> None:
    spec = {"path": str(hub_datasets["imdb"]), **kwargs.pop("dataset", {})}
    with pytest.raises(InputError, match=message) as e:
        TextClassificationDataModule(tokenizer=str(DATA / "tokenizer"), dataset=spec, cache_dir=str(tmp_path), **kwargs)
    assert "\n" not in str(e.value)


def test_an_uncached_dataset_id_offline_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        CoNLLDataModule(
            tokenizer=str(DATA / "tokenizer"), dataset={"path": "lhoestq/conll2003"}, cache_dir=str(tmp_path)
        )
    assert str(e.value).startswith("dataset 'lhoestq/conll2003' did not load (offline mode is on (HF_HUB_OFFLINE=1))")
    assert "\n" not in str(e.value)


HUB_CONFIGS = {
    "ner_conll2003.yaml": ("hub_bert", "conll2003", []),
    "sft_hub.yaml": ("hub_chat", "trl_sft", []),
    "dpo_hub.yaml": ("hub_chat", "trl_preferences", []),
}


@pytest.mark.parametrize("name", sorted(HUB_CONFIGS))
def test_hub_configs_run_with_their_ids_pointed_at_local_fakes(
    name: str, hub_datasets: dict, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = ROOT / "configs" / name
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--print_config"])
    printed = yaml.safe_load(out.getvalue())
    assert printed["data"]["init_args"]["dataset"]["path"]  # the real Hub id, as shipped
    model, data, extra = HUB_CONFIGS[name]
    model_id = request.getfixturevalue(model)["id"]
    main(["fit", "--config", str(config), "--model.init_args.pretrained", model_id, "--data.init_args.tokenizer",
          model_id, "--data.init_args.dataset.path", str(hub_datasets[data]), *extra, "--trainer.fast_dev_run",
          "true", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path),
          "--model.init_args.save_dir", str(tmp_path / "hf")])  # fmt: skip
    assert saved_source(tmp_path / "hf")["base_model"] == model_id  # trained from the id given, through the cache


def stream_module(bpe: Path, tmp_path: Path, shuffle_buffer: int) -> CausalLMDataModule:
    corpus = str(DATA / "lm" / "corpus.txt")
    spec = {"path": "text", "data_files": {"train": corpus, "validation": corpus}, "streaming": True,
            "shuffle_buffer": shuffle_buffer}  # fmt: skip
    dm = CausalLMDataModule(tokenizer=str(bpe), dataset=spec, block_size=16, batch_size=2, cache_dir=str(tmp_path))
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("shuffle_buffer", [0, 4])
def test_a_stream_resumes_where_it_stopped(bpe: Path, tmp_path: Path, shuffle_buffer: int) -> None:
    from datasets import IterableDataset

    dm = stream_module(bpe, tmp_path, shuffle_buffer)
    assert isinstance(dm.datasets["train"], IterableDataset)
    rows = [tuple(r) for b in dm.train_dataloader() for r in b["input_ids"].tolist()]
    loader = dm.train_dataloader()
    batches = iter(loader)
    seen = [tuple(r) for _ in range(3) for r in next(batches)["input_ids"].tolist()]
    resumed = dm.train_dataloader()
    resumed.load_state_dict(loader.state_dict())  # what a Lightning checkpoint holds
    rest = [tuple(r) for b in resumed for r in b["input_ids"].tolist()]
    if shuffle_buffer == 0:
        assert seen + rest == rows  # exactly the uninterrupted stream
    else:  # on from the stream's position: nothing seen again; the buffer's rows are skipped
        assert not set(seen) & set(rest) and len(rows) - shuffle_buffer <= len(seen + rest) < len(rows)


def test_streaming_trains_causal_and_masked_lm(bpe: Path, tmp_path: Path) -> None:
    corpus = str(DATA / "lm" / "corpus.txt")
    stream = [*NO_FILES, "--data.init_args.dataset", f"{{path: text, data_files: {{train: {corpus}, "
              f"validation: {corpus}}}, streaming: true}}", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    from datasets import IterableDataset

    clm = cli(["fit", "--config", str(TINY_CLM), "--data.tokenizer", str(bpe), *stream, "--trainer.max_steps", "3",
               "--trainer.limit_val_batches", "2", "--model.init_args.save_dir", str(tmp_path / "clm")])  # fmt: skip
    assert isinstance(clm.datamodule.datasets["train"], IterableDataset) and clm.trainer.global_step == 3
    assert (tmp_path / "clm" / "model.safetensors").is_file()
    mlm = cli(["fit", "--config", str(CONF / "mlm.yaml"), *stream, "--trainer.fast_dev_run", "true",
               "--model.init_args.save_dir", str(tmp_path / "mlm")])  # fmt: skip
    assert isinstance(mlm.datamodule.datasets["train"], IterableDataset) and mlm.trainer.global_step == 1
    assert "val_loss" in mlm.trainer.callback_metrics  # the stream's own validation split was read
