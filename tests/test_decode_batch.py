"""`DecodeBatch`: rows that leave a running KV cache, and rows that join it mid-way, decode exactly
as each would alone, on the fused GroupQueryAttention graph and on the TorchScript graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lightkit.export.builder.onnx_export import export_causal_lm
from lightkit.export.runtime.decode_batch import DecodeBatch
from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.serving import Artifact
from lightkit.export.runtime.sessions import OrtModel


@pytest.fixture(scope="module", params=["fused", "torchscript"])
def session(request: pytest.FixtureRequest, tiny_decoder: Path, tmp_path_factory: pytest.TempPathFactory) -> OrtModel:
    if request.param == "fused":
        model = Artifact(tiny_decoder, form="fp32", device="cpu").session
        assert model.positions_inside
        return model
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    path = tmp_path_factory.mktemp("torchscript") / "model.onnx"
    export_causal_lm(LlamaForCausalLM(config), path, fused=False)
    model = OrtModel(path, device="cpu")
    assert not model.positions_inside
    return model


def alone(session: OrtModel, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    return DecodeLoop(session).greedy(ids, torch.ones_like(ids), steps)[0].tolist()


def test_rows_that_leave_and_join_decode_as_they_would_alone(session: OrtModel) -> None:
    rng = np.random.default_rng(0)
    sizes = [("a", 10), ("b", 4), ("c", 7), ("d", 12), ("e", 9)]
    prompts = {name: rng.integers(5, 90, size=n).tolist() for name, n in sizes}
    batch = DecodeBatch(session, ["next_token"])
    ids = np.array([prompts["a"], [0] * 6 + prompts["b"]])
    mask = np.array([[1] * 10, [0] * 6 + [1] * 4])
    values = batch.start(ids, mask)[0]
    assert batch.width == 10 and not batch.fits(len(prompts["d"]))  # d is wider than the cache: it waits
    slots: list[str | None] = ["a", "b"]
    got: dict[str, list[int]] = {name: [] for name in [*prompts, "c2"]}

    def join(name: str, copies: int = 1) -> None:
        nonlocal slots, values
        taken, new = batch.join(prompts[name], copies=copies)
        names = [name, f"{name}2"][:copies]
        slots += [None] * (batch.rows - len(slots))
        values = np.concatenate([values, np.zeros(batch.rows - len(values), values.dtype)])
        for slot, row_name, value in zip(taken, names, new[0]):
            assert slots[slot] is None
            slots[slot], values[slot] = row_name, value

    for t in range(12):
        for name, token in zip(slots, values):
            if name is not None:
                got[name].append(int(token))
        if t in (2, 6):  # b finishes, then a: their slots are free
            batch.free([slots.index("b" if t == 2 else "a")])
            slots = [None if n == ("b" if t == 2 else "a") else n for n in slots]
        if t == 7:  # half the slots free: the cache is compacted
            order = batch.compact()
            slots = [slots[i] for i in order]
            values = values[order]
            assert None not in slots and batch.rows == len(slots)
        values = batch.step(np.array([got[name][-1] if name else 0 for name in slots]))[0]
        if t == 2:
            join("c", copies=2)  # takes b's free slot, and one more appended
            assert slots == ["a", "c", "c2"]
        if t == 5:
            assert batch.fits(len(prompts["d"]))
            join("d")
        if t == 6:
            join("e")  # takes a's slot: nothing is copied
            assert slots[0] == "e" and batch.rows == 4
        if t == 7:
            assert batch.rows == len(slots) == len(values)
    assert [len(got[n]) for n in ["a", "b", "c", "c2", "d", "e"]] == [7, 3, 9, 9, 6, 5]
    for name, prompt in prompts.items():
        assert got[name] == alone(session, prompt, len(got[name])), name
    assert got["c2"] == got["c"]


def test_a_prompt_wider_than_the_cache_is_refused(session: OrtModel) -> None:
    batch = DecodeBatch(session, ["next_token"])
    batch.start(np.array([[5, 6, 7]]), np.ones((1, 3), np.int64))
    with pytest.raises(ValueError, match="4 tokens cannot join a cache of 3 slots"):
        batch.join([5, 6, 7, 8])
