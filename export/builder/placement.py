"""Which execution provider runs each node: the check behind labelling an artifact "GPU".

ONNX Runtime assigns nodes it cannot run on CUDA to the CPU silently, with host copies around
them (dynamic INT8's MatMulInteger, for one, turns a GPU artifact slower than fp32).
`placement` runs the artifact once with profiling on and reads each node's provider from the
profile; shape arithmetic that ORT deliberately keeps on the CPU is not counted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# Shape arithmetic ORT places on the CPU on purpose: nodes whose outputs are all integer or
# boolean (sizes, indices, masks of sizes), and these ops whatever their output.
SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "Range"}
INTEGER_TYPES = {"int64", "int32", "bool", "uint8", "int8"}


def is_shape_computation(node: dict[str, Any]) -> bool:
    if node["op"] in SHAPE_OPS:
        return True
    outputs = node.get("outputs") or []
    return bool(outputs) and all(kind in INTEGER_TYPES for out in outputs for kind in out)


def node_providers(
    session_path: str | Path, feeds: dict[str, np.ndarray], providers: list[str]
) -> list[dict[str, str]]:
    """(node name, op type, provider) of every node executed once on `feeds`, from ORT's profile."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "placement")
        session = ort.InferenceSession(str(session_path), options, providers=providers)
        session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            name = event["name"].rsplit("_kernel_time", 1)[0]
            nodes[name] = {
                "node": name,
                "op": args.get("op_name", ""),
                "provider": args["provider"],
                "outputs": args.get("output_type_shape", []),
            }
    return list(nodes.values())


def placement(
    session_path: str | Path, feeds: dict[str, np.ndarray], want: str = "CUDAExecutionProvider"
) -> dict[str, Any]:
    """Nodes not on `want` (shape ops excepted); `ok` when there are none. Skipped without CUDA."""
    import onnxruntime as ort
    import torch

    if want == "CUDAExecutionProvider" and (want not in ort.get_available_providers() or not torch.cuda.is_available()):
        return {
            "checked": False,
            "reason": "no CUDA device on the exporting machine; run lightkit export there to label it GPU",
        }
    nodes = node_providers(
        session_path, feeds, [want] if want == "CPUExecutionProvider" else [want, "CPUExecutionProvider"]
    )
    off = [
        {k: n[k] for k in ("node", "op", "provider")}
        for n in nodes
        if n["provider"] != want and not is_shape_computation(n)
    ]
    return {
        "checked": True,
        "provider": want,
        "ok": not off,
        "nodes": len(nodes),
        "off_provider": off[:50],
        "off_provider_ops": dict(Counter(n["op"] for n in off)),
    }
