"""The fused decoder graph (onnxruntime-genai's model builder, adapted to lightkit's contract):
each family it is used for matches PyTorch on left-padded batches, in the KV-cache loop and on a
prefilled prompt's continuations; LoRA-merged weights go through it; other models fall back to
the TorchScript trace with the reason recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import make_chat_tokenizer

from lightkit.export.builder.onnx_export import export_causal_lm
from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import OrtModel

FAMILIES = {
    "llama": {"tie_word_embeddings": True},
    "qwen2": {"tie_word_embeddings": False},  # Q/K/V biases, an untied head
    "mistral": {"tie_word_embeddings": False, "sliding_window": None},
}


def tiny(model_type: str, vocab: int, **extra: object) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=64, intermediate_size=96,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=128, **extra)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random weights, not the near-identity of a fresh init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(make_chat_tokenizer(tmp_path_factory.mktemp("tok")))


def left_padded(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, vocab, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :1] = 0
    return ids, mask


def check_against_pytorch(model: torch.nn.Module, path: Path) -> None:
    """Full forwards, the KV-cache loop and continuations of a prefilled prompt, each against
    PyTorch's own logits, on left-padded rows of different lengths."""
    session = OrtModel(path, device="cpu")
    vocab = model.config.vocab_size
    ids, mask = left_padded(vocab)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    got = session(input_ids=ids, attention_mask=mask).logits
    assert (got - expected)[mask.bool()].abs().max() < 1e-4

    forced = torch.randint(3, vocab, (3, 4))
    steps = DecodeLoop(session).forced(ids, mask, forced)  # (B, 4, V): after the prompt, then each forced token
    full = torch.cat([ids, forced], 1)
    full_mask = torch.cat([mask, torch.ones_like(forced)], 1)
    with torch.no_grad():
        reference = model(input_ids=full, attention_mask=full_mask,
                          position_ids=(full_mask.cumsum(1) - 1).clamp(min=0)).logits  # fmt: skip
    assert (steps - reference[:, ids.size(1) - 1 : -1]).abs().max() < 1e-4

    loop = DecodeLoop(session)
    prompt = ids[0]
    cache = loop.prefill(prompt)
    candidates = torch.tensor([[5, 6, 7], [8, 9, 0]])
    lengths = torch.tensor([3, 2])
    scored = loop.continuation_logprobs(cache, candidates, lengths)
    for row, n in enumerate(lengths.tolist()):
        with torch.no_grad():
            logits = model(input_ids=torch.cat([prompt, candidates[row, :n]]).view(1, -1)).logits[0, prompt.numel() :]
        assert (scored[row, :n] - torch.log_softmax(logits, -1)).abs().max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_exports_fused_and_matches_pytorch(family: str, tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    model = tiny(family, len(tokenizer), **FAMILIES[family])
    path = tmp_path / "model.onnx"
    names, record = export_causal_lm(model, path, tokenizer=tokenizer)
    assert record["exporter"].startswith("onnxruntime-genai model builder")
    assert record["fusions"]["GroupQueryAttention"] == 2 and record["fusions"]["SkipSimplifiedLayerNormalization"] >= 3
    assert "position_ids" not in names and {"past.0.key", "past.1.value"} <= set(names)
    check_against_pytorch(model, path)


@pytest.mark.slow
def test_a_lora_merged_checkpoint_goes_through_the_builder(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    from peft import LoraConfig, get_peft_model

    base = tiny("llama", len(tokenizer), tie_word_embeddings=True)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():  # trained adapters: B is no longer zero
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ids, mask = left_padded(len(tokenizer))
    with torch.no_grad():
        adapted = lora(input_ids=ids, attention_mask=mask).logits
    merged = lora.merge_and_unload().eval()
    _, record = export_causal_lm(merged, tmp_path / "model.onnx", tokenizer=tokenizer)
    assert record["fusions"]["GroupQueryAttention"] == 2
    got = OrtModel(tmp_path / "model.onnx", device="cpu")(input_ids=ids, attention_mask=mask).logits
    assert (got - adapted)[mask.bool()].abs().max() < 1e-4
    check_against_pytorch(merged, tmp_path / "model.onnx")


def test_what_the_builder_cannot_take_is_traced_and_says_why(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    narrow = tiny("llama", len(tokenizer), head_dim=8)  # GroupQueryAttention takes head sizes in 16s
    names, record = export_causal_lm(narrow, tmp_path / "narrow.onnx", tokenizer=tokenizer)
    assert "position_ids" in names and "head size 8" in record["why"]
    model = tiny("llama", len(tokenizer))
    _, record = export_causal_lm(model, tmp_path / "no-tokenizer.onnx")
    assert record["exporter"].startswith("torch.onnx") and "no tokenizer" in record["why"]
    check_against_pytorch(model, tmp_path / "no-tokenizer.onnx")  # the same contract on either graph


def test_the_shipped_tiny_decoder_is_fused(tiny_decoder: Path) -> None:
    manifest = json.loads((tiny_decoder / "manifest.json").read_text())
    assert manifest["graph"]["exporter"].startswith("onnxruntime-genai model builder")
    assert manifest["graph"]["fusions"]["GroupQueryAttention"] == 2
    assert manifest["quantization"]["int8-cpu"]["fusions"]["GroupQueryAttention"] == 2
    assert [i["name"] for i in manifest["inputs"] if not i["name"].startswith("past.")] == [
        "input_ids",
        "attention_mask",
    ]
    graph = onnx.load(tiny_decoder / "int8-cpu" / "model.onnx", load_external_data=False).graph
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert all(n.input[5] == "lk/seqlens_k" and n.input[10] == "lk/attention_bias" for n in attention)
    assert np.all([n.op_type != "ReduceSum" for n in graph.node])  # the right-padding seqlens_k is gone
