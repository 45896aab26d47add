"""Regenerate the committed test fixtures: a tiny NER corpus and a tiny WordPiece tokenizer.

    python tests/data/make_fixtures.py

The corpus is synthetic on purpose: tags follow from the words (first names B-PER, surnames
I-PER, cities B-LOC, "X Corp" B-ORG I-ORG), so a 2-layer model learns it in seconds and a test can
expect a high F1. Some surnames are left out of the vocabulary so they split into several
subwords, which exercises label alignment. The output is deterministic (fixed seed).
"""

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).parent
FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
LAST_IN_VOCAB = ["smith", "jones", "brown"]
LAST_SPLIT = ["okonkwo", "zabrinski", "quillfeather"]  # not in the vocab: several subwords each
CITIES = ["paris", "lagos", "lima", "oslo", "kyoto", "quito"]
ORGS = ["acme", "globex", "initech", "umbrella"]
FILLER = ["yesterday", "today", "we", "saw", "met", "visited", "in", "at", "with", "and", "the", "news", "from", "."]
TEMPLATES = [
    "yesterday {PER} visited {LOC} .",
    "we met {PER} at {ORG} in {LOC} .",
    "today {PER} and {PER} saw the news from {ORG} .",
    "{PER} visited {LOC} with {PER} .",
    "the news from {LOC} today .",
]


def fill(template: str, rng: random.Random) -> tuple[list[str], list[str]]:
    tokens, tags = [], []
    for part in template.split():
        if part == "{PER}":
            tokens += [rng.choice(FIRST), rng.choice(LAST_IN_VOCAB + LAST_SPLIT)]
            tags += ["B-PER", "I-PER"]
        elif part == "{LOC}":
            tokens.append(rng.choice(CITIES))
            tags.append("B-LOC")
        elif part == "{ORG}":
            tokens += [rng.choice(ORGS), "corp"]
            tags += ["B-ORG", "I-ORG"]
        else:
            tokens.append(part)
            tags.append("O")
    return tokens, tags


def write_conll(path: Path, sentences: list[tuple[list[str], list[str]]]) -> None:
    with path.open("w") as f:
        f.write("-DOCSTART- O\n\n")
        for tokens, tags in sentences:
            f.writelines(f"{t}\t{g}\n" for t, g in zip(tokens, tags))
            f.write("\n")


TOPICS = {
    "sport": ["match", "goal", "team", "league", "coach"],
    "tech": ["phone", "software", "chip", "internet", "robot"],
    "politics": ["vote", "minister", "party", "election", "law"],
}


def topic_text(topic: str, rng: random.Random) -> str:
    words = rng.sample(TOPICS[topic], 2) + rng.sample(FILLER[:-1], 3)
    rng.shuffle(words)
    return " ".join(words)


def write_classification(rng: random.Random) -> None:
    """The same tiny topic corpus as CSV (train), TSV (validation) and JSONL (test)."""
    import csv
    import json

    cls = HERE / "cls"
    cls.mkdir(exist_ok=True)
    rows = lambda n: [(topic_text(t, rng), t) for t in (rng.choice(sorted(TOPICS)) for _ in range(n))]  # noqa: E731
    for name, delimiter, n in (("train.csv", ",", 120), ("val.tsv", "\t", 24)):
        with (cls / name).open("w", newline="") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(["text", "label"])
            writer.writerows(rows(n))
    with (cls / "test.jsonl").open("w") as f:
        f.writelines(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows(24))
    (cls / "predict.txt").write_text("".join(text + "\n" for text, _ in rows(4)))


def write_lm(rng: random.Random) -> None:
    """A tiny corpus (documents separated by blank lines), instruction pairs and prompts."""
    lm = HERE / "lm"
    lm.mkdir(exist_ok=True)
    docs = [" ".join(" ".join(fill(rng.choice(TEMPLATES), rng)[0]) for _ in range(rng.randint(1, 3))) for _ in range(40)]
    (lm / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    import json

    with (lm / "instruct.jsonl").open("w") as f:
        for _ in range(40):
            city = rng.choice(CITIES)
            name = rng.choice(FIRST)
            f.write(json.dumps({"prompt": f"where did {name} go ?", "response": city, "name": name}) + "\n")
    (lm / "prompts.txt").write_text("yesterday alice\nwe met\n")


def main() -> None:
    rng = random.Random(0)
    ner = HERE / "ner"
    ner.mkdir(exist_ok=True)
    for split, n in (("train", 64), ("val", 16), ("test", 16)):
        write_conll(ner / f"{split}.conll", [fill(rng.choice(TEMPLATES), rng) for _ in range(n)])
    with (ner / "predict.txt").open("w") as f:
        for _ in range(5):
            f.write(" ".join(fill(rng.choice(TEMPLATES), rng)[0]) + "\n")

    write_classification(rng)
    write_lm(rng)

    words = sorted(set(FIRST + LAST_IN_VOCAB + CITIES + ORGS + FILLER + ["corp"] + [w for ws in TOPICS.values() for w in ws]))
    pieces = sorted({c for w in LAST_SPLIT for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *pieces, *(f"##{c}" for c in pieces)]
    tok_dir = HERE / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    # Built with `tokenizers` directly: a BERT-style WordPiece pipeline over this vocabulary.
    backend = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    ).save_pretrained(tok_dir)


if __name__ == "__main__":
    main()
