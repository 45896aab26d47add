"""`lightkit ship` end to end on a tiny NER config: every stage, the report, resume, refusal, force."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import CHROMIUM, ROOT, Table, open_in_chromium, stage_records

from lightkit.cli.main import main
from lightkit.cli.ship.report import read_curves
from lightkit.cli.ship.settings import parse
from lightkit.io.errors import InputError

TINY_SHIP = ROOT / "tests" / "conf" / "ner_ship.yaml"
ALL = ["fit", "distill", "distill-qat", "qat", "test", "export", "evaluate", "benchmark", "report"]


def ship_config(folder: Path, **ship: object) -> Path:
    """The tiny ship config with its run folder in `folder` and `ship` keys replaced."""
    config = yaml.safe_load(TINY_SHIP.read_text())
    config["ship"].update({"run_dir": str(folder / "run"), **ship})
    path = folder / "ship.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One whole pipeline (teacher, KD student, KD+QAT student; export, evaluate, benchmark, report)."""
    folder = tmp_path_factory.mktemp("ship")
    main(["ship", "--config", str(ship_config(folder))])
    return folder


@pytest.mark.slow
def test_every_stage_writes_its_outputs(shipped: Path) -> None:
    run = shipped / "run"
    done = stage_records(run)
    assert sorted(done) == sorted(s for s in ALL if s != "report")
    for stage in ("fit", "distill", "distill-qat", "qat"):
        ckpt = Path(done[stage]["outputs"]["ckpt_path"])
        assert ckpt.is_file() and ckpt.is_relative_to(run / stage)  # the config's dirpath moved into the run
        assert ckpt.name == "best.ckpt"  # the monitored checkpoint, not LastCheckpoint's
        assert Path(done[stage]["outputs"]["metrics_csv_path"]).is_file()
        assert list((run / stage / "tensorboard").glob("version_0/events.out.tfevents.*"))  # the default loggers
    assert not Path("/tmp/lightkit-tests/moved-by-ship").exists()
    for name in ("fit", "distill", "distill-qat", "qat"):
        assert (run / "test" / name / "seqeval_report.json").is_file()
        assert (run / "export" / name / "manifest.json").is_file()
        assert (run / "benchmark" / name / "benchmark.json").is_file()
        for form in json.loads((run / "export" / name / "manifest.json").read_text())["forms"]:
            assert (run / "evaluate" / name / form / "evaluation.json").is_file()
    for name in ("report.md", "report.html", "curves-fit.png", "bars-latency-batch-1.png", "bars-size.png",
                 "bars-parity.png"):  # fmt: skip
        assert (run / "report" / name).stat().st_size > 0


@pytest.mark.slow
def test_kd_into_qat_student_exports_its_qat_form_through_the_gate(shipped: Path) -> None:
    run = shipped / "run"
    ckpt = json.loads((run / "distill-qat" / "stage.json").read_text())["outputs"]["ckpt_path"]
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(".qat." in k or "fake_quant" in k for k in state)  # the student trained fake-quantised
    assert not any(k.startswith("teacher") for k in state)  # the teacher stays out of the checkpoint
    manifest = json.loads((run / "export" / "distill-qat" / "manifest.json").read_text())
    assert set(manifest["forms"]) == {"fp32", "int8-cpu", "qat"}
    assert manifest["forms"]["qat"]["parity"]["passed"]
    assert manifest["task"] == "TokenClassificationDistillation"
    plain = json.loads((run / "export" / "distill" / "manifest.json").read_text())
    assert "qat" not in plain["forms"]
    qat = json.loads((run / "export" / "qat" / "manifest.json").read_text())  # plain QAT of the fit model
    assert qat["forms"]["qat"]["parity"]["passed"] and qat["task"] == "TokenClassificationTask"
    config = yaml.safe_load((run / "qat" / "config.yaml").read_text())
    assert config["model"]["init_args"]["pretrained"] == str(run / "fit" / "hf_model")


