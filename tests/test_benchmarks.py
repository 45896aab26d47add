"""Smoke tests: each benchmark script runs end to end on a tiny exported model and writes its JSON."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from lightkit.main import main

from conftest import ROOT, TINY_NER


def run_script(name: str, *args: str) -> None:
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(str(ROOT / "benchmarks" / name), run_name="__main__")
    finally:
        sys.argv = argv


def test_inference_cpu_benchmark_runs(tmp_path: Path) -> None:
    main(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1"])
    ckpt = next((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    main(["export", "--config", str(TINY_NER), "--ckpt_path", str(ckpt), "--output", str(tmp_path / "onnx"), "--tolerance", "int8-cpu.min_argmax_agreement=0", "--tolerance", "int8-cpu.max_metric_drop=1"])
    out = tmp_path / "inference.json"
    run_script("inference_cpu.py", "--artifact", str(tmp_path / "onnx"), "--hf_model", str(tmp_path / "run" / "hf_model"), "--length", "32", "--warmup", "1", "--repeats", "2", "--out", str(out))
    result = json.loads(out.read_text())
    assert [r["shape"] for r in result["rows"]] == ["1x32", "8x32", "32x32"]
    assert set(result["rows"][0]["speedup_vs_pytorch"]) == {"ort_fp32", "ort_int8-cpu"}
    assert "cores" in result["device"] and result["versions"]["onnxruntime"]
    run_script("to_markdown.py", str(out))
    table = out.with_suffix(".md").read_text()
    assert "| 1x32 |" in table and "ort_int8-cpu speedup" in table


def test_generation_refiner_benchmark_runs(tmp_path: Path) -> None:
    common = ["--config", str(ROOT / "tests" / "conf" / "clm.yaml"), "--data.tokenizer", str(tmp_path / "bpe")]
    main(["fit", *common, "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_checkpointing", "true", "--trainer.max_epochs", "1"])
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    main(["export", *common[:2], "--ckpt_path", str(ckpt), "--output", str(tmp_path / "onnx"), "--forms", "fp32"])
    out = tmp_path / "refiner.json"
    run_script("generation_refiner.py", "--artifact", str(tmp_path / "onnx"), "--prompts", str(ROOT / "tests" / "data" / "lm" / "prompts.txt"),
               "--n_prompts", "2", "--new_tokens", "4", "--sweeps", "1", "--out", str(out))
    summary = json.loads(out.read_text())["summary"]
    for kind in ("greedy", "sampled"):
        assert summary[kind]["after"] >= summary[kind]["before"] - 1e-6


def test_train_throughput_benchmark_runs(tmp_path: Path) -> None:
    from conftest import DATA

    out = tmp_path / "train.json"
    run_script("train_throughput.py", "--model", "tiny", "--tokenizer", str(DATA / "tokenizer"), "--train_file", str(DATA / "ner" / "train.conll"),
               "--steps", "3", "--warmup", "1", "--max_length", "32", "--repeats", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["lightkit"]["timed_steps"] == result["hf_trainer"]["timed_steps"] == 3
    assert result["ratio_tokens_per_s"] > 0 and result["lightkit"]["tokens_per_s"] > 0
