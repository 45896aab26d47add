"""Next-token loss without the (B, T, V) logits: torch's chunked linear cross-entropy.

With a 49,152-entry vocabulary the logits of a 4 x 320 batch are 63M floats (250 MB in fp32, the
same again for their gradient and for the log-softmax), and on instruction data almost all of
them belong to prompt positions the loss ignores. Here the decoder's last hidden states are
gathered at the labelled positions only, and `torch.nn.functional.linear_cross_entropy` applies
the output layer and the cross-entropy a chunk of rows at a time, so neither the full logits nor
their gradient ever exist, and no output-layer work is spent on prompt tokens.

This uses torch's own op (2.13+) rather than a hand-written chunk loop; it supports the plain
`lm_head(hidden)` of Llama-family models. Models that transform the logits after the head
(soft-capping, scaling) or an output layer wrapped by an adapter are refused by name, since the
loss would silently differ.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightkit.io.errors import InputError

# Config fields of model families whose logits are not just `lm_head(hidden)`.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def output_layer(model: nn.Module, what: str = "chunked_loss") -> nn.Linear:
    """The model's output layer, checked to be a plain linear map of the last hidden state
    (`what` names the setting that needs it, in the error)."""
    config = getattr(model, "config", None)
    for field in _LOGIT_TRANSFORMS:
        if getattr(config, field, None) not in (None, 1, 1.0):
            raise InputError(
                f"{what}: {type(model).__name__} transforms its logits after the output layer "
                f"(config.{field} = {getattr(config, field)}), which {what} does not support"
            )
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear:
        raise InputError(
            f"{what} needs a plain nn.Linear output layer, but {type(model).__name__}'s is "
            f"{type(head).__name__} (an adapter on lm_head?); leave lm_head out of peft.target_modules"
        )
    return head


class ChunkedLMOutput:
    """What `chunked_lm_loss` returns: the loss, and the labelled positions' hidden states for metrics."""

    def __init__(self, loss: torch.Tensor, hidden: torch.Tensor, target: torch.Tensor, head: nn.Linear) -> None:
        self.loss, self.hidden, self.target, self.head = loss, hidden, target, head

    @torch.no_grad()
    def predictions(self, rows: int = 1024) -> torch.Tensor:
        """Argmax next token at each labelled position, `rows` positions at a time (bounded memory)."""
        h = self.hidden.detach()
        return torch.cat([self.head(h[i : i + rows]).argmax(-1) for i in range(0, h.size(0), rows)])


def chunked_lm_loss(model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> ChunkedLMOutput:
    """Mean next-token cross-entropy of a causal LM over the labelled positions of `labels`.

    Equal to the model's own `loss` for `labels` (shift by one, ignore -100), computed from the
    decoder's hidden states without the full logits.

    Args:
        model: a transformers causal LM (or a peft model around one).
        inputs: its forward's inputs (input_ids, attention_mask, ...).
        labels: (B, T) token ids, -100 where no loss is taken.
    """
    head = output_layer(model)
    hidden = model.get_decoder()(**inputs).last_hidden_state  # (B, T, H)
    target = labels[:, 1:]  # position t predicts token t+1
    labelled = target != -100
    picked = hidden[:, :-1][labelled]  # (N, H): only the positions the loss reads
    options = torch.nn.LinearCrossEntropyOptions()  # torch picks the chunking per device and dtype
    loss = F.linear_cross_entropy(picked, head.weight, target[labelled], linear_bias=head.bias, options=options)
    return ChunkedLMOutput(loss, picked, target[labelled], head)


def labelled_logprobs(
    model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor, what: str, temperature: float = 1.0
) -> torch.Tensor:
    """log p(token) of each labelled token of `labels` (B, T) under a causal LM, its logits divided
    by `temperature` (as sampled): (B, T - 1), zero where the label is -100.

    Preference and RL objectives read a handful of response tokens per row out of a prompt of
    hundreds; the output layer is applied to those positions only, so the (B, T, V) logits are
    never built (the same saving as `chunked_lm_loss`). Log-softmax runs in float32.
    """
    head = output_layer(model, what)
    hidden = model.get_decoder()(**inputs).last_hidden_state
    target = labels[:, 1:]
    labelled = target != -100
    logits = head(hidden[:, :-1][labelled]).float() / temperature  # (N, V)
    picked = torch.log_softmax(logits, dim=-1).gather(-1, target[labelled].unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(target.shape, dtype=picked.dtype, device=picked.device)
    return out.masked_scatter(labelled, picked)
