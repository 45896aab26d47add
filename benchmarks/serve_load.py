"""The cost of serving: `lightkit serve` under 1, 8 and 32 concurrent clients against `lightkit
generate` at the same batch, on the same artifact and prompts.

    python benchmarks/serve_load.py --artifact runs/sft_headlines/onnx --form int8-cpu \
        --out benchmarks/results/serve-load-cpu.json

The prompts are held-out BBC articles (the test split of configs/sft_headlines.yaml) through the
chat template, answered greedily with at most `--max_tokens` tokens. Per concurrency c:

- **serve**: a `lightkit serve` process (as users start it; `--batch_size` c) and c client
  threads, each sending its share of the prompts one request after another
  (`/v1/chat/completions`); aggregate tokens/s = completion tokens (from `usage`) / wall time;
  latency per request, p50 and p99. Every answer is compared with `lightkit generate`'s answers
  to the same prompt: a request that fails, or an answer that is none of them, counts against
  the server.
- **waves**: the same server with `--join_tokens 0`, so a request waits for the running wave to
  end instead of joining it as rows finish: what continuous batching buys.
- **generate**: `Artifact.generate` (what `lightkit generate` runs) on the same prompts at batch
  c, in this process: tokens/s of the same work without HTTP, queueing or waves.
- **peer** (`--peer_model`): onnxruntime-genai's build of the same model behind the minimal
  server a user would write for it (benchmarks/serve_peer_genai.py, in the genai venv), the same
  clients posting the same chat-rendered prompts to its `/v1/completions`.

The sides take turns in rounds (who goes first rotates each round) and the spread over rounds is
reported; the ratio quoted is of the medians. Every side uses the machine's cores; nothing else
runs.
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


def wait_healthy(process: subprocess.Popen, base: str, what: str) -> tuple[subprocess.Popen, str]:
    """`process` and its URL once its `/health` answers 200 (5 minutes at most)."""
    import httpx2 as httpx

    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return process, base
        except httpx.TransportError:
            pass  # not listening yet
        if time.time() > deadline or process.poll() is not None:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.2)


def start_server(
    artifact: str, form: str, batch: int, max_tokens: int, join_tokens: int
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIGHTKIT_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightkit.cli.main", "serve", artifact, "--form", form, "--port", str(port),
         "--batch_size", str(batch), "--max_tokens", str(max_tokens), "--queue_size", str(max(64, batch)),
         "--join_tokens", str(join_tokens), "--device", "cpu"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return wait_healthy(process, f"http://127.0.0.1:{port}", "lightkit serve")


def start_peer(python: str, model: str) -> tuple[subprocess.Popen, str]:
    """benchmarks/serve_peer_genai.py (onnxruntime-genai behind a minimal server) in its venv."""
    port = free_port()
    process = subprocess.Popen([python, str(ROOT / "benchmarks" / "serve_peer_genai.py"), "--model", model, "--port",
                                str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return wait_healthy(process, f"http://127.0.0.1:{port}", "the genai peer server")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def serve_round(
    base: str, requests: list[tuple[str, tuple[str, dict[str, Any]]]], clients: int, eos_in_usage: bool = True
) -> dict[str, Any]:
    """`clients` threads, each posting its share of `requests` ((prompt, (route, body)) pairs) one
    after another; tokens/s over the round, latency per request. A server whose usage leaves out
    the EOS token it generated (`eos_in_usage` False) gets it counted, as lightkit's usage does."""
    import httpx2 as httpx

    shares = [requests[i::clients] for i in range(clients)]

    def run(share: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str | None, int, float]]:
        out = []
        with httpx.Client(base_url=base, timeout=600) as http:
            for prompt, (route, body) in share:
                began = time.perf_counter()
                try:
                    response = http.post(route, json=body)
                    response.raise_for_status()
                    answer = response.json()
                    choice = answer["choices"][0]
                    text = choice["message"]["content"] if "message" in choice else choice["text"]
                    eos = int(not eos_in_usage and choice["finish_reason"] == "stop")
                    out.append((prompt, text, answer["usage"]["completion_tokens"] + eos,
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


def timing(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """A side's tokens/s and p50 / p99 latency over its rounds (each as `spread`)."""
    return {
        "tokens_per_s": spread([r["tokens_per_s"] for r in rounds]),
        "p50_latency_s": spread([r["p50_s"] for r in rounds]),
        "p99_latency_s": spread([r["p99_s"] for r in rounds]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", default="runs/sft_headlines/onnx")
    ap.add_argument("--form", default="int8-cpu")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=32, help="requests per round (at least the clients)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max_tokens", type=int, default=24)
    ap.add_argument("--prompts", default=None, help="a .txt of prompts (one per line) instead of held-out articles")
    ap.add_argument(
        "--peer_model", default=None, help="onnxruntime-genai's model folder (e.g. runs/llm_peers/genai-int8)"
    )
    ap.add_argument("--peer_python", default=".venv-genai/bin/python", help="the genai venv's python")
    ap.add_argument("--out", default="benchmarks/results/serve-load-cpu.json")
    args = ap.parse_args()
    from lightkit.data.chat import render
    from lightkit.export.runtime.serving import Artifact

    artifact = Artifact(args.artifact, form=args.form, device="cpu")
    if args.prompts:
        prompts = [line for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    else:
        prompts = held_out_prompts(max(args.requests, max(args.clients)), str(Path(args.artifact) / "tokenizer"))
    model = Path(args.artifact).name
    # The reference answers: lightkit generate at batch 1 (what a correct server returns for each prompt).
    reference = dict(generate_round(artifact, prompts, 1, args.max_tokens)["answers"])
    chat = {p: render(artifact.tokenizer, [{"role": "user", "content": p}], generation_prompt=True) for p in prompts}

    def lightkit_request(prompt: str) -> tuple[str, tuple[str, dict[str, Any]]]:
        messages = [{"role": "user", "content": prompt}]
        return prompt, ("/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": args.max_tokens,
                                                 "temperature": 0})  # fmt: skip

    def peer_request(prompt: str) -> tuple[str, tuple[str, dict[str, Any]]]:
        return prompt, ("/v1/completions", {"prompt": chat[prompt], "max_tokens": args.max_tokens})

    rows = []
    for clients in args.clients:
        work = (prompts * (1 + args.requests // len(prompts)))[: max(args.requests, clients)]
        process, base = start_server(args.artifact, args.form, clients, args.max_tokens, 256)
        waves = start_server(args.artifact, args.form, clients, args.max_tokens, 0)
        peer = start_peer(args.peer_python, args.peer_model) if args.peer_model else None
        sides = ["serve", "waves", "generate", *(["peer"] if peer else [])]
        rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}

        def run(side: str, items: list[str], clients: int = clients) -> dict[str, Any]:
            if side in ("serve", "waves"):
                return serve_round(base if side == "serve" else waves[1], [lightkit_request(p) for p in items], clients)
            if side == "peer":
                return serve_round(peer[1], [peer_request(p) for p in items], clients, eos_in_usage=False)
            return generate_round(artifact, items, clients, args.max_tokens)

        try:
            for side in sides:  # warm-up
                run(side, work[:clients])
            for r in range(args.rounds):
                for side in sides[r % len(sides) :] + sides[: r % len(sides)]:  # who goes first rotates
                    rounds[side].append(run(side, work))
        finally:
            stop_server(process)
            stop_server(waves[0])
            if peer:
                stop_server(peer[0])
        served, generated = rounds["serve"], rounds["generate"]
        # Dynamic int8 quantises each call's activations with one scale for the whole batch, so an
        # int8 greedy answer may change with the rows it was batched with (lightkit generate's own
        # answers differ between batch 1 and batch 8 on some prompts). Counted: answers that are
        # none of lightkit generate's answers to that prompt (at batch 1, or at batch c in this
        # run's rounds), and answers that differ from batch 1's; a float form is batch-invariant,
        # so there the second must be 0 (the correctness check of a load run).
        known = {p: {reference[p]} for p in work}
        for g in generated:
            for p, a in g["answers"]:
                known[p].add(a)

        def checked(rounds_: list[dict[str, Any]]) -> dict[str, int]:
            answers = [pair for s in rounds_ for pair in s["answers"]]
            return {
                "failed": sum(a is None for _, a in answers),
                "not_any_generate_answer": sum(a is not None and a not in known[p] for p, a in answers),
                "differing_from_batch_1": sum(a is not None and a != reference[p] for p, a in answers),
                "answers_checked": len(answers),
            }

        counts = checked(served)
        failed, unknown, differing = (
            counts[k] for k in ("failed", "not_any_generate_answer", "differing_from_batch_1")
        )
        serve_tps = spread([s["tokens_per_s"] for s in served])
        waves_tps = timing(rounds["waves"])["tokens_per_s"]
        generate_tps = spread([g["tokens_per_s"] for g in generated])
        row: dict[str, Any] = {
            "clients": clients, "requests_per_round": len(work),
            "serve_tokens_per_s": serve_tps, "generate_tokens_per_s_at_batch": generate_tps,
            "serve_over_generate": serve_tps["median"] / generate_tps["median"],
            "p50_latency_s": spread([s["p50_s"] for s in served]),
            "p99_latency_s": spread([s["p99_s"] for s in served]),
            **counts,
            "waves": {**timing(rounds["waves"]), "over_generate": waves_tps["median"] / generate_tps["median"],
                      **checked(rounds["waves"])},
        }  # fmt: skip
        if peer:
            peered = rounds["peer"]
            peer_answers = [a for s in peered for _, a in s["answers"]]
            row["peer"] = {
                **timing(peered),
                "failed": sum(a is None for a in peer_answers),
                "same_answer_as_lightkit_batch_1": sum(a == reference[p] for s in peered for p, a in s["answers"]),
            }
        rows.append(row)
        print(f"{clients:>3} clients: serve {serve_tps['median']:.1f} tok/s (p50 "
              f"{row['p50_latency_s']['median']:.2f} s, p99 {row['p99_latency_s']['median']:.2f} s), "
              f"generate at batch {clients} {generate_tps['median']:.1f} tok/s, ratio "
              f"{row['serve_over_generate']:.2f}; failed {failed}, unknown {unknown}, differing {differing}; "
              f"waves (no joining) {waves_tps['median']:.1f} tok/s, p99 {row['waves']['p99_latency_s']['median']:.2f} s"
              + (f"; peer {row['peer']['tokens_per_s']['median']:.1f} tok/s" if peer else ""), flush=True)  # fmt: skip
    top = next((r for r in rows if r["clients"] == 32), None)
    result = {
        "kind": "serve-load",
        "what": f"lightkit serve ({args.artifact}, {args.form}) under concurrent clients against lightkit generate "
        "at the same batch: greedy chat completions of held-out articles",
        "command": command_line("serve_load.py", args),
        **provenance("onnxruntime", "fastapi", "uvicorn", "openai"),
        "settings": {
            "serve": f"lightkit serve --batch_size <clients> --max_tokens {args.max_tokens} (up to <clients> rows; "
            "requests join a running wave as rows finish, join_tokens 256; batch_wait_ms 5); one request after "
            "another per client thread",
            "waves": "the same server with --join_tokens 0: a request waits for the running wave to end",
            "generate": f"Artifact.generate(chat=True, max_new_tokens={args.max_tokens}, batch_size=<clients>)",
            "peer": "onnxruntime-genai behind benchmarks/serve_peer_genai.py (a minimal server: one og.Generator per "
            f"request, one at a time), model {args.peer_model}, /v1/completions on the same chat-rendered prompts; its "
            "usage leaves out EOS, which is counted as lightkit's usage counts it"
            if args.peer_model
            else None,
            "client": "httpx2, one client per thread, for every side",
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "order": "rotating per round",
        },  # fmt: skip
        "rows": rows,
        "targets": [
            check(
                f"serve tokens/s at 32 clients over lightkit generate's at batch 32 (>= {SERVE_VS_GENERATE})",
                ">=",
                SERVE_VS_GENERATE,
                top["serve_over_generate"] if top else None,
            ),
            check("failed requests in the load run", "<=", 0, sum(r["failed"] + r["waves"]["failed"] for r in rows)),
            *(
                [
                    check(
                        "answers differing from lightkit generate's at batch 1 (a float form: batch-invariant)",
                        "<=",
                        0,
                        sum(r["differing_from_batch_1"] + r["waves"]["differing_from_batch_1"] for r in rows),
                    )
                ]
                if args.form in ("fp32", "fp16")
                else []
            ),
        ],  # fmt: skip
    }
    write_result(args.out, result)
    print(json.dumps(result["targets"], indent=1))


if __name__ == "__main__":
    main()
