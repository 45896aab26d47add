"""The import-linter contracts (pyproject.toml, checked by `make lint`) cover every core module:
one added later is not exempt from the layering just because nobody listed it."""

from __future__ import annotations

import tomllib
from helpers import ROOT


def test_every_core_module_is_a_source_of_the_core_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = next(c for c in config["contracts"] if c["type"] == "forbidden")
    listed = set(core["source_modules"])
    on_disk = {f"lightkit.{p.stem}" for p in (ROOT / "lightkit").glob("*.py") if p.stem not in ("__init__", "main")}
    assert on_disk - listed == set(), "add these core modules to the forbidden contract's source_modules"
    assert "lightkit.data" in listed  # the package, with every module under it
    upper = {"lightkit.main", "lightkit.ship", "lightkit.export", "lightkit.tasks", "lightkit.callbacks"}
    assert set(core["forbidden_modules"]) == upper
