"""MkDocs hooks: the performance page's tables are generated from benchmarks/results/*.json at
build time, never typed by hand; the home page is the repository's README.md and the changelog
page its CHANGELOG.md, so each text lives in one file.

A page asks for results with a marker line, `<!-- results: train-ner-cpu*.json -->` (a glob under
benchmarks/results/); each matching file is rendered by benchmarks/to_markdown.py, which also
writes the `.md` beside a result file, and a comparison gets its chart from benchmarks/charts.py.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- results: (\S+) -->$", re.M)
INDEX = "<!-- results-index -->"


@functools.cache
def _script(name: str) -> Any:
    """A module of benchmarks/ (to_markdown, charts), loaded once per build (they are scripts, not
    package modules)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(pattern: str) -> str:
    render, chart = _script("to_markdown").render, _script("charts").chart
    blocks = []
    for path in sorted(RESULTS.glob(pattern)):
        result = json.loads(path.read_text())
        text = render(result)
        if text is not None:
            svg = chart(result)
            blocks.append(f"**`{path.name}`**\n\n" + (f"<figure>{svg}</figure>\n\n" if svg else "") + text)
    if not blocks:
        raise ValueError(f"docs: no renderable result matches benchmarks/results/{pattern}")
    return "\n\n".join(blocks)


def index() -> str:
    """Every result file with what it measured, where and when (the ones without a table too)."""
    lines = ["| file | what | device | date |", "|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        what = str(data.get("what", "an export manifest" if "forms" in data else "")).replace("|", "/")
        when = data.get("date", data.get("created", ""))
        lines.append(f"| `{path.name}` | {what} | {data.get('device', '')} | {when} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = MARKER.sub(lambda m: results(m.group(1)), markdown)
    if INDEX in markdown:
        markdown = markdown.replace(INDEX, index())
    if page.file.src_uri == "changelog.md":
        markdown = (ROOT / "CHANGELOG.md").read_text()
    if page.file.src_uri == "index.md":  # README links point into docs/ from the repository root
        readme = (ROOT / "README.md").read_text()
        markdown = readme.replace("](docs/", "](").replace("](CHANGELOG.md)", "](changelog.md)")
    return markdown