@pytest.mark.slow
def test_report_numbers_equal_the_stage_files(shipped: Path) -> None:
    run = shipped / "run"
    html = (run / "report" / "report.html").read_text()
    table = Table()
    table.feed(html)
    header, *rows = table.rows
    assert header[:6] == ["model", "form", "size MiB", "argmax agreement", "gate", "test f1"]
    by_key = {(r[0], r[1]): dict(zip(header, r)) for r in rows}
    markdown = (run / "report" / "report.md").read_text()
    checked = 0
    for name in ("fit", "distill", "distill-qat", "qat"):
        manifest = json.loads((run / "export" / name / "manifest.json").read_text())
        bench = json.loads((run / "benchmark" / name / "benchmark.json").read_text())
        tested = json.loads((run / "test" / name / "metrics.json").read_text())
        assert by_key[(name, "pytorch")]["test f1"] == f"{tested['test_f1']:.4f}"
        for form, info in manifest["forms"].items():
            row = by_key[(name, form)]
            evaluation = json.loads((run / "evaluate" / name / form / "evaluation.json").read_text())
            assert row["size MiB"] == f"{info['bytes'] / 2**20:.1f}"
            assert row["argmax agreement"] == f"{info['parity']['argmax_agreement']:.4f}"
            assert row["gate"] == "passed"
            assert row["test f1"] == f"{evaluation['metrics']['test_f1']:.4f}"
            for size in (1, 4):
                assert row[f"ms, batch {size}"] == f"{bench['forms'][form]['latency'][str(size)]['median_ms']:.2f}"
                assert row[f"speed-up, batch {size}"] == f"{bench['forms'][form]['speedup'][str(size)]:.2f}x"
            line = f"| {name} | {form} | {row['size MiB']} | {row['argmax agreement']} | passed | {row['test f1']} |"
            assert line in markdown
            checked += 1
    assert checked == 10
    seqeval = json.loads((run / "test" / "fit" / "seqeval_report.json").read_text())
    assert f"| PER | {seqeval['PER']['precision']:.4f} |" in markdown
    for stage, record in stage_records(run).items():
        assert f"<tr><td>{stage}</td><td>{record['wall_s']:.1f}</td></tr>" in html


@pytest.mark.slow
def test_a_rerun_skips_every_finished_stage(shipped: Path, capsys: pytest.CaptureFixture) -> None:
    before = stage_records(shipped / "run")
    main(["ship", "--config", str(shipped / "ship.yaml")])
    out = capsys.readouterr().out
    assert all(f"lightkit ship: {stage}: done before with the same inputs, skipped" in out for stage in before)
    assert stage_records(shipped / "run") == before


@pytest.mark.slow
def test_changed_settings_are_refused_then_rerun_from_that_stage_with_force(shipped: Path) -> None:
    config = ship_config(shipped, benchmark={"batch_sizes": [1, 4], "repeats": 2, "warmup": 0})
    before = stage_records(shipped / "run")
    with pytest.raises(InputError, match=r"settings of stage 'benchmark' changed .* --force"):
        main(["ship", "--config", str(config)])
    assert stage_records(shipped / "run") == before  # nothing touched
    main(["ship", "--config", str(config), "--force"])
    after = stage_records(shipped / "run")
    assert after["benchmark"]["fingerprint"] != before["benchmark"]["fingerprint"]
    assert json.loads((shipped / "run" / "benchmark" / "fit" / "benchmark.json").read_text())["repeats"] == 2
    assert {s: after[s] for s in after if s != "benchmark"} == {s: before[s] for s in before if s != "benchmark"}


@pytest.mark.slow
def test_from_reruns_that_stage_and_the_ones_after_it_only(shipped: Path) -> None:
    before = stage_records(shipped / "run")
    main(["ship", "--config", str(shipped / "ship.yaml"), "--from", "benchmark"])
    after = stage_records(shipped / "run")
    assert after["benchmark"]["wall_s"] > 0 and after["benchmark"] is not before["benchmark"]
    assert (shipped / "run" / "benchmark" / "stage.json").stat().st_mtime > (shipped / "run" / "evaluate" /
                                                                           "stage.json").stat().st_mtime  # fmt: skip
    assert {s: after[s] for s in after if s != "benchmark"} == {s: before[s] for s in before if s != "benchmark"}


