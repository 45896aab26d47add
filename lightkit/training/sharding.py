"""FSDP2 sharding for Lightning's ModelParallelStrategy: one shard unit per transformer block.

Lightning's `FSDPStrategy` wraps the model itself but refuses any accelerator other than CUDA;
its `ModelParallelStrategy` runs on CPU (gloo) as well as GPU (nccl), and leaves the sharding to
the LightningModule's `configure_model`, with the device mesh it builds. `BaseTask` calls
`shard_blocks` there, so every objective shards without code of its own:

    lightkit fit --config ... --trainer.strategy ModelParallelStrategy --trainer.devices 2

The blocks are the modules transformers itself names as never to be split across devices
(`_no_split_modules`, what accelerate's FSDP auto-wrap policy reads), so no table of
architectures is kept here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard

from lightkit.io.errors import InputError


def _transformers_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def shard_blocks(model: nn.Module, mesh: DeviceMesh) -> str:
    """Shard each transformer block of `model`, then the rest (embeddings, head) as the root unit.

    Returns what was sharded, for the log ("30 LlamaDecoderLayer blocks"). Only the mesh's
    data-parallel dimension is used: tensor parallelism needs per-architecture layouts that
    lightkit does not write.
    """
    if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
        raise InputError(
            "ModelParallelStrategy: lightkit shards with FSDP2 over the data-parallel dimension only; "
            "set tensor_parallel_size: 1"
        )
    dp = data_parallel(mesh)
    names = set(getattr(_transformers_model(model), "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise InputError(
            f"ModelParallelStrategy: {type(_transformers_model(model)).__name__} names no transformer blocks "
            "(`_no_split_modules`) to shard; use strategy: ddp"
        )
    kinds = ", ".join(sorted({type(b).__name__ for b in blocks}))  # before fully_shard renames them FSDP...
    for block in blocks:
        fully_shard(block, mesh=dp)
    fully_shard(model, mesh=dp)
    return f"{len(blocks)} {kinds} blocks"


def data_parallel(mesh: DeviceMesh) -> DeviceMesh:
    return mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh


def shard_companions(task: nn.Module, model: nn.Module, mesh: DeviceMesh) -> list[str]:
    """Shard the trainable modules registered beside `model` (a PPO value head or value trunk, KD
    projections), each one shard unit; returns their names.

    Left out of every shard unit, their gradients would not be averaged across processes (FSDP2
    reduces only what it shards, and no DDP wraps the task), so each process would train a copy of
    its own. A module list is never called itself, so each of its members is a unit.
    """
    dp, names = data_parallel(mesh), []
    for name, child in task.named_children():
        if child is model or not any(p.requires_grad for p in child.parameters()):
            continue
        units = list(child) if isinstance(child, (nn.ModuleList, nn.Sequential)) else [child]
        for unit in units:
            if any(p.requires_grad for p in unit.parameters()):
                fully_shard(unit, mesh=dp)
        names.append(name)
    return names


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict of a sharded model, as plain CPU tensors, on every process.

    A collective: every process must call it. torch's `get_model_state_dict` gathers the shards.
    """
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False, cpu_offload=False)
    state = get_model_state_dict(model, options=options)
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
