"""The run report: `report/report.md`, a self-contained `report/report.html` and `report/summary.json`.

Every number is read from the files the stage records (`stage.json`) name, the commands' own:
test metrics, export manifests, evaluation.json, benchmark.json; so the report and those files
agree by construction. Charts are PNGs drawn with matplotlib beside the Markdown; the HTML embeds them as
data URIs, so the one file can be mailed or attached to a ticket. Jinja2 renders both
(templates/ next to this module). `summary.json` holds the forms table as data, in the shape of
a benchmark result (what, device, date, command), so a run can be committed under
benchmarks/results/ and rendered into the docs like any other measurement.
"""

from __future__ import annotations

import base64
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from lightkit.cli.ship.settings import MODEL_STAGES, ShipSettings
from lightkit.io.atomic import atomic_open, atomic_write_text
from lightkit.io.csvlog import logged_rows, row_step
from lightkit.io.measure import machine as this_machine
from lightkit.io.measure import versions

PLOT_DPI = 110


def read_curves(path: str | None) -> dict[str, list[tuple[int, float]]]:
    """Per metric, its (step, value) points from a CSVLogger's metrics.csv, and from the earlier
    versions beside it (a fit resumed from its last.ckpt logs into a new version)."""
    if not path or not Path(path).is_file():
        return {}
    points: dict[str, list[tuple[int, float]]] = {}
    for row in logged_rows(Path(path).parent.parent):
        step = row_step(row)
        for key, value in row.items():
            if key not in ("step", "epoch") and value not in (None, ""):
                points.setdefault(key, []).append((step, float(value)))
    return {key: sorted(values) for key, values in points.items()}


def figure_png(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=PLOT_DPI)
    plt.close(fig)
    return path


