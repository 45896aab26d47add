"""TRL's dataset formats, read as TRL reads them, so a dataset made for TRL trains here unchanged.

TRL (docs: "Dataset formats and types") names two formats and several types:
- standard: text fields (`prompt`, `completion`, `chosen`, `rejected`);
- conversational: lists of `{role, content}` turns in the same fields (or `messages`);
- preference rows hold `chosen` and `rejected`, with an explicit `prompt`, or an implicit one: the
  part both sides share, which `extract_prompt` splits off exactly as TRL's `extract_prompt` does
  (the longest common prefix; a space before the split goes with the responses).
"""

from __future__ import annotations

from typing import Any

from lightkit.data.chat import check_messages
from lightkit.io.errors import InputError

Turns = list[dict[str, str]]


def is_conversation(value: Any) -> bool:
    """Whether a field holds turns (`[{role, content}, ...]`) rather than text."""
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) and "role" in t for t in value)


def extract_prompt(chosen: str | Turns, rejected: str | Turns) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected) of an implicit-prompt pair: what both sides start with is the prompt."""
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if isinstance(chosen, str) and idx > 0 and chosen[idx - 1] == " ":
                idx -= 1  # as TRL: the space before the answers goes with them
            break
    else:
        idx = min(len(chosen), len(rejected))
    return chosen[:idx], chosen[idx:], rejected[idx:]


def preference_parts(row: dict[str, Any], where: str) -> tuple[str | Turns | None, str | Turns, str | Turns]:
    """(prompt, chosen, rejected) of a preference row, explicit or implicit, standard or
    conversational; conversational parts are checked turns. The prompt is None when a standard row
    has none and shares nothing (a `prompt_template` may then build it from other fields)."""
    sides = ("chosen", "rejected")
    absent = [k for k in sides if k not in row]
    if absent:
        raise InputError(f"{where}: missing column(s) {absent}; the row has {sorted(k for k in row if k[0] != '_')}")
    not_text = [k for k in sides if not (isinstance(row[k], str) or is_conversation(row[k]))]
    if not_text:
        raise InputError(f"{where}: field(s) {not_text} must be text or a list of {{role, content}} turns")
    empty = [k for k in sides if isinstance(row[k], str) and not row[k].strip()]
    if empty:
        raise InputError(f"{where}: {empty} must be non-empty text; a preference row holds a prompt (or one both "
                         "sides share) and a chosen and a rejected response")  # fmt: skip
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    conversational = is_conversation(chosen)
    if conversational != is_conversation(rejected):
        raise InputError(f"{where}: chosen and rejected must both be text or both be lists of {{role, content}} turns")
    if prompt is None:
        shared, chosen, rejected = extract_prompt(chosen, rejected)
        prompt = shared or None
        if chosen == rejected:
            raise InputError(f"{where}: chosen and rejected are the same response, so the pair prefers nothing")
    if conversational:
        if prompt and not is_conversation(prompt):
            raise InputError(f"{where}: a conversational pair's prompt must be a list of turns, got text")
        prompt_turns = check_messages(prompt, where, need_answer=False) if prompt else []
        sides = [check_messages(side, where, need_answer=True) for side in (chosen, rejected)]
        if sides[0] == sides[1]:
            raise InputError(f"{where}: chosen and rejected are the same response, so the pair prefers nothing")
        return prompt_turns, sides[0], sides[1]
    if not chosen.strip() or not rejected.strip():
        raise InputError(f"{where}: chosen and rejected must differ after the prompt they share")
    if chosen.strip() == rejected.strip():
        raise InputError(f"{where}: chosen and rejected are the same response, so the pair prefers nothing")
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"{where}: a text pair's prompt must be text, got {type(prompt).__name__}")
    return prompt, chosen, rejected
