"""Causal LM data: packed raw text for pretraining, prompt/response pairs for instruction tuning.

Labels are the input ids (the model shifts them), with -100 on padding. transformers'
`DataCollatorForLanguageModeling(mlm=False)` is not used because it sets -100 on every token equal
to `pad_token_id`, which for tokenizers with pad == eos (Llama, SmolLM2) would also erase every
EOS label and the model would never learn to stop; padding is found from the attention mask.

Prompts for `lightkit predict` are formatted with the DataModule's `prompt_template` (linked into
the task and saved with the model), so generation sees prompts exactly as training did.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset

from lightkit.data.base import BaseDataModule
from lightkit.data.chat import (
    assistant_spans,
    check_messages,
    encode_conversation,
    generation_prompt,
    render,
    user_turns,
)
from lightkit.data.files import read_jsonl, read_lines, read_table
from lightkit.data.language_modeling import PackedTextDataModule, hash_texts, read_documents
from lightkit.data.trl_formats import is_conversation
from lightkit.io.errors import InputError
from lightkit.models.resources import resolve_path


def train_bpe_tokenizer(texts: list[str], vocab_size: int, out_dir: str | Path) -> None:
    """Train a byte-level BPE tokenizer (GPT-2 style) on `texts` and save it as a HF fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|pad|>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe.save(str(out_dir / "tokenizer.json"))  # the trained tokenizers.Tokenizer, as transformers reads it
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(out_dir / "tokenizer.json"),
        eos_token=specials[0],
        bos_token=specials[0],
        pad_token=specials[1],
    )
    tokenizer.save_pretrained(out_dir)


def format_prompt(template: str, row: dict[str, Any], where: str) -> str:
    try:
        return template.format(**row)
    except KeyError as e:
        fields = sorted(k for k in row if not k.startswith("_"))
        raise InputError(f"{where}: prompt_template needs field {e.args[0]!r}; the row has {fields}") from None


def read_prompts(path: Path, template: str, encoding: str = "utf-8") -> list[str]:
    """Prompts of a .txt file (one `{prompt}` per non-empty line) or a .jsonl file (the template's
    fields), formatted with `template`."""
    if path.suffix in (".jsonl", ".json"):
        rows = [(row.pop("_where"), row) for row in read_jsonl(path, encoding=encoding)]
    else:
        rows = [(f"{path}:{n}", {"prompt": line}) for n, line in read_lines(path, encoding)]
    prompts = [format_prompt(template, row, where) for where, row in rows]
    if not prompts:
        raise InputError(f"{path}: no prompts")
    return prompts


