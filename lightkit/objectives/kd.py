"""Knowledge-distillation maths and student construction, free of Lightning.

`tasks/distillation.py` wires these into every objective; they live here so they can be tested on
hand-computed tensors and reused (e.g. by a benchmark) without a Trainer.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from lightkit.io.errors import InputError


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
    scale_by_t2: bool = True,
) -> torch.Tensor:
    """`T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))`, averaged over the positions `mask` selects.

    Softening both distributions by T shrinks the KL's gradients by 1/T², so Hinton et al. (2015)
    multiply by T² to keep the KD term's weight independent of T when mixing it with the hard-label
    loss. Some toolkits omit the factor; `scale_by_t2=False` reproduces them.

    Args:
        student_logits: (..., C) logits.
        teacher_logits: (..., C) logits of the same shape.
        temperature: softening temperature T (> 0).
        mask: (...) bool, the positions to compare (labelled tokens, masked tokens, ...); all
            positions when None.
        scale_by_t2: multiply by T².
    """
    if student_logits.shape != teacher_logits.shape:
        raise InputError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape: do they share the vocabulary / labels?"
        )
    classes = student_logits.size(-1)
    s = student_logits.float().reshape(-1, classes)
    t = teacher_logits.float().reshape(-1, classes)
    if mask is not None:
        keep = mask.reshape(-1).bool()
        s, t = s[keep], t[keep]
    if s.size(0) == 0:  # a batch with no labelled position contributes nothing, not NaN
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
    # batchmean: the sum over classes, averaged over positions (the true KL per position).
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return kl * temperature**2 if scale_by_t2 else kl


def hidden_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor,
    kind: Literal["mse", "cosine"] = "mse",
) -> torch.Tensor:
    """Distance between (projected) student and teacher hidden states over non-padding positions.

    Args:
        student_hidden: (B, T, H) student states, already projected to the teacher's width.
        teacher_hidden: (B, T, H) teacher states.
        mask: (B, T) attention mask; padding positions are left out.
        kind: `mse` (mean squared error per element) or `cosine` (1 - cosine similarity per position).
    """
    keep = mask.bool()
    s, t = student_hidden[keep].float(), teacher_hidden[keep].float()  # (N, H)
    if kind == "mse":
        return F.mse_loss(s, t)
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


def layer_list(model: PreTrainedModel) -> tuple[nn.Module, str, nn.ModuleList]:
    """The transformer block list of `model`: (its parent module, attribute name, the list).

    Found as the one ModuleList with `config.num_hidden_layers` entries, which covers BERT-like
    (`encoder.layer`), Llama-like (`model.layers`) and GPT-2-like (`transformer.h`) models without
    a table of architectures.
    """
    n = model.config.num_hidden_layers
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            parent_name, _, attr = name.rpartition(".")
            found.append((model.get_submodule(parent_name) if parent_name else model, attr, module))
    if len(found) != 1:
        raise InputError(
            f"cannot tell which ModuleList of {type(model).__name__} holds its {n} layers "
            f"({len(found)} candidates); build the student from `model_config` instead of `student_layers`"
        )
    return found[0]


def student_from_layers(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """A copy of `teacher` that keeps only the blocks at `layers` (DistilBERT-style initialisation).

    Embeddings, heads and the kept blocks are copied with their weights; the config's layer count
    (and per-layer settings such as `layer_types`) follow, so `save_pretrained` writes a model that
    `from_pretrained` loads as is.
    """
    n = teacher.config.num_hidden_layers
    if not layers or any(not 0 <= i < n for i in layers) or len(set(layers)) != len(layers):
        raise InputError(f"student_layers: {layers} must be distinct teacher layer indices in [0, {n - 1}]")
    student = copy.deepcopy(teacher)
    parent, attr, blocks = layer_list(student)
    kept = nn.ModuleList(blocks[i] for i in layers)
    for new_index, block in enumerate(kept):
        # Decoders index their KV cache by the block's layer_idx: renumber the kept blocks.
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    setattr(parent, attr, kept)
    config = student.config
    config.num_hidden_layers = len(layers)
    for key in ("layer_types",):
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == n:
            setattr(config, key, [values[i] for i in layers])
    return student.train().requires_grad_(True)
