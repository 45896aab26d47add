"""Render benchmark result JSON as the Markdown tables the README shows.

    python benchmarks/to_markdown.py benchmarks/results/inference-ner-cpu.json   # writes ...-cpu.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def inference_table(result: dict) -> str:
    rows = result["rows"]
    engines = [k for k in rows[0] if k.startswith(("pytorch_", "ort_"))]
    head = "| shape | " + " | ".join(f"{e} median / p90 ms" for e in engines) + " | " + " | ".join(f"{k} speedup" for k in rows[0]["speedup_vs_pytorch"]) + " |"
    lines = [head, "|" + "---|" * (1 + len(engines) + len(rows[0]["speedup_vs_pytorch"]))]
    for row in rows:
        cells = [f"{row[e]['median_ms']:.1f} / {row[e]['p90_ms']:.1f}" for e in engines]
        speed = [f"{v:.2f}x" for v in row["speedup_vs_pytorch"].values()]
        lines.append(f"| {row['shape']} | " + " | ".join(cells + speed) + " |")
    sizes = ", ".join(f"{f} {info['bytes'] / 2**20:.1f} MiB ({info['parity']['metric']} {info['parity']['onnx']:.4f})" for f, info in result["forms"].items())
    return "\n".join([f"Device: {result['device']}; {result['date']}; versions {result['versions']}.", "", *lines, "", f"Artifacts: {sizes}.", "", f"Command: `{result['command']}`", ""])


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        result = json.loads(path.read_text())
        if "rows" in result and "speedup_vs_pytorch" in result["rows"][0]:
            path.with_suffix(".md").write_text(inference_table(result))
            print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
