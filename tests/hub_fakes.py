"""What a Hub download leaves behind, built offline: the tests' stand-ins for Hub models and datasets.

- `hub_model`: a Hugging Face model folder laid out as huggingface_hub's cache stores a download
  (`models--ORG--NAME/snapshots/<commit>/...`, `refs/main` and any tag holding the commit), so
  `from_pretrained("ORG/NAME")` finds it with `HF_HUB_CACHE` set and `HF_HUB_OFFLINE=1`.
- `dataset_repo`: splits written as a Hub dataset repository stores them (parquet shards under
  `data/`, the README's YAML `configs`), which `load_dataset(folder)` reads as it reads an id.
- four dataset shapes users arrive with: CoNLL-2003, IMDB, and TRL's conversational SFT,
  preference and prompt-only sets, filled from the committed fixture data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, List, Value

from lightkit.data.conll import label_list, read_conll

DATA = Path(__file__).resolve().parent / "data"
PROBED = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
          "added_tokens.json", "chat_template.jinja", "chat_template.json")  # fmt: skip


def hub_model(cache: Path, repo_id: str, folder: Path, tags: tuple[str, ...] = ()) -> str:
    """Copy a saved model `folder` into `cache` as the Hub's download of `repo_id`; its commit."""
    digest = hashlib.sha1()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            digest.update(file.name.encode() + file.read_bytes())
    commit = digest.hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit, dirs_exist_ok=True)
    # Files transformers asked for and the repository lacks: huggingface_hub notes them under
    # .no_exist/, which is how an offline load knows they are absent rather than uncached.
    for name in PROBED:
        if not (folder / name).exists():
            (repo / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
            (repo / ".no_exist" / commit / name).touch()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in ("main", *tags):
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return commit


def dataset_repo(root: Path, splits: dict[str, Dataset]) -> Path:
    """`splits` as a Hub dataset repository: `data/<split>-00000-of-00001.parquet` and a README."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    configs = ["configs:", "- config_name: default", "  data_files:"]
    for name, dataset in splits.items():
        dataset.to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
        configs += [f"  - split: {name}", f"    path: data/{name}-*"]
    (root / "README.md").write_text("---\n" + "\n".join(configs) + "\n---\n\n# A test dataset\n")
    return root


# CoNLL-2003's ner_tags order (lhoestq/conll2003): not lightkit's sorted order, so a test can see
# that a ClassLabel's own order is kept.
def conll2003(root: Path) -> Path:
    """tokens, pos/chunk/ner_tags as ClassLabel lists, train/validation/test (from tests/data/ner)."""
    files = {"train": "train.conll", "validation": "val.conll", "test": "test.conll"}
    sentences = {split: read_conll(DATA / "ner" / name) for split, name in files.items()}
    names = list(reversed(label_list(s for part in sentences.values() for s in part)))
    pos, chunk = ["NN", "VB", "IN"], ["O", "B-NP", "I-NP"]
    features = Features(
        {
            "id": Value("string"),
            "tokens": List(Value("string")),
            "pos_tags": List(ClassLabel(names=pos)),
            "chunk_tags": List(ClassLabel(names=chunk)),
            "ner_tags": List(ClassLabel(names=names)),
        }
    )
    splits = {}
    for split, part in sentences.items():
        rows = {
            "id": [str(i) for i in range(len(part))],
            "tokens": [s.tokens for s in part],
            "pos_tags": [[i % 3 for i in range(len(s.tokens))] for s in part],
            "chunk_tags": [[0] * len(s.tokens) for s in part],
            "ner_tags": [[names.index(t) for t in s.tags] for s in part],
        }
        splits[split] = Dataset.from_dict(rows, features=features)
    return dataset_repo(root, splits)


def imdb(root: Path) -> Path:
    """text and a ClassLabel label; train, test and an unlabelled `unsupervised` split (label -1)."""
    import csv

    rows = list(csv.DictReader((DATA / "cls" / "train.csv").open()))
    names = sorted({r["label"] for r in rows})
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})

    def part(chunk: list[dict]) -> Dataset:
        return Dataset.from_dict(
            {"text": [r["text"] for r in chunk], "label": [names.index(r["label"]) for r in chunk]}, features=features
        )

    unsupervised = Dataset.from_dict(
        {"text": [r["text"] for r in rows[:4]], "label": [-1] * 4},
        features=Features({"text": Value("string"), "label": Value("int64")}),
    )
    cut = len(rows) * 3 // 4
    return dataset_repo(root, {"train": part(rows[:cut]), "test": part(rows[cut:]), "unsupervised": unsupervised})


def qa_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "lm" / "instruct.jsonl").read_text().splitlines() if line.strip()]


def trl_sft(root: Path) -> Path:
    """TRL's conversational language-modelling format: `messages`; train and test."""
    rows = qa_rows()
    messages = [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}] for r in rows
    ]
    cut = len(rows) * 4 // 5
    return dataset_repo(
        root,
        {
            "train": Dataset.from_dict({"messages": messages[:cut]}),
            "test": Dataset.from_dict({"messages": messages[cut:]}),
        },
    )


def trl_preferences(root: Path) -> Path:
    """TRL's conversational preference format with an implicit prompt (as
    trl-lib/ultrafeedback_binarized): `chosen` and `rejected` each start with the same user turn;
    train and test splits."""
    rows = qa_rows()
    answers = [r["response"] for r in rows]
    pairs: dict[str, list] = {"chosen": [], "rejected": []}
    for i, r in enumerate(rows):
        user = {"role": "user", "content": r["prompt"]}
        pairs["chosen"].append([user, {"role": "assistant", "content": r["response"]}])
        wrong = next(a for a in answers[i + 1 :] + answers[:i] if a != r["response"])
        pairs["rejected"].append([user, {"role": "assistant", "content": wrong}])
    cut = len(rows) * 4 // 5
    return dataset_repo(
        root,
        {"train": Dataset.from_dict({k: v[:cut] for k, v in pairs.items()}),
         "test": Dataset.from_dict({k: v[cut:] for k, v in pairs.items()})},
    )  # fmt: skip


def trl_prompts(root: Path) -> Path:
    """TRL's conversational prompt-only format (as trl-lib/ultrafeedback-prompt): `prompt` turns."""
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in qa_rows()]
    return dataset_repo(root, {"train": Dataset.from_dict({"prompt": prompts})})
