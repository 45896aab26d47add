"""FSDP2 sharding of a task's model: every transformer block becomes a shard unit, the full state
gathers back, and models or meshes it cannot shard are named. (Two-process training under
ModelParallelStrategy is in test_ddp.)"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from transformers import LlamaConfig, LlamaForCausalLM

from lightkit.io.errors import InputError
from lightkit.training.sharding import full_state_dict, shard_blocks


@pytest.fixture(scope="module")
def mesh():  # noqa: ANN201
    """A one-process gloo group: fully_shard works as with many, each shard being the whole tensor."""
    with socket.socket() as s:  # a free port, so parallel runs of the suite do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
    dist.destroy_process_group()


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    return LlamaForCausalLM(config)


def test_each_block_is_a_shard_unit_and_the_full_state_gathers_back(mesh) -> None:  # noqa: ANN001
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert shard_blocks(model, mesh) == "3 LlamaDecoderLayer blocks"
    assert all(type(layer).__name__ == "FSDPLlamaDecoderLayer" for layer in model.model.layers)
    state = full_state_dict(model)
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)
    ids = torch.tensor([[1, 2, 3]])
    assert model(input_ids=ids).logits.shape == (1, 3, 64)


def test_a_model_without_named_blocks_is_refused(mesh) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=r"Sequential names no transformer blocks \(`_no_split_modules`\)"):
        shard_blocks(nn.Sequential(nn.Linear(2, 2)), mesh)


def test_tensor_parallelism_is_refused() -> None:
    class Dim:
        def size(self) -> int:
            return 2

    class TwoDimMesh:  # what ModelParallelStrategy builds with tensor_parallel_size 2
        mesh_dim_names = ("data_parallel", "tensor_parallel")

        def __getitem__(self, name: str) -> Dim:
            return Dim()

    with pytest.raises(InputError, match="set tensor_parallel_size: 1"):
        shard_blocks(tiny_llama(), TwoDimMesh())  # type: ignore[arg-type]
