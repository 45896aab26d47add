"""`lightkit generate` and the refiner, on a tiny exported Llama with GQA and tied embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_CLM, TINY_GQA_TIED

from lightkit.cli.main import main
from lightkit.data.chat import generation_prompt
from lightkit.export.runtime.generation import RefineSettings
from lightkit.export.runtime.refiner import objective, refine
from lightkit.export.runtime.serving import Artifact
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.errors import InputError

PROMPTS = ["the model", "a long day of news and more", "it", "what the market said about"]


@pytest.fixture(scope="module")
def decoder(tiny_decoder: Path) -> Path:
    return tiny_decoder


def generate_cli(decoder: Path, tmp_path: Path, *extra: str, prompts: list[str] = PROMPTS) -> list[dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source, out = tmp_path / "prompts.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(prompts) + "\n")
    main(["generate", str(decoder), "--prompts", str(source), "--output", str(out), *extra])
    return [json.loads(line) for line in out.read_text().splitlines()]


def full_forward_greedy(session: OrtModel, ids: list[int], steps: int) -> list[int]:
    """Greedy by whole-sequence forwards, no cache: the reference for the cached loop."""
    seq = torch.tensor([ids])
    for _ in range(steps):
        nxt = session(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1].argmax()
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    return seq[0, len(ids) :].tolist()


def full_logprob(session: OrtModel, prompt: list[int], response: list[int]) -> float:
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(session(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float(), -1)
    return float(sum(logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(response)))


def test_generate_cli_writes_records_that_decode_like_full_forwards_in_any_batching(
    decoder: Path, tmp_path: Path
) -> None:
    manifest = json.loads((decoder / "manifest.json").read_text())
    assert manifest["context"] == 64
    batched = generate_cli(decoder, tmp_path / "b", "--max_new_tokens", "6", "--batch_size", "3")
    single = generate_cli(decoder, tmp_path / "s", "--max_new_tokens", "6", "--batch_size", "1")
    assert [r["prompt"] for r in batched] == PROMPTS
    assert batched == single  # left padding changes nothing
    artifact = Artifact(decoder, device="cpu")
    for record in batched:
        ids = artifact.tokenizer(record["prompt"])["input_ids"]
        expected = full_forward_greedy(artifact.session, ids, 6)
        assert record["tokens"] == 6 and record["finish"] == "length"
        assert record["response"] == artifact.tokenizer.decode(expected, skip_special_tokens=True)


def test_stop_strings_end_a_row_and_cut_its_text(decoder: Path, tmp_path: Path) -> None:
    # Hot sampling makes the rows differ, so one row stops while the others go on.
    hot = ("--max_new_tokens", "8", "--batch_size", "4", "--temperature", "3.0", "--top_k", "50", "--seed", "0")
    full = generate_cli(decoder, tmp_path / "full", *hot)
    text = full[0]["response"]
    stop = text[:2]
    assert stop.strip() and not any(stop in r["response"] for r in full[1:]), [r["response"] for r in full]
    cut = generate_cli(decoder, tmp_path / "cut", *hot, "--stop", stop)
    assert cut[0]["response"] == text[: text.find(stop)] and cut[0]["finish"] == "stop"
    # Its tokens are the ones decoded until the stop string appeared, not the padding after them:
    # the same draws cut at that many tokens hold the stop string, one fewer does not.
    n = cut[0]["tokens"]
    assert n < full[0]["tokens"]
    upto = [
        generate_cli(decoder, tmp_path / str(k), *hot[2:], "--max_new_tokens", str(k))[0]["response"]
        for k in (n - 1, n)
    ]
    assert stop not in upto[0] and stop in upto[1]
    assert cut[1:] == full[1:]  # the other rows go on untouched


def test_sampling_is_seeded_and_chat_applies_the_template(decoder: Path, tmp_path: Path) -> None:
    args = ("--max_new_tokens", "6", "--temperature", "1.0", "--top_k", "20")
    one = generate_cli(decoder, tmp_path / "1", *args, "--seed", "3")
    again = generate_cli(decoder, tmp_path / "2", *args, "--seed", "3")
    other = generate_cli(decoder, tmp_path / "3", *args, "--seed", "4")
    assert one == again and one != other
    # With --chat the model continues the rendered template, not the bare prompt.
    artifact = Artifact(decoder, device="cpu")
    chat = next(artifact.generate(["the model"], chat=True, max_new_tokens=4))
    rendered = artifact.tokenizer(generation_prompt(artifact.tokenizer, "the model", None), add_special_tokens=False)
    expected = full_forward_greedy(artifact.session, rendered["input_ids"], 4)
    assert chat["response"] == artifact.tokenizer.decode(expected, skip_special_tokens=True)
    # ... so its turn markers count against the context: a budget that fits the bare prompt does not fit it.
    room = 64 - len(artifact.tokenizer("the model")["input_ids"])
    assert next(artifact.generate(["the model"], max_new_tokens=room))["tokens"] == room
    with pytest.raises(InputError, match="context of 64 tokens"):
        next(artifact.generate(["the model"], chat=True, max_new_tokens=room))


def test_refiner_never_lowers_the_objective_and_scores_it_exactly(decoder: Path) -> None:
    session = OrtModel(decoder / "fp32" / "model.onnx", device="cpu")
    prompt = [5, 17, 42, 9]
    g = torch.Generator().manual_seed(0)
    for start in (full_forward_greedy(session, prompt, 8), torch.randint(3, 300, (8,), generator=g).tolist()):
        result = refine(session, torch.tensor(prompt), start, top_k=4, max_calls=40, length_weight=0.0)
        assert result.after >= result.before - 1e-6
        assert result.logprob == pytest.approx(full_logprob(session, prompt, result.tokens), abs=1e-3)
        assert result.before == pytest.approx(full_logprob(session, prompt, start), abs=1e-3)
        # `objective` ranks other decoders' answers on the same scale (best-of-N in the benchmark).
        scored = objective(session, torch.tensor(prompt), [start, result.tokens], length_weight=0.5, batch_size=1)
        assert [v for v, _ in scored] == pytest.approx(
            [result.before + 0.5 * 8, result.after + 0.5 * len(result.tokens)], abs=1e-3
        )
    assert result.after > result.before + 1.0 and sum(result.moves.values()) > 0  # random tokens improve


# The fixture's tokens each cost about 5 nats: a weight above that pays for tokens, one below it
# (pure argmax log P at 0) for removing them.
@pytest.mark.parametrize("weight, longer", [(10.0, True), (0.0, False)])
def test_insert_and_delete_let_the_length_term_act(decoder: Path, weight: float, longer: bool) -> None:
    session = OrtModel(decoder / "fp32" / "model.onnx", device="cpu")
    prompt, start = [5, 17, 42, 9], [40, 41, 42, 43, 44, 45]
    result = refine(session, torch.tensor(prompt), start, length_weight=weight, max_calls=60)
    assert (len(result.tokens) > len(start)) if longer else (len(result.tokens) < len(start))
    assert result.moves["insert" if longer else "delete"] > 0 and result.length_weight == weight


def test_the_default_length_weight_makes_the_first_answers_length_neutral(decoder: Path) -> None:
    session = OrtModel(decoder / "fp32" / "model.onnx", device="cpu")
    prompt, start = [5, 17, 42, 9], [40, 41, 42, 43, 44, 45]
    result = refine(session, torch.tensor(prompt), start, max_calls=60)
    assert result.length_weight == pytest.approx(-full_logprob(session, prompt, start) / len(start), abs=1e-4)
    assert result.before == pytest.approx(0.0, abs=1e-4)  # log P(Y0) + weight x |Y0|
    assert result.after == pytest.approx(result.logprob + result.length_weight * len(result.tokens), abs=1e-4)
    assert len(result.tokens) > 1  # pure argmax log P (weight 0, above) shrinks this one to a token


def test_refiner_runs_the_prompt_once_and_keeps_to_its_budget(decoder: Path) -> None:
    session = OrtModel(decoder / "fp32" / "model.onnx", device="cpu")
    widths: list[tuple[int, int, int]] = []  # (rows, input tokens, past length) per session run
    run = session.session.run

    def counting(names, feeds):  # noqa: ANN001, ANN202
        widths.append((*feeds["input_ids"].shape, feeds["past.0.key"].shape[2]))
        return run(names, feeds)

    session.session = type("Counted", (), {"run": staticmethod(counting), "get_inputs": session.session.get_inputs})()
    prompt = list(range(3, 40))  # 37 tokens: far longer than any candidate
    result = refine(session, torch.tensor(prompt), [50, 51, 52, 53], max_calls=7, batch_size=8)
    assert widths[0] == (1, len(prompt), 0)  # the prompt, once, with an empty cache
    assert all(past == len(prompt) and tokens <= 5 for _, tokens, past in widths[1:])  # then only candidates
    # A call is one session run: on the fused graph (batch 1 only over a past) one candidate each.
    assert session.positions_inside and all(rows == 1 for rows, _, _ in widths)
    assert result.calls == len(widths) <= 7


def test_refined_generation_reports_before_and_after(decoder: Path, tmp_path: Path) -> None:
    records = generate_cli(decoder, tmp_path, "--max_new_tokens", "6", "--refine", "--refine_calls", "12")
    for r in records:
        refined = r["refined"]
        assert refined["after"] >= refined["before"] - 1e-6 and refined["calls"] <= 12
        assert set(refined["moves"]) == {"substitute", "insert", "delete"}
    # A reward callable steers it, through the same reward interface as PPO and GRPO.
    artifact = Artifact(decoder, device="cpu")
    steer = RefineSettings(max_calls=30, reward=lambda prompts, responses: [5.0 * r.count("e") for r in responses])
    plain = next(artifact.generate(["the model"], max_new_tokens=6, refine=RefineSettings(max_calls=30)))
    steered = next(artifact.generate(["the model"], max_new_tokens=6, refine=steer))
    assert steered["response"].count("e") > plain["response"].count("e")


def test_generate_bad_input_is_named(decoder: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"prompts.txt:1: the prompt is \d+ tokens; .* context of 64 tokens"):
        generate_cli(decoder, tmp_path / "long", prompts=["word " * 80])
    with pytest.raises(InputError, match="stop: expected a string or a list of non-empty strings"):
        next(Artifact(decoder, device="cpu").generate(["it"], stop=["ok", 3]))
    with pytest.raises(InputError, match="max_calls must be at least 2"):
        generate_cli(decoder, tmp_path / "budget", "--refine", "--refine_calls", "0")
    with pytest.raises(InputError, match="max_ms must be > 0"):
        generate_cli(decoder, tmp_path / "ms", "--refine", "--refine_ms", "-5")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "no prompt"}\n')
    with pytest.raises(InputError, match=r'bad.jsonl:2: expected a JSON object with a "prompt" string'):
        main(["generate", str(decoder), "--prompts", str(bad), "--output", str(tmp_path / "x.jsonl"),
              "--max_new_tokens", "4"])  # fmt: skip
    assert not (tmp_path / "x.jsonl").exists()  # nothing half-written
    # A tokenizer without a chat template, asked for --chat.
    plain = tmp_path / "plain"
    shutil.copytree(decoder, plain)
    config = json.loads((plain / "tokenizer" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "tokenizer" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(InputError, match="has no chat template; drop --chat"):
        generate_cli(plain, tmp_path / "chat", "--chat")
    # An export folder with no decoder form: its manifest names the forms it has.
    with pytest.raises(InputError, match="no form 'fp16'"):
        generate_cli(decoder, tmp_path / "form", "--form", "fp16")


def test_a_tied_table_is_stored_once_in_fp32_and_int8(tiny_decoder: Path, tmp_path: Path) -> None:
    """fp32 keeps one float table (the head reads Transpose(table)); int8-cpu one 8-bit code tensor
    read by both GatherBlockQuantized and the head's MatMulNBits, within the parity gate."""
    import onnx

    vocab_by_hidden = {(302, 64), (64, 302)}
    fp32 = onnx.load(tiny_decoder / "fp32" / "model.onnx").graph
    assert sum(tuple(t.dims) in vocab_by_hidden for t in fp32.initializer) == 1
    manifest = json.loads((tiny_decoder / "manifest.json").read_text())
    assert manifest["quantization"]["int8-cpu"]["token table"].startswith("shared with the tied LM head")
    assert manifest["forms"]["int8-cpu"]["parity"]["passed"]
    int8 = onnx.load(tiny_decoder / "int8-cpu" / "model.onnx").graph
    codes = [t.name for t in int8.initializer if t.data_type == onnx.TensorProto.UINT8 and t.dims[0] == 302]
    assert len(codes) == 2  # the codes and their zero points; no float table left
    assert not [
        t for t in int8.initializer if tuple(t.dims) in vocab_by_hidden and t.data_type == onnx.TensorProto.FLOAT
    ]
    head = next(n for n in int8.node if n.op_type == "MatMulNBits" and "lm_head" in n.name)
    lookup = next(n for n in int8.node if n.op_type == "GatherBlockQuantized")
    reshape = next(n for n in int8.node if n.output[0] == lookup.input[0])
    assert reshape.op_type == "Reshape" and reshape.input[0] == head.input[1]  # the same codes at both ends
    # The int8 artifact generates through the same command.
    records = generate_cli(tiny_decoder, tmp_path, "--form", "int8-cpu", "--max_new_tokens", "4")
    assert len(records) == len(PROMPTS) and all(r["tokens"] == 4 for r in records)


