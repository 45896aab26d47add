"""Where a decoder artifact's decode time goes, by op type: ONNX Runtime's own profiler.

    python benchmarks/decode_profile.py --artifact runs/sft_headlines/onnx --forms int8-cpu int4-cpu \\
        --out benchmarks/results/decode-profile-cpu.json

Each form runs lightkit's KV-cache loop (greedy, batch 1, a 128-token prompt of the llm-peers job)
under ORT's profiler twice, with 24 new tokens and with 1; the difference of the per-op kernel
times over 23 steps is the decode step's, which prefill would otherwise swamp. Reported: kernel ms
per decode token by op type and their shares (kernel time only: the loop's own overhead is not in
it; `llm_peers.py` has the wall-clock figures).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import torch
from measure import command_line, write_result

from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.measure import provenance

NEW_TOKENS = 24


def kernel_ms(path: Path, prompt: torch.Tensor, new_tokens: int, repeats: int, threads: int) -> Counter[str]:
    """Summed kernel milliseconds by op type over `repeats` greedy runs."""
    import onnxruntime as ort

    model = OrtModel(path, device="cpu", threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    model.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    loop = DecodeLoop(model)
    for _ in range(repeats):
        loop.greedy(prompt, torch.ones_like(prompt), new_tokens)
    trace = model.session.end_profiling()
    events = json.loads(Path(trace).read_text())
    os.unlink(trace)
    total: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"] / 1000
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", default="runs/sft_headlines/onnx")
    ap.add_argument("--forms", nargs="+", default=["int8-cpu", "int4-cpu"])
    ap.add_argument("--job", default="runs/llm_peers/job.json", help="written by llm_peers.py: its 128-token prompts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    prompt = torch.tensor(json.loads(Path(args.job).read_text())["prompt_128"][:1])
    forms = {}
    for form in args.forms:
        path = Path(args.artifact) / form / "model.onnx"
        whole = kernel_ms(path, prompt, NEW_TOKENS, args.repeats, args.threads)
        prefill = kernel_ms(path, prompt, 1, args.repeats, args.threads)
        steps = args.repeats * (NEW_TOKENS - 1)
        per_token = {op: (whole[op] - prefill[op]) / steps for op in whole}
        per_token = {op: ms for op, ms in sorted(per_token.items(), key=lambda kv: -kv[1]) if ms > 0}
        total = sum(per_token.values())
        forms[form] = {
            "kernel_ms_per_token": total,
            "by_op": {op: {"ms": ms, "share": ms / total} for op, ms in per_token.items()},
        }
        top = ", ".join(f"{op} {v['share']:.0%}" for op, v in list(forms[form]["by_op"].items())[:5])
        print(f"{form}: {total:.2f} kernel ms per decode token; {top}")
    result = {
        "what": "kernel time per decode token by op type (ORT profiler), batch 1, 128-token prompt",
        "command": command_line("decode_profile.py", args),
        **provenance("onnxruntime", threads=args.threads),
        "artifact": args.artifact,
        "forms": forms,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
