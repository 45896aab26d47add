"""Models to ONNX: encoders (token / sequence classification), causal LMs with a KV cache, and
the CPU INT8 form.

The fp32 graph comes from the legacy TorchScript exporter (`dynamo=False`) with eager attention:
that graph is what ONNX Runtime's transformer optimizer pattern-matches to fuse Attention,
SkipLayerNormalization and BiasGelu (the dynamo exporter's SDPA graph is not fused). `int8-cpu`
is dynamic QInt8 quantisation of the fused graph (MatMulInteger / QAttention /
QEmbedLayerNormalization, see INT8_CPU_OPS), which is fast on CPU and must never be shipped as a
GPU artifact: those nodes fall back to the CPU under the CUDA execution provider.

The GPU forms are the ones whose every node runs on ORT's CUDA execution provider: `fp16` is
the fused graph converted by ORT's `convert_float_to_float16(keep_io_types=True)` (a torch
`.half()` export does not load), and `int8-gpu` is weight-only 8-bit `MatMulNBits` (symmetric,
block 32) on that fp16 graph.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn
from transformers import PreTrainedModel

from lightkit.export.builder.fused_decoder import fused_decoder_graph, head_size, unfused_reason
from lightkit.export.builder.graph import save
from lightkit.export.builder.tied import share_tied_table
from lightkit.export.builder.weight_only import INT8_GPU, WeightOnly
from lightkit.io.errors import InputError

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _LogitsOnly(nn.Module):
    """Positional inputs in, logits out: the signature the TorchScript exporter traces."""

    def __init__(self, model: PreTrainedModel, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors))).logits


def input_names(model: PreTrainedModel) -> tuple[str, ...]:
    """The encoder inputs this model's forward takes (token_type_ids only where it is used)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    names = tuple(n for n in INPUTS if n in params)
    if "token_type_ids" in names and getattr(model.config, "type_vocab_size", 0) < 2:
        names = tuple(n for n in names if n != "token_type_ids")  # a single segment: a constant 0
    return names


