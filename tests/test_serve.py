"""`lightkit serve` on tiny artifacts: the official `openai` client (chat, streaming, stop strings,
n, usage), answers equal to `lightkit generate`'s, the bad-request matrix, 32 concurrent clients,
the full queue's 429, the API key, encoders' tag and classify, and the playground in Chromium."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx  # what the openai client itself speaks HTTP with
import pytest
import uvicorn
from helpers import CHROMIUM, CHROMIUM_FLAGS, ROOT, TINY_NER
from openai import OpenAI

from lightkit.cli.main import main
from lightkit.cli.serve.app import Service, create_app
from lightkit.cli.serve.settings import ServeSettings
from lightkit.export.runtime.serving import Artifact

PROMPTS = ["the model", "a long day of news and more", "it", "what the market said about"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(artifact: Path, form: str = "int8-cpu", **settings: object) -> Iterator[tuple[str, Service]]:
    """A live server on a free localhost port, in a thread of this process."""
    service = Service(Artifact(artifact, form=form, device="cpu"), ServeSettings(port=free_port(), **settings))
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=service.settings.port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{service.settings.port}", service
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve_process(artifact: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`lightkit serve ARTIFACT` as a user starts it, on a free port, once /health answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIGHTKIT_API_KEY"}
    process = subprocess.Popen([sys.executable, "-m", "lightkit.cli.main", "serve", str(artifact), "--port", str(port),
                                *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert time.time() < deadline and process.poll() is None, "lightkit serve did not start"
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def decoder_server(tiny_decoder: Path) -> Iterator[tuple[str, Service]]:
    with running(tiny_decoder, api_key_env=None, max_tokens=32, max_n=4, batch_size=16,
                 rewards={"e": "ppo_rewards:count_e"}) as live:  # fmt: skip
        yield live


@pytest.fixture(scope="module")
def client(decoder_server: tuple[str, Service]) -> OpenAI:
    return OpenAI(base_url=f"{decoder_server[0]}/v1", api_key="unused", max_retries=0)


@functools.cache
def loaded(folder: Path, form: str) -> Artifact:
    """One session per artifact and form for the whole module, not one per expected answer."""
    return Artifact(folder, form=form, device="cpu")


def expected(
    tiny_decoder: Path, prompt: str, tokens: int, chat: bool = True, form: str = "int8-cpu", **decoding: object
) -> dict:
    """What `lightkit generate` answers (Artifact.generate, the same loop and tokenizer)."""
    return next(loaded(tiny_decoder, form).generate([prompt], chat=chat, max_new_tokens=tokens, **decoding))


def test_chat_answers_as_lightkit_generate_with_usage(client: OpenAI, tiny_decoder: Path) -> None:
    for prompt in PROMPTS[:2]:
        answer = client.chat.completions.create(model="onnx", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=8, temperature=0)  # fmt: skip
        reference = expected(tiny_decoder, prompt, 8)
        choice = answer.choices[0]
        assert choice.message.role == "assistant" and choice.message.content == reference["response"]
        assert choice.finish_reason == ("length" if reference["finish"] == "length" else "stop")
        tokenizer = loaded(tiny_decoder, "int8-cpu").tokenizer
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)  # fmt: skip
        assert answer.usage.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        assert answer.usage.completion_tokens == reference["tokens"]
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
        assert answer.model == "onnx" and answer.object == "chat.completion"


def test_completions_answer_the_bare_prompt(client: OpenAI, tiny_decoder: Path) -> None:
    answer = client.completions.create(model="onnx", prompt=PROMPTS, max_tokens=6, temperature=0)
    assert [c.text for c in answer.choices] == [expected(tiny_decoder, p, 6, chat=False)["response"] for p in PROMPTS]
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]


def test_streaming_sends_openai_chunks_that_add_up_to_the_answer(client: OpenAI) -> None:
    messages = [{"role": "user", "content": PROMPTS[1]}]
    whole = client.chat.completions.create(model="onnx", messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="onnx", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # token by token, not at once
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_strings_cut_the_answer_there(client: OpenAI) -> None:
    # Seeded hot sampling: varied text (the tiny model's greedy answer is all spaces), the same draws each time.
    args = {"model": "onnx", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 16,
            "temperature": 1.0, "seed": 0}  # fmt: skip
    text = client.chat.completions.create(**args).choices[0].message.content
    # A stop string that first appears past the answer's start, so the cut leaves something.
    stop = next(text[i : i + 2] for i in range(1, len(text) - 1)
                if text[i : i + 2].strip() and text.find(text[i : i + 2]) == i)  # fmt: skip
    cut = client.chat.completions.create(**args, stop=[stop])
    assert cut.choices[0].message.content == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(**args, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[: text.find(stop)]


def test_n_choices_are_sampled_and_seeded(client: OpenAI) -> None:
    messages = [{"role": "user", "content": PROMPTS[2]}]
    args = {"model": "onnx", "messages": messages, "max_tokens": 8, "temperature": 1.5, "n": 4}
    one = client.chat.completions.create(**args, seed=7)
    again = client.chat.completions.create(**args, seed=7)
    assert [c.index for c in one.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in one.choices]
    assert texts == [c.message.content for c in again.choices]  # a seed reproduces the answers
    assert len(set(texts)) > 1  # four draws, not one answer four times
    greedy = client.chat.completions.create(**{**args, "temperature": 0, "n": 2})
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


def test_the_lightkit_field_refines_toward_a_named_reward(client: OpenAI, decoder_server: tuple) -> None:
    messages = [{"role": "user", "content": PROMPTS[0]}]
    plain = client.chat.completions.create(model="onnx", messages=messages, max_tokens=8, temperature=0)
    refined = client.chat.completions.create(model="onnx", messages=messages, max_tokens=8, temperature=0,
                                             extra_body={"lightkit": {"reward": "e", "refine_calls": 12}})  # fmt: skip
    report = refined.choices[0].model_extra["lightkit"]["refined"]
    assert report["after"] >= report["before"] and 0 < report["calls"] <= 12
    assert "lightkit" not in (plain.choices[0].model_extra or {})


BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"max_tokens": 4}), 400, "messages"),
    (json.dumps({"messages": []}), 400, "messages"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}), 400, "messages[0].role"),
    (json.dumps({"messages": [{"role": "user", "content": 3}]}), 400, "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 33}), 400, "max_tokens"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "8"}), 400, "max_tokens"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), 400, "temperature"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}), 400, "temperature"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 5}), 400, "n"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}), 400, "stop"),
    (json.dumps({"messages": [{"role": "user", "content": "word " * 80}]}), 400, "messages"),
    (json.dumps({"messages": [{"role": "user", "content": "word " * 8}], "max_tokens": 32}), 400, "max_tokens"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}), 404, "model"),
    (
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "lightkit": {"reward": "nope"}}),
        400,
        "lightkit.reward",
    ),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}), 400, "stream"),
]


def test_every_bad_request_is_a_4xx_naming_its_field_and_the_server_stays_up(decoder_server: tuple) -> None:
    base, service = decoder_server
    with httpx.Client(base_url=base, timeout=30) as http:
        for body, status, param in BAD:
            response = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["param"] == param and error["message"] and error["type"], (body, error)
            assert http.get("/health").json()["status"] == "ok"
        too_big = http.post("/v1/chat/completions", content=b"x" * (service.settings.max_body_bytes + 1))
        assert too_big.status_code == 413 and "max_body_bytes" in too_big.json()["error"]["message"]
        assert http.post("/v1/tag", json={"input": "x"}).status_code == 404  # a decoder serves no tags
        assert http.get("/v1/chat/completions").json()["error"]["type"] == "invalid_request_error"
        assert http.get("/nowhere").status_code == 404
        ok = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"


def test_32_concurrent_clients_get_their_own_answers(client: OpenAI, tiny_decoder: Path, decoder_server: tuple) -> None:
    prompts = [PROMPTS[i % 4] + " " + str(i) for i in range(32)]
    wanted = {p: expected(tiny_decoder, p, 10)["response"] for p in prompts}

    def ask(prompt: str) -> str:
        answer = client.chat.completions.create(model="onnx", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=10, temperature=0)  # fmt: skip
        return answer.choices[0].message.content

    with ThreadPoolExecutor(32) as pool:
        got = dict(zip(prompts, pool.map(ask, prompts)))
    assert got == wanted  # every client its own answer: none lost, swapped or corrupted in the batch
    metrics = httpx.get(f"{decoder_server[0]}/metrics").text
    assert 'lightkit_requests_total{code="200",endpoint="/v1/chat/completions"}' in metrics
    assert "lightkit_request_latency_seconds_bucket" in metrics and "lightkit_queue_depth" in metrics
    assert ask(PROMPTS[0]) == expected(tiny_decoder, PROMPTS[0], 10)["response"]  # and it still answers


WIDE = "a long day of news and more"  # a prompt wider than the cache of a wave that starts with "it"


@pytest.mark.parametrize(("queued", "joined"), [(["the model"], 2), ([WIDE], 0), ([WIDE, "the model"], 0)])
def test_requests_join_a_running_wave_in_order_and_answer_as_they_would_alone(
    tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch, queued: list[str], joined: int
) -> None:
    """A decodes; when it has 3 tokens, the `queued` requests (2 choices each) arrive, in order. One
    joins A's wave once A's cache is as wide as its prompt; one wider than A's cache ever gets
    waits for the next wave, and a request behind it does not overtake it. Every answer is
    exactly `lightkit generate`'s alone (fp32: no int8 batch effects)."""
    with running(tiny_decoder, form="fp32", api_key_env=None, max_tokens=24) as (base, service):
        engine, arrived = service.engine, threading.Event()
        step = engine._step

        def held_step(row, tokens, generated):  # noqa: ANN001, ANN202 (the engine's own signature)
            if row.job.size == 1 and len(tokens) == 3 and not arrived.is_set():
                arrived.set()  # let the others be sent; decode A's next step once they are all queued
                deadline = time.time() + 30
                while engine.depth() < len(queued) and time.time() < deadline:
                    time.sleep(0.001)
            return step(row, tokens, generated)

        monkeypatch.setattr(engine, "_step", held_step)

        def ask(prompt: str, n: int) -> list[str]:
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 12, "temperature": 0, "n": n}
            return [c["message"]["content"] for c in httpx.post(f"{base}/v1/chat/completions", json=body,
                                                                timeout=60).json()["choices"]]  # fmt: skip

        with ThreadPoolExecutor(1 + len(queued)) as pool:
            first = pool.submit(ask, "it", 1)
            assert arrived.wait(30)
            later = []
            for i, prompt in enumerate(queued):
                later.append(pool.submit(ask, prompt, 2))
                # Queued in this order. A is held until all are queued, so the queue only grows
                # until the last one is in (after that, A's wave may take it at once).
                deadline = time.time() + 30
                while i < len(queued) - 1 and engine.depth() <= i:
                    assert time.time() < deadline, "the request was not queued"
                    time.sleep(0.005)
            answers = [first.result(), *(f.result() for f in later)]
        metrics = httpx.get(f"{base}/metrics").text
    assert float(re.search(r"^lightkit_joined_rows_total (\S+)$", metrics, re.M)[1]) == joined
    wanted = [
        [expected(tiny_decoder, p, 12, form="fp32")["response"]] * n for p, n in [("it", 1)] + [(q, 2) for q in queued]
    ]
    assert answers == wanted


