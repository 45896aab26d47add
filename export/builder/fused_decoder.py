"""The fused decoder graph: onnxruntime-genai's model builder writes it, lightkit adapts its inputs.

A TorchScript trace of a Llama-family decoder leaves attention as hundreds of small ops per
layer (52% of SmolLM2's decode time on CPU), and neither ORT's transformer optimizer nor
onnxscript's rewriter matches that graph reliably across transformers releases. The genai model
builder writes the graph ONNX Runtime's kernels are made for, from the checkpoint's weights:
one `GroupQueryAttention` per layer with the rotary embedding inside (cos/sin caches),
`SkipSimplifiedLayerNormalization`, and the Q/K/V projections packed into one MatMul. It is
maintained with ORT, knows each family's quirks (Qwen2's Q/K/V biases, Mistral's sliding window),
and is the graph onnxruntime-genai itself runs; lightkit keeps its own quantisation, tied-table
sharing and parity gate on top. Chosen over onnxscript's `ort_fusions` (a dynamo export whose
fusions depend on how transformers' attention traces) and ORT's own Llama scripts (patterns of
older transformers releases); docs/export.md has the comparison.

The builder runs as a script (`models/builder.py` of the installed onnxruntime-genai package) in
a subprocess: lightkit never imports `onnxruntime_genai` itself, whose native library is built
against the CPU onnxruntime wheel rather than the onnxruntime-gpu one lightkit pins.

Two edits make the graph take lightkit's decoder contract (`lightkit.export.runtime.decode_loop`):
1. **Left padding.** The builder derives each row's length from the attention mask as
   `seqlens_k = sum(mask) - 1`, which is right padding (the prompt's real tokens first). lightkit
   left-pads prompts, so every row's `seqlens_k` becomes `total - 1` and the padded keys are
   masked by an `attention_bias` built from the mask. Rotary positions then count from the row's
   first slot, padding included; attention scores depend only on the difference of two positions,
   so a constant shift per row leaves them unchanged.
2. **Names.** `past_key_values.{i}.key` becomes `past.{i}.key`, as the TorchScript graph names
   its cache. There is no `position_ids` input: GroupQueryAttention derives positions itself.

GroupQueryAttention takes more than one new token over a non-empty past only at batch 1 (ORT's
kernel contract), so the decode loop scores a prefilled prompt's continuations row by row on this
graph (`OrtModel.positions_inside`).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from transformers import PreTrainedModel

from lightkit.export.builder.graph import remove_unused
from lightkit.io.errors import InputError

# The families lightkit tests the builder's graph on (tests/test_fused_decoder.py); other
# architectures the builder knows would work too, but are traced with TorchScript until tested.
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
FUSIONS = (
    "GroupQueryAttention",
    "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization",
    "RotaryEmbedding",
    "MultiHeadAttention",
)
# Added to a padded key's score: far below any real score, yet finite in fp16, so a row whose
# keys are all padding (a padded query) softmaxes to uniform weights instead of NaN.
MASKED = -1e4


def fusions(graph: onnx.GraphProto) -> dict[str, int]:
    """How many nodes of each fused op (FUSIONS) `graph` has: the manifest's record."""
    ops = Counter(node.op_type for node in graph.node)
    return {op: ops[op] for op in FUSIONS}


def builder_script() -> Path | None:
    """onnxruntime-genai's model builder script, or None when the package is not installed."""
    spec = importlib.util.find_spec("onnxruntime_genai")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    script = Path(next(iter(spec.submodule_search_locations))) / "models" / "builder.py"
    return script if script.is_file() else None


def builder_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxruntime-genai")
    except PackageNotFoundError:
        return None


def head_size(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def unfused_reason(model: PreTrainedModel, tokenizer: Any) -> str | None:
    """Why `model` is traced with TorchScript instead, or None when the builder takes it."""
    architecture = type(model).__name__  # what the builder is told (the config may name another head)
    if architecture not in ARCHITECTURES:
        return f"{architecture} is not one of the fused families {list(ARCHITECTURES)}"
    head_dim = head_size(model.config)
    if head_dim % 16:
        return f"head size {head_dim}: ONNX Runtime's GroupQueryAttention takes multiples of 16"
    if builder_script() is None:
        return "onnxruntime-genai (the model builder) is not installed"
    if tokenizer is None:
        return "the task has no tokenizer, which the model builder reads"
    return None


def fused_decoder_graph(model: PreTrainedModel, tokenizer: Any) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """`model`'s fused fp32 graph in lightkit's decoder contract (see the module docstring), and
    what the manifest records about it."""
    model = model.eval().float()
    with tempfile.TemporaryDirectory(prefix="lightkit-builder-") as tmp:
        hf, out = Path(tmp) / "hf", Path(tmp) / "onnx"
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(hf)
        tokenizer.save_pretrained(hf)
        command = [sys.executable, str(builder_script()), "-i", str(hf), "-o", str(out), "-p", "fp32", "-e", "cpu",
                   "-c", str(Path(tmp) / "cache")]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            tail = "\n".join(run.stderr.strip().splitlines()[-5:])
            raise InputError(f"export: onnxruntime-genai's model builder failed on {type(model).__name__}:\n{tail}")
        graph = onnx.load(str(out / "model.onnx"))  # with its external weights
        genai = json.loads((out / "genai_config.json").read_text())
    rename_cache(graph, head_dim=head_size(model.config))
    table_first(graph)
    left_padding(graph)
    return graph, {
        "exporter": f"onnxruntime-genai model builder {builder_version()} (fp32, cpu)",
        "fusions": fusions(graph.graph),
        "context": genai["model"].get("context_length"),
    }


# The builder's symbolic dimensions, by the names the TorchScript graph gives them.
DIMENSIONS = {
    "batch_size": "batch",
    "sequence_length": "sequence",
    "past_sequence_length": "past",
    "total_sequence_length": "total",
}


def rename_cache(model: onnx.ModelProto, head_dim: int) -> None:
    """`past_key_values.{i}.{key,value}` inputs to `past.{i}.{key,value}`, and every reader with
    them; the dimensions named as the TorchScript graph names them, the head size a number."""
    renames = {i.name: i.name.replace("past_key_values.", "past.") for i in model.graph.input}
    renames = {old: new for old, new in renames.items() if old != new}
    for value in [*model.graph.input, *model.graph.output]:
        value.name = renames.get(value.name, value.name)
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == "kv_cache_dim":
                dim.dim_value = head_dim
            elif dim.dim_param in DIMENSIONS:
                dim.dim_param = DIMENSIONS[dim.dim_param]
    for node in model.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]


