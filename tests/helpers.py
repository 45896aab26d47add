"""What tests share besides fixtures: paths, tiny-run arguments and builders. Test modules import
these from here (never from conftest.py or from one another); conftest.py holds the fixtures."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TINY_NER = ROOT / "tests" / "conf" / "ner.yaml"
TINY_CLM = ROOT / "tests" / "conf" / "clm.yaml"
# The suite's temp Hugging Face cache (conftest.py sets HF_HUB_CACHE before anything imports
# transformers); tests put Hub-layout fakes under HUB_CACHE / "hub".
HUB_CACHE = Path(os.environ["HF_HUB_CACHE"]).parent

# ChatML, as SmolLM2 and Qwen write it.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_bpe(path: Path) -> Path:
    """The tests' byte-level BPE (300 tokens), trained on the LM fixture corpus into `path`."""
    from lightkit.data.causal_lm import train_bpe_tokenizer
    from lightkit.data.language_modeling import read_documents

    train_bpe_tokenizer(read_documents(DATA / "lm" / "corpus.txt"), 300, path)
    return path


def stage_records(run: Path) -> dict[str, dict]:
    """Each stage's `stage.json` in a `lightkit ship` run folder, by stage."""
    return {p.parent.name: json.loads(p.read_text()) for p in run.glob("*/stage.json")}


def series(root: Path, key: str) -> list[float]:
    """The values a CSV-logged fit recorded for `key`, in order (`<root>/lightning_logs/version_0`)."""
    rows = csv.DictReader((root / "lightning_logs" / "version_0" / "metrics.csv").open())
    return [float(r[key]) for r in rows if r.get(key)]


def make_chat_tokenizer(path: Path, template: bool = True) -> Path:
    """That BPE with ChatML's special tokens, and its template unless `template` is false."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(make_bpe(path))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if template:
        tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path


def lora_args(base: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """CLI arguments of a LoRA fit of `tiny_lm` into `out`."""
    return [
        "--config", str(TINY_CLM), "--data.tokenizer", str(base["bpe"]),
        "--model.init_args.model_config", "null", "--model.init_args.pretrained", str(base["hf"]),
        "--model.init_args.peft", "{r: 4, alpha: 8, dropout: 0.0}",
        "--trainer.default_root_dir", str(out), "--model.init_args.save_dir", str(out / "hf"), *extra,
    ]  # fmt: skip


TINY_GQA_TIED = (
    "{model_type: llama, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, "
    "intermediate_size: 64, max_position_embeddings: 64, tie_word_embeddings: true}"
)


def ppo(bpe: Path, root: Path, *overrides: str) -> None:
    """A fit of the tiny PPO config (tests/conf/ppo.yaml) with the tests' BPE, under `root`."""
    from lightkit.cli.main import main

    main(["fit", "--config", str(ROOT / "tests" / "conf" / "ppo.yaml"), "--data.tokenizer", str(bpe),
          "--trainer.default_root_dir", str(root), *overrides])  # fmt: skip


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
IMAGE_PROBE = """<script>window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const page = document.documentElement;
  document.title = `images ${document.images.length} broken ${broken} overflow ${page.scrollWidth - page.clientWidth}`;
});</script>"""


class Rendered(NamedTuple):
    images: int  # on the page
    broken: int  # images that failed to load
    shot: Path  # a screenshot, 1200 px wide
    overflow: int  # pixels the page is wider than the 1200-pixel window (0: no sideways scrolling)


def open_in_chromium(page: Path, folder: Path) -> Rendered:
    """Load a report page in headless Chromium, 1200 pixels wide, as a reader's browser would."""
    probe = folder / "probe.html"
    probe.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    shot = folder / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                  "--window-size=1200,1600"]  # fmt: skip
        dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
        subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    found = re.search(r"<title>images (\d+) broken (\d+) overflow (-?\d+)</title>", dom.stdout)
    assert found, f"Chromium did not run the page's probe: {dom.stderr[-2000:]}"
    return Rendered(int(found[1]), int(found[2]), shot, int(found[3]))


class Table(HTMLParser):
    """The cells of the HTML table with id `table_id`, row by row."""

    def __init__(self, table_id: str = "forms") -> None:
        super().__init__()
        self.table_id = table_id
        self.rows: list[list[str]] = []
        self.inside = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.inside = dict(attrs).get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