def test_jsonl_prompts_keep_their_other_fields_and_stdin_works(decoder: Path, tmp_path: Path, monkeypatch) -> None:
    import io

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "the model", "reference": "a headline", "id": "7"}\n')
    out = tmp_path / "out.jsonl"
    main(["generate", str(decoder), "--prompts", str(rows), "--output", str(out), "--max_new_tokens", "3"])
    record = json.loads(out.read_text())
    assert record["reference"] == "a headline" and record["id"] == "7" and record["tokens"] == 3
    monkeypatch.setattr("sys.stdin", io.StringIO("the model\n"))
    main(
        ["generate", str(decoder), "--prompts", "-", "--output", str(tmp_path / "stdin.jsonl"), "--max_new_tokens", "3"]
    )
    assert json.loads((tmp_path / "stdin.jsonl").read_text())["response"] == record["response"]


@pytest.mark.slow  # a second export of the tiny decoder
def test_int8_gpu_shares_the_tied_table_too(tiny_decoder: Path, tmp_path: Path) -> None:
    """The GPU form of a tied decoder: one 8-bit table for both ends, fp16 scales, parity-gated
    (here on the CPU EP; placement is checked where there is a GPU)."""
    import onnx

    run = tiny_decoder.parent / "run"
    ckpt = next(run.rglob("*.ckpt"))
    common = ["--config", str(TINY_CLM), "--data.tokenizer", str(tiny_decoder.parent / "tokenizer"),
              "--model.init_args.model_config", TINY_GQA_TIED]  # fmt: skip
    main(["export", *common, "--ckpt_path", str(ckpt), "--output", str(tmp_path / "onnx"), "--forms", "[int8-gpu]"])
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["quantization"]["int8-gpu"]["embedding tables"]["tables"] == {
        "tied token table": "8 bits, symmetric, block 32, fp16 scales"
    }
    graph = onnx.load(tmp_path / "onnx" / "int8-gpu" / "model.onnx").graph
    head = next(n for n in graph.node if n.op_type == "MatMulNBits" and "lm_head" in n.name)
    lookup = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    assert next(n for n in graph.node if n.output[0] == lookup.input[0]).input[0] == head.input[1]
    assert manifest["forms"]["int8-gpu"]["parity"]["passed"]
    # What the manifest says is what the graph holds: both read one settings object.
    from onnx import helper

    from lightkit.export.builder.weight_only import INT8_CPU_DECODER, INT8_GPU

    assert manifest["quantization"]["int8-gpu"]["MatMul"] == INT8_GPU.describe()
    for node in (n for n in graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["bits"], attrs["block_size"]) == (INT8_GPU.bits, INT8_GPU.block_size), node.name
    cpu = json.loads((tiny_decoder / "manifest.json").read_text())["quantization"]["int8-cpu"]
    assert cpu["MatMul"] == INT8_CPU_DECODER.describe()
    cpu_graph = onnx.load(tiny_decoder / "int8-cpu" / "model.onnx").graph
    levels = {helper.get_attribute_value(a) for n in cpu_graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"}  # fmt: skip
    assert levels == {INT8_CPU_DECODER.accuracy_level}


@pytest.mark.slow  # an export inside generate
def test_generate_from_a_checkpoint_exports_it_first(tiny_decoder: Path, tmp_path: Path) -> None:
    """A checkpoint and its training config(s) give the same answers as the folder exported from them."""
    import yaml

    ckpt = next((tiny_decoder.parent / "run").rglob("*.ckpt"))
    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(yaml.safe_dump({
        "data": {"init_args": {"tokenizer": str(tiny_decoder.parent / "tokenizer")}},
        "model": {"init_args": {"model_config": yaml.safe_load(TINY_GQA_TIED)}},
    }))  # fmt: skip
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the model\n")
    out = tmp_path / "out.jsonl"
    main(["generate", str(ckpt), "--config", str(TINY_CLM), "--config", str(overrides), "--prompts", str(prompts),
          "--output", str(out), "--max_new_tokens", "4"])  # fmt: skip
    from_folder = generate_cli(tiny_decoder, tmp_path / "folder", "--form", "fp32", "--max_new_tokens", "4",
                               prompts=["the model"])  # fmt: skip
    assert [json.loads(line) for line in out.read_text().splitlines()] == from_folder
    with pytest.raises(InputError, match="a checkpoint needs --config"):
        main(["generate", str(ckpt), "--prompts", str(prompts), "--output", str(tmp_path / "x.jsonl")])
    assert not (tmp_path / "x.jsonl").exists()


def test_int4_forms_cut_the_layers_to_4_bits_and_keep_the_tied_table_8_bit(tiny_decoder: Path, tmp_path: Path) -> None:
    """int4-cpu and int4-gpu: every layer MatMul 4-bit (HQQ, zero points, block 32) with its rank-16
    error correction beside it, the tied table and head one shared 8-bit copy, each gated and
    recorded as done (encoders refuse them: tests/test_export.py)."""
    import onnx
    from onnx import helper

    from lightkit.export.builder.weight_only import INT4_CPU_DECODER, INT4_GPU

    ckpt = next((tiny_decoder.parent / "run").rglob("*.ckpt"))
    common = ["--config", str(TINY_CLM), "--data.tokenizer", str(tiny_decoder.parent / "tokenizer"),
              "--model.init_args.model_config", TINY_GQA_TIED]  # fmt: skip
    out = tmp_path / "onnx"
    main(["export", *common, "--ckpt_path", str(ckpt), "--output", str(out), "--forms", "[int4-cpu, int4-gpu]"])
    manifest = json.loads((out / "manifest.json").read_text())
    for form, settings in (("int4-cpu", INT4_CPU_DECODER), ("int4-gpu", INT4_GPU)):
        assert manifest["forms"][form]["parity"]["passed"]
        assert manifest["quantization"][form]["MatMul"] == settings.describe()
        graph = onnx.load(out / form / "model.onnx").graph
        bits = {}
        for node in (n for n in graph.node if n.op_type == "MatMulNBits"):
            bits[node.name] = {a.name: helper.get_attribute_value(a) for a in node.attribute}["bits"]
        head = next(name for name in bits if "lm_head" in name)
        assert bits.pop(head) == 8 and set(bits.values()) == {4} and len(bits) == 2 * 5  # QKV, O, gate, up, down
        corrections = [n for n in graph.node if n.op_type == "MatMul" and n.name.endswith(("/lowrank_A", "/lowrank_B"))]
        assert len(corrections) == 2 * len(bits)
    how = manifest["quantization"]["int4-cpu"]
    assert how["token table"].startswith("shared with the tied LM head, 8 bits")
    assert how["low-rank correction"]["rank"] == 16 and how["low-rank correction"]["projections"] == 2 * 5
    records = generate_cli(out, tmp_path, "--form", "int4-cpu", "--max_new_tokens", "4")
    assert len(records) == len(PROMPTS) and all(r["tokens"] == 4 for r in records)