def table_first(model: onnx.ModelProto) -> None:
    """A tied table stored as the builder stores it, the LM head's (hidden, vocab) weight with the
    lookup reading its Transpose, turned round to lightkit's layout: the (vocab, hidden) table, read
    directly by the lookup and through `Transpose` by the head (`lightkit.export.builder.tied`,
    which quantises that layout). One copy either way; a graph without a tied table is unchanged."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for transpose in graph.node:
        weight = inits.get(transpose.input[0]) if transpose.op_type == "Transpose" else None
        lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] == transpose.output[0]]
        if weight is None or not lookups:
            continue
        table = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(weight).T), "embed_tokens.weight")
        graph.initializer.remove(weight)
        graph.initializer.append(table)
        for lookup in lookups:
            lookup.input[0] = table.name
        for node in graph.node:
            if node is not transpose:
                node.input[:] = [transpose.output[0] if name == weight.name else name for name in node.input]
        transpose.input[0] = table.name
        stale = [v for v in graph.value_info if v.name == transpose.output[0]]  # its shape turned round
        for value in stale:
            graph.value_info.remove(value)
        return


def left_padding(model: onnx.ModelProto) -> None:
    """Make every GroupQueryAttention take left-padded rows (point 1 of the module docstring)."""
    graph = model.graph
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    if not attention:
        raise InputError("export: the model builder's graph has no GroupQueryAttention to adapt")
    total = attention[0].input[6]  # total_sequence_length, an int32 scalar the builder computes
    dtype = next(i.type.tensor_type.elem_type for i in graph.output if i.name == "logits")
    constants = {
        "lk/zero": np.array([0], np.int64),
        "lk/one": np.array([1], np.int64),
        "lk/two": np.array([2], np.int64),
        "lk/one_i32": np.array(1, np.int32),
        "lk/axes_1_2": np.array([1, 2], np.int64),
        "lk/kept": np.array(0, helper.tensor_dtype_to_np_dtype(dtype)),
        "lk/masked": np.array(MASKED, helper.tensor_dtype_to_np_dtype(dtype)),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    node = helper.make_node
    nodes = [
        # seqlens_k: total - 1 for every row, shaped (batch,)
        node("Shape", ["input_ids"], ["lk/ids_shape"]),
        node("Slice", ["lk/ids_shape", "lk/zero", "lk/one"], ["lk/batch"]),
        node("Slice", ["lk/ids_shape", "lk/one", "lk/two"], ["lk/new"]),
        node("Sub", [total, "lk/one_i32"], ["lk/last"]),
        node("Expand", ["lk/last", "lk/batch"], ["lk/seqlens_k"]),
        # attention_bias (batch, 1, new, total): 0 on real keys, MASKED on padding
        node("Cast", ["attention_mask"], ["lk/real"], to=TensorProto.BOOL),
        node("Where", ["lk/real", "lk/kept", "lk/masked"], ["lk/key_bias"]),
        node("Unsqueeze", ["lk/key_bias", "lk/axes_1_2"], ["lk/key_bias_4d"]),
        node("Shape", ["attention_mask"], ["lk/mask_shape"]),
        node("Slice", ["lk/mask_shape", "lk/one", "lk/two"], ["lk/total"]),
        node("Concat", ["lk/batch", "lk/one", "lk/new", "lk/total"], ["lk/bias_shape"], axis=0),
        node("Expand", ["lk/key_bias_4d", "lk/bias_shape"], ["lk/attention_bias"]),
    ]
    first = list(graph.node).index(attention[0])
    for offset, new in enumerate(nodes):
        new.name = new.output[0]
        graph.node.insert(first + offset, new)
    for gqa in attention:
        inputs = list(gqa.input) + [""] * (11 - len(gqa.input))
        inputs[5], inputs[10] = "lk/seqlens_k", "lk/attention_bias"
        gqa.input[:] = inputs
    remove_unused(graph)  # the builder's right-padding seqlens_k
