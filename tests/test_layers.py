"""The layout's two hand-kept lists stay true to the folders: setuptools installs only the packages
pyproject.toml names (a package left off is missing from the wheel, though an editable install
still finds it), and the layers contracts (checked by `make lint`) are exhaustive over their
containers, so a new package cannot sit outside the layering."""

from __future__ import annotations

import tomllib
from helpers import ROOT

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]


def test_every_package_folder_is_installed() -> None:
    mapping = CONFIG["setuptools"]["package-dir"]
    on_disk = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            full = ".".join((name, *parts))
            if not any(
                full.startswith(f"{other}.") or full == other
                for other in mapping
                if other != name and len(other) > len(name)
            ):
                on_disk.add(full)
    assert on_disk == set(CONFIG["setuptools"]["packages"])


def test_the_layers_contracts_are_exhaustive_over_the_packages() -> None:
    contracts = CONFIG["importlinter"]["contracts"]
    assert all(c["type"] == "layers" and c["exhaustive"] for c in contracts)
    assert {c for contract in contracts for c in contract["containers"]} == {
        "lightkit",
        "lightkit.cli",
        "lightkit.export",
    }
    top = {part.strip() for layer in contracts[0]["layers"] for part in layer.split(":")}
    assert {"cli", "export", "tasks", "callbacks"} <= top
