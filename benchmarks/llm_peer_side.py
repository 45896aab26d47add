"""One side of benchmarks/llm_peers.py, in its own process (and, for the peers, their own venv).

    python benchmarks/llm_peer_side.py build  --side optimum|genai --hf HF_FOLDER --out DIR [--weight_only JSON]
    python benchmarks/llm_peer_side.py measure --side lightkit|optimum|genai --model DIR --job JOB.json

`build` makes a peer's artifacts with its own documented recipes:
- optimum: `ORTModelForCausalLM.from_pretrained(export=True)` (the `text-generation-with-past`
  export) of the folder with its config in transformers 4.x's terms (`legacy_config`) -> `fp32/`;
  its `ORTOptimizer` (level 2; optimum maps llama to ORT's gpt2 fusions) -> `optimized/`, when it
  accepts the graph (`build.json` says whether); the same ONNX Runtime weight-only `MatMulNBits`
  quantisation lightkit's int8-cpu uses (`--weight_only`: bits, block, symmetric, accuracy level,
  passed from lightkit's settings by llm_peers.py) of that graph -> `int8-wo/`; and its own
  `ORTQuantizer` recipe, `AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)`
  (dynamic int8, per-channel as its docs advise) -> `int8/`;
- genai: `python -m onnxruntime_genai.models.builder -p int4|int8 -e cpu` with
  `accuracy_level=4` (int8 compute, its CPU default) and block 32.

`measure` prints one `RESULT {json}` line: file size, the raw wall times (ms) of prefill alone
(one new token) and of the whole request (the job's `new_tokens`) for the job's 128-token prompts
at batch 1 and 8, perplexity on the job's held-out text, and the greedy answers to the job's
prompts (EOS allowed, cut after it). llm_peers.py turns the times into figures (lightkit's one
percentile definition: this script runs in the peers' venvs, without lightkit). Timing runs force
exactly n new tokens on every side (EOS suppressed until then where the runtime would stop). Each
side decodes through its own runtime: lightkit's `DecodeLoop.greedy`, optimum's `generate` with IO
binding on (`use_io_binding=True`: its documented lever, off by default on the CPU), onnxruntime-
genai's `Generator`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def build(side: str, hf: str, out: str, weight_only: dict[str, Any], precision: str) -> None:
    if side == "optimum":
        from optimum.onnxruntime import ORTModelForCausalLM, ORTOptimizer, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig, OptimizationConfig

        root = Path(out)
        fp32 = root / "fp32"
        if not fp32.exists():
            ORTModelForCausalLM.from_pretrained(legacy_config(hf, root / "hf"), export=True, use_cache=True
                                                ).save_pretrained(fp32)  # fmt: skip
        info: dict[str, Any] = {}
        source = fp32 / "model.onnx"
        try:
            optimizer = ORTOptimizer.from_pretrained(fp32, file_names=["model.onnx"])
            level2 = OptimizationConfig(optimization_level=2, optimize_for_gpu=False)
            optimizer.optimize(save_dir=root / "optimized", optimization_config=level2)
            source = next((root / "optimized").glob("*.onnx"))
            info["optimizer"] = "ORTOptimizer level 2"
        except Exception as error:  # noqa: BLE001 - recorded: the peer is then quantised unoptimised
            info["optimizer"] = f"not applied: {type(error).__name__}: {str(error)[:300]}"
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(source), bits=weight_only["bits"],
                                         block_size=weight_only["block_size"], is_symmetric=weight_only["symmetric"],
                                         accuracy_level=weight_only["accuracy_level"])  # fmt: skip
        quantizer.process()
        (root / "int8-wo").mkdir(parents=True, exist_ok=True)
        quantizer.model.save_model_to_file(str(root / "int8-wo" / "model.onnx"), use_external_data_format=False)
        info["int8-wo"] = {"source": source.parent.name, **weight_only}
        quantizer = ORTQuantizer.from_pretrained(fp32, file_name="model.onnx")
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        quantizer.quantize(save_dir=root / "int8", quantization_config=config)
        for folder in (root / "int8", root / "int8-wo"):
            for name in ("config.json", "generation_config.json"):
                if (fp32 / name).exists() and not (folder / name).exists():
                    (folder / name).write_bytes((fp32 / name).read_bytes())
        (root / "build.json").write_text(json.dumps(info, indent=2))
    elif side == "genai":
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf, "-o", out, "-p", precision,
                        "-e", "cpu", "-c", str(Path(out) / "cache"), "--extra_options", "accuracy_level=4",
                        "block_size=32"], check=True)  # fmt: skip
    else:
        raise SystemExit(f"unknown side {side}")


def legacy_config(hf: str, dst: Path) -> Path:
    """The model folder as transformers 4.x reads it. transformers 5 writes RoPE's base under
    `rope_parameters`; 4.57 (optimum-onnx's pin) looks for a top-level `rope_theta` and, without
    one, silently uses 10000 instead of SmolLM2's 100000, a different model (perplexity +5.5%
    on this job). The copy adds `rope_theta` (and `rope_scaling` for non-default RoPE)."""
    import shutil

    shutil.copytree(hf, dst, dirs_exist_ok=True)
    config = json.loads((dst / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    if rope.get("rope_type", "default") != "default":
        config.setdefault("rope_scaling", rope)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def onnx_bytes(folder: Path) -> int:
    return sum(
        p.stat().st_size for p in folder.rglob("*") if p.suffix in (".onnx", ".data") or p.name.endswith(".onnx.data")
    )


class Lightkit:
    def __init__(self, folder: Path) -> None:
        import torch

        from lightkit.export.runtime.decode_loop import DecodeLoop
        from lightkit.export.runtime.sessions import OrtModel

        self.torch, self.model = torch, OrtModel(folder / "model.onnx", device="cpu")
        self.loop = DecodeLoop(self.model)
        self.bytes = onnx_bytes(folder)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy(ids)
        return self.model(input_ids=t, attention_mask=self.torch.ones_like(t)).logits.numpy()

    def greedy(self, ids: np.ndarray, n: int, exact: bool = True) -> np.ndarray:
        t = self.torch.from_numpy(ids)  # the loop always runs n steps; answers are cut at EOS after
        return self.loop.greedy(t, self.torch.ones_like(t), n).numpy()


class Optimum:
    def __init__(self, folder: Path) -> None:
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM

        name = next(p.name for p in folder.glob("*.onnx"))
        self.torch = torch
        self.model = ORTModelForCausalLM.from_pretrained(folder, file_name=name, use_cache=True, use_io_binding=True)
        self.bytes = onnx_bytes(folder)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy(ids)
        return self.model(input_ids=t, attention_mask=self.torch.ones_like(t)).logits.float().numpy()

    def greedy(self, ids: np.ndarray, n: int, exact: bool = True) -> np.ndarray:
        t = self.torch.from_numpy(ids)
        length = {"min_new_tokens": n} if exact else {}  # exact: n tokens for timing (EOS suppressed until then)
        out = self.model.generate(input_ids=t, attention_mask=self.torch.ones_like(t), max_new_tokens=n,
                                  do_sample=False, pad_token_id=0, **length)  # fmt: skip
        return out[:, ids.shape[1] :].numpy()


class Genai:
    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort
        import onnxruntime_genai as og

        self.og, self.model = og, og.Model(str(folder))
        self.decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        self.bytes = onnx_bytes(folder)
        # Perplexity reads every position's logits: the same graph run directly, with an empty cache.
        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {}
        for i in self.session.get_inputs():
            if i.name == "input_ids":
                feeds[i.name] = ids.astype(np.int64)
            elif i.name == "attention_mask":
                feeds[i.name] = np.ones_like(ids, dtype=np.int64)
            elif i.name == "position_ids":
                feeds[i.name] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(np.int64)
            elif i.name.startswith("past_key_values"):
                kv_heads, head_dim = self.decoder["num_key_value_heads"], self.decoder["head_size"]
                dtype = np.float16 if "float16" in i.type else np.float32
                feeds[i.name] = np.zeros((ids.shape[0], kv_heads, 0, head_dim), dtype=dtype)
        return self.session.run(["logits"], feeds)[0].astype(np.float32)

    def greedy(self, ids: np.ndarray, n: int, exact: bool = True) -> np.ndarray:
        params = self.og.GeneratorParams(self.model)
        length = {"min_length": ids.shape[1] + n} if exact else {}
        params.set_search_options(max_length=ids.shape[1] + n, do_sample=False, batch_size=ids.shape[0], **length)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids.astype(np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        rows = [np.asarray(generator.get_sequence(b))[ids.shape[1] :] for b in range(ids.shape[0])]
        return rows[0][None] if len(rows) == 1 else np.stack(rows)


SIDES = {"lightkit": Lightkit, "optimum": Optimum, "genai": Genai}


def answer_perplexity(side: Any, pairs: list[list[list[int]]]) -> float:
    """Perplexity of each answer's tokens given its prompt (the prompt's own tokens not counted)."""
    nll, count = 0.0, 0
    for prompt, answer in pairs:
        ids = prompt + answer
        logits = side.logits(np.asarray([ids], dtype=np.int64))[0, len(prompt) - 1 : -1].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(answer)), answer].sum())
        count += len(answer)
    return math.exp(nll / count)


def perplexity(side: Any, texts: list[list[int]]) -> float:
    """Perplexity of every token of each text after its first."""
    return answer_perplexity(side, [[t[:1], t[1:]] for t in texts])


def measure(side_name: str, folder: str, job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    side = SIDES[side_name](Path(folder))
    prompt = np.asarray(job["prompt_128"], dtype=np.int64)  # (8, 128)
    timings: dict[str, list[float]] = {}
    n = job["new_tokens"]
    for batch in (1, 8):
        ids = prompt[:batch]
        side.greedy(ids, 2)  # warm-up
        prefill, whole = timings.setdefault(f"prefill_ms_b{batch}", []), timings.setdefault(f"e2e_ms_b{batch}", [])
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            side.greedy(ids, 1)
            prefill.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            side.greedy(ids, n)
            whole.append(1000 * (time.perf_counter() - start))
    greedy = []  # each answer as the side decodes it with EOS allowed, cut after its first EOS
    for p in job["greedy_prompts"]:
        answer = side.greedy(np.asarray([p], dtype=np.int64), job["greedy_tokens"], exact=False)[0].tolist()
        greedy.append(answer[: answer.index(job["eos"]) + 1] if job["eos"] in answer else answer)
    result = {"bytes": side.bytes, **timings, "perplexity": perplexity(side, job["texts"]),
              "answer_perplexity": answer_perplexity(side, job["answers"]), "greedy": greedy}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["build", "measure"])
    ap.add_argument("--side", required=True)
    ap.add_argument("--hf")
    ap.add_argument("--out")
    ap.add_argument("--model")
    ap.add_argument("--job")
    ap.add_argument("--weight_only", default="{}", help="optimum: MatMulNBits settings, as JSON")
    ap.add_argument("--precision", default="int4", help="genai: the builder's -p")
    args = ap.parse_args()
    if args.action == "build":
        build(args.side, args.hf, args.out, json.loads(args.weight_only), args.precision)
    else:
        measure(args.side, args.model, args.job)


if __name__ == "__main__":
    main()
