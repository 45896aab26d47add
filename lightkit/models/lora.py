"""LoRA adapters through peft: train a few low-rank matrices beside frozen pretrained weights.

`BaseTask(peft={...})` wraps the task's transformers model with `peft.get_peft_model` and a
`LoraConfig` built from the settings below, so every objective gets LoRA the same way. Only the
adapter weights train; the checkpoint keeps only what trains (`trainable_state`), since the base
weights come from `pretrained` again when the task is built; and the saved model is written twice,
as the PEFT adapter and merged into a plain transformers model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from lightkit.io.errors import InputError

# The keys `peft:` takes, with their defaults (LoraConfig's names in the comments).
DEFAULTS: dict[str, Any] = {
    "r": 16,  # rank of each adapter
    "alpha": 32,  # lora_alpha: the update is scaled by alpha / r
    "dropout": 0.05,  # lora_dropout
    "target_modules": "all-linear",  # every nn.Linear except the output layer, or a list of names
    "bias": "none",
}


def lora_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` over the defaults, with unknown keys named."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise InputError(f"peft: unknown key(s) {unknown}; expected some of {sorted(DEFAULTS)}")
    return {**DEFAULTS, **settings}


def linear_names(model: nn.Module) -> list[str]:
    """The distinct last name parts of the model's linear layers (what target_modules matches)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def apply_lora(model: PreTrainedModel, settings: dict[str, Any], task_type: str | None) -> nn.Module:
    """`model` wrapped with LoRA adapters (peft.PeftModel); only the adapters require grad.

    `task_type` is peft's name for the objective (CAUSAL_LM, TOKEN_CLS, SEQ_CLS), which also keeps
    a fresh classification head trainable; None wraps the bare model.
    """
    from peft import LoraConfig, get_peft_model

    s = lora_settings(settings)
    # A classifier's head is new: peft trains it whole (modules_to_save), so it must not also get
    # an adapter, which `all-linear` would give it.
    heads = ["classifier", "score"] if task_type in ("SEQ_CLS", "TOKEN_CLS") else None
    config = LoraConfig(
        r=s["r"],
        lora_alpha=s["alpha"],
        lora_dropout=s["dropout"],
        target_modules=s["target_modules"],
        bias=s["bias"],
        task_type=task_type,
        exclude_modules=heads,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        if "not found" not in str(e) and "target_modules" not in str(e):
            raise
        raise InputError(
            f"peft.target_modules {s['target_modules']!r} matches no layer of this {type(model).__name__}; "
            f"its linear layers are {linear_names(model)} (or use 'all-linear')"
        ) from None


def trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of `state` (module.state_dict()) that train: what a LoRA checkpoint needs."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trainable}


def check_adapter_state(module: nn.Module, saved: dict[str, torch.Tensor], where: str) -> None:
    """A LoRA checkpoint's weights must all exist in `module` with the same shapes, and cover
    everything that trains: otherwise it belongs to another base model or another LoRA setting."""
    own = module.state_dict()
    foreign = [k for k in saved if k not in own]
    mismatched = [k for k in saved if k in own and own[k].shape != saved[k].shape]
    missing = sorted(set(trainable_state(module, own)) - set(saved))
    if foreign or mismatched or missing:
        detail = "; ".join(
            f"{label}: {names[:3]}{' ...' if len(names) > 3 else ''}"
            for label, names in (("not in this model", foreign), ("other shapes", mismatched), ("missing", missing))
            if names
        )
        raise InputError(f"{where}: the adapter does not fit this base model and LoRA setting ({detail})")


def merged_copy(model: nn.Module) -> PreTrainedModel:
    """A plain transformers model with the adapters merged into its weights (the model is kept)."""
    return copy.deepcopy(model).merge_and_unload()
