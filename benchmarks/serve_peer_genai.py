"""The peer of benchmarks/serve_load.py: onnxruntime-genai behind a minimal OpenAI-style server.

    .venv-genai/bin/python benchmarks/serve_peer_genai.py --model runs/llm_peers/genai-int8 --port 8001

onnxruntime-genai ships no HTTP server (its OpenAI-compatible serving is a request open since
2024, onnxruntime-genai#313), so this is the minimal one a user would write around it, after the
library's own chat example: Python's threading HTTP server, `POST /v1/completions` with a
`prompt` (the chat template already applied by the client) and `max_tokens`, greedy, answered by
one `og.Generator` per request, one request at a time (the model is shared; genai's batching
takes a batch of prompts up front, which a server of independent requests does not have). `GET
/health` answers once the model is loaded. Only the standard library and onnxruntime_genai: it
runs in the genai venv (`make peer-venvs`).
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime_genai as og


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a folder written by onnxruntime-genai's model builder")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    model = og.Model(args.model)
    tokenizer = og.Tokenizer(model)
    lock = threading.Lock()

    def complete(prompt: str, max_tokens: int) -> dict:
        ids = np.asarray(tokenizer.encode(prompt), dtype=np.int32)
        with lock:
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False, batch_size=1)
            generator = og.Generator(model, params)
            generator.append_tokens(ids[None])
            while not generator.is_done():
                generator.generate_next_token()
            new = np.asarray(generator.get_sequence(0))[len(ids) :]
        finish = "length" if len(new) >= max_tokens else "stop"
        return {
            "object": "text_completion",
            "choices": [{"index": 0, "text": tokenizer.decode(new), "finish_reason": finish}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new), "total_tokens": len(ids) + len(new)},
        }

    class Handler(BaseHTTPRequestHandler):
        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.reply(200 if self.path == "/health" else 404, {"status": "ok"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.reply(200, complete(request["prompt"], int(request.get("max_tokens", 16))))
            except (ValueError, KeyError, TypeError) as e:
                self.reply(400, {"error": {"message": str(e), "type": "invalid_request_error"}})

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
