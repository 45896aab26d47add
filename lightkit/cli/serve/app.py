"""The HTTP API of `lightkit serve` (FastAPI): OpenAI's chat and text completions for decoders, tag
and classify for encoders, models, health, metrics and a playground page.

Routes parse their own bodies (lightkit.cli.serve.protocol) so every refusal has OpenAI's error
shape and names its field; limits are checked before a request is queued (lightkit.cli.serve.settings);
the model runs on the engine's worker thread (lightkit.cli.serve.engine), never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from lightkit.cli.serve.engine import Batcher, DecodeJob, DecoderEngine, EncodeJob, EncoderEngine
from lightkit.cli.serve.metrics import Metrics
from lightkit.cli.serve.protocol import (
    ApiError,
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    Sampling,
    TagRequest,
    parse,
    stop_list,
)
from lightkit.cli.serve.settings import ServeSettings
from lightkit.data.chat import render
from lightkit.export.runtime.generation import Generator, RefineSettings
from lightkit.export.runtime.serving import Artifact

DECODER_ROUTES = ("/v1/chat/completions", "/v1/completions")
ENCODER_ROUTES = {"word_tags": "/v1/tag", "labels": "/v1/classify"}


class Service:
    """An artifact served: its engine, limits, rewards for the refiner, and metrics."""

    def __init__(self, artifact: Artifact, settings: ServeSettings) -> None:
        self.artifact, self.settings = artifact, settings
        self.metrics = Metrics()
        self.model_id = settings.model_name or artifact.folder.name
        self.decoder = artifact.manifest.get("export_kind") == "decoder"
        self.created = int(time.time())
        batching = (settings.queue_size, settings.batch_size, settings.batch_wait_ms, self.metrics)
        self.engine: Batcher
        if self.decoder:
            self.context = artifact.manifest.get("context") or artifact.max_length
            generator = Generator(artifact.session, artifact.tokenizer, self.context, str(artifact.folder))
            self.engine = DecoderEngine(generator, artifact.tokenizer, settings.join_tokens, *batching)
        else:
            self.engine = EncoderEngine({"tag": artifact.tag, "classify": artifact.classify}, *batching)
        from lightkit.rewards.scoring import build_reward

        self.rewards = {name: build_reward([path], None) for name, path in settings.rewards.items()}

    @property
    def routes(self) -> list[str]:
        if self.decoder:
            return list(DECODER_ROUTES)
        return [ENCODER_ROUTES[k] for k in (self.artifact.manifest.get("serving"),) if k in ENCODER_ROUTES]

    # -- decoders ---------------------------------------------------------------------------------
    def decode_job(
        self, request: Sampling, prompts: list[str], field: str, loop: asyncio.AbstractEventLoop, chat: bool
    ) -> DecodeJob:
        """The request's limits checked (each refusal names its field) and its prompts encoded as
        `lightkit generate` encodes them (a rendered chat template has its special tokens already)."""
        s = self.settings
        if request.model not in (None, self.model_id):
            raise ApiError(404, f"the model '{request.model}' does not exist; this server serves '{self.model_id}'",
                           "model", "not_found_error")  # fmt: skip
        max_tokens = request.max_completion_tokens or request.max_tokens or s.default_max_tokens
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        if max_tokens > s.max_tokens:
            raise ApiError(400, f"'{param}' is {max_tokens}; this server answers with at most {s.max_tokens}", param)
        if request.n > s.max_n:
            raise ApiError(400, f"'n' is {request.n}; this server returns at most {s.max_n} choices", "n")
        if len(prompts) * request.n > s.batch_size:
            raise ApiError(400, f"{len(prompts)} prompts x n={request.n} is over this server's {s.batch_size} rows",
                           field)  # fmt: skip
        ids = [self.artifact.tokenizer(p, add_special_tokens=not chat)["input_ids"] for p in prompts]
        longest = max(len(i) for i in ids)
        limit = min(s.max_prompt_tokens or self.context, self.context)
        if longest > limit:
            raise ApiError(400, f"the prompt is {longest} tokens; this server takes at most {limit}", field)
        if longest + max_tokens > self.context:
            raise ApiError(400, f"the prompt ({longest} tokens) plus '{param}' ({max_tokens}) is over the model's "
                           f"context of {self.context} tokens", param)  # fmt: skip
        refine = None
        if request.lightkit is not None and request.lightkit.refine:
            name = request.lightkit.reward
            if name is not None and name not in self.rewards:
                raise ApiError(400, f"'lightkit.reward': no reward {name!r} on this server; it has "
                               f"{sorted(self.rewards) or 'none (serve --rewards)'}", "lightkit.reward")  # fmt: skip
            refine = RefineSettings(max_calls=request.lightkit.refine_calls, reward=self.rewards.get(name or ""))
        return DecodeJob(
            size=len(prompts) * request.n, loop=loop, prompts=ids, texts=prompts, n=request.n, max_tokens=max_tokens,
            temperature=request.temperature, top_p=request.top_p, seed=request.seed, stop=stop_list(request.stop),
            stream=request.stream, refine=refine,
        )  # fmt: skip

    def chat_prompt(self, request: ChatRequest) -> str:
        tokenizer = self.artifact.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ApiError(400, "this artifact's tokenizer has no chat template; use /v1/completions", "messages")
        if request.messages[-1].role == "assistant":
            raise ApiError(400, "the last message is the assistant's; end with a user turn to answer", "messages")
        return render(tokenizer, [m.model_dump() for m in request.messages], generation_prompt=True)

    async def results(self, job: DecodeJob | EncodeJob) -> AsyncIterator[tuple[Any, ...]]:
        """The job's events until it is done; on timeout or a gone client the job is cancelled."""
        deadline = time.perf_counter() + self.settings.timeout_s
        remaining = job.size if isinstance(job, DecodeJob) else 1
        try:
            while remaining:
                try:
                    event = await asyncio.wait_for(job.events.get(), max(0.0, deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    raise ApiError(504, f"no answer within {self.settings.timeout_s:g} s (timeout_s)",
                                   kind="timeout_error") from None  # fmt: skip
                if event[0] == "error":
                    raise event[1]
                if event[0] in ("end", "result"):
                    remaining -= 1
                yield event
        finally:
            job.cancelled = remaining > 0

    def completion(self, job: DecodeJob, chat: bool, ended: dict[int, dict[str, Any]]) -> dict[str, Any]:
        choices = []
        for i in range(job.size):
            info = ended[i]
            choice: dict[str, Any] = {"index": i, "finish_reason": info["finish_reason"], "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": info["text"]}
            else:
                choice["text"] = info["text"]
            if "refined" in info:
                choice["lightkit"] = {"refined": info["refined"]}
            choices.append(choice)
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": choices,
            "usage": usage(job, ended),
        }

    async def stream(self, job: DecodeJob, chat: bool, include_usage: bool) -> AsyncIterator[bytes]:
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
                "model": self.model_id}  # fmt: skip

        def chunk(index: int, text: str | None, finish: str | None, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if text:
                    delta["content"] = text
                choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
            return sse({**head, "choices": [choice]})

        if chat:
            for i in range(job.size):
                yield chunk(i, None, None, role=True)
        ended: dict[int, dict[str, Any]] = {}
        try:
            async for event in self.results(job):
                if event[0] == "delta":
                    yield chunk(event[1], event[2], None)
                elif event[0] == "end":
                    ended[event[1]] = event[2]
                    yield chunk(event[1], None, event[2]["finish_reason"])
        except ApiError as e:  # the status line is sent: the error goes in the stream
            yield sse(e.body())
        if include_usage and len(ended) == job.size:
            yield sse({**head, "choices": [], "usage": usage(job, ended)})
        yield b"data: [DONE]\n\n"


def usage(job: DecodeJob, ended: dict[int, dict[str, Any]]) -> dict[str, int]:
    prompt = sum(len(ids) for ids in job.prompts)
    completion = sum(info["completion_tokens"] for info in ended.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (whether or not Content-Length says)."""
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"the body is over this server's {limit} bytes (max_body_bytes)")
        chunks.append(part)
    return b"".join(chunks)


def error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def create_app(service: Service) -> FastAPI:
    settings, metrics, engine = service.settings, service.metrics, service.engine

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lightkit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        began = time.perf_counter()
        path = request.url.path
        try:
            key = settings.api_key
            if key and path.startswith("/v1/") and request.headers.get("authorization") != f"Bearer {key}":
                raise ApiError(401, "a valid API key is required: Authorization: Bearer <key>",
                               kind="authentication_error")  # fmt: skip
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > settings.max_body_bytes:
                raise ApiError(413, f"the body is over this server's {settings.max_body_bytes} bytes (max_body_bytes)")
            response = await call_next(request)
        except ApiError as e:
            response = error(e)
        endpoint = path if path in ("/", "/health", "/metrics", "/v1/models", *DECODER_ROUTES,
                                    *ENCODER_ROUTES.values()) else "other"  # fmt: skip
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - began)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error(e)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {e.detail}; this server serves {service.routes}"
        return error(ApiError(e.status_code, message, kind="not_found_error" if e.status_code == 404 else
                              "invalid_request_error"))  # fmt: skip

    def needs(route: str) -> None:
        if route not in service.routes:
            raise ApiError(404, f"{route}: this artifact ({service.artifact.manifest.get('objective')}) serves "
                           f"{service.routes}", kind="not_found_error")  # fmt: skip

    async def complete(request: Request, chat: bool) -> Response:
        needs(DECODER_ROUTES[0 if chat else 1])
        raw = await body(request, settings.max_body_bytes)
        loop = asyncio.get_running_loop()
        if chat:
            parsed: Any = parse(ChatRequest, raw)
            prompts, field = [service.chat_prompt(parsed)], "messages"
        else:
            parsed = parse(CompletionRequest, raw)
            prompts = [parsed.prompt] if isinstance(parsed.prompt, str) else parsed.prompt
            field = "prompt"
            if not prompts:
                raise ApiError(400, "'prompt' must not be an empty list", "prompt")
        job = service.decode_job(parsed, prompts, field, loop, chat)
        engine.submit(job)
        if parsed.stream:
            include = bool((parsed.stream_options or {}).get("include_usage"))
            return StreamingResponse(service.stream(job, chat, include), media_type="text/event-stream")
        ended = {e[1]: e[2] async for e in service.results(job) if e[0] == "end"}
        return JSONResponse(service.completion(job, chat, ended))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    async def encode(request: Request, kind: str, model: type[TagRequest] | type[ClassifyRequest]) -> Response:
        needs(f"/v1/{kind}")
        parsed = parse(model, await body(request, settings.max_body_bytes))
        texts = [parsed.input] if isinstance(parsed.input, str) else parsed.input
        limit = min(settings.max_inputs, settings.batch_size)
        if not texts or len(texts) > limit:
            raise ApiError(400, f"'input' holds {len(texts)} texts; give 1 to {limit}", "input")
        job = EncodeJob(size=len(texts), loop=asyncio.get_running_loop(), kind=kind, texts=texts,
                        viterbi=getattr(parsed, "viterbi", False))  # fmt: skip
        engine.submit(job)
        results = [e[1] async for e in service.results(job) if e[0] == "result"][0]
        if kind == "tag":
            data = [{"index": i, "words": [w for w, _ in r], "tags": [t for _, t in r]} for i, r in enumerate(results)]
        else:
            data = [{"index": i, "label": label, "scores": scores} for i, (label, scores) in enumerate(results)]
        return JSONResponse({"object": "list", "model": service.model_id, "data": data})

    @app.post("/v1/tag")
    async def tag(request: Request) -> Response:
        return await encode(request, "tag", TagRequest)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Response:
        return await encode(request, "classify", ClassifyRequest)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "lightkit"}
        return {"object": "list", "data": [model]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "form": service.artifact.form,
                "queue_depth": engine.depth()}  # fmt: skip

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> str:
        page = files("lightkit.cli.serve").joinpath("playground.html").read_text()
        config = {"model": service.model_id, "routes": service.routes, "key": bool(settings.api_key),
                  "labels": service.artifact.labels}  # fmt: skip
        return page.replace("/*CONFIG*/null", json.dumps(config))

    return app