def test_a_full_queue_answers_429_at_once_and_the_server_goes_on(tiny_decoder: Path) -> None:
    body = {"messages": [{"role": "user", "content": "the model"}], "max_tokens": 30, "temperature": 0}
    with running(tiny_decoder, api_key_env=None, queue_size=1, batch_size=1, max_tokens=30) as (base, _):

        def post(_: int) -> httpx.Response:
            return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(post, range(12)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) == {200, 429} and codes.count(429) >= 1, codes
        refused = next(r for r in responses if r.status_code == 429).json()["error"]
        assert refused["type"] == "rate_limit_error" and "retry" in refused["message"]
        answers = {r.json()["choices"][0]["message"]["content"] for r in responses if r.status_code == 200}
        assert len(answers) == 1  # the same prompt, the same greedy answer, whichever wave served it
        assert post(0).status_code == 200


def test_an_api_key_from_the_environment_is_required(tiny_decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTKIT_TEST_KEY", "s3cret")
    with running(tiny_decoder, api_key_env="LIGHTKIT_TEST_KEY") as (base, _):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        refused = httpx.post(f"{base}/v1/chat/completions", json=body)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        wrong = httpx.post(f"{base}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        client = OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert client.chat.completions.create(model="onnx", messages=body["messages"], max_tokens=2).choices
        assert [m.id for m in client.models.list()] == ["onnx"]
        assert httpx.get(f"{base}/health").status_code == 200  # health and metrics stay open to probes


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory, ner_run: Path) -> dict[str, Path]:
    """The tiny NER model and a tiny topic classifier, exported (fp32 and int8-cpu)."""
    root = tmp_path_factory.mktemp("serve-encoders")
    classifier = ROOT / "tests" / "conf" / "classification.yaml"
    main(["fit", "--config", str(classifier), "--trainer.default_root_dir", str(root / "cls"),
          "--trainer.max_epochs", "3"])  # fmt: skip
    main(["export", "--config", str(classifier), "--ckpt_path", str(next((root / "cls").rglob("*.ckpt"))),
          "--output", str(root / "cls-onnx")])  # fmt: skip
    main(["export", "--config", str(TINY_NER), "--ckpt_path", str(ner_run / "checkpoints" / "best.ckpt"),
          "--output", str(root / "ner-onnx")])  # fmt: skip
    return {"ner": root / "ner-onnx", "cls": root / "cls-onnx"}


SENTENCES = ["Apple opens a store in Paris", "John Smith flew to Berlin on Monday", "nothing here", "EU and UN talk"]


@pytest.mark.slow  # a classifier fitted and two encoders exported
def test_tag_and_classify_answer_as_the_artifact_does_under_concurrency(encoders: dict) -> None:
    ner = Artifact(encoders["ner"], form="int8-cpu", device="cpu")
    with running(encoders["ner"], api_key_env=None, batch_size=16) as (base, _):
        many = [f"{SENTENCES[i % 4]} {i}" for i in range(24)]
        for viterbi in (False, True):
            wanted = list(ner.tag(many, viterbi=viterbi))

            def tag(text: str, viterbi: bool = viterbi) -> list[tuple[str, str]]:
                data = httpx.post(f"{base}/v1/tag", json={"input": text, "viterbi": viterbi}).json()["data"]
                return list(zip(data[0]["words"], data[0]["tags"]))

            with ThreadPoolExecutor(24) as pool:  # one text per request, batched across requests
                assert list(pool.map(tag, many)) == wanted
        both = httpx.post(f"{base}/v1/tag", json={"input": SENTENCES[:2]}).json()["data"]
        assert [d["index"] for d in both] == [0, 1]
        assert httpx.post(f"{base}/v1/tag", json={"input": []}).json()["error"]["param"] == "input"
        assert httpx.post(f"{base}/v1/tag", json={"text": "x"}).json()["error"]["param"] == "input"
        assert httpx.post(f"{base}/v1/classify", json={"input": "x"}).status_code == 404  # a tagger
        assert httpx.post(f"{base}/v1/chat/completions", json={"messages": []}).status_code == 404
    classifier = Artifact(encoders["cls"], form="int8-cpu", device="cpu")
    with running(encoders["cls"], api_key_env=None) as (base, _):
        data = httpx.post(f"{base}/v1/classify", json={"input": SENTENCES}).json()["data"]
        for row, (label, scores) in zip(data, classifier.classify(SENTENCES)):
            assert row["label"] == label and row["scores"] == pytest.approx(scores, abs=1e-6)


def open_playground(base: str, probe: str, folder: Path) -> str:
    """The served page in headless Chromium, with `probe` run after it loads; the document title
    the probe leaves. The page is the server's own, loaded from a file with the server as its base
    (Chromium's web security off for this check only, so the file may call the server)."""
    page = httpx.get(base + "/").text
    file = folder / "playground.html"
    file.write_text(page.replace("<head>", f'<head><base href="{base}/">').replace("</body>", probe + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--disable-web-security", f"--user-data-dir={profile}",
                              "--virtual-time-budget=60000", "--dump-dom", file.as_uri()],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    return dom.stdout


PLAYGROUND_PROBE = """<script>window.addEventListener('load', async () => {
  document.getElementById('text').value = %s;
  document.getElementById('form').requestSubmit();
  // Each wait includes a real request to the server: Chromium's virtual clock stops while one is
  // pending, so the loop waits in real time for the answer, however slow the machine is.
  for (let i = 0; i < 3000; i++) {
    await fetch('health');
    await new Promise((r) => setTimeout(r, 10));
    const done = !document.getElementById('send').disabled;
    const answer = document.querySelector(%s);
    if (done && answer && answer.textContent.length) {
      document.title = 'answered ' + answer.textContent.length; return; }
  }
  document.title = 'no answer: ' + document.body.innerText.slice(0, 300); });</script>"""


@pytest.mark.slow  # two servers started as processes, each page loaded in Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_playground_chats_and_tags_in_a_browser(tiny_decoder: Path, encoders: dict, tmp_path: Path) -> None:
    with serve_process(tiny_decoder, "--max_tokens", "16") as (base, _):
        dom = open_playground(base, PLAYGROUND_PROBE % ('"the model"', '".assistant"'), tmp_path)
    assert "<title>answered 16</title>" in dom and 'class="turn user">the model</div>' in dom, dom[:600]
    with serve_process(encoders["ner"]) as (ner_base, _):
        dom = open_playground(ner_base, PLAYGROUND_PROBE % ('"Apple opens a store in Paris"', '"#result"'), tmp_path)
    assert "<title>answered " in dom and "Paris/" in dom, dom[:600]


@pytest.mark.slow  # a server started as a process
def test_lightkit_serve_prints_how_to_call_it_and_finishes_in_flight_requests_on_sigterm(tiny_decoder: Path) -> None:
    # A wave waits 2 s for company: the request is still in flight when the signal comes.
    with serve_process(tiny_decoder, "--form", "int8-cpu", "--batch_wait_ms", "2000") as (base, process):
        result: dict = {}
        body = {"messages": [{"role": "user", "content": "the model"}], "max_tokens": 8, "temperature": 0}
        thread = threading.Thread(target=lambda: result.update(r=httpx.post(f"{base}/v1/chat/completions", json=body,
                                                                            timeout=60)))  # fmt: skip
        thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        # uvicorn re-raises the captured signal once it has shut down, so the exit status says SIGTERM.
        assert process.wait(timeout=60) == -signal.SIGTERM
    assert result["r"].status_code == 200 and result["r"].json()["choices"][0]["finish_reason"] == "length"
    out = process.stdout.read()
    assert out.index("Shutting down") < out.index("Application shutdown complete")
    assert f"curl {base}/v1/chat/completions" in out and f'OpenAI(base_url="{base}/v1"' in out
    assert "API key not required" in out
