"""The install layout: tasks/, callbacks/ and export/ import as lightkit.* from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def run_outside_repo(code: str, tmp_path: Path) -> str:
    # From an unrelated folder, so only the installed package (editable here) can be imported.
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    return out.stdout


def test_subpackages_import_through_the_installed_package(tmp_path: Path) -> None:
    out = run_outside_repo(
        "import importlib.util, lightkit.tasks, lightkit.callbacks, lightkit.export, lightkit.data\n"
        "print(lightkit.tasks.__file__); print(lightkit.callbacks.__file__); print(lightkit.export.__file__)\n"
        "print(importlib.util.find_spec('tasks'), importlib.util.find_spec('export'), "
        "importlib.util.find_spec('callbacks'))\n"
        "from lightkit.tasks import TokenClassificationTask; from lightkit.callbacks import LRWarmup\n",
        tmp_path,
    )
    tasks, callbacks, export, generic = out.splitlines()
    assert Path(tasks) == ROOT / "tasks" / "__init__.py"
    assert Path(callbacks) == ROOT / "callbacks" / "__init__.py"
    assert Path(export) == ROOT / "export" / "__init__.py"
    assert generic == "None None None", "no generic top-level tasks/export/callbacks module may be installed"


def test_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("lightkit")
    out = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out.stdout


def test_wheel_maps_folders_into_the_lightkit_namespace(tmp_path: Path) -> None:
    # `pip install .` installs what the wheel holds: lightkit/tasks/..., never a top-level tasks/.
    # Hermetic: the venv's own (locked) setuptools builds it, and --no-index fetches nothing.
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lightkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "lightkit/cli/main.py",
        "lightkit/tasks/token_classification.py",
        "lightkit/callbacks/warmup.py",
        "lightkit/export/builder/exporter.py",
        "lightkit/export/runtime/sessions.py",
        "lightkit/cli/ship/templates/report.md.j2",
        "lightkit/training/task.py",
        "lightkit/rewards/text.py",
        "lightkit/data/conll.py",
    ):
        assert module in names
    assert not [n for n in names if n.split("/")[0] in ("tasks", "callbacks", "export", "tests", "configs")]
