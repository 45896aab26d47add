"""Conversations through the tokenizer's chat template, with the loss on assistant tokens only.

A chat model answers in the format it was tuned on (SmolLM2: ChatML, `<|im_start|>user ...`), so
instruction data is rendered with the tokenizer's own `chat_template` rather than a format string.
The assistant spans are found by rendering: for each assistant turn, the conversation up to it
with the generation prompt is a prefix of the conversation through it, and the difference is what
the model must learn to write (its text and the end-of-turn token). The full text is tokenised
once, and a token is labelled when its characters start inside an assistant span, so token merges
at the boundaries cannot shift the mask.

This is the chat equivalent of TRL's `assistant_only_loss`, computed from any incremental template
instead of `{% generation %}` markers, which few templates (SmolLM2's not among them) carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from lightkit.io.errors import InputError

ROLES = ("system", "user", "assistant")


def check_messages(messages: Any, where: str, need_answer: bool = True) -> list[dict[str, str]]:
    """`messages` as a list of {role, content}, with known roles and (`need_answer`) at least one
    assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: `messages` must be a non-empty list of {{role, content}} turns")
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise InputError(f"{where}: turn {i} must be {{role, content}} with text content, got {turn!r}")
        if turn.get("role") not in ROLES:
            raise InputError(f"{where}: turn {i} has role {turn.get('role')!r}; expected one of {list(ROLES)}")
    if need_answer and not any(turn["role"] == "assistant" for turn in messages):
        raise InputError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    return [{"role": t["role"], "content": t["content"]} for t in messages]


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], where: str, first: int = 0
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns from turn `first`
    on (a TRL prompt-completion row learns its completion, not the answers inside its prompt)."""
    text = render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant" or i < first:
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise InputError(
                f"{where}: the tokenizer's chat template does not render a conversation as a prefix of its "
                "continuation, so the assistant tokens cannot be told apart; use a format string (format: template)"
            )
        spans.append((len(before), len(through)))
    return text, spans


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, text: str, spans: Sequence[Sequence[int]], max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of `text` and labels that are -100 outside the assistant `spans`."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = enc["input_ids"], []
    for token, (start, _end) in zip(ids, enc["offset_mapping"]):
        inside = any(a <= start < b for a, b in spans)
        labels.append(token if inside else -100)
    return ids[:max_length], labels[:max_length]


def user_turns(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """A user turn, after a system turn when `system_prompt` is set."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": prompt}]


def generation_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None) -> str:
    """A user turn rendered for the model to answer (what `predict` feeds a chat model)."""
    return render(tokenizer, user_turns(prompt, system_prompt), generation_prompt=True)