def export_fp32(
    model: PreTrainedModel, path: Path, opset: int = OPSET, logits_axes: list[str | int] | None = None
) -> tuple[str, ...]:
    """Write the fp32 graph with dynamic batch and sequence axes; returns its input names.

    `logits_axes` is the task's declared logits shape (`BaseTask.logits_axes`): its named axes are
    dynamic in the graph. Default: per-row logits (batch, classes).
    """
    model = model.eval().float()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")  # the pattern ORT's optimizer fuses
    names = input_names(model)
    dummy = tuple(
        torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
        for n in names
    )
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {i: name for i, name in enumerate(logits_axes or ["batch", 0]) if isinstance(name, str)}
    with torch.no_grad():
        torch.onnx.export(
            # eval(): the exporter puts the module it is given back in that module's own mode when
            # done, and a fresh wrapper is in training mode, which would leave the model with
            # dropout on for every PyTorch reference scored after the export.
            _LogitsOnly(model, names).eval(),
            dummy,
            str(path),
            input_names=list(names),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return names


def fuse(model: PreTrainedModel, src: Path, dst: Path, use_gpu: bool = False, embed_layer_norm: bool = True) -> bool:
    """ORT's transformer optimizer (BERT fusions) from `src` to `dst`; False if it does not apply.

    `embed_layer_norm=False` leaves the embedding lookups as Gathers (EmbedLayerNormalization takes
    the tables as float initializers, so a graph whose tables are to be quantised must not fuse it).
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    config = model.config
    if config.model_type not in ("bert", "roberta", "distilbert", "electra", "xlm-roberta", "deberta-v2"):
        return False
    heads, hidden = config.num_attention_heads, config.hidden_size
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # For the GPU graph only the Python fusions run (opt_level 0): level 1 would open an ORT
    # session on the CUDA EP to pre-optimise, which fails noisily on a machine without CUDA.
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = embed_layer_norm
    optimized = optimize_model(
        str(src),
        model_type="bert",
        num_heads=heads,
        hidden_size=hidden,
        opt_level=0 if use_gpu else 1,
        use_gpu=use_gpu,
        optimization_options=options,
    )
    optimized.save_model_to_file(str(dst))
    return True


# On a graph fused by ORT's transformer optimizer, the attention projections live inside the
# fused `Attention` node and the embedding tables inside `EmbedLayerNormalization`: quantising only
# MatMul/Gemm would leave both in fp32 (most of a small encoder's file, and its attention GEMMs).
# ORT's own default for dynamic quantisation (op_types_to_quantize=None) and Optimum's dynamic
# configs include both, as QAttention and QEmbedLayerNormalization (CPU kernels). Unfused graphs
# (decoders) have neither; there `Gather` quantises the token-embedding table (uint8 table, then
# DequantizeLinear). Gathers of shapes and indices have no float table to quantise. The op sets
# are compared by benchmarks/int8_cpu_ops.py (results/int8-cpu-ops-cpu.json).
INT8_CPU_OPS = ["MatMul", "Gemm", "Attention", "EmbedLayerNormalization", "Gather"]


def quantize_int8_cpu(src: Path, dst: Path, ops: list[str] | None = None) -> None:
    """Dynamic QInt8 (per-tensor weights) of every MatMul/Gemm, fused Attention and embedding
    table (INT8_CPU_OPS): the CPU INT8 artifact. `ops` replaces that op set
    (benchmarks/int8_cpu_ops.py compares the choices with this same call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        # The fused graph's com.microsoft ops (Attention, SkipLayerNormalization) defeat ONNX shape
        # inference; DefaultTensorType tells the quantiser their outputs are float, as ORT advises.
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(ops or INT8_CPU_OPS),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    except Exception as e:  # noqa: BLE001 - report which step failed, with ORT's reason
        raise InputError(f"int8-cpu: dynamic quantisation of {src.name} failed ({type(e).__name__}: {e})") from e


class _CausalLMWithCache(nn.Module):
    """Flat tensors in and out around transformers' DynamicCache, for the TorchScript exporter.

    Inputs: input_ids, attention_mask (past + new), position_ids, then past.{i}.key/value per layer
    (batch, kv_heads, past_len, head_dim); an empty past (past_len 0) is the prefill. Outputs:
    logits and present.{i}.key/value, the cache to feed back for the next token.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


def cache_names(layers: int, kind: str) -> list[str]:
    return [f"{kind}.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def cache_shape(model: PreTrainedModel) -> tuple[int, int]:
    """(kv_heads, head_dim) of the model's attention cache."""
    config = model.config
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads, head_size(config)


def export_causal_lm(
    model: PreTrainedModel, path: Path, opset: int = OPSET, tokenizer: Any = None, fused: bool = True
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Write a decoder with past/present KV tensors; returns its input names and the manifest's
    record of how its graph was made.

    Llama, Mistral and Qwen2 get the fused graph of onnxruntime-genai's model builder
    (`lightkit.export.builder.fused_decoder`); other families, a model without a tokenizer, and
    `fused=False` (a QAT model, whose fake quantisers the builder cannot see) are traced with
    TorchScript. Either way the graph ends in the decoding outputs (`add_next_token`) and stores
    a tied token table once.
    """
    reason = unfused_reason(model, tokenizer) if fused else "traced with its fake quantisers (QAT)"
    if reason is None:
        graph, record = fused_decoder_graph(model, tokenizer)
    else:
        _trace_causal_lm(model, path, opset)
        graph = onnx.load(str(path))
        record = {"exporter": "torch.onnx (TorchScript), attention unfused", "why": reason}
    names = tuple(i.name for i in graph.graph.input)
    add_next_token(graph)
    share_tied_table(graph)  # a tied LM head's weight is the token table, stored once (lightkit.export.builder.tied)
    save(graph, path)
    return names, record


def _trace_causal_lm(model: PreTrainedModel, path: Path, opset: int) -> None:
    """The TorchScript decoder graph, with eager attention and a `position_ids` input.

    Traced with a non-empty past of length 3 and 4 new tokens, batch 2, so no dimension is
    specialised to 0 or 1; the same graph then runs prefill (empty past) and one-token decode.
    """
    model = model.eval().float()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    layers = model.config.num_hidden_layers
    kv_heads, head_dim = cache_shape(model)
    batch, past_len, new = 2, 3, 4
    past = [torch.zeros(batch, kv_heads, past_len, head_dim) for _ in range(2 * layers)]
    ids = torch.ones(batch, new, dtype=torch.long)
    mask = torch.ones(batch, past_len + new, dtype=torch.long)
    positions = torch.arange(past_len, past_len + new).expand(batch, new)
    past_names, present_names = cache_names(layers, "past"), cache_names(layers, "present")
    names = ("input_ids", "attention_mask", "position_ids", *past_names)
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    axes.update({n: {0: "batch", 2: "past"} for n in past_names})
    axes.update({n: {0: "batch", 2: "total"} for n in present_names})
    with torch.no_grad():
        torch.onnx.export(
            _CausalLMWithCache(model).eval(),  # see export_fp32: the model stays in eval mode
            (ids, mask, positions, *past),
            str(path),
            input_names=list(names),
            output_names=["logits", *present_names],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


SAMPLE_TOP_K = 64  # candidates a sampling decode loop reads per row (top_logits / top_ids)


def add_next_token(graph_model: onnx.ModelProto) -> None:
    """Append `next_token` = argmax of the last position's logits, and `top_logits`/`top_ids` =
    its SAMPLE_TOP_K best, so a decode loop reads (batch,) ids for greedy or (batch, k) candidates
    for sampling instead of copying (batch, sequence, vocab) logits to the host."""
    graph = graph_model.graph
    vocab = graph.output[0].type.tensor_type.shape.dim[-1].dim_value or SAMPLE_TOP_K
    k = min(SAMPLE_TOP_K, vocab)
    graph.initializer.append(onnx.helper.make_tensor("last_position", onnx.TensorProto.INT64, [], [-1]))
    graph.initializer.append(onnx.helper.make_tensor("sample_k", onnx.TensorProto.INT64, [1], [k]))
    graph.node.extend([
        onnx.helper.make_node("Gather", ["logits", "last_position"], ["last_logits"], axis=1),
        onnx.helper.make_node("ArgMax", ["last_logits"], ["next_token"], axis=1, keepdims=0),
        onnx.helper.make_node("TopK", ["last_logits", "sample_k"], ["top_logits", "top_ids"], axis=1),
    ])  # fmt: skip
    graph.output.extend([
        onnx.helper.make_tensor_value_info("next_token", onnx.TensorProto.INT64, ["batch"]),
        onnx.helper.make_tensor_value_info("top_logits", onnx.TensorProto.FLOAT, ["batch", k]),
        onnx.helper.make_tensor_value_info("top_ids", onnx.TensorProto.INT64, ["batch", k]),
    ])  # fmt: skip


def to_fp16(model: PreTrainedModel, src: Path, dst: Path, embed_layer_norm: bool = True) -> None:
    """fp16 weights and compute with float32 inputs/outputs, on the fused graph where ORT fuses it."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    fused = dst.with_name(f"{dst.stem}-fused.onnx")
    source = fused if fuse(model, src, fused, use_gpu=True, embed_layer_norm=embed_layer_norm) else src
    graph = OnnxModel(onnx.load(str(source)))
    graph.convert_float_to_float16(keep_io_types=True)
    graph.save_model_to_file(str(dst))
    fused.unlink(missing_ok=True)


def quantize_int8_gpu(
    model: PreTrainedModel, src_fp32: Path, dst: Path, embedding_bits: int = 8, settings: WeightOnly = INT8_GPU
) -> dict[str, int]:
    """Weight-only 8-bit MatMulNBits (symmetric, block 32; 4-bit for `int4-gpu`, `settings`) of every MatMul, and 8-bit
    GatherBlockQuantized embedding tables (lightkit.export.builder.gather_quant), on an fp16 graph fused
    as the fp16 form is except for EmbedLayerNormalization. Returns the tables quantised."""
    from lightkit.export.builder.gather_quant import quantize_gathers
    from lightkit.export.builder.tied import quantize_tied_table

    fp16 = dst.with_name(f"{dst.stem}-fp16.onnx")
    to_fp16(model, src_fp32, fp16, embed_layer_norm=False)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # it logs every node at INFO
    quantized, _ = settings.quantize(onnx.load(str(fp16)))
    fp16.unlink()
    tied = quantize_tied_table(quantized, INT8_GPU)  # a decoder's tied table: one 8-bit copy for both ends
    tables = quantize_gathers(quantized, bits=embedding_bits)
    if tied:
        tables["tied token table"] = 8
    save(quantized, dst)
    return tables
