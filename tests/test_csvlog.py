"""A run's CSV log over Lightning's versions: a resumed fit's rows join the killed run's."""

from __future__ import annotations

from pathlib import Path

from lightkit.io.csvlog import logged_rows


def write_version(folder: Path, n: int, steps: list[int], tag: str) -> None:
    path = folder / f"version_{n}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text("epoch,loss,step\n" + "".join(f"0,{tag},{s}\n" for s in steps))


def test_a_resumed_fit_replaces_the_killed_runs_rows_from_its_first_step(tmp_path: Path) -> None:
    write_version(tmp_path, 0, [0, 1, 2, 3, 4, 5, 6], "killed")
    write_version(tmp_path, 1, [5, 6, 7, 8], "resumed")  # resumed from the checkpoint of step 5
    rows = logged_rows(tmp_path)
    assert [(int(r["step"]), r["loss"]) for r in rows] == [
        (0, "killed"), (1, "killed"), (2, "killed"), (3, "killed"), (4, "killed"),
        (5, "resumed"), (6, "resumed"), (7, "resumed"), (8, "resumed"),
    ]  # fmt: skip


def test_a_fit_started_over_keeps_only_its_own_rows_and_versions_sort_by_number(tmp_path: Path) -> None:
    for n in range(10):
        write_version(tmp_path, n, [0, 1, 2], f"run {n}")
    write_version(tmp_path, 10, [0, 1], "run 10")  # after version_9, though "10" < "9" as text
    rows = logged_rows(tmp_path)
    assert [r["loss"] for r in rows] == ["run 10", "run 10"]


def test_no_log_is_no_rows(tmp_path: Path) -> None:
    assert logged_rows(tmp_path) == []
    write_version(tmp_path, 0, [], "empty")
    assert logged_rows(tmp_path) == []
