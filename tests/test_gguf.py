"""A packaged GGUF model resolves, by its hub name, to a converted transformers folder: a tiny
Llama written as GGUF (as llama.cpp's converter writes it) comes back with the same outputs, the
same tokens and its chat template; a file transformers cannot read is named with its types."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CHATML, make_chat_tokenizer

from lightkit.io.errors import InputError
from lightkit.models import resources
from lightkit.models.hub import load_tokenizer


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (the inverse of what transformers undoes on load)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: torch.nn.Module, tokenizer_dir: Path, path: Path) -> None:
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    tokens = sorted(vocab["model"]["vocab"], key=vocab["model"]["vocab"].get)
    specials = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    for name, index in specials.items():
        while len(tokens) <= index:
            tokens.append(f"<unused{len(tokens)}>")
        tokens[index] = name
    merges = [m if isinstance(m, str) else " ".join(m) for m in vocab["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(specials["<|endoftext|>"])
    writer.add_eos_token_id(specials["<|im_end|>"])
    writer.add_pad_token_id(specials["<|pad|>"])
    writer.add_chat_template(CHATML)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for hf_name, tensor in model.state_dict().items():
        base, _, suffix = hf_name.rpartition(".")
        array = tensor.float().numpy()
        if base.endswith("q_proj"):
            array = permute(array, heads)
        elif base.endswith("k_proj"):
            array = permute(array, kv_heads)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A tiny Llama and its tokenizer, shipped as GGUF in a fake package under a hub name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    # The template travels in the GGUF metadata, not in the tokenizer folder it is written from.
    tok_dir = make_chat_tokenizer(tmp_path / "tokenizer", template=False)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config).eval()
    package = tmp_path / "site" / "tinyllm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    write_gguf(model, tok_dir, package / "tiny.Q8.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(resources.PACKAGED_MODELS, "test/tiny-llm", ("tinyllm", "tiny.Q8.gguf", "tinyllm==0"))
    monkeypatch.setenv("LIGHTKIT_CACHE", str(tmp_path / "cache"))
    return {"model": model, "tokenizer": tokenizer, "gguf": package / "tiny.Q8.gguf"}


def test_a_packaged_gguf_converts_once_and_round_trips(packaged: dict, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from transformers import AutoModelForCausalLM

    state = torch.get_rng_state()
    folder = resources.resolve_path("test/tiny-llm", what="pretrained")
    assert folder.parent == tmp_path / "cache" / "models" and "converted" in capsys.readouterr().out
    # A seeded run draws the same numbers whether it converted the model or read the converted folder.
    assert torch.equal(torch.get_rng_state(), state)
    assert resources.resolve_path("test/tiny-llm") == folder and "converted" not in capsys.readouterr().out  # cached
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.allclose(converted(input_ids=ids).logits, packaged["model"](input_ids=ids).logits, atol=1e-5)
    tokenizer = load_tokenizer("test/tiny-llm")
    text = "where did bob go ?"
    assert tokenizer(text)["input_ids"][-5:] == packaged["tokenizer"](text)["input_ids"][-5:]
    assert "<|im_start|>user" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "tinyllm" not in sys.modules  # found on disk, never imported


def test_a_gguf_transformers_cannot_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("x.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    monkeypatch.setenv("LIGHTKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        InputError, match=r"odd.gguf: transformers cannot dequantise this GGUF \(tensor types \['F32'\]"
    ):
        resources.resolve_path(str(path), what="pretrained")
    assert not list((tmp_path / "cache").rglob("config.json"))  # nothing half-written