@pytest.mark.slow
def test_a_killed_run_resumes_at_the_stage_it_was_in(tmp_path: Path) -> None:
    config = ship_config(tmp_path, stages=["fit", "test", "export", "report"])
    lightkit = Path(sys.executable).with_name("lightkit")
    process = subprocess.Popen([str(lightkit), "ship", "--config", str(config)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    export = tmp_path / "run" / "export"
    deadline = time.monotonic() + 300
    while not export.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # mid-export: no chance to clean up
    process.wait()
    first = stage_records(tmp_path / "run")
    assert sorted(first) == ["fit", "test"]  # export started, never finished
    (export / "half-written").mkdir(parents=True, exist_ok=True)
    main(["ship", "--config", str(config)])
    second = stage_records(tmp_path / "run")
    assert sorted(second) == ["export", "fit", "test"]
    assert {s: second[s] for s in first} == first  # fit and test were not run again
    assert not (tmp_path / "run" / "export" / "half-written").exists()  # the killed stage's leftovers are gone
    assert (tmp_path / "run" / "report" / "report.html").is_file()


@pytest.mark.slow
def test_a_fit_killed_part_way_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    config = yaml.safe_load(ship_config(tmp_path, stages=["fit", "report"]).read_text())
    config["trainer"]["max_epochs"] = 12  # long enough to be killed in the middle
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    lightkit = Path(sys.executable).with_name("lightkit")
    process = subprocess.Popen([str(lightkit), "ship", "--config", str(path)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    last = tmp_path / "run" / "fit" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert stage_records(tmp_path / "run") == {}
    killed_at = torch.load(last, weights_only=True)["global_step"]
    out = subprocess.run([str(lightkit), "ship", "--config", str(path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lightkit ship: fit: resuming from its last.ckpt (same config)" in out.stdout
    fit = stage_records(tmp_path / "run")["fit"]["outputs"]
    final = torch.load(tmp_path / "run" / "fit" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] > killed_at and final["epoch"] == 11
    assert len(list((tmp_path / "run" / "fit" / "lightning_logs").glob("version_*/metrics.csv"))) == 2
    curves = read_curves(fit["metrics_csv_path"])  # both runs' logs, in step order
    steps = [step for step, _ in curves["val_f1"]]
    assert steps == sorted(steps) and len(steps) == 12


@pytest.mark.slow
def test_a_finished_training_stage_run_again_trains_afresh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A finished stage run again (`--from`, `--force`, or new inputs that leave its config text
    as it was, as a new reward model leaves PPO's) still holds a last.ckpt of the same config:
    that must not pass for a kill part-way, or the rerun returns the old model without training."""
    config = ship_config(tmp_path, stages=["fit", "distill", "report"])
    main(["ship", "--config", str(config)])
    student = tmp_path / "run" / "distill"
    first = stage_records(tmp_path / "run")["distill"]["outputs"]
    capsys.readouterr()
    main(["ship", "--config", str(config), "--from", "distill"])
    out = capsys.readouterr().out
    assert "lightkit ship: distill: running" in out and "distill: resuming" not in out
    assert [p.name for p in student.glob("tensorboard/version_*")] == ["version_0"]  # one fresh run, not a resumed one
    again = stage_records(tmp_path / "run")["distill"]["outputs"]
    assert (again["steps"], again["epochs"]) == (first["steps"], first["epochs"])


def test_a_failing_stage_stops_with_its_error_and_keeps_the_rest(tmp_path: Path) -> None:
    config = ship_config(tmp_path, stages=["fit", "export"], export={"forms": ["fp33"]})
    with pytest.raises(InputError, match=r"ship stage 'export': forms: unknown \['fp33'\]"):
        main(["ship", "--config", str(config)])
    assert sorted(stage_records(tmp_path / "run")) == ["fit"]


@pytest.mark.parametrize(
    ("ship", "message"),
    [
        ({"stages": ["fit", "destill"]}, r"ship.stages\[1\]: unknown stage 'destill'; expected one of"),
        ({"stages": ["fit", "evaluate"]}, r"stage 'evaluate' reads the output of 'export', which is not listed"),
        ({"stages": ["test"]}, r"stage 'test' reads the output of 'fit'"),
        ({"benchmark": {"repeat": 3}}, r"ship.benchmark: unknown keys \['repeat'\]"),
        ({"run_dir": ""}, r"ship.run_dir: expected the run folder's path"),
        ({"exports": {}}, r"ship: unknown keys \['exports'\]"),
    ],
)
def test_bad_ship_sections_name_the_field(tmp_path: Path, ship: dict, message: str) -> None:
    config = ship_config(tmp_path, **ship)
    with pytest.raises(InputError, match=message):
        main(["ship", "--config", str(config)])
    assert not (tmp_path / "run").exists()


def test_a_missing_input_file_stops_the_fit_stage_with_its_name(tmp_path: Path) -> None:
    config = yaml.safe_load(ship_config(tmp_path).read_text())
    config["data"]["init_args"]["train_file"] = str(tmp_path / "nowhere.conll")
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises((InputError, FileNotFoundError), match="nowhere.conll"):
        main(["ship", "--config", str(path)])
    assert stage_records(tmp_path / "run") == {}


def test_stages_run_in_pipeline_order_and_the_rest_is_a_plain_config() -> None:
    config = yaml.safe_load(TINY_SHIP.read_text())
    config["ship"]["stages"] = list(reversed(config["ship"]["stages"]))
    settings = parse(config, TINY_SHIP)
    assert settings.stages == ALL
    assert "ship" not in settings.base


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_html_report_renders_in_a_browser_with_no_broken_image(shipped: Path) -> None:
    page = shipped / "run" / "report" / "report.html"
    rendered = open_in_chromium(page, shipped)
    assert rendered.images == page.read_text().count("<img ") >= 9  # five bar charts and a curve per trained model
    assert rendered.broken == 0
    assert rendered.overflow <= 0  # its tables fit, or scroll inside the page: the page never scrolls sideways
    assert rendered.shot.stat().st_size > 20_000  # a rendered page, not a blank one


@pytest.mark.slow
def test_benchmark_refuses_a_batch_larger_than_the_test_batch(shipped: Path, tmp_path: Path) -> None:
    fit = json.loads((shipped / "run" / "fit" / "stage.json").read_text())["outputs"]
    with pytest.raises(InputError, match=r"batch_sizes \[128\] exceed the test batch of \d+ \(data.eval_batch_size\)"):
        main(["benchmark", "--config", fit["config_path"], "--ckpt_path", fit["ckpt_path"], "--batch_sizes", "[128]",
              "--artifact", str(shipped / "run" / "export" / "fit"), "--output", str(tmp_path)])  # fmt: skip
    assert not (tmp_path / "benchmark.json").exists()
