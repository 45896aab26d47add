"""Chat-template instruction tuning: the tokenizer's template renders the rows, only assistant
tokens carry labels, predict renders prompts the same way, and bad conversations are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DATA, ROOT, make_bpe, make_chat_tokenizer

from lightkit.cli.main import main
from lightkit.data import InstructionDataModule
from lightkit.io.errors import InputError


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chat_tokenizer(tmp_path_factory.mktemp("chat") / "tokenizer")


def instruct_args(tokenizer: Path, root: Path, *extra: str) -> list[str]:
    """The tiny instruction-tuning config on `tokenizer`, writing under `root`."""
    return ["--config", str(ROOT / "tests/conf/instruct.yaml"), "--trainer.default_root_dir", str(root),
            "--data.tokenizer", str(tokenizer), "--data.init_args.max_length", "160", *extra]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def data_module(tokenizer: Path, train: Path, tmp_path: Path, **kwargs: object) -> InstructionDataModule:
    return InstructionDataModule(tokenizer=str(tokenizer), train_file=str(train), holdout=(0.0, 0.0),
                                 cache_dir=str(tmp_path / "cache"), **kwargs)  # fmt: skip


def test_only_assistant_tokens_carry_labels(chat_tokenizer: Path, tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "where did bob go ?"},
                      {"role": "assistant", "content": "lima"}, {"role": "user", "content": "and erin ?"},
                      {"role": "assistant", "content": "oslo"}]},
        {"prompt": "where did frank go ?", "response": "quito"},
    ]  # fmt: skip
    dm = data_module(
        chat_tokenizer, write_jsonl(tmp_path / "chat.jsonl", rows), tmp_path, prompt_template="Q: {prompt}"
    )
    assert dm.chat  # the tokenizer has a template: format auto picks it
    train = dm.build_split("train")
    batch = dm.collate([train[i] for i in range(2)])
    learned = []
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        kept = ids[labels != -100].tolist()
        learned.append(dm.tokenizer.decode(kept))
        assert (labels[mask == 0] == -100).all()
    # Each assistant answer and its end-of-turn token, nothing of the system or user turns.
    assert sorted(learned) == sorted(["lima<|im_end|>\noslo<|im_end|>\n", "quito<|im_end|>\n"])
    text = dm.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0] == 1])
    assert "<|im_start|>user\n" in text and "<|im_start|>assistant\n" in text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}, "turn 1 has role 'bot'"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        (
            {"question": "hi"},
            r"a row needs `messages`, or a 'response' \(or `completion`\) field; it has \['question'\]",
        ),
    ],
)
def test_bad_conversations_are_named(chat_tokenizer: Path, tmp_path: Path, row: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "response": "fine"}, row])
    dm = data_module(chat_tokenizer, path, tmp_path)
    with pytest.raises(InputError, match=rf"bad.jsonl:2: .*{message}"):
        dm.build_split("train")


def test_chat_format_needs_a_template(tmp_path: Path) -> None:
    path = make_bpe(tmp_path / "bpe")
    with pytest.raises(InputError, match=r"tokenizer '.*bpe' has no chat template; format: chat needs one"):
        data_module(path, DATA / "lm" / "instruct.jsonl", tmp_path, format="chat")


def test_chat_tuning_through_the_cli_and_predict_renders_prompts_alike(chat_tokenizer: Path, tmp_path: Path) -> None:
    common = instruct_args(chat_tokenizer, tmp_path, "--data.init_args.system_prompt", "answer with a city")
    main(["fit", *common, "--trainer.enable_checkpointing", "true"])
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    out = tmp_path / "answers.jsonl"
    main(["predict", *common, "--ckpt_path", str(ckpt), "--prediction_writer.output", str(out)])
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert answers[0]["prompt"] == (
        "<|im_start|>system\nanswer with a city<|im_end|>\n<|im_start|>user\nQ: yesterday alice\nA: <|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert len(answers) == 2


def test_a_conversation_whose_answer_is_cut_away_is_left_out_with_a_warning(
    chat_tokenizer: Path, tmp_path: Path
) -> None:
    rows = [{"prompt": "where did bob go ?", "response": "lima"}, {"prompt": "x " * 80, "response": "oslo"}]
    dm = data_module(chat_tokenizer, write_jsonl(tmp_path / "long.jsonl", rows), tmp_path, max_length=40)
    with pytest.warns(UserWarning, match=r"1 conversation\(s\) lost every assistant token to max_length=40"):
        train = dm.build_split("train")
    assert len(train) == 1 and any(label != -100 for label in train[0]["labels"])


@pytest.mark.parametrize("with_template", [True, False])
def test_test_generation_scores_answers_against_references(
    chat_tokenizer: Path, tmp_path: Path, with_template: bool
) -> None:
    """`test_generation: true` answers every test prompt and scores it with ROUGE, in chat and
    format-string data alike; the file of answers holds exactly the test split's references."""
    from torchmetrics.text.rouge import ROUGEScore

    from lightkit.cli.main import cli

    tokenizer = chat_tokenizer if with_template else make_bpe(tmp_path / "bpe")
    common = instruct_args(tokenizer, tmp_path, "--data.init_args.holdout", "[0.2, 0.2]")
    main(["fit", *common, "--trainer.enable_checkpointing", "true"])
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    run = cli(["test", *common, "--ckpt_path", str(ckpt), "--model.init_args.test_generation", "true"])
    metrics = run.trainer.callback_metrics
    rows = [json.loads(line) for line in (tmp_path / "test_generations.jsonl").read_text().splitlines()]
    split = run.datamodule.datasets["test"]
    assert [r["reference"] for r in rows] == split["reference"] and len(rows) >= 2
    expected = ROUGEScore(rouge_keys=("rouge1", "rougeL"))([r["answer"] for r in rows], [r["reference"] for r in rows])
    assert float(metrics["test_rouge1"]) == pytest.approx(float(expected["rouge1_fmeasure"]), abs=1e-6)
    assert float(metrics["test_rougeL"]) == pytest.approx(float(expected["rougeL_fmeasure"]), abs=1e-6)
    words = sum(len(r["answer"].split()) for r in rows) / len(rows)
    assert float(metrics["test_words"]) == pytest.approx(words) and "test_perplexity" in metrics
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n" if with_template else "A: ")


