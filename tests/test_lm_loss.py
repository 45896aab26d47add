"""The chunked next-token loss equals the model's own loss and gradients, and refuses models it
would get wrong."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from lightkit.io.errors import InputError
from lightkit.objectives.lm_loss import chunked_lm_loss


def tiny_llama(**extra: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, **extra)  # fmt: skip
    return LlamaForCausalLM(config)


def instruction_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Two rows: a 4-token prompt without labels, then the answer; the second row is padded."""
    ids = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = ids.clone()
    labels[:, :4] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask}, labels


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_equals_the_models_loss_and_gradients(tied: bool) -> None:
    model = tiny_llama(tie_word_embeddings=tied)
    inputs, labels = instruction_batch()
    reference = model(**inputs, labels=labels).loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    out = chunked_lm_loss(model, inputs, labels)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-6), name
    # Metrics read the labelled positions only, in order, with the argmax of the real logits.
    logits = model(**inputs).logits[:, :-1]
    labelled = labels[:, 1:] != -100
    assert torch.equal(out.target, labels[:, 1:][labelled])
    assert torch.equal(out.predictions(rows=3), logits[labelled].argmax(-1))


def test_chunked_loss_reaches_through_a_lora_wrapper() -> None:
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    inputs, labels = instruction_batch()
    out = chunked_lm_loss(model, inputs, labels)
    assert out.loss.item() == pytest.approx(model(**inputs, labels=labels).loss.item(), rel=1e-5)


def test_an_adapter_on_the_output_layer_is_refused() -> None:
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["lm_head"], task_type="CAUSAL_LM"))
    with pytest.raises(InputError, match="plain nn.Linear output layer.*lm_head"):
        chunked_lm_loss(model, *instruction_batch())


def test_logits_transformed_after_the_head_are_refused() -> None:
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(InputError, match="final_logit_softcapping = 30.0"):
        chunked_lm_loss(model, *instruction_batch())
