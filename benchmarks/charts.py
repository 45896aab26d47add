"""The charts of docs/performance.md: each comparison drawn from its result file, as its table is
(docs/hooks.py puts the chart beside the table), inline SVG, so no image is committed or goes stale.

A bar is a median; where the result holds repeats (runs, rounds, seeds) a line through the bar
spans their smallest and largest value, so a ratio whose spread crosses the other side's bar reads
as the parity it is.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from lightkit.io.measure import spread

Bar = tuple[str, float, tuple[float, float] | None]  # label, median, (min, max) of the repeats


def span(values: list[float]) -> tuple[float, float] | None:
    """The repeats' smallest and largest value (lightkit.io.measure.spread), if there are repeats."""
    s = spread(values)
    return (s["min"], s["max"]) if s["n"] > 1 else None


def draw(title: str, unit: str, groups: dict[str, list[Bar]]) -> str:
    """Horizontal bars, one panel per group (a metric or a batch size), as an SVG string."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(len(bars) for bars in groups.values()) * 0.38 + 0.9
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), height), squeeze=False)
    for ax, (name, bars) in zip(axes[0], groups.items()):
        labels = [b[0] for b in bars][::-1]
        values = [b[1] for b in bars][::-1]
        ax.barh(labels, values, color=["#4c72b0" if "lightkit" in label else "#999999" for label in labels])
        for y, (_, value, lohi) in enumerate(bars[::-1]):
            if lohi is not None:
                ax.plot(lohi, (y, y), color="black", linewidth=1.2)
            ax.text(max(value, lohi[1]) if lohi else value, y, f" {value:.3g}", va="center", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # inline: no XML prolog inside the page


def train_chart(r: dict) -> str:
    bars = [(side, r[side]["tokens_per_s"], span([x["tokens_per_s"] for x in r["runs"][side]]))
            for side in ("lightkit", "hf_trainer")]  # fmt: skip
    return draw(f"training throughput, {r['task']} {r['model']} (higher is better)", "tokens/s", {"": bars})


def trl_chart(r: dict) -> str:
    sides = [s for s in r["runs"] if s in r]
    bars = [(s, r[s]["tokens_per_s"], span([x["tokens_per_s"] for x in r["runs"][s]])) for s in sides]
    return draw("LoRA SFT throughput (higher is better)", "tokens/s", {"": bars})


def align_trl_chart(r: dict) -> str:
    groups = {}
    for job in ("dpo", "grpo"):
        if job in r:
            groups[job.upper()] = [(side, r[job][side]["s_per_step"],
                                    span([x["s_per_step"] for x in r[job]["runs"][side]]))
                                   for side in ("lightkit", "trl")]  # fmt: skip
    return draw("time per optimizer step (lower is better)", "s", groups)


def llm_peers_chart(r: dict) -> str:
    groups: dict[str, list[Bar]] = {}
    keys = [
        ("decode_ms_per_token_b1", "decode ms/token, batch 1"),
        ("decode_ms_per_token_b8", "decode ms/token, batch 8"),
    ]
    if "e2e_ms_b1" in next(iter(r["results"].values())):
        keys += [(f"e2e_ms_b{b}", f"end to end ms, batch {b}") for b in (1, 8)]
    for key, name in keys:
        p90 = key.replace("_ms_", "_p90_ms_")
        groups[name] = [(side, row[key], (row[key], row[p90]) if p90 in row else None)
                        for side, row in r["results"].items()]  # fmt: skip
    return draw("the shipped LLM on ONNX Runtime CPU (lower is better; line: median to p90)", "ms", groups)


def ship_chart(r: dict) -> str:
    groups = {
        f"batch {size}": [
            (f"{row['model']} {row['form']}", row["speedup"][str(size)], None)
            for row in r["rows"]
            if row["speedup"][str(size)] is not None
        ]  # fmt: skip
        for size in r["batch_sizes"]
    }
    return draw("speed over the fit model in PyTorch, real test inputs (higher is better)", "x", groups)


CHARTS: list[tuple[Callable[[dict], bool], Callable[[dict], str]]] = [
    (lambda r: r.get("kind") == "ship", ship_chart),
    (lambda r: "hf_trainer" in r and "runs" in r, train_chart),
    (lambda r: "dpo" in r and "grpo" in r, align_trl_chart),
    (lambda r: "trl" in r and "runs" in r, trl_chart),
    (lambda r: "pytorch_fp32_perplexity" in r, llm_peers_chart),
]


def chart(result: dict[str, Any]) -> str | None:
    """The chart of one comparison's result file; None for a kind drawn by its table alone."""
    draw_it = next((fn for matches, fn in CHARTS if matches(result)), None)
    return None if draw_it is None else draw_it(result)