def plot_curves(name: str, curves: dict[str, list[tuple[int, float]]], primary: str, out: Path) -> Path | None:
    """Loss, the main metric and the learning rate against the optimizer step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss_key = next((k for k in ("train_loss_step", "train_loss", "train_loss_epoch") if k in curves), None)
    panels = [
        ("loss", [(k, curves[k]) for k in (loss_key, "val_loss") if k and k in curves]),
        (primary, [(k, curves[k]) for k in (f"val_{primary}",) if k in curves]),
        ("learning rate", [(k, curves[k]) for k in ("lr",) if k in curves]),
    ]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels):
        for key, points in lines:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=key)
        ax.set_title(f"{name}: {title}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure_png(fig, out / f"curves-{name}.png")


def plot_bars(title: str, labels: list[str], series: dict[str, list[float | None]], unit: str, out: Path) -> Path:
    """One horizontal bar per form (a group per series), its value written at the bar's end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) * max(1, len(series)) + 1.2))
    height = 0.8 / max(1, len(series))
    for i, (key, values) in enumerate(series.items()):
        ys = [j + i * height for j in range(len(labels))]
        shown = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
        bars = ax.barh(ys, shown, height=height, label=key)
        # bar_label writes past the bar's end on its own side, so a negative bar's value is not drawn over it.
        ax.bar_label(bars, ["n/a" if v is None else f"{v:.3g}" for v in values], padding=2, fontsize=8)
    ax.set_yticks([j + height * (len(series) - 1) / 2 for j in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    ax.margins(x=0.15)
    if len(series) > 1:
        ax.legend(fontsize=8)
    slug = title.lower().replace(", ", "-").replace(" ", "-").replace("/", "-")
    return figure_png(fig, out / f"bars-{slug}.png")


def stage_files(records: dict[str, dict[str, Any]], stage: str, key: str) -> dict[str, Any]:
    """The JSON files a stage's record names under `key` (`<stage>.outputs.models`), read, by model
    (and by form, for evaluate): the commands' own files, so the report cannot drift from them."""

    def read(entry: dict[str, Any]) -> dict[str, Any]:
        if key in entry:
            return json.loads(Path(entry[key]).read_text())
        return {name: read(inner) for name, inner in entry.items()}

    return read(records.get(stage, {}).get("outputs", {}).get("models", {}))


def form_rows(records: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str, list[int]]:
    """One row per model and form (PyTorch first for each model), with every number the report shows."""
    manifests = stage_files(records, "export", "manifest_path")
    evaluated = stage_files(records, "evaluate", "evaluation_path")
    timed = stage_files(records, "benchmark", "benchmark_path")
    tested = stage_files(records, "test", "metrics_path")
    primary = next((m["primary_metric"] for m in manifests.values()), "f1")
    sizes = sorted({s for b in timed.values() for s in b["batch_sizes"]})
    rows = []
    for name, manifest in manifests.items():
        bench = timed.get(name, {}).get("forms", {})
        rows.append({
            "model": name, "form": "pytorch", "mib": None, "parity": None, "passed": None,
            "metric": tested.get(name, {}).get(f"test_{primary}"),
            "latency": {s: bench.get("pytorch", {}).get("latency", {}).get(str(s), {}).get("median_ms") for s in sizes},
            "speedup": {s: 1.0 if bench else None for s in sizes},
        })  # fmt: skip
        for form, info in manifest["forms"].items():
            parity = info.get("parity", {})
            side = bench.get(form, {})
            rows.append({
                "model": name, "form": form, "mib": info["bytes"] / 2**20,
                "parity": parity.get("argmax_agreement"), "passed": parity.get("passed"),
                "metric": evaluated.get(name, {}).get(form, {}).get("metrics", {}).get(f"test_{primary}"),
                "latency": {s: side.get("latency", {}).get(str(s), {}).get("median_ms") for s in sizes},
                "speedup": {s: side.get("speedup", {}).get(str(s)) for s in sizes},
            })  # fmt: skip
    return rows, primary, sizes


def task_reports(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The test stage's own reports per model: seqeval's table, or the confusion matrix image."""
    found = []
    for name, test in records.get("test", {}).get("outputs", {}).get("models", {}).items():
        folder = Path(test["metrics_path"]).parent
        entry: dict[str, Any] = {"model": name, "seqeval": None, "image": None}
        seqeval = folder / "seqeval_report.json"
        if seqeval.is_file():
            table = json.loads(seqeval.read_text())
            entry["seqeval"] = [
                {"label": label, **values}
                for label, values in table.items()
                if isinstance(values, dict) and "f1-score" in values
            ]
        matrix = folder / "confusion_matrix.png"
        if matrix.is_file():
            entry["image"] = matrix
        found.append(entry)
    return found


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def template_env(out: Path) -> jinja2.Environment:
    """The templates beside this module, with the filters they use: `num` (a number, or – for
    none), `rel` (a path relative to the report folder), `inline` (a PNG as a data URI)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lightkit.cli.ship", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, fmt="{:.4f}": "–" if v is None else fmt.format(v)
    env.filters["rel"] = lambda p: Path(os.path.relpath(p, out)).as_posix()
    env.filters["inline"] = data_uri
    return env


def draw_charts(rows: list[dict[str, Any]], primary: str, sizes: list[int], out: Path) -> list[Path]:
    """Bar charts of the forms table: size, parity, the metric, and latency per batch size."""
    if not rows:
        return []
    labels = [f"{r['model']} / {r['form']}" for r in rows]
    onnx = [(label, r) for label, r in zip(labels, rows) if r["form"] != "pytorch"]
    forms = [label for label, _ in onnx]
    charts = [
        plot_bars("size", forms, {"MiB": [r["mib"] for _, r in onnx]}, "MiB", out),
        plot_bars(
            "parity",
            forms,
            {"argmax agreement": [r["parity"] for _, r in onnx]},
            "argmax agreement with PyTorch (share of positions)",
            out,
        ),  # fmt: skip
        plot_bars(f"test {primary}", labels, {primary: [r["metric"] for r in rows]}, primary, out),
    ]
    for size in sizes:  # one chart per batch size: their scales differ a hundredfold
        latency = {"median": [r["latency"][size] for r in rows]}
        charts.append(plot_bars(f"latency, batch {size}", labels, latency, "ms per call (median)", out))
    return charts


def write_report(settings: ShipSettings, records: dict[str, dict[str, Any]]) -> tuple[Path, Path]:
    out = settings.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows, primary, sizes = form_rows(records)
    curves = []
    for stage in MODEL_STAGES:
        outputs = records.get(stage, {}).get("outputs")
        png = outputs and plot_curves(stage, read_curves(outputs.get("metrics_csv_path")), primary, out)
        if png:
            curves.append({"model": stage, "image": png})
    timed = stage_files(records, "benchmark", "benchmark_path")
    context = {
        **page_context(
            settings,
            records,
            machine=next(iter(timed.values()), {}).get("machine"),
            versions=versions("transformers", "onnx", "onnxruntime"),
        ),  # fmt: skip
        "primary": primary,
        "sizes": sizes,
        "rows": rows,
        "curves": curves,
        "charts": draw_charts(rows, primary, sizes, out),
        "reports": task_reports(records),
    }
    summary = {
        "primary_metric": primary,
        "batch_sizes": sizes,
        "rows": [
            {
                **r,
                "latency": {str(k): v for k, v in r["latency"].items()},
                "speedup": {str(k): v for k, v in r["speedup"].items()},
            }
            for r in rows
        ],  # fmt: skip
    }
    what = (
        f"lightkit ship {settings.config_file.as_posix()}: every trained model and exported form, its test "
        f"{primary}, size and latency against PyTorch eager"
    )
    return write_pages(out, "report", context, "ship", what, summary)


def page_context(
    settings: ShipSettings, records: dict[str, dict[str, Any]], machine: dict[str, Any] | None, versions: dict
) -> dict[str, Any]:
    """What every ship report shows: the run, its config, the stages' times, machine and versions
    (`machine`: where the measurements ran, when a record says; else this machine)."""
    stage_times = [{"stage": s, "wall_s": records[s].get("wall_s")} for s in settings.stages if s in records]
    return {
        "title": f"lightkit ship: {settings.config_file.name}",
        "run_dir": str(settings.run_dir),
        "config_file": str(settings.config_file),
        "config": (settings.run_dir / "config.yaml").read_text(),
        "stages": stage_times,
        "total_s": sum(s["wall_s"] or 0 for s in stage_times),
        "machine": machine or this_machine(),
        "versions": versions,
    }


def write_pages(
    out: Path, template: str, context: dict[str, Any], kind: str, what: str, summary: dict[str, Any]
) -> tuple[Path, Path]:
    """`summary.json` (the results header, then `summary`, the stages' times, machine and
    versions) and `<template>.{md,html}.j2` rendered with `context` as report.md and report.html."""
    m = context["machine"]
    header = {
        "kind": kind,
        "what": what,
        "device": f"{m['processor']}, {m['cpu_count']} CPUs" + (f", {m['cuda']}" if m["cuda"] else ""),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "command": f"lightkit ship --config {Path(context['config_file']).as_posix()}",
    }
    tail = {"stages_wall_s": {s["stage"]: s["wall_s"] for s in context["stages"]}, "machine": m,
            "versions": context["versions"]}  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps({**header, **summary, **tail}, indent=2) + "\n")
    env = template_env(out)
    markdown, html = out / "report.md", out / "report.html"
    atomic_write_text(markdown, env.get_template(f"{template}.md.j2").render(**context))
    atomic_write_text(html, env.get_template(f"{template}.html.j2").render(**context))
    return markdown, html
