"""`shared_prefill`: k answers per prompt sampled with each prompt read once are exactly the answers
of the repeated batch (same tokens, same logits, same RNG draws), in bf16 autocast on CPU as the
chain samples, for a plain model (`num_return_sequences`, on-policy pairs) and a LoRA one (rows
repeated before `generate`, GRPO's groups)."""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lightkit.models.shared_prefill import shared_prefill

PAD, EOS = 0, 1


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                         pad_token_id=PAD, eos_token_id=EOS)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def prompts() -> dict[str, torch.Tensor]:
    """Three left-padded prompts of different lengths."""
    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [0, 0, 0, 0, 0, 20, 21, 22]])
    return {"input_ids": ids, "attention_mask": (ids != PAD).long()}


def rows_per_forward(model: torch.nn.Module) -> tuple[list[int], Any]:
    """A hook on the input embeddings recording each forward's batch size (what the model really
    ran, below the wrapped forward), and its handle."""
    seen: list[int] = []
    return seen, model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].size(0)))


def sample(model: torch.nn.Module, inputs: dict[str, torch.Tensor], share: int, **generate: Any) -> Any:
    torch.manual_seed(7)
    sharing = shared_prefill(model, share) if share else nullcontext()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), sharing:
        return model.generate(**inputs, do_sample=True, max_new_tokens=6, pad_token_id=PAD, eos_token_id=EOS,
                              output_logits=True, return_dict_in_generate=True, **generate)  # fmt: skip


def assert_same(a: Any, b: Any) -> None:
    assert torch.equal(a.sequences, b.sequences)
    assert all(torch.equal(x, y) for x, y in zip(a.logits, b.logits, strict=True))


def test_k_answers_per_prompt_prefill_each_prompt_once_and_sample_the_same(model: LlamaForCausalLM) -> None:
    seen, hook = rows_per_forward(model)
    plain = sample(model, prompts(), 0, num_return_sequences=4)
    assert seen[0] == 12  # generate repeats each prompt 4 times before its prefill
    seen.clear()
    shared = sample(model, prompts(), 4, num_return_sequences=4)
    hook.remove()
    assert seen[0] == 3 and seen[1:] == [12] * (len(seen) - 1)  # one prefill row per prompt, then all 12 decode
    assert_same(shared, plain)
    assert "forward" not in model.__dict__  # the class's forward again


def test_lora_policy_with_rows_repeated_before_generate(model: LlamaForCausalLM) -> None:
    """GRPO's path: a peft model, prompts repeat_interleaved into groups by the caller."""
    policy = get_peft_model(LlamaForCausalLM(model.config).eval(), LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero: make the adapters change the logits
    repeated = {k: v.repeat_interleave(3, 0) for k, v in prompts().items()}
    seen, hook = rows_per_forward(policy)
    plain = sample(policy, repeated, 0)
    first_plain = seen[0]
    seen.clear()
    shared = sample(policy, repeated, 3)
    hook.remove()
    assert (first_plain, seen[0]) == (9, 3)
    assert_same(shared, plain)
    with policy.disable_adapter():  # the adapters took part: the base model samples otherwise
        assert not torch.equal(sample(policy, repeated, 3).logits[0], shared.logits[0])


def test_rows_not_in_groups_run_the_plain_prefill(model: LlamaForCausalLM) -> None:
    seen, hook = rows_per_forward(model)
    shared = sample(model, prompts(), 3)  # three different prompts: no group of 3 equal rows
    hook.remove()
    assert seen[0] == 3
    assert_same(shared, sample(model, prompts(), 0))


def test_generate_still_sees_the_forward_signature(model: LlamaForCausalLM) -> None:
    """generate passes logits_to_keep only to a forward that names it; without it the prefill would
    compute every position's logits (slower, and not bit-equal to the plain run)."""
    with shared_prefill(model, 2):
        assert "logits_to_keep" in inspect.signature(model.forward).parameters
    assert "forward" not in model.__dict__
