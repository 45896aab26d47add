"""Smoke tests: each benchmark script runs end to end on a tiny exported model and writes its JSON."""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TINY_NER

from lightkit.cli.main import main


@contextmanager
def benchmarks_importable() -> Iterator[None]:
    """benchmarks/ first on sys.path while a test imports or runs its scripts, as `python
    benchmarks/<name>` has it (they import `measure` and one another as siblings)."""
    path = list(sys.path)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield
    finally:
        sys.path[:] = path


def run_script(name: str, *args: str) -> None:
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        with benchmarks_importable():
            runpy.run_path(str(ROOT / "benchmarks" / name), run_name="__main__")
    finally:
        sys.argv = argv


def flags(**options: object) -> list[str]:
    """A script's command line from keyword options: `--name value`, a list's values one after
    another, and True as the bare flag."""
    args = []
    for name, value in options.items():
        args.append(f"--{name}")
        if value is not True:
            args += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return args


def trained_artifacts(tmp_path: Path, reduced: str) -> None:
    """The tiny NER model (`run/`) and tiny causal LM (`clm/`), trained one epoch each and exported
    as fp32 and the `reduced` form (`onnx/`, `clm-onnx/`). Their parity gate is made lenient: what
    these tests check is the benchmark scripts, not how well a one-epoch model quantises."""
    tolerance = {reduced: {"min_argmax_agreement": 0, "max_metric_drop": 1e9}}
    lenient = ["--forms", f"[fp32, {reduced}]", "--tolerance", json.dumps(tolerance)]
    main(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(tmp_path / "run"),
          "--trainer.max_epochs", "1"])  # fmt: skip
    ckpt = next((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    main(["export", "--config", str(TINY_NER), "--ckpt_path", str(ckpt), "--output", str(tmp_path / "onnx"),
          *lenient])  # fmt: skip
    clm = ["--config", str(ROOT / "tests" / "conf" / "clm.yaml"), "--data.tokenizer", str(tmp_path / "bpe")]
    main(["fit", *clm, "--trainer.default_root_dir", str(tmp_path / "clm"), "--trainer.enable_checkpointing", "true",
          "--trainer.max_epochs", "1"])  # fmt: skip
    ckpt = next((tmp_path / "clm").rglob("*.ckpt"))
    main(["export", *clm[:2], "--ckpt_path", str(ckpt), "--output", str(tmp_path / "clm-onnx"), *lenient])


@pytest.mark.slow
def test_inference_cpu_benchmark_runs(tmp_path: Path) -> None:
    trained_artifacts(tmp_path, "int8-cpu")
    out = tmp_path / "inference.json"
    run_script(
        "inference_cpu.py",
        *flags(
            artifact=tmp_path / "onnx",
            hf_model=tmp_path / "run" / "hf_model",
            length=32,
            warmup=1,
            repeats=2,
            clm_artifact=tmp_path / "clm-onnx",
            clm_hf_model=tmp_path / "clm" / "hf_model",
            prompt=8,
            new_tokens=2,
            out=out,
        ),
    )
    result = json.loads(out.read_text())
    assert [r["shape"] for r in result["rows"]] == ["1x32", "8x32", "32x32"]
    assert set(result["rows"][0]["speedup_vs_pytorch"]) == {"ort_fp32", "ort_int8-cpu"}
    assert "cores" in result["device"] and result["versions"]["onnxruntime"]
    # The causal LM on the same CPU: prefill and per-token decode, PyTorch fp32 against each ORT form.
    decoder = result["decoder"]
    assert [r["batch"] for r in decoder["rows"]] == [1, 8] and set(decoder["forms"]) == {"fp32", "int8-cpu"}
    for row in decoder["rows"]:
        for name in ("pytorch_fp32", "ort_fp32", "ort_int8-cpu"):
            assert "error" not in row[name] and "median_ms" in row[name]["prefill_ms"], row[
                name
            ]  # measured, not {"error": ...}
    run_script("to_markdown.py", str(out))
    table = out.with_suffix(".md").read_text()
    assert "| 1x32 |" in table and "ort_int8-cpu speedup" in table
    assert "| ort_int8-cpu | " in table and "batch 8: decode ms/token" in table and "Causal LM artifacts: fp32" in table
    # The op-set comparison runs on the same artifact: only lightkit's set leaves no float weights.
    ops = tmp_path / "ops.json"
    run_script(
        "int8_cpu_ops.py",
        *flags(
            artifact=tmp_path / "onnx",
            hf_model=tmp_path / "run" / "hf_model",
            length=32,
            repeats=2,
            out=ops,
        ),
    )
    forms = json.loads(ops.read_text())["forms"]
    assert forms["matmul_gemm"]["float_ops_left"] == ["Attention", "EmbedLayerNormalization"]
    assert (
        forms["lightkit"]["float_ops_left"] == []
        and forms["lightkit"]["mib"] < forms["matmul_gemm"]["mib"] < forms["fp32"]["mib"]
    )


@pytest.mark.slow
def test_embedding_tables_benchmark_scores_each_scheme(tmp_path: Path) -> None:
    main(
        [
            "fit",
            "--config",
            str(TINY_NER),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.max_epochs",
            "1",
            "--model.init_args.save_dir",
            str(tmp_path / "hf"),
        ]
    )
    out = tmp_path / "tables.json"
    run_script(
        "embedding_tables.py",
        *flags(
            config=TINY_NER,
            hf_model=tmp_path / "hf",
            schemes=["sym8_b32", "asym4_b16", "asym4_b16+pos"],
            out=out,
        ),
    )
    result = json.loads(out.read_text())
    token = result["float"]["token_table"]
    assert "word_embeddings" in token and len(result["float"]["tables"]) == 2  # positions too, not token types
    rows = result["schemes"]
    assert rows["sym8_b32"]["lightkit"] and rows["asym4_b16"]["lightkit"] and not rows["asym4_b16+pos"]["lightkit"]
    # Fewer bits, more error on the token table; "+pos" also moves the position table off 8 bits.
    assert rows["sym8_b32"]["mean_abs_error"][token] < rows["asym4_b16"]["mean_abs_error"][token]
    position = next(t for t in result["float"]["tables"] if t != token)
    assert (
        rows["asym4_b16"]["mean_abs_error"][position]
        == rows["sym8_b32"]["mean_abs_error"][position]
        < rows["asym4_b16+pos"]["mean_abs_error"][position]
    )
    assert rows["asym4_b16"]["tables_mib"] < rows["sym8_b32"]["tables_mib"] < result["float"]["tables_mib_fp16"]
    run_script("to_markdown.py", str(out))
    assert "| asym4_b16 |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_refiner_vs_best_of_n_benchmark_runs(tiny_decoder: Path, tmp_path: Path) -> None:
    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "refiner.json"
    rows = [{"prompt": "the market said", "reference": "markets up"}, {"prompt": "a long day", "reference": "day"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_script("refiner_vs_best_of_n.py", "--artifact", str(tiny_decoder), "--form", "fp32", "--prompts", str(prompts),
               "--max_new_tokens", "4", "--budgets", "4", "--n", "2", "--out", str(out))  # fmt: skip
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"greedy", "refine(4)", "best-of-2"}
    assert summary["refine(4)"]["objective"] >= summary["greedy"]["objective"] - 1e-6  # it never lowers it
    assert summary["greedy"]["objective_gain_over_greedy"] == 0.0
    assert summary["refine(4)"]["calls"] <= summary["greedy"]["calls"] + 4
    assert summary["best-of-2"]["calls"] >= 2  # decoding steps and the scoring call
    run_script("to_markdown.py", str(out))
    assert "| refine(4) |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_llm_peer_side_measures_lightkit_and_the_peer_table_checks_the_targets(
    tiny_decoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ids = [[5 + i, 17, 42, 9, 11, 12, 13, 14] for i in range(8)]
    job = {"prompt_128": ids, "texts": ids[:2], "greedy_prompts": ids[:2], "greedy_tokens": 3, "new_tokens": 4,
           "repeats": 2, "eos": 10**6, "answers": [[ids[0][:5], ids[0][5:]], [ids[1][:3], ids[1][3:]]]}  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(job))
    capsys.readouterr()
    run_script("llm_peer_side.py", "measure", "--side", "lightkit", "--model", str(tiny_decoder / "int8-cpu"),
               "--job", str(tmp_path / "job.json"))  # fmt: skip
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("RESULT "))
    side = json.loads(line[len("RESULT ") :])
    assert side["bytes"] == (tiny_decoder / "int8-cpu" / "model.onnx").stat().st_size
    # Raw times come back (the peers' venvs have no lightkit); llm_peers.figures makes the figures.
    assert [len(side[f"{k}_ms_b{b}"]) for k in ("prefill", "e2e") for b in (1, 8)] == [2, 2, 2, 2]
    assert 1 < side["perplexity"] < 1e4 and 1 < side["answer_perplexity"] < 1e4 and len(side["greedy"][0]) == 3
    with benchmarks_importable():
        from llm_peers import agreement, figures
        from targets import annotate
        from to_markdown import render
    assert agreement([[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 9, 4], [1, 2, 3, 4]]) == {
        "greedy_prefix_agreement": 0.75, "greedy_identical": 0.5}  # fmt: skip
    assert agreement([[1, 2, 3]], [[1, 2, 3, 4]]) == {"greedy_prefix_agreement": 0.75, "greedy_identical": 0.0}
    pytorch = {"perplexity": side["perplexity"] / 1.02, "answer_perplexity": side["answer_perplexity"] / 1.05,
               "greedy": side["greedy"]}  # fmt: skip
    row = figures([side, side], pytorch, job["new_tokens"])
    whole, prefill = sorted(side["e2e_ms_b1"] * 2), sorted(side["prefill_ms_b1"] * 2)
    assert row["e2e_ms_b1"] == pytest.approx((whole[1] + whole[2]) / 2, abs=1e-3)  # the median of both rounds
    assert row["decode_ms_per_token_b1"] == pytest.approx((row["e2e_ms_b1"] - row["prefill_ms_b1"]) / 3)
    assert row["perplexity_change"] == pytest.approx(0.02) and row["greedy_identical"] == 1.0
    assert row["answer_perplexity_change"] == pytest.approx(0.05)
    assert prefill[0] <= row["prefill_ms_b1"] <= prefill[-1]
    row["size_vs_lightkit_fp32"] = 0.28
    slower = {**row, "decode_ms_per_token_b1": row["decode_ms_per_token_b1"] / 2}
    result = annotate({"pytorch_fp32_perplexity": 10.0, "pytorch_fp32_answer_perplexity": 12.0, "device": "CPU",
                       "date": "d", "rounds": 1, "command": "c",
                       "roles": {"ours": "lk", "optimum": "opt", "genai": "genai", "fp32": "opt", "int4": "lk"},
                       "results": {"lk": row, "opt": row, "genai": slower}})  # fmt: skip
    met = {t["what"]: t["met"] for t in result["targets"]}
    assert met["int8-cpu decode ms/token at batch 1 over optimum int8's"]  # equal is at least as fast
    assert not met["int8-cpu decode ms/token at batch 1 over onnxruntime-genai int4's"]  # 2x slower
    assert not met["int8-cpu perplexity change against PyTorch fp32, absolute"]
    assert met["int8-cpu prefill (128 tokens) at batch 8 over lightkit fp32's"]  # equal
    assert met["int4-cpu perplexity change on articles"] and not met["int4-cpu perplexity change on held-out headlines"]
    assert met["int8-cpu file over lightkit's fp32 file"]
    assert "| genai |" in render(result) and "missed by" in render(result)


def train_throughput(out: Path, **options: object) -> None:
    """benchmarks/train_throughput.py for 3 timed steps of 32 tokens after 1 warm-up step."""
    run_script("train_throughput.py", *flags(steps=3, warmup=1, max_length=32, **options, out=out))


@pytest.mark.slow
def test_train_throughput_benchmark_runs(tmp_path: Path) -> None:
    from helpers import DATA

    out = tmp_path / "train.json"
    train_throughput(out, model="tiny", tokenizer=DATA / "tokenizer", train_file=DATA / "ner" / "train.conll",
                     repeats=2, pad_to_multiple_of=8, num_workers=1)  # fmt: skip
    result = json.loads(out.read_text())
    # Counts are made in the loader worker and ride with the batch; a step whose batch arrived
    # without them would have stopped the script (Meter.end).
    assert result["lightkit"]["timed_steps"] == result["hf_trainer"]["timed_steps"] == 3
    assert "--num_workers 1" in result["command"]
    # Each side ran twice, in its own processes; both clipped at 1.0 and stepped with fused AdamW.
    assert [len(result["runs"][side]) for side in ("lightkit", "hf_trainer")] == [2, 2]
    assert result["max_grad_norm"] == 1.0
    assert {side: o["fused"] for side, o in result["optimizers"].items()} == {"lightkit": True, "hf_trainer": True}
    ratios = [lk["tokens_per_s"] / hf["tokens_per_s"] for lk, hf in zip(*result["runs"].values())]
    assert result["ratio_spread"]["min"] == pytest.approx(min(ratios))
    assert result["verdict"] == (
        "parity" if min(ratios) <= 1 <= max(ratios) else "faster" if min(ratios) > 1 else "slower"
    )
    assert result["timing"] == "window" and "--group_by_length" in result["command"].split()
    assert result["targets"] == [] and "for a GPU" in result["targets_note"]


@pytest.mark.slow
def test_step_logging_benchmark_runs(tmp_path: Path) -> None:
    from helpers import DATA

    out = tmp_path / "logging.json"
    run_script(
        "step_logging.py",
        *flags(
            tokenizer=DATA / "tokenizer",
            train_file=DATA / "ner" / "train.conll",
            steps=3,
            warmup=1,
            repeats=1,
            out=out,
        ),
    )
    result = json.loads(out.read_text())
    medians = result["ms_per_step"]
    assert set(medians) == {"lightkit", "every_step"} and all(ms > 0 for ms in medians.values())
    assert result["saved_ms_per_step"] == pytest.approx(medians["every_step"] - medians["lightkit"])


def test_targets_say_by_how_much_a_result_misses() -> None:
    with benchmarks_importable():
        from targets import annotate
    gpu = annotate(
        {"device": "NVIDIA H100 80GB HBM3", "task": "clm", "ratio_tokens_per_s": 1.81, "mfu": {"lightkit_mfu": 0.237}}
    )
    ratio, mfu = gpu["targets"]
    assert ratio["met"] and ratio["short_by"] == 0.0
    assert not mfu["met"] and mfu["short_by"] > 0
    ner = annotate({"device": "NVIDIA H100 80GB HBM3", "task": "ner", "ratio_tokens_per_s": 1.0})
    assert [t["met"] for t in ner["targets"]] == [False] and ner["targets"][0]["short_by"] > 0
    cpu = annotate({"device": "CPU x86_64, 2 cores", "task": "ner", "ratio_tokens_per_s": 1.5})
    assert cpu["targets"] == [] and cpu["targets_note"]


@pytest.mark.slow
def test_train_throughput_benchmark_runs_the_causal_lm(tmp_path: Path) -> None:
    from helpers import DATA

    out = tmp_path / "train-clm.json"
    train_throughput(out, task="clm", model="tiny-gpt2", tokenizer=tmp_path / "bpe",
                     train_file=DATA / "lm" / "corpus.txt", batch_size=4, repeats=1)  # fmt: skip
    result = json.loads(out.read_text())
    assert result["task"] == "clm" and result["lightkit"]["timed_steps"] == result["hf_trainer"]["timed_steps"] == 3
    # Packed blocks carry no padding: every timed sample is max_length tokens, in both loops.
    for name in ("lightkit", "hf_trainer"):
        assert result[name]["tokens_per_s"] == pytest.approx(32 * result[name]["samples_per_s"])
    assert result["mfu"] is None  # MFU needs the GPU's measured bf16 rate
    run_script("to_markdown.py", str(out))
    assert "| lightkit |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_inference_matrix_runs_encoder_and_decoder(tmp_path: Path) -> None:
    """The GPU matrix script end to end on tiny models; here on the CPU (--allow_cpu), where the
    CUDA-graph cells must report why they are empty instead of failing the run."""
    trained_artifacts(tmp_path, "int8-gpu")
    out = tmp_path / "inference-gpu.json"
    run_script(
        "inference.py",
        *flags(
            artifact=tmp_path / "onnx",
            hf_model=tmp_path / "run" / "hf_model",
            forms=["fp32", "int8-gpu"],
            clm_artifact=tmp_path / "clm-onnx",
            clm_hf_model=tmp_path / "clm" / "hf_model",
            clm_forms=["fp32", "int8-gpu"],
            length=16,
            prompt=8,
            new_tokens=2,
            warmup=1,
            repeats=3,
            allow_cpu=True,
            out=out,
        ),
    )
    result = json.loads(out.read_text())
    rows = result["encoder"]["rows"]
    assert [r["shape"] for r in rows] == ["1x16", "8x16", "32x16"]
    for row in rows:
        assert (
            "median_ms" in row["pytorch_fp32"]["device"] and "median_ms" in row["pytorch_bf16"]["host_copies"]
        )  # measured, not {"error": ...}
        for variant in ("ort_fp32_tf32", "ort_fp32_no_tf32", "ort_int8-gpu", "ort_int8-gpu_cutlass"):
            assert "median_ms" in row[variant]["host_copies"] and "median_ms" in row[variant]["io_binding"]
            assert "cuda_graph=True needs" in row[variant]["io_binding_cuda_graph"]["error"]
    assert (
        result["encoder"]["forms"]["int8-gpu"]["bytes"] < 0.5 * result["encoder"]["forms"]["fp32"]["bytes"]
    )  # weight-only 8-bit
    decoder = result["decoder"]["rows"]
    assert [r["batch"] for r in decoder] == [1, 8]
    for row in decoder:
        for name in ("pytorch_fp32", "pytorch_bf16", "ort_fp32", "ort_int8-gpu"):
            assert "error" not in row[name] and "median_ms" in row[name]["prefill_ms"], row[
                name
            ]  # measured, not {"error": ...}
    run_script("to_markdown.py", str(out))
    table = out.with_suffix(".md").read_text()
    assert "| ort_int8-gpu | io_binding |" in table and "| ort_int8-gpu | io_binding_cuda_graph | n/a |" in table
    assert "batch 8: decode ms/token" in table and "Causal LM artifacts: fp32" in table
    # The recorded command is one the shell runs again: flags as --flag / --no-flag, lists spelt out.
    command = result["command"].split()
    assert "--allow_cpu" in command and "False" not in command and "True" not in command
    assert command[command.index("--forms") + 1 : command.index("--forms") + 3] == ["fp32", "int8-gpu"]
    assert result["targets_note"] == "no 1x128 row"  # the latency targets are read at 1x128 only


@pytest.mark.slow
def test_kd_report_compares_student_and_teacher(tiny_lm: dict, tmp_path: Path) -> None:
    """`make distill-sft`'s report on a stand-in run: the tiny LM as both teacher and student."""
    import shutil

    runs = tmp_path / "runs"
    rows = [{"prompt": "the market", "reference": "shares rise", "answer": a} for a in ("shares rise", "rates fall")]
    for name, perplexity, answers in (("teacher", 10.0, rows), ("student", 12.5, rows[::-1])):
        (runs / name / "lightning_logs" / "test").mkdir(parents=True)
        (runs / name / "test_generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers))
        (runs / name / "lightning_logs" / "test" / "metrics.csv").write_text(
            f"epoch,step,test_perplexity\n0,0,{perplexity}\n"
        )
    shutil.copytree(tiny_lm["hf"], runs / "hf_model")
    info = {"teacher": str(tiny_lm["hf"]), "teacher_parameters": 200, "student_parameters": 100,
            "kd_temperature": 1.0, "alpha_kd": 0.5, "alpha_ce": 0.5, "student_layers": [0]}  # fmt: skip
    (runs / "hf_model" / "distillation.json").write_text(json.dumps(info))
    out = tmp_path / "kd.json"
    run_script("kd_report.py", "--runs", str(runs), "--prompts", "1", "--new_tokens", "3", "--repeats", "1",
               "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["retention"]["perplexity"] == pytest.approx(10.0 / 12.5)
    assert result["retention"]["rougeL"] == pytest.approx(result["student"]["rougeL"] / result["teacher"]["rougeL"])
    assert result["parameters"]["ratio"] == 0.5
    assert result["teacher"]["generate_tokens_per_s"] > 0 and result["student"]["generate_tokens_per_s"] > 0
    assert result["samples"][0] == {"reference": "shares rise", "teacher": "shares rise", "student": "rates fall"}


@pytest.mark.slow
def test_llm_gpu_benchmark_runs_on_the_cpu_ep(tmp_path: Path) -> None:
    """The GPU script of `gpu_session.sh llm`, on the CPU EP with a tiny Llama: its exports, loop
    and PyTorch side run, and every side's row is written (the GPU run differs only in device)."""
    import torch
    from helpers import make_chat_tokenizer
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = make_chat_tokenizer(tmp_path / "model")
    config = LlamaConfig(vocab_size=len(AutoTokenizer.from_pretrained(folder)), hidden_size=64, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    out = tmp_path / "llm-gpu.json"
    run_script("llm_gpu.py", "--model", str(folder), "--device", "cpu", "--no-compile", "--repeats", "2",
               "--prompt_tokens", "16", "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["graph"]["fusions"]["GroupQueryAttention"] == 2
    assert set(result["results"]) == {"lightkit fp16", "lightkit int8-gpu", "lightkit int4-gpu", "PyTorch bf16 eager"}
    for row in result["results"].values():
        assert row["e2e_ms_b8"] > row["prefill_ms_b8"] > 0
    assert result["results"]["lightkit int4-gpu"]["bytes"] < result["results"]["lightkit fp16"]["bytes"]


@pytest.mark.slow
def test_decode_profile_splits_decode_time_by_op(tiny_decoder: Path, tmp_path: Path) -> None:
    # Per-token time is a difference of two profiled sessions, each with one cold first run: on a
    # tiny model one repeat left that noise above a step's attention time (seen once in a full
    # slow run); five repeats put 115 decoding steps against it.
    job, out = tmp_path / "job.json", tmp_path / "profile.json"
    job.write_text(json.dumps({"prompt_128": [[5, 17, 42, 9, 11, 12, 13, 14]]}))
    run_script("decode_profile.py", "--artifact", str(tiny_decoder), "--forms", "int8-cpu", "--job", str(job),
               "--repeats", "5", "--out", str(out))  # fmt: skip
    ops = json.loads(out.read_text())["forms"]["int8-cpu"]["by_op"]
    assert {"MatMulNBits", "GroupQueryAttention"} <= set(ops)
    assert sum(v["share"] for v in ops.values()) == pytest.approx(1.0)


def test_align_seeds_runs_only_the_methods_asked_with_their_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--methods dpo --set dpo...`: the chain runs SFT, pairs and DPO only (no reward model
    without PPO), DPO's config carries the setting, and make align's own run is not taken for
    split 13 seed 13, since its DPO is the shipped one."""
    with benchmarks_importable():
        import align_seeds
    ran: list[str] = []

    def fake_run(*command: str, timed: tuple[Path, str] | None = None) -> None:
        """Each stage leaves what the chain looks for, and its time, as the real command would."""
        args = list(command)
        if timed and timed[1] == "pairs":
            Path(args[args.index("--out") + 1]).write_text("{}\n")
        elif "fit" in args:
            config = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
            saved = Path(config["model"]["init_args"]["save_dir"])
            saved.mkdir(parents=True)
            (saved / "model.safetensors").write_text("weights")
        else:  # the report, with the stage times align_report reads from times.txt
            out = Path(args[args.index("--out") + 1])
            times = out.with_name("times.txt")
            stages = [line.split()[0] for line in times.read_text().splitlines()] if times.exists() else []
            cell = {"reward": 0.1, "rougeL": 0.2, "kl_to_sft": 0.0, "answer_words": 6.0}
            report = {"models": {"sft": cell, "dpo": cell}, "stage_times_s": dict.fromkeys(stages, 1)}
            out.write_text(json.dumps(report))
        if timed:
            with (timed[0] / "times.txt").open("a") as f:
                f.write(f"{timed[1]} 1 s\n")
        ran.append(timed[1] if timed else "report")

    monkeypatch.setattr(align_seeds, "run", fake_run)
    monkeypatch.setattr(align_seeds, "validation_prompts", lambda path, split: path.write_text(""))
    monkeypatch.setattr(align_seeds, "ROOT", tmp_path)  # as if make align's own run were there
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "runs" / "align").mkdir(parents=True)
    (tmp_path / "runs" / "align" / "report.json").write_text("{}")
    change = {"dpo": [align_seeds.setting("model.init_args.rpo_alpha=1.0")]}
    report = align_seeds.chain(13, 13, tmp_path / "work", ("dpo",), change)
    assert ran == ["sft", "pairs", "dpo", "report"] and report == tmp_path / "work" / "s13-r13" / "report.json"
    dpo = yaml.safe_load((tmp_path / "work" / "s13-r13" / "dpo.yaml").read_text())
    assert dpo["model"]["init_args"]["rpo_alpha"] == 1.0
    assert align_seeds.chain(13, 13, tmp_path / "shipped") == tmp_path / "runs" / "align" / "report.json"
    ran.clear()
    align_seeds.chain(7, 13, tmp_path / "work", ("ppo",))
    assert ran == ["sft", "pairs", "reward", "ppo", "report"]
    ran.clear()  # --pairs_only: the SFT model and its pairs, for reward-model studies
    assert align_seeds.chain(7, 14, tmp_path / "work", ()) == tmp_path / "work" / "s7-r14" / "pairs.jsonl"
    assert ran == ["sft", "pairs"]
    with pytest.raises(SystemExit):
        run_script("align_seeds.py", "--methods", "dpo", "--set", "sft.trainer.max_steps=1", "--out", "x.json")
    # An SFT model put in a run's folder by hand (linked from another grid, to train DPO again on
    # it) is named in the result as not run there; a run whose stages all ran there is not.
    linked = tmp_path / "grid" / "s13-r14" / "sft" / "hf_model"
    linked.mkdir(parents=True)
    (linked / "model.safetensors").write_text("weights")
    monkeypatch.setattr(sys, "argv", ["align_seeds.py", "--methods", "dpo", "--runs", "13:14", "7:15",
                                      "--work", "grid", "--out", str(tmp_path / "grid.json")])  # fmt: skip
    align_seeds.main()
    result = json.loads((tmp_path / "grid.json").read_text())
    assert result["stages_not_run_here"] == {"split 13, seed 14": ["sft"]}


def test_align_seeds_configs_and_summary(tmp_path: Path) -> None:
    """Each stage of a split and seed is the shipped config with only seed, split and paths
    changed, reading the earlier stages' outputs; the summary splits the variance by split."""
    import yaml

    with benchmarks_importable():
        from align_seeds import reused_runs, reward_model_accuracy, setting, split_and_seed, stage_config, summarise
        from to_markdown import render  # noqa: F401 - imported here, while benchmarks/ is on the path
    paths = {"pairs": "P.jsonl", "reward": "R/hf_model", "val_prompts": "V.jsonl"}
    sft = tmp_path / "sft" / "hf_model"
    dpo = yaml.safe_load(stage_config("dpo", tmp_path, 7, 14, sft, paths).read_text())
    shipped = yaml.safe_load((ROOT / "configs" / "dpo_headlines.yaml").read_text())
    assert dpo["seed_everything"] == 14 and dpo["data"]["init_args"]["split_seed"] == 7
    assert dpo["model"]["init_args"]["pretrained"] == dpo["data"]["init_args"]["tokenizer"] == str(sft)
    assert dpo["data"]["init_args"]["train_file"] == "P.jsonl"
    assert dpo["model"]["init_args"]["save_dir"] == str(tmp_path / "dpo" / "hf_model")
    assert dpo["model"]["init_args"]["learning_rate"] == shipped["model"]["init_args"]["learning_rate"]
    callbacks = {c["class_path"]: c.get("init_args", {}) for c in dpo["trainer"]["callbacks"]}
    assert callbacks["GenerationMetrics"]["prompts"] == "V.jsonl"
    assert (
        callbacks["ModelCheckpoint"]["dirpath"]
        == callbacks["LastCheckpoint"]["dirpath"]
        == str(tmp_path / "dpo" / "checkpoints")
    )
    ppo = yaml.safe_load(stage_config("ppo", tmp_path, 7, 14, sft, paths).read_text())
    assert ppo["model"]["init_args"]["reward_model"] == "R/hf_model"
    reward = yaml.safe_load(stage_config("reward", tmp_path, 7, 14, sft, paths).read_text())
    changed = [setting("model.init_args.rpo_alpha=0.5"), setting("model.init_args.learning_rate=2e-4")]
    rpo = yaml.safe_load(stage_config("dpo", tmp_path, 7, 14, sft, paths, changed).read_text())
    assert rpo["model"]["init_args"]["rpo_alpha"] == 0.5 and rpo["model"]["init_args"]["learning_rate"] == 0.0002
    assert dpo["model"]["init_args"]["rpo_alpha"] == shipped["model"]["init_args"].get("rpo_alpha")
    others = {k: v for k, v in rpo["model"]["init_args"].items() if k not in ("rpo_alpha", "learning_rate")}
    assert others == {k: v for k, v in dpo["model"]["init_args"].items() if k not in ("rpo_alpha", "learning_rate")}
    assert reward["model"]["init_args"]["pretrained"] == "sentence-transformers/all-MiniLM-L6-v2"  # not the policy

    def report(sft_reward: float, dpo_reward: float) -> dict:
        cell = {"rougeL": 0.2, "kl_to_sft": 1.0, "answer_words": 6.0}
        return {"models": {"sft": {**cell, "reward": sft_reward}, "dpo": {**cell, "reward": dpo_reward}}}

    # Split 13 scores 0.1 higher than split 7 for both models; seeds add +-0.01.
    reports = {(13, 1): report(0.11, 0.21), (13, 2): report(0.09, 0.19), (7, 1): report(0.01, 0.11),
               (7, 2): report(-0.01, 0.09)}  # fmt: skip
    summary = summarise(reports)
    sft_reward = summary["sft"]["reward"]
    assert sft_reward["mean"] == pytest.approx(0.05) and sft_reward["n"] == 4
    assert sft_reward["per_split"] == {"13": pytest.approx(0.10), "7": pytest.approx(0.0)}
    assert sft_reward["between_split_share"] == pytest.approx(0.0025 / 0.0026)  # (0.05² vs 0.05² + 0.01²)
    assert summary["dpo"]["reward_gain_over_sft"] == pytest.approx(0.1)
    assert summary["dpo"]["reward_gain_in_sd"] == pytest.approx(0.1 / sft_reward["sd"])
    # Within each run DPO gains exactly 0.1: the paired gain has no spread, whatever the splits do.
    assert summary["dpo"]["paired_reward_gain"] == {"mean": pytest.approx(0.1), "sd": pytest.approx(0.0), "n": 4}
    from to_markdown import render

    text = render({"device": "CPU", "date": "today", "command": "c", "splits": [13, 7], "seeds": [1, 2],
                   "runs": {f"split {s}, seed {r}": rep["models"] | {"reward_model": {"held_out_pair_accuracy": 0.6}}
                            for (s, r), rep in reports.items()}, "summary": summary})  # fmt: skip
    assert "4 runs (split 13, seed 1; split 13, seed 2; split 7, seed 1; split 7, seed 2)" in text
    # ROUGE-L is the same everywhere: no variance, so no split's share of it.
    assert "| SFT | +0.050 ± 0.059 | 0.200 ± 0.000 | 1.00 ± 0.000 | 6.0 ± 0.000 | +0.100 | +0.000 | 96% |  |  |" in text
    # A changed chain without PPO (align_seeds.py --methods dpo --set ...): no reward model column.
    changed = render({"device": "CPU", "date": "today", "command": "c", "splits": [13, 7], "seeds": [1, 2],
                      "settings": ["dpo.model.init_args.rpo_alpha=1.0"], "summary": summary,
                      "runs": {f"split {s}, seed {r}": rep["models"] | {"reward_model": None}
                               for (s, r), rep in reports.items()}})  # fmt: skip
    assert "Changed from the shipped configs: dpo.model.init_args.rpo_alpha=1.0." in changed
    assert "| split 13, seed 1 | +0.110, 0.200 | +0.210, 0.200 |\n" in changed and "pair accuracy" not in changed
    assert "| split 7, seed 2 | -0.010, 0.200 | +0.090, 0.200 | 60.0% |" in text  # each run, beside the means
    # The reward model over the runs that trained one: split 13's rank 70% and 60%, split 7's 60%.
    accuracies = {(13, 1): 0.7, (13, 2): 0.6, (7, 1): 0.6, (7, 2): None}
    accuracy = reward_model_accuracy({k: {**rep, "reward_model": {"held_out_pair_accuracy": accuracies[k]}}
                                      for k, rep in reports.items()})  # fmt: skip
    assert accuracy["n"] == 3 and accuracy["mean"] == pytest.approx(0.6333, abs=1e-4)
    assert accuracy["per_split"] == {"13": pytest.approx(0.65), "7": pytest.approx(0.6)}
    assert reward_model_accuracy({k: {**rep, "reward_model": None} for k, rep in reports.items()}) is None
    with_accuracy = render({"device": "CPU", "date": "today", "command": "c", "splits": [13, 7], "seeds": [1, 2],
                            "runs": {f"split {s}, seed {r}": rep["models"] | {"reward_model": None}
                                     for (s, r), rep in reports.items()},
                            "summary": summary, "reward_model_accuracy": accuracy})  # fmt: skip
    assert (
        "Reward model's held-out pair accuracy over 3 runs: 63.3% ± 5.8% (split 7 60.0%, split 13 65.0%; "
        "the split's share of the variance 25%)." in with_accuracy
    )
    assert "| DPO | +0.150 ± 0.059 |" in text and "| +0.100 (+1.7 sd) | +0.100 ± 0.000 |" in text
    # One run (a screen on one split and seed) has no spread to show.
    one = {(13, 1): {**reports[(13, 1)], "reward_model": {"held_out_pair_accuracy": 0.7}}}
    single = render({"device": "CPU", "date": "today", "command": "c", "splits": [13], "seeds": [1],
                     "runs": {"split 13, seed 1": reports[(13, 1)]["models"] | {"reward_model": None}},
                     "summary": summarise(one), "reward_model_accuracy": reward_model_accuracy(one)})  # fmt: skip
    assert "; 1 run (split 13, seed 1);" in single and "| SFT | +0.110 | 0.200 | 1.00 | 6.0 | +0.110 |" in single
    assert "| +0.100 | +0.100 |" in single and "over 1 run: 70.0% (split 13 70.0%)." in single
    # --reuse: the runs a committed result holds come back as the reports they were summarised from,
    # with the date of the result that first held each (a run reused before keeps that date).
    runs = {f"split {s}, seed {r}": rep["models"] | {"reward_model": {"held_out_pair_accuracy": 0.6}}
            for (s, r), rep in reports.items()}  # fmt: skip
    earlier = tmp_path / "align-seeds.json"
    earlier.write_text(json.dumps({"date": "2026-12-05", "runs": runs, "reused": {"split 7, seed 2": "2026-12-01"}}))
    reused = reused_runs(earlier, [(13, 1), (7, 2), (7, 3)])
    assert set(reused) == {(13, 1), (7, 2)}  # 7:3 is not in the file: it runs
    assert reused[(13, 1)] == ({**reports[(13, 1)], "reward_model": {"held_out_pair_accuracy": 0.6}}, "2026-12-05")
    assert reused[(7, 2)][1] == "2026-12-01"
    assert summarise({k: v for k, (v, _) in reused_runs(earlier, list(reports)).items()}) == summary
    assert reused_runs(tmp_path / "none.json", [(13, 1)]) == {}
    text = render({"device": "CPU", "date": "today", "command": "c", "splits": [13, 7], "seeds": [1, 2], "runs": runs,
                   "summary": summary, "reused": {"split 7, seed 2": "2026-12-01"}})  # fmt: skip
    assert "Taken from the earlier result file: split 7, seed 2 (its result of 2026-12-01)." in text
    linked = {"split 13, seed 1": ["sft", "pairs", "reward"]}
    text = render({"device": "CPU", "date": "today", "command": "c", "splits": [13, 7], "seeds": [1, 2], "runs": runs,
                   "summary": summary, "stages_not_run_here": linked})  # fmt: skip
    assert "came from elsewhere (not timed in the run's folder): split 13, seed 1: sft, pairs, reward." in text
    # A grid not yet complete is named run by run (`--runs 13:13 7:13`).
    assert split_and_seed("7:13") == (7, 13)
    with pytest.raises(argparse.ArgumentTypeError, match="SPLIT:SEED"):
        split_and_seed("7")


def test_int4_recipes_render_each_recipe_against_fp32() -> None:
    with benchmarks_importable():
        from int4_recipes import RECIPES
        from to_markdown import render
    shipped = [name for name in RECIPES if "(shipped)" in name]
    assert len(shipped) == 2 and RECIPES[shipped[1]].correction_rank == 16 and RECIPES[shipped[1]].bits == 4
    row = {"perplexity": 29.0, "perplexity_change": 0.02, "answer_perplexity": 18.6, "answer_perplexity_change": 0.03,
           "bytes": 141 * 2**20}  # fmt: skip
    result = {"device": "CPU", "date": "today", "texts": 8, "text_tokens": 160, "answers": 32, "command": "c",
              "fp32": {"perplexity": 28.4, "answer_perplexity": 18.06, "bytes": 515 * 2**20},
              "recipes": {name: row for name in RECIPES}}  # fmt: skip
    text = render(result)
    assert "| fp32 | 28.40 | 18.06 | 515 MiB |" in text
    assert f"| {shipped[1]} | 29.00 (+2.0%) | **18.60 (+3.0%)** | 141 MiB |" in text
    assert text.count("\n| ") == len(RECIPES) + 2  # header, fp32 and one row per recipe


@pytest.mark.slow  # two lightkit serve processes under load
def test_serve_load_times_serve_against_generate_and_checks_every_answer(tiny_decoder: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the model\nit\na long day of news\nwhat the market said\n")
    out = tmp_path / "serve-load.json"
    run_script("serve_load.py", "--artifact", str(tiny_decoder), "--clients", "1", "4", "--requests", "8",
               "--rounds", "2", "--max_tokens", "6", "--prompts", str(prompts), "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert [r["clients"] for r in result["rows"]] == [1, 4]
    for row in result["rows"]:
        assert row["failed"] == row["not_any_generate_answer"] == 0 and row["answers_checked"] == 16  # 8 x 2 rounds
        serve, generate = row["serve_tokens_per_s"], row["generate_tokens_per_s_at_batch"]
        assert 0 < serve["min"] <= serve["median"] <= serve["max"]
        assert row["serve_over_generate"] == pytest.approx(serve["median"] / generate["median"])
        assert row["p50_latency_s"]["median"] <= row["p99_latency_s"]["median"]
        waves = row["waves"]  # the same server without joining
        assert waves["failed"] == waves["not_any_generate_answer"] == 0 and waves["answers_checked"] == 16
        assert waves["over_generate"] == pytest.approx(waves["tokens_per_s"]["median"] / generate["median"])
    ratio, failures = result["targets"]  # int8-cpu: no exact-answer target (its answers depend on the batch)
    assert ratio["measured"] is None and not ratio["met"]  # no 32-client row in this run
    assert failures["measured"] == 0 and failures["met"]
    run_script("to_markdown.py", str(out))
    assert "| 4 | " in out.with_suffix(".md").read_text()


def test_align_report_counts_the_pairs_the_reference_free_reward_parts_order(tmp_path: Path) -> None:
    """The ceiling quoted beside the reward model's accuracy: pairs ordered right by the length
    window and the copied-lead penalty alone, a tie counting half."""
    with benchmarks_importable():
        from align_report import reference_free_agreement
    prompt = "Write a headline for this article.\n\nShares in Acme rose sharply on Monday after strong sales. More."
    rows = [
        {"prompt": prompt, "chosen": "Acme shares jump", "rejected": "Shares in Acme rose sharply on Monday"},  # right
        {"prompt": prompt, "chosen": "Shares in Acme rose sharply", "rejected": "Acme results cheer"},  # wrong
        {"prompt": prompt, "chosen": "Acme shares jump", "rejected": "Investors cheer sales"},  # tie
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert reference_free_agreement(pairs) == pytest.approx(0.5)
    assert reference_free_agreement(tmp_path / "missing.jsonl") is None


def test_reward_variants_change_one_setting_each_and_count_what_decides_a_pair(tmp_path: Path) -> None:
    with benchmarks_importable():
        from align_report import reward_fn
        from reward_variants import VARIANTS, deciding_parts, readable_pairs, variant_config
        from to_markdown import render
    pairs, wide, many = tmp_path / "pairs.jsonl", tmp_path / "wide" / "pairs.jsonl", tmp_path / "many" / "pairs.jsonl"
    close = [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": m, "reference": "r"} for m in (0.05, 0.3)]
    (tmp_path / "pairs-all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in close))
    # The many pairs sampled the shipped held-out article first: its pairs are not trained on.
    held = {"rendered_prompt": "<user>held-out article", "prompt": "held-out article", "chosen": "a b c d e f",
            "rejected": "b", "margin": 0.3}  # fmt: skip
    (tmp_path / "pairs-all-val.jsonl").write_text(json.dumps(held) + "\n")
    many_rows = [held, {**held, "chosen": "c"}, {**held, "rendered_prompt": "<user>another article"},
                 {**held, "rendered_prompt": "<user>a third", "chosen": "b", "rejected": "a b c d e f"}]  # fmt: skip
    many.parent.mkdir()
    (many.parent / "pairs-all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in many_rows))
    configs = {key: yaml.safe_load(variant_config(key, tmp_path / key / "seed-14", pairs, wide, many, 14).read_text())
               for key in VARIANTS}  # fmt: skip
    kept = [json.loads(line) for line in (tmp_path / "articles" / "pairs-many.jsonl").open()]
    assert kept == many_rows[2:]
    # ... and, ordered by the terms it can read, the length window prefers the 6-word answer.
    readable = [json.loads(line) for line in (tmp_path / "articles-readable" / "pairs-many-readable.jsonl").open()]
    assert [(r["chosen"], r["rejected"]) for r in readable] == [("a b c d e f", "b")] * 2, readable
    shipped = configs["shipped"]  # the prompt reader, on the pairs 0.2 apart as they were written before
    assert shipped["data"]["init_args"]["train_file"] == str(tmp_path / "shipped" / "pairs-far.jsonl")
    assert [json.loads(line) for line in (tmp_path / "shipped" / "pairs-far.jsonl").open()] == close[1:]
    assert shipped["model"]["init_args"]["save_dir"] == str(tmp_path / "shipped" / "seed-14" / "hf_model")
    reference = {"reference", "reference-far", "reference-3ep"}  # configs/reward_headlines.yaml as it is
    for key in reference:
        data = configs[key]["data"]["init_args"]
        assert (data["reference_column"], data["response_first"], data["max_length"]) == ("reference", True, 64), key
        assert configs[key]["trainer"]["max_epochs"] == (3 if key == "reference-3ep" else 1), key
        assert "prompt_template" not in data, key
    for key, config in configs.items():
        data, model, name = config["data"]["init_args"], config["model"]["init_args"], VARIANTS[key][0]
        assert config["seed_everything"] == 14
        assert data["val_file"] == str(tmp_path / "pairs-all-val.jsonl")  # every variant on the same held-out pairs
        train = {"wide": wide.parent / "pairs-all.jsonl", "readable": tmp_path / key / "pairs-readable.jsonl",
                 "articles": tmp_path / key / "pairs-many.jsonl",
                 "articles-readable": tmp_path / key / "pairs-many-readable.jsonl",
                 "articles-sft-trunk": tmp_path / key / "pairs-many.jsonl",
                 "articles-first-slow": tmp_path / key / "pairs-many.jsonl",
                 "reference": tmp_path / "pairs-all.jsonl", "reference-3ep": tmp_path / "pairs-all.jsonl"}  # fmt: skip
        assert data["train_file"] == str(train.get(key, tmp_path / key / "pairs-far.jsonl")), key
        if key in reference:
            continue
        assert data["reference_column"] is None and data["prompt_template"] == "{rendered_prompt}", key
        gentle = key.endswith("first-slow")  # BERT's usual learning rate, for longer
        assert (model["learning_rate"], config["trainer"]["max_epochs"]) == ((3e-5, 5) if gentle else (1e-4, 3)) or (
            key == "articles-sft-trunk"
        ), key
        assert model.get("margin_scale", 0) == (4.0 if key == "margin" else 0), key
        assert data.get("response_first", False) == ("answer first" in name), key
        longer = {"first-256": 256, "readable": 256, "articles-readable": 256}
        longer |= {"sft-trunk": 384, "articles-sft-trunk": 384}
        assert data["max_length"] == longer.get(key, 128), key
        trunk = "runs/sft_headlines/hf_model" if "SFT model" in name else "sentence-transformers/all-MiniLM-L6-v2"
        assert model["pretrained"] == data["tokenizer"] == trunk, key
        assert ("peft" in model) == key.endswith("sft-trunk"), key

    prompt = "Write a headline for this article.\n\nShares in Acme rose sharply on Monday after strong sales. More."
    rows = [{"prompt": prompt, "chosen": "Acme shares jump", "rejected": "Shares in Acme rose sharply on Monday"},
            {"prompt": prompt, "chosen": "Acme sales", "rejected": "Investors cheer"},
            {"prompt": prompt, "chosen": "Investors cheer", "rejected": "Investors cheer results"}]  # fmt: skip
    free = reward_fn(without=("rouge_l",))
    gaps = free([prompt] * 3, [r["chosen"] for r in rows]) - free([prompt] * 3, [r["rejected"] for r in rows])
    for row, gap, rouge in zip(rows, gaps.tolist(), (0.0, 0.6, 0.0)):
        row["margin"] = gap + rouge  # decided by the copied lead, by ROUGE-L, by the length window
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    decided = deciding_parts(path)
    assert decided["largest_term"] == {"rouge_l": 1, "headline_length": 1, "copied_lead": 1}, decided
    assert decided["ordered_by_reference_free_terms"] == pytest.approx(1 / 3)  # only the first: its rouge_l is 0
    # The pairs ordered by those terms: the first kept, the other two swapped.
    readable_pairs(path, tmp_path / "readable.jsonl")
    swapped = [json.loads(line) for line in (tmp_path / "readable.jsonl").open()]
    assert [(r["chosen"], r["rejected"]) for r in swapped] == [
        (rows[0]["chosen"], rows[0]["rejected"]), (rows[1]["rejected"], rows[1]["chosen"]),
        (rows[2]["rejected"], rows[2]["chosen"])]  # fmt: skip
    assert deciding_parts(tmp_path / "readable.jsonl")["ordered_by_reference_free_terms"] == 1.0

    run = {"seed": 13, "held_out_pair_accuracy": 0.6, "accuracy_per_validation": [0.436, 0.6],
           "train_loss_per_epoch": [0.69, 0.345], "val_loss_per_validation": [0.69, 0.675], "train_s": 91}  # fmt: skip
    variant = {"variant": "v", "description": "v", "train_pairs": 238, "max_length": 128, "response_first": True,
               "held_out_pair_accuracy": 0.65, "held_out_pair_accuracy_sd": 0.0707,
               "runs": [run, {**run, "seed": 14, "held_out_pair_accuracy": 0.7, "train_s": 95}]}  # fmt: skip
    result = {"device": "CPU", "date": "today", "command": "c", "held_out_pairs_decided_by": decided,
              "variants": [variant]}  # fmt: skip
    row = (
        "| v | 238 | answer, then prompt, 128 | **65.0%** ± 7.1% (60.0% (seed 13), 70.0% (seed 14)) | 0.345 | 0.675 "
        "| 91 |"
    )
    assert row in render(result), render(result)
    assert "rouge_l 1, headline_length 1, copied_lead 1" in render(result)
    reads_reference = render(result | {"variants": [variant | {"reference_column": "reference"}]})
    assert "| v | 238 | answer, then reference, 128 |" in reads_reference, reads_reference
    # With the many pairs' held-out set, each variant's accuracy there too.
    runs = [{**r, "many_held_out_pair_accuracy": a} for r, a in zip(variant["runs"], (0.75, 0.8))]
    variant |= {"runs": runs, "many_held_out_pairs": 200, "many_held_out_pair_accuracy": 0.775,
                "many_held_out_pair_accuracy_sd": 0.0354}  # fmt: skip
    text = render(result)
    assert "| held-out pair accuracy: mean (per seed) | 200 held-out pairs of 1,024 articles: mean (per seed) |" in text
    every = render(result | {"many_rows": 2069})  # the many pairs sampled from every training article
    assert "| 200 held-out pairs of 2,069 articles: mean (per seed) |" in every, every
    assert ("| **65.0%** ± 7.1% (60.0% (seed 13), 70.0% (seed 14)) | **77.5%** ± 3.5% (75.0% (seed 13), "
            "80.0% (seed 14)) | 0.345 | 0.675 | 91 |") in text, text  # fmt: skip
    quarters = [{"margin": [0.2, 0.25], "pairs": 50, "accuracy": 0.5}, {"margin": [0.25, 0.9], "pairs": 150,
                                                                        "accuracy": 0.8133}]  # fmt: skip
    text = render(result | {"variants": [variant | {"many_held_out_accuracy_by_margin": quarters}]})
    assert "| variant | margin 0.20 to 0.25 (50 pairs) | margin 0.25 to 0.90 (150 pairs) |" in text, text
    assert "| v | 50.0% | 81.3% |" in text


def test_a_reward_variant_is_scored_on_pairs_as_ppo_would_score_them(tmp_path: Path, monkeypatch) -> None:
    """pair_accuracy: the chosen side above the rejected one, every side read with its rendered
    prompt, over more pairs than one scoring batch; a model's score is kept for its pairs file."""
    import torch

    import lightkit.rewards.scoring as scoring

    with benchmarks_importable():
        from reward_variants import pair_accuracy, pair_scores
    seen = []

    class Shortest:  # prefers the shorter answer; records what it was asked to score
        def __init__(self, path: str, tasks: tuple) -> None:
            assert path == str(tmp_path / "model")

        def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
            seen.extend(prompts)
            return -torch.tensor([float(len(r)) for r in responses])

    monkeypatch.setattr(scoring, "ModelReward", Shortest)
    rows = [{"rendered_prompt": f"<p{i}>", "prompt": "user", "chosen": "ab" if i % 4 else "abcd", "rejected": "abc"}
            for i in range(40)]  # fmt: skip
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pair_accuracy(tmp_path / "model", pairs) == 0.75  # every 4th chosen answer is the longer one
    first, rest = [f"<p{i}>" for i in range(32)], [f"<p{i}>" for i in range(32, 40)]
    assert seen == first * 2 + rest * 2  # chosen then rejected, batch by batch
    # Saved beside the model: asked again, it does not score; a rewritten pairs file is scored anew.
    assert pair_accuracy(tmp_path / "model", pairs) == 0.75 and len(seen) == 80
    pairs.write_text("".join(json.dumps({**r, "chosen": "ab"}) + "\n" for r in rows))
    assert pair_accuracy(tmp_path / "model", pairs) == 1.0 and len(seen) == 160
    assert pair_scores(tmp_path / "model", pairs) == [1.0] * 40 and len(seen) == 160


def test_reward_variants_many_rows_must_be_what_the_many_pairs_were_sampled_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pairs stage reuses an existing file whatever --rows asks, so a --many_rows the file was
    not sampled with stops the run before any training, instead of being recorded as if it were."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import reward_variants

    many = tmp_path / "pairs.jsonl"
    for name in ("pairs.jsonl", "pairs-all.jsonl", "pairs-all-val.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "pairs.settings.json").write_text(json.dumps({"rows": 1024}))
    monkeypatch.setattr(reward_variants, "variant", lambda *a: pytest.fail("trained before the check"))
    argv = ["reward_variants.py", "--many_pairs", str(many), "--many_rows", "2069", "--variants", "shipped"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        reward_variants.main()
    assert f"--many_rows 2069: {many} was sampled from 1024 articles" in capsys.readouterr().err


def test_reward_variants_seeded_takes_every_seed_or_the_first_n() -> None:
    with benchmarks_importable():
        from reward_variants import seeded
    assert seeded("shipped") == ("shipped", None)
    assert seeded("articles-sft-trunk:2") == ("articles-sft-trunk", 2)
    for wrong in ("nonesuch", "shipped:two"):
        with pytest.raises(ValueError, match="expected VARIANT or VARIANT:N"):
            seeded(wrong)


def test_reward_variants_say_the_accuracy_in_each_quarter_of_the_pairs_by_margin(tmp_path: Path) -> None:
    """Pairs split at the margin's quartiles, the last quarter holding the largest margin; each
    quarter's accuracy is the mean over the runs."""
    with benchmarks_importable():
        from reward_variants import accuracy_by_margin
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"margin": 0.2 + 0.01 * i}) + "\n" for i in range(8)))
    right_on_wide = [-1.0] * 4 + [1.0] * 4  # ranks only the wider half right
    right_on_ends = [1.0, 1.0] + [-1.0] * 4 + [1.0, 1.0]
    quarters = accuracy_by_margin([right_on_wide, right_on_ends], pairs)
    assert [q["pairs"] for q in quarters] == [2, 2, 2, 2]
    assert [q["accuracy"] for q in quarters] == [0.5, 0.0, 0.5, 1.0]
    assert quarters[0]["margin"][0] == 0.2 and quarters[-1]["margin"][1] == 0.27
    pairs.write_text(json.dumps({"margin": 0.2}) + "\n" + json.dumps({"margin": 0.2}) + "\n")  # tied: one bin
    assert accuracy_by_margin([[1.0, -1.0]], pairs) == [{"margin": [0.2, 0.2], "pairs": 2, "accuracy": 0.5}]


def test_stage_variants_retrain_a_stage_with_a_setting_changed_and_compare_what_validation_kept(
    tmp_path: Path,
) -> None:
    """The variant is the config the run's stage ran, with the setting changed and its outputs in
    their own folder; each side is judged by the validation it kept (the first of equal rewards)."""
    from lightkit.cli.ship.stages import relocate

    folder = tmp_path / "s7-r14"
    ran = relocate(yaml.safe_load((ROOT / "configs" / "dpo_headlines.yaml").read_text()), folder / "dpo")
    folder.mkdir()
    (folder / "dpo.yaml").write_text(yaml.safe_dump(ran, sort_keys=False))
    curves = {"dpo": [(9, 0.01, 0.30), (19, 0.03, 0.31), (29, 0.03, 0.32)],
              "dpo-fast": [(9, 0.05, 0.25), (19, 0.02, 0.20), (29, 0.04, 0.22)]}  # fmt: skip
    for name, rows in curves.items():
        log = folder / name / "lightning_logs" / "version_0" / "metrics.csv"
        log.parent.mkdir(parents=True)
        lines = ["step,train_loss_step,val_greedy_reward,val_rougeL,val_loss"]
        for step, reward, rouge in rows:
            lines += [f"{step},0.6,,,", f"{step},,{reward},{rouge},0.69"]
        log.write_text("\n".join(lines) + "\n")
        (folder / name / "hf_model").mkdir()
        (folder / name / "hf_model" / "model.safetensors").write_text("saved: not trained again")
    out = tmp_path / "variants.json"
    run_script("stage_variants.py", "--stage", "dpo", "--name", "fast", "--set", "model.init_args.learning_rate=5e-4",
               "trainer.max_steps=80", "--runs", "7:14", "--work", str(tmp_path), "--out", str(out))  # fmt: skip
    variant = yaml.safe_load((folder / "dpo-fast.yaml").read_text())
    assert variant["model"]["init_args"]["learning_rate"] == 5e-4 and variant["trainer"]["max_steps"] == 80
    assert variant["model"]["init_args"]["save_dir"] == str(folder / "dpo-fast" / "hf_model")
    assert variant["trainer"]["logger"]["init_args"]["save_dir"] == str(folder / "dpo-fast")
    assert variant["model"]["init_args"]["peft"] == ran["model"]["init_args"]["peft"]  # the rest as it ran
    result = json.loads(out.read_text())
    kept = result["runs"]["split 7, seed 14"]
    assert kept["as_run"]["kept"] == {"step": 19, "reward": 0.03, "rougeL": 0.31, "loss": 0.69}  # not 29's tie
    assert kept["variant"]["kept"]["step"] == 9
    assert result["summary"]["rougeL"]["change"]["mean"] == pytest.approx(0.25 - 0.31)
    with benchmarks_importable():
        from to_markdown import render
    text = render(result)
    assert "| split 7, seed 14 | 19, +0.030, 0.310 | 9, +0.050, 0.250 | +0.020 | -0.060 |" in text
    with pytest.raises(SystemExit, match="no such stage config"):
        run_script("stage_variants.py", "--stage", "ppo", "--name", "x", "--set", "a=1", "--runs", "7:14",
                   "--work", str(tmp_path), "--out", str(out))  # fmt: skip
    with pytest.raises(SystemExit):
        run_script("stage_variants.py", "--name", "x", "--set", "learning_rate", "--runs", "7:14", "--out", str(out))


def test_stage_variants_say_whether_an_rl_stage_climbed_its_own_training_reward(tmp_path: Path) -> None:
    """GRPO and PPO log the reward of the answers they sample; the result holds its mean over the
    first and last ten updates per side, which DPO (no sampling) lacks."""
    from lightkit.cli.ship.stages import relocate

    folder = tmp_path / "s13-r13"
    folder.mkdir()
    ran = relocate(yaml.safe_load((ROOT / "configs" / "grpo_headlines.yaml").read_text()), folder / "grpo")
    (folder / "grpo.yaml").write_text(yaml.safe_dump(ran, sort_keys=False))
    for name, rise in (("grpo", 0.0), ("grpo-g8", 0.01)):
        log = folder / name / "lightning_logs" / "version_0" / "metrics.csv"
        log.parent.mkdir(parents=True)
        lines = ["step,train_reward_step,val_greedy_reward,val_rougeL"]
        lines += [f"{step},{-0.1 + rise * step},," for step in range(30)]  # first ten mean -0.1 + 4.5 rise
        lines += ["29,,0.01,0.29"]
        log.write_text("\n".join(lines) + "\n")
        (folder / name / "hf_model").mkdir()
        (folder / name / "hf_model" / "model.safetensors").write_text("saved: not trained again")
    out = tmp_path / "variants.json"
    run_script("stage_variants.py", "--stage", "grpo", "--name", "g8", "--set", "model.init_args.num_generations=8",
               "--runs", "13:13", "--work", str(tmp_path), "--out", str(out))  # fmt: skip
    run = json.loads(out.read_text())["runs"]["split 13, seed 13"]
    assert run["as_run"]["training_reward"] == {"first": pytest.approx(-0.1), "last": pytest.approx(-0.1),
                                                "batches": 30, "of": 10}  # fmt: skip
    assert run["variant"]["training_reward"]["first"] == pytest.approx(-0.055)
    assert run["variant"]["training_reward"]["last"] == pytest.approx(-0.1 + 0.01 * 24.5)
    with benchmarks_importable():
        from to_markdown import render
    assert "| split 13, seed 13 | -0.100, -0.100 | -0.055, +0.145 |" in render(json.loads(out.read_text()))


def test_stage_variants_go_on_from_a_killed_variants_last_checkpoint_only_with_its_settings(tmp_path: Path) -> None:
    """A variant killed part-way resumes from the last.ckpt in its own folder when the config it
    ran is the one written now; a killed run of other settings under the same name is refused."""
    from lightkit.cli.ship.stages import relocate

    with benchmarks_importable():
        from stage_variants import resume, setting, variant_config
    folder = tmp_path / "s13-r15"
    folder.mkdir()
    ran = relocate(yaml.safe_load((ROOT / "configs" / "ppo_headlines.yaml").read_text()), folder / "ppo")
    (folder / "ppo.yaml").write_text(yaml.safe_dump(ran, sort_keys=False))
    config = variant_config(folder, "ppo", "x", [setting("model.init_args.reward_model=null")])
    variant, text = folder / "ppo-x", config.read_text()
    dirpaths = [(c.get("init_args") or {}).get("dirpath") for c in yaml.safe_load(text)["trainer"]["callbacks"]]
    assert str(variant / "checkpoints") in dirpaths  # LastCheckpoint writes into the variant's folder
    assert resume(variant, None, text) == []  # nothing killed: a fresh fit
    last = variant / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"killed at step 10")
    assert resume(variant, text, text) == ["--ckpt_path", str(last)]
    with pytest.raises(SystemExit, match="other settings"):
        resume(variant, yaml.safe_dump(ran, sort_keys=False), text)  # the killed run had the learned reward


def test_stage_variants_main_resumes_a_killed_variant_it_wrote_the_config_of(tmp_path: Path, monkeypatch) -> None:
    """Run through main: the first fit is killed after its last.ckpt; the rerun, same settings,
    passes that checkpoint to `lightkit fit`, and judges the variant by the rerun's logs."""
    import subprocess

    from lightkit.cli.ship.stages import relocate

    folder = tmp_path / "s7-r14"
    ran = relocate(yaml.safe_load((ROOT / "configs" / "dpo_headlines.yaml").read_text()), folder / "dpo")
    folder.mkdir()
    (folder / "dpo.yaml").write_text(yaml.safe_dump(ran, sort_keys=False))
    variant = folder / "dpo-fast"

    def write_log(run: Path) -> None:
        log = run / "lightning_logs" / "version_0" / "metrics.csv"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("step,val_greedy_reward,val_rougeL,val_loss\n9,0.05,0.25,0.69\n")

    write_log(folder / "dpo")
    commands, real_run = [], subprocess.run

    def fit(command: list[str], **kwargs: object) -> object:
        if not str(command[0]).endswith("lightkit"):  # the machine facts of the result's header
            return real_run(command, **kwargs)
        commands.append(command[1:])
        if len(commands) == 1:  # killed part-way, after LastCheckpoint wrote its last.ckpt
            (variant / "checkpoints").mkdir(parents=True)
            (variant / "checkpoints" / "last.ckpt").write_bytes(b"step 10")
            raise subprocess.CalledProcessError(-9, command)
        write_log(variant)
        (variant / "hf_model").mkdir()
        (variant / "hf_model" / "model.safetensors").write_text("trained")
        return None

    monkeypatch.setattr(subprocess, "run", fit)
    args = ["--stage", "dpo", "--name", "fast", "--set", "model.init_args.learning_rate=5e-4", "--runs", "7:14",
            "--work", str(tmp_path), "--out", str(tmp_path / "out.json")]  # fmt: skip
    with pytest.raises(subprocess.CalledProcessError):
        run_script("stage_variants.py", *args)
    run_script("stage_variants.py", *args)
    config, last = str(folder / "dpo-fast.yaml"), str(variant / "checkpoints" / "last.ckpt")
    assert commands == [["fit", "--config", config], ["fit", "--config", config, "--ckpt_path", last]]
    assert json.loads((tmp_path / "out.json").read_text())["runs"]["split 7, seed 14"]["variant"]["kept"]["step"] == 9
    # Asked again with other settings under the same name, before the variant finished: refused.
    (variant / "hf_model" / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match="other settings"):
        run_script("stage_variants.py", *[a.replace("5e-4", "1e-3") for a in args])
    assert len(commands) == 2


def test_align_report_table_says_each_stage_time_and_the_scoring_time() -> None:
    """The stage times `make align` records (`make sft`'s when it ran it) and how long the report
    scored the models (their `eval_s`): the table accounts for the whole command."""
    with benchmarks_importable():
        from to_markdown import render
    cell = {"reward": 0.1, "rouge1": 0.3, "rougeL": 0.25, "kl_to_sft": 0.0, "answer_words": 6.0, "ended_frac": 1.0}
    result = {"device": "CPU", "date": "today", "command": "make align", "held_out_articles": 112, "reward": "r",
              "models": {"sft": {**cell, "eval_s": 30.0}, "dpo": {**cell, "eval_s": 90.0, "train_s": 360.0}},
              "stage_times_s": {"make-sft": 600.0, "dpo": 360.0}, "samples": []}  # fmt: skip
    text = render(result)
    assert "Stage wall times: make-sft 10.0 min, dpo 6.0 min; the report's scoring of the models 2.0 min." in text
    assert "| DPO | +0.100 | 0.300 | 0.250 | 0.00 | 6.0 | 100% | 6.0 min |" in text
    for s in result["models"].values():  # a result from before the report timed its scoring
        del s["eval_s"]
    assert "Stage wall times: make-sft 10.0 min, dpo 6.0 min.\n" in render(result)
    # The reward model's line: its agreement with the callable reward and, where the result has
    # them, the spreads of SFT's answers under both (which term a weighted mix follows).
    result["reward_model"] = {"model": "rm", "held_out_pair_accuracy": 0.7, "answers_scored": 224,
                              "pearson_with_callable_reward": 0.24, "spearman_with_callable_reward": 0.39}  # fmt: skip
    assert "Pearson 0.240, Spearman 0.390.\n" in render(result)
    result["reward_model"]["sd_per_model"] = {"sft": {"learned_sd": 1.0851, "callable_sd": 0.1412}}
    assert "Spearman 0.390. Spread of the SFT model's answers (sd): learned 1.085, callable 0.141.\n" in render(result)


def test_align_report_records_what_each_method_ran_with(tmp_path: Path) -> None:
    """A method's settings come from the config Lightning saved beside its newest log (a resumed
    run's), so a result says which DPO it scored after the shipped config changes."""
    with benchmarks_importable():
        from align_report import settings
        from to_markdown import render
    run = tmp_path / "dpo"
    assert settings(run, "dpo") == {}  # never ran
    config = yaml.safe_load((ROOT / "configs" / "dpo_headlines.yaml").read_text())
    for version, rate in ((0, 0.0001), (1, 0.0005)):
        folder = run / "lightning_logs" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("step,train_loss_step\n0,0.69\n")
        config["model"]["init_args"]["learning_rate"] = rate
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    ran = settings(run, "dpo")
    assert ran == {"max_steps": 40, "learning_rate": 0.0005, "beta": 0.1, "loss_type": "sigmoid", "rpo_alpha": 1.0}
    cell = {"reward": 0.1, "rouge1": 0.3, "rougeL": 0.25, "kl_to_sft": 0.0, "answer_words": 6.0, "ended_frac": 1.0}
    result = {"device": "CPU", "date": "today", "command": "make align", "held_out_articles": 112, "reward": "r",
              "models": {"sft": cell, "dpo": cell}, "settings": {"dpo": ran, "ppo": {}}, "samples": []}  # fmt: skip
    assert ("Settings: DPO max_steps 40, learning_rate 0.0005, beta 0.1, loss_type sigmoid, rpo_alpha 1.0.\n"
            in render(result))  # fmt: skip


def test_align_vs_trl_gives_trl_the_shipped_dpo_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TRL side trains what the shipped config trains: RPO is sigmoid plus TRL's `sft` loss at
    `rpo_alpha` (TRL 1.16 has no `rpo_alpha`), plain DPO the sigmoid loss alone."""
    from trl import DPOConfig

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from align_vs_trl import settings, trl_dpo_loss

    shipped = settings("dpo")
    assert shipped["rpo_alpha"]  # the comparison below is of RPO because the shipped job is
    loss = trl_dpo_loss(shipped)
    assert loss == {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, shipped["rpo_alpha"]]}
    assert trl_dpo_loss({**shipped, "rpo_alpha": None}) == {"loss_type": ["sigmoid"]}
    config = DPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **loss)
    assert list(config.loss_type) == ["sigmoid", "sft"] and list(config.loss_weights) == [1.0, shipped["rpo_alpha"]]


def test_an_align_vs_trl_result_of_one_job_renders(tmp_path: Path) -> None:
    """`--jobs dpo` writes a result without GRPO; it still renders as the TRL comparison."""
    with benchmarks_importable():
        from to_markdown import render
    side = {"s_per_step": 4.0, "peak_rss_mib": 5000.0, "held_out_reward": -0.02, "held_out_rougeL": 0.26,
            "held_out_words": 6.0, "train_wall_s": 50.0, "tokens_per_s": 400.0}  # fmt: skip
    result = {"device": "CPU", "date": "2026-12-06", "versions": {}, "command": "python benchmarks/align_vs_trl.py",
              "job": {"warmup_steps_untimed": 2, "dpo": {"steps_timed": 8}, "grpo": {"steps_timed": 4},
                      "seeds": [0], "precision": "bf16 autocast", "eval_rows": 32},
              "dpo": {"lightkit": side, "trl": {**side, "s_per_step": 6.0, "train_wall_s": 150.0}, "speedup": 1.5,
                      "speedup_spread": {"min": 1.4, "max": 1.6}, "speedup_train_wall": 3.0}}  # fmt: skip
    text = render(result)
    assert text is not None and "| DPO | lightkit | 4.00 |" in text and "**1.50x**" in text and "GRPO" not in text


def test_reward_seeds_score_each_variant_and_their_ensemble_on_each_runs_own_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chain run's variants are trained with the run's seed; the ensemble ranks by the sum of
    their scores; the summary is over the runs, with each split's mean; the table renders it."""
    with benchmarks_importable():
        import reward_seeds
        from reward_variants import VARIANTS
        from to_markdown import render
    chains = tmp_path / "chains"
    for name in ("s13-r13", "s7-r14", "notes"):
        (chains / name).mkdir(parents=True)
        for suffix in ("", "-all", "-all-val"):
            (chains / name / f"pairs{suffix}.jsonl").write_text('{"margin": 0.3}\n' * 4)
    (chains / "s9-r9").mkdir()  # a run without pairs is not a run to score
    assert list(reward_seeds.chain_runs(chains)) == [(13, 13), (7, 14)]
    gaps = {("shipped", 13): [1.0, 1.0, -1.0, -1.0], ("first-slow", 13): [-0.5, 2.0, 2.0, -3.0],
            ("shipped", 14): [1.0, 1.0, 1.0, -1.0], ("first-slow", 14): [1.0, 1.0, 1.0, 1.0]}  # fmt: skip
    seen = []

    def fake_train(key: str, run: Path, folder: Path, seed: int) -> dict:
        seen.append((key, run.name, folder.relative_to(tmp_path).as_posix(), seed))
        return {"gaps": gaps[(key, seed)], "logged_val_accuracy": 0.5, "train_s": 1}

    monkeypatch.setattr(reward_seeds, "train", fake_train)
    monkeypatch.setattr(reward_seeds, "ROOT", tmp_path)
    out = tmp_path / "out.json"
    argv = ["reward_seeds.py", "--chains", str(chains), "--work", "work", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    reward_seeds.main()
    assert ("first-slow", "s7-r14", "work/first-slow/s7-r14", 14) in seen and len(seen) == 4
    result = json.loads(out.read_text())
    shipped, slow, ensemble = result["variants"]
    assert [r["held_out_pair_accuracy"] for r in shipped["runs"]] == [0.5, 0.75]
    assert [r["held_out_pair_accuracy"] for r in slow["runs"]] == [0.5, 1.0]
    # Summed: [.5, 3, 1, -4] and [2, 2, 2, 0]; on split 13, the ensemble ranks better than either model.
    assert [r["held_out_pair_accuracy"] for r in ensemble["runs"]] == [0.75, 0.75]
    assert shipped["accuracy"]["mean"] == 0.625 and shipped["accuracy"]["per_split"] == {"7": 0.75, "13": 0.5}
    assert shipped["accuracy"]["between_split_share"] == pytest.approx(1.0)  # one run per split: all between
    table = render(result)
    assert (
        "| the sum of the scores of shipped and first-slow | **75.0%** ± 0.0% | 75.0% | 75.0% | – | 75.0% | 75.0% |"
        in (table)
    )
    described = VARIANTS["shipped"][0]
    assert f"| {described} | **62.5%** ± 17.7% | 75.0% | 50.0% | 100% | 50.0% | 75.0% |" in table
    monkeypatch.setattr(sys, "argv", [*argv, "--ensemble", "shipped", "margin"])
    with pytest.raises(SystemExit):  # an ensemble of what was not trained
        reward_seeds.main()
    monkeypatch.setattr(sys, "argv", [*argv, "--ensemble", "shipped"])
    reward_seeds.main()
    assert [v["variant"] for v in json.loads(out.read_text())["variants"]] == ["shipped", "first-slow"]  # one: no sum


def test_reward_variants_ensemble_sums_every_model_of_the_named_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with benchmarks_importable():
        import reward_variants
    scores = {"a/seed-1": [1.0, -1.0, -1.0], "a/seed-2": [-0.5, 2.0, -1.0], "b/seed-1": [9.0, 9.0, 9.0]}
    monkeypatch.setattr(reward_variants, "pair_scores", lambda model, pairs: scores[model.parent.as_posix()])
    # The second held-out pair's article is also one a trains on (the BBC set repeats articles).
    many, trained = tmp_path / "m-all-val.jsonl", tmp_path / "a-train.jsonl"
    many.write_text("".join(json.dumps({"rendered_prompt": f"article {i}"}) + "\n" for i in range(3)))
    trained.write_text(json.dumps({"rendered_prompt": "article 1"}) + "\n")
    results = [{"variant": v, "runs": [{"config": f"{v}/seed-{s}/reward.yaml"} for s in seeds], "train_file": str(t)}
               for v, seeds, t in (("a", (1, 2), trained), ("b", (1,), tmp_path / "b-train.jsonl"))]  # fmt: skip
    args = argparse.Namespace(pairs="p.jsonl", many_pairs=str(tmp_path / "m.jsonl"))
    ens = reward_variants.ensemble(["a"], results, args)
    assert ens == {"variants": ["a"], "models": 2, "held_out_pair_accuracy": 0.6667,
                   "many_held_out_pair_accuracy": 0.6667,  # sums [.5, 1, -2]: 2 of 3 (with b: 3 of 3)
                   "many_unseen_held_out_pair_accuracy": 0.5}  # fmt: skip  # without the second pair: [.5, -2]


def test_reward_variants_table_says_the_accuracy_without_the_pairs_of_repeated_articles() -> None:
    with benchmarks_importable():
        from to_markdown import render
    run = {"seed": 13, "held_out_pair_accuracy": 0.7, "many_held_out_pair_accuracy": 0.72, "train_s": 30,
           "train_loss_per_epoch": [0.6], "val_loss_per_validation": [0.58]}  # fmt: skip
    variant = {"variant": "reference", "description": "shipped", "train_pairs": 884, "response_first": True,
               "reference_column": "reference", "max_length": 64, "held_out_pair_accuracy": 0.7,
               "held_out_pair_accuracy_sd": None, "many_held_out_pairs": 479, "many_held_out_pair_accuracy": 0.72,
               "many_held_out_pair_accuracy_sd": None, "many_held_out_pairs_of_trained_articles": 7,
               "many_unseen_held_out_pair_accuracy": 0.7161, "many_unseen_held_out_pair_accuracy_sd": None,
               "runs": [run]}  # fmt: skip
    result = {"device": "CPU", "date": "today", "command": "c", "many_rows": 2069, "variants": [variant],
              "held_out_pairs_decided_by": {"pairs": 55, "largest_term": {"rouge_l": 31},
                                            "ordered_by_reference_free_terms": 0.89},
              "ensemble": {"variants": ["reference"], "models": 1, "held_out_pair_accuracy": 0.7,
                           "many_held_out_pair_accuracy": 0.72,
                           "many_unseen_held_out_pair_accuracy": 0.7161}}  # fmt: skip
    text = render(result)
    assert "Without them: shipped (7 dropped): **71.6%**." in text
    assert "**72.0%** of the 479 of 2,069 articles (71.6% without the pairs of articles a model trained on)." in text
    del variant["many_held_out_pairs_of_trained_articles"]  # a result from before the count: no such line
    assert "Without them" not in render(result) and "without the pairs" not in render(result)


@pytest.mark.slow  # reads and carves every BBC article with SmolLM2's tokenizer
def test_pairs_written_before_rows_held_references_get_each_articles_headline(tmp_path: Path) -> None:
    """reward_variants.with_references: an older pairs file's rows get their article's real
    headline by its index among the articles the pairs stage drew, checked against the row's turn."""
    from lightkit.data.headline_pairs import SMOLLM2, training_articles

    with benchmarks_importable():
        from reward_variants import with_references
    _, articles = training_articles(SMOLLM2, 3, 13, holdout=[0.02, 0.05], split_seed=13)
    rows = [{"article": i, "prompt": articles[i]["user"], "chosen": "a", "rejected": "b"} for i in (2, 0)]
    path = tmp_path / "pairs-all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with_references(path, 3, 13, 13)
    headlines = [json.loads(line)["reference"] for line in path.open()]
    assert headlines == [articles[2]["reference"], articles[0]["reference"]]
    path.write_text(json.dumps({**rows[0], "article": 1}) + "\n")  # another article's turn
    with pytest.raises(ValueError, match="pair of article 1 is not that article's"):
        with_references(path, 3, 13, 13)
