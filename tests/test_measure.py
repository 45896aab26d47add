"""lightkit.io.measure: the one definition of what a benchmark figure means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightkit.io.measure import KERNEL_FEATURES, interleaved, latency_summary, provenance, spread, versions, write_json


def test_percentiles_are_numpy_linear_interpolation() -> None:
    times = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    assert latency_summary(times) == {"median_ms": 3.5, "p90_ms": pytest.approx(float(np.percentile(times, 90)))}
    assert latency_summary(times)["p90_ms"] == 7.5  # between 5 and 10, not the nearest rank
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_interleaved_rounds_alternate_the_order_and_warm_each_block() -> None:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved(fns, warmup=1, repeats=4, rounds=2)
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    # Round 1 in order, round 2 reversed; each block is one warm-up call then two timed ones.
    assert calls == ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["c"] * 3 + ["b"] * 3 + ["a"] * 3


def test_a_result_names_machine_and_versions_and_is_written_whole(tmp_path: Path) -> None:
    header = provenance("numpy", "not_a_real_package")
    assert {"device", "machine", "versions", "date"} <= set(header)
    assert header["versions"]["numpy"] == np.__version__ and "not_a_real_package" not in header["versions"]
    assert set(versions()) == {"lightkit", "python", "torch"}
    # The kernels a CPU runs decide the rounding of what it trains: its vector features are named.
    import torch

    assert header["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    features = header["machine"]["cpu_features"]
    assert set(features) <= set(KERNEL_FEATURES)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert ("avx2" in features) == (" avx2 " in flags.replace("\n", " "))
    path = tmp_path / "out" / "result.json"
    write_json(path, {"x": 1})
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})  # not serialisable: the earlier file stays whole
    assert json.loads(path.read_text()) == {"x": 1} and [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_a_result_gets_the_mode_a_plain_write_would(tmp_path: Path) -> None:
    write_json(tmp_path / "result.json", {"x": 1})
    (tmp_path / "plain.json").write_text("{}")
    assert (tmp_path / "result.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode


def test_an_atomic_folder_gets_the_mode_a_plain_mkdir_would(tmp_path: Path) -> None:
    from lightkit.io.atomic import atomic_dir

    with atomic_dir(tmp_path / "model") as folder:
        (folder / "weights").write_text("w")
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "model").stat().st_mode == (tmp_path / "plain").stat().st_mode
