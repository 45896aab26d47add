"""Print pip constraints that hold every direct dependency of pyproject.toml at its floor.

    python .ci/floors.py [extra ...] > floors.txt    # then: pip install -e ".[test]" -c floors.txt

`make test-min` installs these and runs the suite, so a floor in pyproject.toml is a version the
suite has passed on, not a guess. Requirements without a `>=` floor are left to the resolver.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"])
for extra in sys.argv[1:]:
    requirements += project["optional-dependencies"][extra]
for line in requirements:
    req = Requirement(line)
    floors = [s.version for s in req.specifier if s.operator == ">="]
    if floors:
        marker = f"; {req.marker}" if req.marker else ""
        print(f"{req.name}=={floors[0]}{marker}")
