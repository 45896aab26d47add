"""The shipped SmolLM2 against optimum-onnx and onnxruntime-genai, same merged model, one run.

    make peer-venvs    # .venv-optimum and .venv-genai, each from its lock in benchmarks/
    python benchmarks/llm_peers.py --out benchmarks/results/llm-peers-cpu.json

Sides, each measured in its own process, interleaved over `--rounds` (the order rotating), each
peer in its own venv (optimum-onnx pins transformers < 4.58; onnxruntime-genai's builder needs
transformers 5 and the CPU onnxruntime package, which would clash with lightkit's onnxruntime-gpu):
- lightkit int8-cpu, int4-cpu and fp32: `make generate`'s export of the tuned headline writer
  (the fused graph of onnxruntime-genai's model builder, lightkit's quantisation); with
  `--unfused`, an artifact exported before the fused graph (the TorchScript trace), whose int8-cpu
  row shows what the fusion changed;
- optimum int8 weight-only, the int8-against-int8 row: optimum-onnx's `text-generation-with-past`
  export of the same merged model (`runs/sft_headlines/hf_model`), its ORTOptimizer where it
  accepts the graph, then the very `MatMulNBits` settings of lightkit's int8-cpu
  (`lightkit.export.builder.weight_only.INT8_CPU_DECODER`: 8 bits, block 32, symmetric, accuracy
  level 4), run with IO binding on: optimum's best that passes the same perplexity bar;
- optimum int8 dynamic: its own documented ORTQuantizer recipe (dynamic, per-channel, VNNI), kept
  to show what a user following its docs gets (this model's outlier channels break it);
- optimum fp32 against lightkit fp32: the same graph precision, so the loops differ alone;
- onnxruntime-genai int4 and int8: its model builder (`-p int4|int8 -e cpu`, accuracy level 4,
  block 32) on that folder.
Built once, untimed (benchmarks/llm_peer_side.py says how). Compared: ONNX file size; for
128-token prompts at batch 1 and 8, prefill ms (one new token), end-to-end ms (24 new tokens) and
decode ms per token ((end to end - prefill) / 23), medians of every round's repeats
(lightkit.io.measure); perplexity on held-out BBC articles (the test split, 160 tokens each)
against PyTorch fp32, and on the held-out headlines given their chat prompts (answer tokens only:
what the fine-tune changed, which a form can lose while keeping the articles' perplexity); greedy
agreement with PyTorch fp32 on the 8 prompts of configs/prompts/headlines_test.jsonl (chat
template, 24 tokens): the share of tokens before the first divergence, and the share of answers
identical.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from align_report import held_out
from measure import command_line, run_side, write_result
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightkit.data.chat import generation_prompt
from lightkit.export.builder.weight_only import INT8_CPU_DECODER
from lightkit.io.measure import latency_summary, median, provenance

ROOT = Path(__file__).resolve().parents[1]
SIDE = str(ROOT / "benchmarks" / "llm_peer_side.py")
# The rows the targets compare (benchmarks/targets.py reads them from the result's "roles").
ROLES = {
    "ours": "lightkit int8-cpu",
    "int4": "lightkit int4-cpu",
    "unfused": "lightkit int8-cpu, TorchScript graph (before the fused export)",
    "optimum": "optimum int8 weight-only (lightkit's MatMulNBits settings)",
    "optimum_dynamic": "optimum int8 dynamic (its VNNI recipe)",
    "genai": "onnxruntime-genai int4",
    "genai_int8": "onnxruntime-genai int8",
    "fp32": "lightkit fp32",
    "optimum_fp32": "optimum fp32",
}
NEW_TOKENS = 24


def job(hf: str, texts: int, text_tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inputs every side gets, and PyTorch fp32's perplexity and greedy answers on them."""
    tokenizer = AutoTokenizer.from_pretrained(hf)
    articles = held_out()[1][:64]
    ids = [tokenizer(a["user"].split("\n\n", 1)[-1])["input_ids"] for a in articles]  # the article, no instruction
    long_enough = [i for i in ids if len(i) >= max(text_tokens, 128)]
    if len(long_enough) < 8 + texts:
        raise SystemExit(f"only {len(long_enough)} held-out articles have {text_tokens} tokens; lower --text_tokens")
    rows = [json.loads(line) for line in (ROOT / "configs/prompts/headlines_test.jsonl").read_text().splitlines()]
    # The prompts exactly as `lightkit generate --chat` renders them.
    chats = [tokenizer(generation_prompt(tokenizer, r["prompt"], None), add_special_tokens=False)["input_ids"]
             for r in rows]  # fmt: skip
    spec = {
        "prompt_128": [i[:128] for i in long_enough[:8]],
        "texts": [i[:text_tokens] for i in long_enough[8 : 8 + texts]],
        "greedy_prompts": chats,
        "greedy_tokens": 24,
        "new_tokens": NEW_TOKENS,
        "repeats": 3,
        "eos": tokenizer.eos_token_id,
        # (chat prompt, headline + EOS) of held-out articles past the ones above
        "answers": [
            [
                tokenizer(a["gen_prompt"], add_special_tokens=False)["input_ids"],
                tokenizer(a["reference"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
            ]
            for a in articles[32:64]
        ],  # fmt: skip
    }
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.no_grad():
        nll, count = 0.0, 0
        for t in spec["texts"]:
            x = torch.tensor([t])
            nll += float(model(input_ids=x, labels=x).loss) * (len(t) - 1)
            count += len(t) - 1
        answer_nll, answer_count = 0.0, 0
        for prompt, headline in spec["answers"]:
            x = torch.tensor([prompt + headline])
            labels = torch.tensor([[-100] * len(prompt) + headline])
            answer_nll += float(model(input_ids=x, labels=labels).loss) * len(headline)
            answer_count += len(headline)
        greedy = []
        for c in chats:
            x = torch.tensor([c])
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            answer = out[0, len(c) :].tolist()
            eos = tokenizer.eos_token_id
            greedy.append(answer[: answer.index(eos) + 1] if eos in answer else answer)
    reference = {"perplexity": math.exp(nll / count), "answer_perplexity": math.exp(answer_nll / answer_count)}
    return spec, {**reference, "greedy": greedy}


def freeze(python: str) -> list[str]:
    """The peer venv's packages that matter here, as installed."""
    keep = ("torch", "transformers", "optimum", "onnx", "onnxruntime", "accelerate")
    out = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout.split()
    return [p for p in out if p.split("==")[0].lower().replace("_", "-").startswith(keep)]


def agreement(answers: list[list[int]], reference: list[list[int]]) -> dict[str, float]:
    """Greedy answers (each cut after its EOS) against PyTorch's: the share of each reference
    answer's tokens before the first divergence, and the share of answers identical."""
    prefix = []
    for a, r in zip(answers, reference):
        same = next((i for i, (x, y) in enumerate(zip(a, r)) if x != y), min(len(a), len(r)))
        prefix.append(same / len(r))
    identical = [a == r for a, r in zip(answers, reference)]
    return {"greedy_prefix_agreement": statistics.fmean(prefix), "greedy_identical": statistics.fmean(identical)}


def figures(values: list[dict[str, Any]], pytorch: dict[str, Any], new_tokens: int) -> dict[str, Any]:
    """One side's row: the medians (and p90s) of every round's raw times, decode ms per token from
    them, perplexity against PyTorch fp32's, greedy agreement with its answers."""
    row: dict[str, Any] = {
        "bytes": values[0]["bytes"],
        "perplexity": median(v["perplexity"] for v in values),
        "answer_perplexity": median(v["answer_perplexity"] for v in values),
    }
    for b in (1, 8):
        prefill = latency_summary([t for v in values for t in v[f"prefill_ms_b{b}"]])
        whole = latency_summary([t for v in values for t in v[f"e2e_ms_b{b}"]])
        row[f"prefill_ms_b{b}"], row[f"prefill_p90_ms_b{b}"] = prefill["median_ms"], prefill["p90_ms"]
        row[f"e2e_ms_b{b}"], row[f"e2e_p90_ms_b{b}"] = whole["median_ms"], whole["p90_ms"]
        row[f"decode_ms_per_token_b{b}"] = (whole["median_ms"] - prefill["median_ms"]) / (new_tokens - 1)
    row["perplexity_change"] = row["perplexity"] / pytorch["perplexity"] - 1
    row["answer_perplexity_change"] = row["answer_perplexity"] / pytorch["answer_perplexity"] - 1
    row.update(agreement(values[0]["greedy"], pytorch["greedy"]))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf", default="runs/sft_headlines/hf_model")
    ap.add_argument("--artifact", default="runs/sft_headlines/onnx")
    ap.add_argument("--unfused", help="an artifact of the TorchScript graph, for the before/after row")
    ap.add_argument("--optimum_python", default=".venv-optimum/bin/python")
    ap.add_argument("--genai_python", default=".venv-genai/bin/python")
    ap.add_argument("--work", default="runs/llm_peers")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--text_tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="benchmarks/results/llm-peers-cpu.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    spec, pytorch = job(args.hf, args.texts, args.text_tokens)
    (work / "job.json").write_text(json.dumps(spec))
    peers = {"optimum": args.optimum_python, "genai": args.genai_python}
    wo = INT8_CPU_DECODER
    weight_only = {"bits": wo.bits, "block_size": wo.block_size, "symmetric": wo.symmetric,
                   "accuracy_level": wo.accuracy_level}  # fmt: skip
    builds = (
        ("optimum", work / "optimum", work / "optimum" / "int8-wo", ["--weight_only", json.dumps(weight_only)]),
        ("genai", work / "genai-int4", work / "genai-int4", ["--precision", "int4"]),
        ("genai", work / "genai-int8", work / "genai-int8", ["--precision", "int8"]),
    )
    for side, folder, made, extra in builds:
        if not made.exists():
            subprocess.run([peers[side], SIDE, "build", "--side", side, "--hf", args.hf, "--out", str(folder), *extra],
                           check=True)  # fmt: skip
    sides = {
        ROLES["ours"]: ("lightkit", Path(args.artifact) / "int8-cpu", sys.executable),
        ROLES["int4"]: ("lightkit", Path(args.artifact) / "int4-cpu", sys.executable),
        ROLES["optimum"]: ("optimum", work / "optimum" / "int8-wo", args.optimum_python),
        ROLES["optimum_dynamic"]: ("optimum", work / "optimum" / "int8", args.optimum_python),
        ROLES["genai"]: ("genai", work / "genai-int4", args.genai_python),
        ROLES["genai_int8"]: ("genai", work / "genai-int8", args.genai_python),
        ROLES["fp32"]: ("lightkit", Path(args.artifact) / "fp32", sys.executable),
        ROLES["optimum_fp32"]: ("optimum", work / "optimum" / "fp32", args.optimum_python),
    }
    if args.unfused:
        sides[ROLES["unfused"]] = ("lightkit", Path(args.unfused) / "int8-cpu", sys.executable)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides)[r % len(sides) :] + list(sides)[: r % len(sides)]
        for name in order:
            kind, folder, python = sides[name]
            argv = ["measure", "--side", kind, "--model", str(folder), "--job", str(work / "job.json")]
            runs[name].append(run_side(SIDE, argv, args.threads, name, python=python))
            print(name, {k: v for k, v in runs[name][-1].items() if k != "greedy"}, flush=True)
    results = {name: figures(values, pytorch, NEW_TOKENS) for name, values in runs.items()}
    manifest = json.loads((Path(args.artifact) / "manifest.json").read_text())
    fp32_bytes = results[ROLES["fp32"]]["bytes"]
    for row in results.values():
        row["size_vs_lightkit_fp32"] = row["bytes"] / fp32_bytes

    result = {
        "what": "SmolLM2-135M-Instruct, LoRA-merged, on ORT CPU: lightkit vs optimum-onnx vs onnxruntime-genai",
        "command": command_line("llm_peers.py", args),
        **(header := provenance("onnxruntime", "transformers", threads=args.threads)),
        "versions": {**header["versions"], **{side: freeze(python) for side, python in peers.items()}},
        "pytorch_fp32_perplexity": pytorch["perplexity"],
        "pytorch_fp32_answer_perplexity": pytorch["answer_perplexity"],
        # how lightkit's artifact was made: its graph and quantisation, as its manifest records them
        "lightkit_manifest": {key: manifest[key] for key in ("graph", "quantization")},
        "rounds": args.rounds,
        "roles": ROLES,
        "new_tokens": NEW_TOKENS,
        "optimum_build": json.loads((work / "optimum" / "build.json").read_text()),
        "results": results,
    }
    write_result(args.out, result)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
