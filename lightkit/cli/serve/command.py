"""`lightkit serve ARTIFACT`: an exported artifact behind an OpenAI-compatible HTTP API.

    lightkit serve runs/sft_headlines/onnx --form int8-cpu          # http://127.0.0.1:8000
    LIGHTKIT_API_KEY=secret lightkit serve runs/ner/onnx --port 9000  # clients send the key

FastAPI on uvicorn: the stack vLLM's and llama.cpp's Python OpenAI servers use, so the routes,
streaming (server-sent events) and error shapes are the ones client libraries expect; uvicorn
stops on SIGINT/SIGTERM by refusing new connections and finishing the requests in flight (up to
`timeout_s`). LitServe was the other candidate: its batching loop is built for stateless
predict calls, while a decoder wave here is a KV-cache loop with per-row ends and token streaming
(lightkit.cli.serve.engine), which it would have wrapped rather than served.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightkit.cli.serve.app import Service, create_app
from lightkit.cli.serve.settings import ServeSettings
from lightkit.export.runtime.serving import Artifact


def examples(service: Service, base: str) -> str:
    """What to paste to call the server: curl, and the openai client for decoders."""
    auth = f' -H "Authorization: Bearer ${service.settings.api_key_env}"' if service.settings.api_key else ""
    if service.decoder:
        tokens = min(32, service.settings.max_tokens)
        body = json.dumps({"model": service.model_id, "messages": [{"role": "user", "content": "Hello"}],
                           "max_tokens": tokens})  # fmt: skip
        key = f'os.environ["{service.settings.api_key_env}"]' if service.settings.api_key else '"none"'
        return (
            f"curl {base}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d '{body}'\n\n"
            "python - <<'PY'\nimport os\nfrom openai import OpenAI\n"
            f'client = OpenAI(base_url="{base}/v1", api_key={key})\n'
            f'answer = client.chat.completions.create(model="{service.model_id}", '
            f'messages=[{{"role": "user", "content": "Hello"}}], max_tokens={tokens})\n'
            "print(answer.choices[0].message.content)\nPY"
        )
    route = service.routes[0]
    body = json.dumps({"input": ["Apple opens a store in Paris"]})
    return f"curl {base}{route} -H 'Content-Type: application/json'{auth} -d '{body}'"


def serve(artifact: str, form: str | None, device: str, settings: ServeSettings) -> None:
    import uvicorn

    service = Service(Artifact(Path(artifact), form=form, device=device), settings)
    base = f"http://{settings.host}:{settings.port}"
    print(f"lightkit serve: {service.model_id} ({service.artifact.form}) on {base}; playground {base}/")
    print(f"lightkit serve: routes {service.routes}, /v1/models, /health, /metrics")
    print("lightkit serve: API key " + (f"required (${settings.api_key_env})" if settings.api_key else "not required"))
    print(examples(service, base), flush=True)
    uvicorn.run(create_app(service), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=int(settings.timeout_s) + 1)  # fmt: skip
