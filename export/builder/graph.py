"""The small graph edits the export passes share (qdq.py's QAT folding, tied.py's shared token
table): an index of producers and readers, node replacement, dead-code removal, topological order.

Written here rather than taken from onnx-ir's passes: lightkit's passes run between ONNX Runtime's
own tools, which take and return `onnx.ModelProto`s (its transformer optimizer, its quantizers),
so they edit those protos in place; these few helpers keep them on that one representation.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


class GraphIndex:
    """Who produces and who reads each tensor of a graph, and the constant values behind names.
    The node wrappers held in `nodes` are the ones edited and compared (by id) by the passes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is an initializer, a Constant or an Identity of one."""
        while name not in self.inits:
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Identity", "Constant"):
                return None
            if node.op_type == "Constant":
                return numpy_helper.to_array(node.attribute[0].t)
            name = node.input[0]
        return numpy_helper.to_array(self.inits[name])


def remove_unused(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads, then initializers nothing reads (the float weights)."""
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # subgraphs (If, Loop) read outer names too
                subgraphs = [*attr.graphs, *([attr.g] if attr.type == onnx.AttributeProto.GRAPH else [])]
                needed.update(i for sub in subgraphs for n in sub.node for i in n.input)
    replace(graph.node, list(reversed(kept)))
    replace(graph.initializer, [t for t in graph.initializer if t.name in needed])


def replace(field: Any, items: list[Any]) -> None:
    """Set a repeated protobuf field to `items` (which may be its own elements: copied first)."""
    copies = [type(item).FromString(item.SerializeToString()) for item in items]
    del field[:]
    field.extend(copies)


def topological(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` reordered so that each comes after the producers of its inputs (stable otherwise)."""
    produced = {out: i for i, node in enumerate(nodes) for out in node.output}
    order, state = [], [0] * len(nodes)  # 0 new, 1 visiting, 2 done

    def visit(i: int) -> None:
        stack = [(i, iter(nodes[i].input))]
        state[i] = 1
        while stack:
            j, inputs = stack[-1]
            for name in inputs:
                k = produced.get(name)
                if k is not None and state[k] == 0:
                    state[k] = 1
                    stack.append((k, iter(nodes[k].input)))
                    break
            else:
                stack.pop()
                state[j] = 2
                order.append(nodes[j])

    for i in range(len(nodes)):
        if state[i] == 0:
            visit(i)
    return order


def replace_node(graph: onnx.GraphProto, old: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
    """`new` in `old`'s place in the node order (so the graph stays topologically sorted)."""
    at = list(graph.node).index(old)
    graph.node.remove(old)
    for node in reversed(new):
        graph.node.insert(at, node)


def drop_if_unused(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the nodes that produce, then the initializers named, `names` once nothing reads them."""
    used = {i for node in graph.node for i in node.input}
    for node in [n for n in graph.node if set(n.output) <= names - used]:
        graph.node.remove(node)
    used = {i for node in graph.node for i in node.input}
    for table in [t for t in graph.initializer if t.name in names - used]:
        graph.initializer.remove(table)


PROTOBUF_LIMIT = 2**31 - 1


def save(model: onnx.ModelProto, path: Any) -> None:
    """`model` to `path`, its weights in `<file>.data` beside it once they pass protobuf's 2 GiB
    limit (a 1B-parameter decoder in fp32), in the one file otherwise."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    large = weights > PROTOBUF_LIMIT - 2**26  # leave room for the graph itself
    onnx.save(model, str(path), save_as_external_data=large, location=f"{Path(path).name}.data")