class PromptsMixin:
    """Prompts for causal LMs (predict input, PPO rollouts): formatted with `prompt_template`, left-padded."""

    prompt_template: str

    def prompt_dataset(self, split: str = "predict") -> Dataset:
        return Dataset.from_dict(
            {"prompt": read_prompts(self.source(split), self.prompt_template, self.hparams.encoding)}
        )

    def collate_prompts(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        # Left padding: generation appends to the right end of every row. Text columns beside the
        # prompt (a reference answer) ride along for reward callables that take them.
        batch = self.tokenizer(
            [f["prompt"] for f in features],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        )
        texts = {k: [f[k] for f in features] for k in features[0] if isinstance(features[0][k], str)}
        return {**batch, **texts}


# Per-row text kept in the test split: the generation prompt and the reference answer.
TEXT_COLUMNS = ("gen_prompt", "reference")


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    return labels


class CausalLMDataModule(PromptsMixin, PackedTextDataModule):
    """Packed text for causal LM pretraining (see the module docstring).

    Args:
        train_tokenizer_vocab: if set and the `tokenizer` folder does not exist yet, train a
            byte-level BPE tokenizer of this vocabulary size on train_file and save it there
            (it is then saved next to the model at the end of fit).
        prompt_template: how `predict` formats each prompt (`{prompt}` for a .txt line, or
            fields of a .jsonl row).
        **kwargs: files, block_size, tokenizer, ... (see PackedTextDataModule).
    """

    def __init__(
        self, train_tokenizer_vocab: int | None = None, prompt_template: str = "{prompt}", **kwargs: Any
    ) -> None:
        tokenizer = kwargs.get("tokenizer")
        if train_tokenizer_vocab and tokenizer and not Path(tokenizer).exists():
            if not kwargs.get("train_file"):
                raise InputError("train_tokenizer_vocab needs train_file to learn the tokenizer from")
            docs = read_documents(
                resolve_path(kwargs["train_file"], what="train_file"),
                kwargs.get("text_column", "text"),
                kwargs.get("encoding", "utf-8"),
            )
            train_bpe_tokenizer(docs, train_tokenizer_vocab, tokenizer)
            print(f"lightkit: trained a byte-level BPE tokenizer ({train_tokenizer_vocab} tokens) into {tokenizer}")
        super().__init__(**kwargs)
        self.prompt_template = prompt_template
        if self.tokenizer.eos_token_id is None:
            raise InputError(f"tokenizer '{self.tokenizer_name}' has no EOS token; causal LM packing needs one")

    @property
    def separator_id(self) -> int:
        return self.tokenizer.eos_token_id

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "prompt" in features[0]:
            return self.collate_prompts(features)
        padded = self.pad_blocks(features)
        return {
            "input_ids": padded["input_ids"],
            "attention_mask": padded["attention_mask"],
            "labels": lm_labels(padded["input_ids"], padded["attention_mask"]),
        }


class InstructionDataModule(PromptsMixin, BaseDataModule):
    """Instruction tuning data: conversations or prompt/response rows; loss on answers only.

    With a chat template (the tokenizer's own, `format: chat`, the default when it has one), rows
    are conversations `{"messages": [{"role": ..., "content": ...}, ...]}`, or prompt/response
    rows that become a user turn (`prompt_template.format(**row)`, after `system_prompt` if set)
    and an assistant turn; they are rendered by the template and only assistant tokens are
    labelled (`lightkit.data.chat`). Without one (`format: template`), each row is
    `prompt_template.format(**row)` followed by `row[response_field]` and EOS, and prompt tokens
    get label -100. Either way the model learns to answer, not to echo questions.

    TRL's dataset formats (`lightkit.data.trl_formats`) read the same way: `messages`
    (conversational), `prompt`/`completion` as text (standard: `completion` stands for
    `response_field`) or as lists of turns (conversational: only the completion is learned), and
    prompt-only rows when `prompts_only` is set.

    Files or a `dataset` (see BaseDataModule): JSONL (or CSV/TSV) rows as above; `predict_file` holds prompts:
    .txt (one `{prompt}` per line) or .jsonl rows with the template's fields, rendered as the
    training prompts were.

    Args:
        prompt_template: e.g. `"### Instruction:\\n{prompt}\\n### Response:\\n"`; saved with the model.
        response_field: the field holding the answer.
        format: `chat` (the tokenizer's chat template), `template` (the format string), or
            `auto`: chat when the tokenizer has a chat template.
        system_prompt: a system turn put before each prompt/response row's user turn (chat only).
        prompts_only: every split holds the rows' generation prompts and reference answers
            (`prompt`, `reference`) instead of training rows: what online RL (PPO, GRPO) samples
            from, with the reference for reward callables that take one.
        **kwargs: tokenizer, files, holdout, batch sizes, max_length (prompt + response are cut
            to it); see BaseDataModule.
    """

    def __init__(
        self,
        prompt_template: str = "{prompt}",
        response_field: str = "response",
        format: Literal["auto", "chat", "template"] = "auto",
        system_prompt: str | None = None,
        prompts_only: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_template = prompt_template
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if format == "chat" and not has_template:
            raise InputError(
                f"tokenizer '{self.tokenizer_name}' has no chat template; format: chat needs one "
                "(use format: template with a prompt_template for a model without one)"
            )
        self.chat = format == "chat" or (format == "auto" and has_template)

    def _read(self, path: Path) -> list[dict[str, Any]]:
        # Each row comes tagged with its file:line; without a chat template every row needs the
        # response field (checked once in a CSV/TSV header).
        field = self.hparams.response_field
        return self.from_rows(read_table(path, [] if self.chat else [field], self.hparams.encoding), "train")

    def from_rows(self, rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        return [self.training_row({k: v for k, v in row.items() if k != "_where"}, row["_where"]) for row in rows]

    def training_row(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        """One row in any of the shapes the class docstring lists, as a training (or prompt) row."""
        field, prompts_only = self.hparams.response_field, self.hparams.get("prompts_only")
        answer = row.get(field, row.get("completion"))  # TRL's prompt-completion names it `completion`
        prompt = row.get("prompt")
        if "messages" in row and self.chat:
            return self.conversation_row(check_messages(row["messages"], where), where)
        if is_conversation(prompt):  # TRL conversational prompt(-completion)
            if not self.chat:
                raise InputError(f"{where}: a conversational prompt needs a chat template (format: chat)")
            turns = check_messages(prompt, where, need_answer=False)
            if answer is None and prompts_only:
                return {"gen_prompt": render(self.tokenizer, turns, generation_prompt=True), "reference": ""}
            if isinstance(answer, str):
                answer = [{"role": "assistant", "content": answer}]
            completion = check_messages(answer, where) if answer is not None else None
            if completion is None:
                raise InputError(f"{where}: a conversational prompt needs a `completion` (a list of turns)")
            return self.conversation_row(turns + completion, where, first=len(turns))
        if answer is None and prompts_only:  # TRL prompt-only: what online RL samples from
            text = format_prompt(self.prompt_template, row, where)
            if not self.chat:
                return {"prompt": text, "response": ""}
            return {"gen_prompt": generation_prompt(self.tokenizer, text, self.hparams.system_prompt), "reference": ""}
        if answer is None:
            raise InputError(
                f"{where}: a row needs `messages`, or a {field!r} (or `completion`) field; it has {sorted(row)}"
            )
        return self.instruction_row(format_prompt(self.prompt_template, row, where), str(answer), where)

    def instruction_row(self, prompt: str, response: str, where: str) -> dict[str, Any]:
        """A prompt and its response as a training row: a user turn (after the system prompt) and
        an assistant turn through the chat template, or, without one, the formatted prompt and the
        response that follows it. `user` keeps the user turn's text, which sampled preference pairs
        are written with (lightkit.data.sampled_pairs)."""
        if not self.chat:
            return {"prompt": prompt, "response": response, "user": prompt}
        messages = [*user_turns(prompt, self.hparams.system_prompt), {"role": "assistant", "content": response}]
        return {**self.conversation_row(messages, where), "user": prompt}

    def conversation_row(self, messages: list[dict[str, str]], where: str, first: int = 0) -> dict[str, Any]:
        """A conversation rendered for training (text, the spans of its assistant turns from turn
        `first` on) and for a test-time generation (the turns before the last answer, with the
        generation prompt; that answer)."""
        text, spans = assistant_spans(self.tokenizer, messages, where, first)
        last = messages[-1]
        gen_prompt = (
            render(self.tokenizer, messages[:-1], generation_prompt=True) if last["role"] == "assistant" else ""
        )
        return {"text": text, "spans": [list(s) for s in spans], "gen_prompt": gen_prompt, "reference": last["content"]}

    def split_key(self, row: dict[str, Any]) -> Any:
        """What the carved splits are stratified by; None (a plain seeded shuffle) by default."""
        return None

    def generation_rows(self, split: str = "validation", path: str | None = None) -> list[dict[str, str]]:
        """`{prompt, reference}` rows to answer at validation (`GenerationMetrics`): the prompt as
        the model is fed it (chat template or prompt_template, as in training) and the reference
        answer, from the split's rows or from a file with `prompt` and `reference` columns."""
        if path is None:
            rows = self.splits(self._read, self.split_key)[split]
        else:
            table = read_table(resolve_path(path), ["prompt", "reference"], self.hparams.encoding)
            field = self.hparams.response_field
            rows = [
                InstructionDataModule.training_row(self, {"prompt": r["prompt"], field: r["reference"]}, r["_where"])
                for r in table
            ]
        return [
            {"prompt": r["gen_prompt"], "reference": r["reference"]}
            if "gen_prompt" in r
            else {"prompt": r["prompt"], "reference": r["response"]}
            for r in rows
        ]

    def _encode_chat(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "labels": [], **{k: [] for k in TEXT_COLUMNS if k in batch}}
        cut = 0
        for i, (text, spans) in enumerate(zip(batch["text"], batch["spans"])):
            ids, labels = encode_conversation(self.tokenizer, text, spans, self.hparams.max_length)
            if all(label == -100 for label in labels):
                cut += 1  # nothing left to learn: a batch of such rows would have a NaN loss
                continue
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            for k in TEXT_COLUMNS:
                if k in batch:
                    out[k].append(batch[k][i])
        if cut:
            warnings.warn(
                f"InstructionDataModule: {cut} conversation(s) lost every assistant token to "
                f"max_length={self.hparams.max_length} and were left out; raise max_length or shorten the prompts",
                stacklevel=2,
            )
        return out

    def _encode(self, batch: dict[str, list]) -> dict[str, list]:
        prompts = self.tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        responses = self.tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "labels": []}
        for p, r in zip(prompts, responses):
            r = r + [self.tokenizer.eos_token_id]
            ids = (p + r)[: self.hparams.max_length]
            out["input_ids"].append(ids)
            out["labels"].append(([-100] * len(p) + r)[: self.hparams.max_length])
        out.update({k: batch[k] for k in TEXT_COLUMNS if k in batch})
        return out

    def build_split(self, split: str) -> Dataset:
        if split == "predict":
            prompts = self.prompt_dataset()
            if not self.chat:
                return prompts
            return Dataset.from_dict(
                {
                    "prompt": [
                        generation_prompt(self.tokenizer, p, self.hparams.system_prompt) for p in prompts["prompt"]
                    ]
                }
            )
        rows = self.splits(self._read, self.split_key)[split]
        if not rows:
            raise InputError(f"{self.source(split)}: the {split} split has no rows")
        if self.hparams.get("prompts_only"):
            pairs = [(r["gen_prompt"], r["reference"]) if self.chat else (r["prompt"], r["response"]) for r in rows]
            return Dataset.from_dict({"prompt": [p for p, _ in pairs], "reference": [a for _, a in pairs]})
        # The test split keeps each prompt and reference answer, for a test-time generation.
        texts: dict[str, list[str]] = {}
        if split == "test":
            pairs = [(r["gen_prompt"], r["reference"]) if self.chat else (r["prompt"], r["response"]) for r in rows]
            texts = {"gen_prompt": [p for p, _ in pairs], "reference": [a for _, a in pairs]}
        if self.chat:
            data = {"text": [r["text"] for r in rows], "spans": [r["spans"] for r in rows], **texts}
            key = {
                "split": split,
                "data": hash_texts(data["text"] + [str(data["spans"])]),
                "max_length": self.hparams.max_length,
                "chat": True,
            }
            return self.tokenize_cached(Dataset.from_dict(data), self._encode_chat, key)
        data = {"prompt": [r["prompt"] for r in rows], "response": [r["response"] for r in rows], **texts}
        key = {
            "split": split,
            "data": hash_texts(data["prompt"] + data["response"]),
            "max_length": self.hparams.max_length,
        }
        return self.tokenize_cached(Dataset.from_dict(data), self._encode, key)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if "prompt" in features[0]:
            return self.collate_prompts(features)
        # Not DataCollatorForSeq2Seq: it pads through tokenizer.pad, which needs a pad token that
        # many decoders (Llama's) lack; padding with EOS under the mask is what they are trained with.
        length = max(len(f["input_ids"]) for f in features)
        if multiple := self.hparams.pad_to_multiple_of:
            length = -(-length // multiple) * multiple
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.tensor([f["input_ids"] + [pad] * (length - len(f["input_ids"])) for f in features])
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (length - len(f["input_ids"])) for f in features])
        labels = torch.tensor([f["labels"] + [-100] * (length - len(f["labels"])) for f in features])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "reference" in features[0]:  # test: the prompts left-padded for generation, and the answers
            prompts = self.tokenizer([f["gen_prompt"] for f in features], return_tensors="pt", padding=True,
                                     padding_side="left", add_special_tokens=False)  # fmt: skip
            batch.update(gen_input_ids=prompts["input_ids"], gen_attention_mask=prompts["attention_mask"],
                         gen_prompts=[f["gen_prompt"] for f in features],
                         references=[f["reference"] for f in features])  # fmt: skip
        return batch
