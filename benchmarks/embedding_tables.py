"""How the embedding tables' quantisation scheme moves the task metric: each scheme applied to a
trained model's tables (fake-quantised: quantised, then decoded back to float), scored on the real
test split, beside the float model, in one process.

    python benchmarks/embedding_tables.py --config configs/ner.yaml --hf_model runs/ner/hf_model \\
        --out benchmarks/results/embedding-tables-cpu.json

This isolates the tables: the int8-gpu form also quantises every MatMul (8 bits) and runs in
fp16, which the export's parity gate scores. The tables are quantised as the export does it
(lightkit.export.builder.gather_quant, same `quantize_table`): the token table with the scheme named,
other tables of at least 64 rows (positions; not token types) with lightkit's 8-bit scheme, or
with the scheme named too when it ends in `+pos`. Schemes read `<sym|asym><bits>_b<block>`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from typing import Any

import numpy as np
import torch
from measure import command_line, write_result

from lightkit.cli.main import cli
from lightkit.export.builder.gather_quant import SCHEMES, dequantize_table, quantize_table
from lightkit.io.measure import provenance

DEFAULT = ["sym8_b32", "sym4_b32", "sym4_b16", "asym4_b32", "asym4_b16", "asym4_b64", "asym4_b16+pos"]


def parse_scheme(name: str) -> tuple[dict[str, Any], bool]:
    """The scheme's quantize_table arguments, and whether it applies to the position tables too."""
    match = re.fullmatch(r"(sym|asym)(4|8)_b(\d+)(\+pos)?", name)
    if not match:
        raise SystemExit(f"--schemes: {name!r} is not <sym|asym><4|8>_b<block size>[+pos], e.g. asym4_b16")
    return {"symmetric": match[1] == "sym", "bits": int(match[2]), "block_size": int(match[3])}, bool(match[4])


def table_bytes(rows: int, cols: int, bits: int, block_size: int, symmetric: bool) -> int:
    """Codes, fp16 scales and (asymmetric, or 8-bit as ORT stores it) zero points, as exported."""
    blocks = rows * cols // block_size
    zero_points = blocks * bits // 8 if (not symmetric or bits == 8) else 0
    return rows * cols * bits // 8 + 2 * blocks + zero_points


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ner.yaml")
    ap.add_argument("--hf_model", default="runs/ner/hf_model", help="the trained model (lightkit fit writes it)")
    ap.add_argument("--schemes", nargs="+", default=DEFAULT)
    ap.add_argument("--metric", default="test_f1")
    ap.add_argument("--out", default="benchmarks/results/embedding-tables-cpu.json")
    args = ap.parse_args()
    schemes = {name: parse_scheme(name) for name in args.schemes}
    with tempfile.TemporaryDirectory(prefix="embedding-tables-") as scratch:  # the test loop's reports, not the run's
        measure_schemes(args, schemes, scratch)


def measure_schemes(args: argparse.Namespace, schemes: dict[str, tuple[dict[str, Any], bool]], scratch: str) -> None:
    quiet = [
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.callbacks",
        "[]",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        scratch,
    ]
    run = cli(
        [
            "--config",
            args.config,
            "--model.init_args.pretrained",
            args.hf_model,
            "--model.init_args.model_config",
            "null",
            *quiet,
        ],
        run=False,
    )
    task, model = run.model, run.model.model
    token_table = model.get_input_embeddings()
    tables = {
        name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Embedding) and m.num_embeddings >= 64
    }
    floats = {name: m.weight.detach().clone() for name, m in tables.items()}

    def score() -> float:
        with contextlib.redirect_stdout(io.StringIO()):  # the task prints its seqeval report
            metrics = run.trainer.test(task, datamodule=run.datamodule, verbose=False)[0]
        if args.metric not in metrics:
            raise SystemExit(f"--metric {args.metric}: the task logs {sorted(metrics)}")
        return metrics[args.metric]

    baseline = score()
    rows: dict[str, Any] = {}
    for name, (scheme, positions_too) in schemes.items():
        errors, size = {}, 0
        for table, weight in floats.items():
            own = scheme if tables[table] is token_table or positions_too else {"bits": 8, **SCHEMES[8]}
            w = weight.half().numpy()  # the export quantises the fp16 graph's tables
            if w.shape[1] % own["block_size"]:
                raise SystemExit(f"{name}: {table} is {w.shape[1]} wide, not a multiple of {own['block_size']}")
            codes, scale, zero = quantize_table(w, own["bits"], own["block_size"], own["symmetric"])
            decoded = dequantize_table(codes, scale, zero, own["block_size"])
            errors[table] = float(np.abs(decoded - weight.numpy()).mean())
            size += table_bytes(*w.shape, **own)
            tables[table].weight.data.copy_(torch.from_numpy(decoded))
        value = score()
        rows[name] = {
            **scheme,
            "position_tables_too": positions_too,
            "lightkit": not positions_too
            and SCHEMES.get(scheme["bits"]) == {k: scheme[k] for k in ("block_size", "symmetric")},
            "tables_mib": round(size / 2**20, 3),
            "mean_abs_error": errors,
            args.metric: value,
            "change": value - baseline,
        }
        print(name, rows[name], flush=True)
        for table, weight in floats.items():
            tables[table].weight.data.copy_(weight)
    write_result(
        args.out,
        {
            "what": "test metric with only the embedding tables fake-quantised, per scheme, against the float model",
            "command": command_line("embedding_tables.py", args),
            **provenance("transformers"),
            "metric": args.metric,
            "float": {
                args.metric: baseline,
                "tables": sorted(floats),
                "token_table": next(n for n, m in tables.items() if m is token_table),
                "tables_mib_fp16": round(sum(w.numel() * 2 for w in floats.values()) / 2**20, 3),
            },
            "schemes": rows,
        },
    )


if __name__ == "__main__":
    main()