def test_headline_data_asks_for_the_first_line_of_each_article(chat_tokenizer: Path, tmp_path: Path) -> None:
    from lightkit.data import HeadlineDataModule

    corpus = tmp_path / "news"
    for topic in ("sport", "tech"):
        (corpus / topic).mkdir(parents=True)
        for i in range(10):
            body = " ".join(f"{topic}{i} word{j}" for j in range(40))
            (corpus / topic / f"{i:03}.txt").write_text(f"{topic.title()} headline {i}\n\n{body}\n")
    dm = HeadlineDataModule(tokenizer=str(chat_tokenizer), train_file=str(corpus), holdout=(0.2, 0.2),
                            max_body_words=12, max_length=400, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    splits = dm.splits(dm._read, dm.split_key)
    assert {r["topic"] for r in splits["test"]} == {"sport", "tech"}  # stratified by topic
    row = splits["test"][0]
    assert row["reference"].endswith(f"headline {row['reference'].split()[-1]}")
    user = row["gen_prompt"].split("<|im_start|>user\n")[1]
    assert user.startswith("Write a headline for this article.\n\n") and len(user.split("\n\n")[1].split()) <= 13
    (corpus / "tech" / "bad.txt").write_text("only a title\n")
    with pytest.raises(InputError, match=r"bad.txt: expected a headline on the first line and the article below it"):
        HeadlineDataModule(
            tokenizer=str(chat_tokenizer), train_file=str(corpus), cache_dir=str(tmp_path / "c2")
        ).build_split("train")
