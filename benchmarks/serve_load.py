"""The cost of serving: `lightkit serve` under 1, 8 and 32 concurrent clients against `lightkit
generate` at the same batch, on the same artifact and prompts.

    python benchmarks/serve_load.py --artifact runs/sft_headlines/onnx --form int8-cpu \
        --out benchmarks/results/serve-load-cpu.json

The prompts are held-out BBC articles (the test split of configs/sft_headlines.yaml) through the
chat template, answered greedily with at most `--max_tokens` tokens. Per concurrency c:

- **serve**: a `lightkit serve` process (as users start it; `--batch_size` c) and c client
  threads, each sending its share of the prompts one request after another through the `openai`
  client; aggregate tokens/s = completion tokens (from `usage`) / wall time; latency per request,
  p50 and p99. Every answer is compared with `lightkit generate`'s answers to the same prompt:
  a request that fails, or an answer that is none of them, counts against the server.
- **generate**: `Artifact.generate` (what `lightkit generate` runs) on the same prompts at batch
  c, in this process: tokens/s of the same work without HTTP, queueing or waves.

The two alternate in rounds (which goes first flips each round) and the spread over rounds is
reported; the ratio quoted is of the medians. Both use the machine's cores; nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from measure import command_line, write_result
from targets import check

from lightkit.io.measure import provenance

ROOT = Path(__file__).resolve().parents[1]
SERVE_VS_GENERATE = 0.8  # aggregate tokens/s at 32 clients over lightkit generate's at batch 32


def held_out_prompts(n: int, tokenizer: str) -> list[str]:
    """The first `n` held-out articles' user turns (the headline configs' test split)."""
    from lightkit.data import HeadlineDataModule

    dm = HeadlineDataModule(tokenizer=tokenizer, holdout=(0.02, 0.05), split_seed=13, max_length=320)
    rows = dm.splits(dm._read, dm.split_key)["test"]
    return [r["user"] for r in rows[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifact: str, form: str, batch: int, max_tokens: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIGHTKIT_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightkit.cli.main", "serve", artifact, "--form", form, "--port", str(port),
         "--batch_size", str(batch), "--max_tokens", str(max_tokens), "--queue_size", str(max(64, batch)),
         "--device", "cpu"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import httpx2 as httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return process, base
        except httpx.TransportError:
            if time.time() > deadline or process.poll() is not None:
                raise SystemExit("lightkit serve did not start") from None
            time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def serve_round(base: str, model: str, prompts: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=600)
    shares = [prompts[i::clients] for i in range(clients)]

    def run(share: list[str]) -> list[tuple[str, str | None, int, float]]:
        out = []
        for prompt in share:
            began = time.perf_counter()
            try:
                answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                        max_tokens=max_tokens, temperature=0)  # fmt: skip
                out.append((prompt, answer.choices[0].message.content, answer.usage.completion_tokens,
                            time.perf_counter() - began))  # fmt: skip
            except Exception:  # noqa: BLE001 - a failed request is counted, not fatal
                out.append((prompt, None, 0, time.perf_counter() - began))
        return out

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for share in pool.map(run, shares) for r in share]
    wall = time.perf_counter() - began
    tokens = sum(r[2] for r in results)
    latencies = [r[3] for r in results]
    return {
        "tokens_per_s": tokens / wall,
        "p50_s": float(np.percentile(latencies, 50)),
        "p99_s": float(np.percentile(latencies, 99)),
        "tokens": tokens,
        "wall_s": wall,
        "answers": [(r[0], r[1]) for r in results],
    }


def generate_round(artifact: Any, prompts: list[str], batch: int, max_tokens: int) -> dict[str, Any]:
    began = time.perf_counter()
    records = list(artifact.generate(prompts, chat=True, max_new_tokens=max_tokens, batch_size=batch))
    wall = time.perf_counter() - began
    tokens = sum(r["tokens"] for r in records)
    return {"tokens_per_s": tokens / wall, "tokens": tokens, "wall_s": wall,
            "answers": [(r["prompt"], r["response"]) for r in records]}  # fmt: skip


def spread(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", default="runs/sft_headlines/onnx")
    ap.add_argument("--form", default="int8-cpu")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=32, help="requests per round (at least the clients)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max_tokens", type=int, default=24)
    ap.add_argument("--prompts", default=None, help="a .txt of prompts (one per line) instead of held-out articles")
    ap.add_argument("--out", default="benchmarks/results/serve-load-cpu.json")
    args = ap.parse_args()
    from lightkit.export.runtime.serving import Artifact

    artifact = Artifact(args.artifact, form=args.form, device="cpu")
    if args.prompts:
        prompts = [line for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    else:
        prompts = held_out_prompts(max(args.requests, max(args.clients)), str(Path(args.artifact) / "tokenizer"))
    model = Path(args.artifact).name
    # The reference answers: lightkit generate at batch 1 (what a correct server returns for each prompt).
    reference = dict(generate_round(artifact, prompts, 1, args.max_tokens)["answers"])
    rows = []
    for clients in args.clients:
        work = (prompts * (1 + args.requests // len(prompts)))[: max(args.requests, clients)]
        process, base = start_server(args.artifact, args.form, clients, args.max_tokens)
        try:
            serve_round(base, model, work[:clients], clients, args.max_tokens)  # warm-up
            generate_round(artifact, work[:clients], clients, args.max_tokens)
            served, generated = [], []
            for r in range(args.rounds):
                order = ("serve", "generate") if r % 2 == 0 else ("generate", "serve")
                for side in order:
                    if side == "serve":
                        served.append(serve_round(base, model, work, clients, args.max_tokens))
                    else:
                        generated.append(generate_round(artifact, work, clients, args.max_tokens))
        finally:
            stop_server(process)
        # Dynamic int8 quantises each call's activations with one scale for the whole batch, so a
        # greedy answer may legitimately change with the rows it was batched with. An answer is
        # counted as corrupted when it is none of lightkit generate's answers to that prompt (at
        # batch 1, or at batch c in this run's rounds).
        known = {p: {reference[p]} for p in work}
        for g in generated:
            for p, a in g["answers"]:
                known[p].add(a)
        answers = [pair for s in served for pair in s["answers"]]
        failed = sum(a is None for _, a in answers)
        corrupted = sum(a is not None and a not in known[p] for p, a in answers)
        differing = sum(a is not None and a != reference[p] for p, a in answers)
        serve_tps = spread([s["tokens_per_s"] for s in served])
        generate_tps = spread([g["tokens_per_s"] for g in generated])
        rows.append({
            "clients": clients, "requests_per_round": len(work),
            "serve_tokens_per_s": serve_tps, "generate_tokens_per_s_at_batch": generate_tps,
            "serve_over_generate": serve_tps["median"] / generate_tps["median"],
            "p50_latency_s": spread([s["p50_s"] for s in served]),
            "p99_latency_s": spread([s["p99_s"] for s in served]),
            "failed": failed, "corrupted": corrupted, "differing_from_batch_1": differing,
            "answers_checked": len(answers),
        })  # fmt: skip
        print(f"{clients:>3} clients: serve {serve_tps['median']:.1f} tok/s (p50 "
              f"{rows[-1]['p50_latency_s']['median']:.2f} s, p99 {rows[-1]['p99_latency_s']['median']:.2f} s), "
              f"generate at batch {clients} {generate_tps['median']:.1f} tok/s, ratio "
              f"{rows[-1]['serve_over_generate']:.2f}; failed {failed}, corrupted {corrupted}", flush=True)  # fmt: skip
    top = next((r for r in rows if r["clients"] == 32), None)
    result = {
        "kind": "serve-load",
        "what": f"lightkit serve ({args.artifact}, {args.form}) under concurrent clients against lightkit generate "
        "at the same batch: greedy chat completions of held-out articles",
        "command": command_line("serve_load.py", args),
        **provenance("onnxruntime", "fastapi", "uvicorn", "openai"),
        "settings": {
            "serve": f"lightkit serve --batch_size <clients> --max_tokens {args.max_tokens} (waves of up to <clients> "
            "rows, batch_wait_ms 5); openai client, one request after another per client thread",
            "generate": f"Artifact.generate(chat=True, max_new_tokens={args.max_tokens}, batch_size=<clients>)",
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "order": "alternating per round",
        },  # fmt: skip
        "rows": rows,
        "targets": [
            check(
                f"serve tokens/s at 32 clients over lightkit generate's at batch 32 (>= {SERVE_VS_GENERATE})",
                ">=",
                SERVE_VS_GENERATE,
                top["serve_over_generate"] if top else None,
            ),
            check(
                "failed or corrupted responses in the load run",
                "<=",
                0,
                sum(r["failed"] + r["corrupted"] for r in rows),
            ),
        ],  # fmt: skip
    }
    write_result(args.out, result)
    print(json.dumps(result["targets"], indent=1))


if __name__ == "__main__":
    main()
