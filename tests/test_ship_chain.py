"""`lightkit ship` of a decoder (`pipeline: decoder`): SFT, on-policy pairs, a reward model, DPO,
PPO and GRPO from the SFT model, the held-out evaluation, export, generation and the report, end
to end on tiny models; and how each stage's config is made from its own file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import CHROMIUM, ROOT, Table, open_in_chromium, stage_records

from lightkit.cli.main import main
from lightkit.cli.ship import chain
from lightkit.cli.ship import stages as S
from lightkit.cli.ship.settings import parse
from lightkit.io.errors import InputError

CHAIN = ROOT / "tests" / "conf" / "chain_ship.yaml"
STAGES = ["fit", "pairs", "reward", "dpo", "ppo", "grpo", "evaluate", "export", "generate"]


def chain_config(folder: Path, tiny_lm: dict, **ship: object) -> Path:
    """The tiny chain with its run folder in `folder`, its SFT starting from the tiny pretrained
    Llama, and `ship` keys replaced."""
    config = yaml.safe_load(CHAIN.read_text())
    config["model"]["init_args"]["pretrained"] = str(tiny_lm["hf"])
    config["data"]["init_args"]["tokenizer"] = str(tiny_lm["hf"])
    config["ship"]["reward"]["data"]["tokenizer"] = str(tiny_lm["bpe"])
    config["ship"].update({"run_dir": str(folder / "run"), **ship})
    path = folder / "chain.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def context(tmp_path: Path, tiny_lm: dict, stages: list[str] | None = None) -> S.Context:
    """A Context as the chain has it once fit, pairs and reward finished (their outputs made up)."""
    config = yaml.safe_load(chain_config(tmp_path, tiny_lm).read_text())
    if stages is not None:
        config["ship"]["stages"] = stages
    settings = parse(config, CHAIN)
    run = settings.run_dir
    made = {
        "fit": {"hf_model_path": str(run / "fit" / "hf_model"), "config_path": str(run / "fit" / "config.yaml")},
        "pairs": {
            k: str(run / "pairs" / f"{k}.jsonl")
            for k in ("dpo_path", "every_path", "every_val_path", "val_prompts_path")
        },  # fmt: skip
        "reward": {"hf_model_path": str(run / "reward" / "hf_model")},
    }
    return S.Context(settings, cli=lambda args: None, records={k: {"outputs": v} for k, v in made.items()
                                                               if k in settings.stages})  # fmt: skip


def test_each_method_starts_from_the_sft_model_with_the_earlier_stages_outputs(tmp_path: Path, tiny_lm: dict) -> None:
    ctx = context(tmp_path, tiny_lm)
    run, sft = ctx.run_dir, str(ctx.run_dir / "fit" / "hf_model")
    dpo, ppo, grpo, reward = (chain.policy_config(ctx, s) for s in ("dpo", "ppo", "grpo", "reward"))
    for stage, config in (("dpo", dpo), ("ppo", ppo), ("grpo", grpo)):
        assert config["model"]["init_args"]["pretrained"] == sft  # the reference is the SFT model
        assert config["data"]["init_args"]["tokenizer"] == sft
        assert "model_config" not in config["model"]["init_args"]
        assert config["trainer"]["default_root_dir"] == str(run / stage)
        assert config["model"]["init_args"]["save_dir"] == str(run / stage / "hf_model")
    assert dpo["data"]["init_args"]["train_file"] == str(run / "pairs" / "dpo_path.jsonl")
    assert dpo["data"]["init_args"]["prompt_template"] == "{prompt}"  # the pairs hold the formatted user turn
    metrics = next(c for c in dpo["trainer"]["callbacks"] if c["class_path"] == "GenerationMetrics")
    assert metrics["init_args"]["prompts"] == str(run / "pairs" / "val_prompts_path.jsonl")
    assert ppo["model"]["init_args"]["reward_model"] == str(run / "reward" / "hf_model")
    assert ppo["model"]["init_args"]["ppo_epochs"] == 1  # the section's settings over the file's
    # GRPO reads the SFT data's class: the same file, carved the same way (the test split unseen).
    sft_data = ctx.settings.base["data"]["init_args"]
    for key in ("train_file", "holdout", "split_seed", "prompt_template"):
        assert grpo["data"]["init_args"][key] == sft_data[key]
    assert reward["data"]["init_args"]["train_file"] == str(run / "pairs" / "every_path.jsonl")
    assert reward["data"]["init_args"]["val_file"] == str(run / "pairs" / "every_val_path.jsonl")


def test_ppo_against_a_reward_model_needs_the_reward_stage(tmp_path: Path, tiny_lm: dict) -> None:
    ctx = context(tmp_path, tiny_lm, stages=["fit", "ppo"])
    with pytest.raises(InputError, match=r"ppo.yaml: model.init_args.reward_model: .*list the reward stage"):
        chain.policy_config(ctx, "ppo")


@pytest.mark.parametrize(
    ("ship", "message"),
    [
        ({"pipeline": "rlhf"}, r"ship.pipeline: expected one of \['models', 'decoder'\]"),
        ({"stages": ["fit", "distill"]}, r"ship.stages\[1\]: unknown stage 'distill'"),
        ({"stages": ["fit", "dpo"]}, r"stage 'dpo' reads the output of 'pairs'"),
        ({"dpo": {"trainer": {"max_epochs": 1}}}, r"ship.dpo.config: expected the path of the stage's lightkit config"),
        ({"pairs": {"margin": 0.1}}, r"ship.pairs: unknown keys \['margin'\]"),
        ({"export": {"models": ["dpo"], "form": "fp32"}}, r"ship.export: unknown keys \['form'\]"),
    ],
)
def test_bad_chain_sections_name_the_field(tmp_path: Path, tiny_lm: dict, ship: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        main(["ship", "--config", str(chain_config(tmp_path, tiny_lm, **ship))])
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, tiny_lm: dict) -> Path:
    """The whole tiny chain, once."""
    folder = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "tests"))  # the reward callables (ppo_rewards)
        main(["ship", "--config", str(chain_config(folder, tiny_lm))])
    return folder


@pytest.mark.slow
def test_every_stage_of_the_chain_writes_its_outputs(shipped: Path) -> None:
    run = shipped / "run"
    done = stage_records(run)
    assert sorted(done) == sorted(STAGES)
    sft = done["fit"]["outputs"]["hf_model_path"]
    for stage in ("dpo", "ppo", "grpo"):
        config = yaml.safe_load(Path(done[stage]["outputs"]["config_path"]).read_text())
        assert config["model"]["init_args"]["pretrained"] == sft
        assert (run / stage / "hf_model" / "model.safetensors").is_file()
    pairs = [json.loads(x) for x in (run / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["reward_chosen"] - p["reward_rejected"] >= 0 for p in pairs)
    for p in pairs:  # the reward ranks them: count_e, recomputed
        assert p["reward_chosen"] == p["chosen"].count("e") and p["reward_rejected"] == p["rejected"].count("e")
    settings = parse(yaml.safe_load((shipped / "chain.yaml").read_text()), shipped / "chain.yaml")
    ctx = S.Context(settings, None, done)
    dm = chain.datamodule(ctx)
    splits = {s: chain.split_rows(ctx, dm, s) for s in ("train", "test")}
    train = {(r["user"], r["reference"]) for r in splits["train"]}
    assert {p["prompt"] for p in pairs} <= {user for user, _ in train}  # sampled on training prompts only
    test = [json.loads(x) for x in (run / "generate" / "prompts.jsonl").read_text().splitlines()]
    assert [(t["prompt"], t["reference"]) for t in test] == [(r["user"], r["reference"]) for r in splits["test"][:3]]
    for name in ("zero_shot", "sft", "dpo", "ppo", "grpo"):
        evaluation = json.loads((run / "evaluate" / f"{name}.json").read_text())
        answers = evaluation["answers"]
        assert evaluation["scores"]["reward"] == pytest.approx(sum(a.count("e") for a in answers) / len(answers))
    sft_eval = json.loads((run / "evaluate" / "sft.json").read_text())
    assert sft_eval["scores"]["kl_to_sft"] == pytest.approx(0.0, abs=1e-6)  # SFT is the reference
    rm = json.loads((run / "evaluate" / "reward_model.json").read_text())
    assert 0.0 <= rm["held_out_pair_accuracy"] <= 1.0 and rm["answers_scored"] == 5 * sft_eval["scores"]["answers"]
    for name in ("fit", "grpo"):
        manifest = json.loads((run / "export" / name / "manifest.json").read_text())
        assert list(manifest["forms"]) == ["int8-cpu"] and manifest["forms"]["int8-cpu"]["parity"]["passed"]
        greedy = [json.loads(x) for x in (run / "generate" / name / "greedy.jsonl").read_text().splitlines()]
        refined = [json.loads(x) for x in (run / "generate" / name / "refined.jsonl").read_text().splitlines()]
        assert len(greedy) == len(refined) == 3 and all("refined" in r for r in refined)
        scores = json.loads((run / "generate" / name / "refined.scores.json").read_text())
        assert scores["rewards"] == [float(r["response"].count("e")) for r in refined]
    for name in ("report.md", "report.html", "summary.json", "curves-fit.png", "curves-ppo.png",
                 "bars-held-out-reward.png"):  # fmt: skip
        assert (run / "report" / name).stat().st_size > 0


@pytest.mark.slow
def test_the_chain_report_shows_the_stage_files(shipped: Path) -> None:
    run = shipped / "run"
    html = (run / "report" / "report.html").read_text()
    markdown = (run / "report" / "report.md").read_text()
    models = Table(table_id="models")
    models.feed(html)
    header, *rows = models.rows
    assert header[:2] == ["model", "reward"] and {"ROUGE-L", "KL to SFT", "words", "train s"} <= set(header)
    assert [r[0] for r in rows] == ["zero_shot", "sft", "dpo", "ppo", "grpo"]
    for row in rows:
        scores = json.loads((run / "evaluate" / f"{row[0]}.json").read_text())["scores"]
        cells = dict(zip(header, row))
        assert cells["reward"] == f"{scores['reward']:+.4f}"
        assert cells["ROUGE-L"] == f"{scores['rougeL']:.4f}"
        assert cells["KL to SFT"] == f"{scores['kl_to_sft']:.3f}"
        assert f"| {row[0]} | {cells['reward']} |" in markdown
    done = stage_records(run)
    assert dict(zip(header, rows[2]))["train s"] == f"{done['dpo']['wall_s']:.0f}"
    artifacts = Table(table_id="artifacts")
    artifacts.feed(html)
    for row in artifacts.rows[1:]:
        cells = dict(zip(artifacts.rows[0], row))
        stage = {"sft": "fit"}.get(row[0], row[0])
        refined = json.loads((run / "generate" / stage / "refined.scores.json").read_text())
        assert cells["reward, refined"] == f"{refined['mean_reward']:+.4f}" and cells["gate"] == "passed"
        parity = json.loads((run / "export" / stage / "manifest.json").read_text())["forms"]["int8-cpu"]["parity"]
        steps = parity["greedy_decided_steps"] + parity["greedy_near_ties"]
        assert cells["decided steps"] == f"{parity['greedy_decided_steps']} of {steps}"  # what the agreement is over
    reward_model = Table(table_id="reward-model")
    reward_model.feed(html)
    rm = json.loads((run / "evaluate" / "reward_model.json").read_text())
    spread = dict(zip(*reward_model.rows))  # each answer set's spread under both rewards, SFT's shown
    assert set(rm["sd_per_model"]) == {"zero_shot", "sft", "dpo", "ppo", "grpo"}
    assert spread["sd of SFT's answers: learned"] == f"{rm['sd_per_model']['sft']['learned_sd']:.3f}"
    assert spread["callable"] == f"{rm['sd_per_model']['sft']['callable_sd']:.3f}"
    assert f"spread (sd) {rm['sd_per_model']['sft']['learned_sd']:.3f} under the learned reward" in markdown
    samples = Table(table_id="samples")
    samples.feed(html)
    sft = json.loads((run / "evaluate" / "sft.json").read_text())
    assert [r[1] for r in samples.rows[1:]] == sft["references"][:3]  # side by side, the same articles
    assert [r[samples.rows[0].index("sft")] for r in samples.rows[1:]] == sft["answers"][:3]
    for stage, record in done.items():
        assert f"<tr><td>{stage}</td><td>{record['wall_s']:.1f}</td></tr>" in html
    assert re.search(r"Preference pairs sampled from the SFT model on 2\d training prompts", markdown)
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["reward"] == "count_e (ppo_rewards)"  # the chain's reward_fn, as ship.pairs names it
    assert "Reward: `count_e (ppo_rewards)`" in markdown and "Reward: <code>count_e (ppo_rewards)</code>" in html


@pytest.mark.slow
def test_a_rerun_of_the_chain_skips_every_finished_stage(shipped: Path, capsys: pytest.CaptureFixture) -> None:
    before = stage_records(shipped / "run")
    main(["ship", "--config", str(shipped / "chain.yaml")])
    out = capsys.readouterr().out
    assert all(f"lightkit ship: {stage}: done before with the same inputs, skipped" in out for stage in before)
    assert stage_records(shipped / "run") == before


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_chain_report_renders_in_a_browser_with_no_broken_image(shipped: Path) -> None:
    page = shipped / "run" / "report" / "report.html"
    rendered = open_in_chromium(page, shipped)
    assert rendered.images == page.read_text().count("<img ") >= 8  # three bar charts and a curve per trained stage
    assert rendered.broken == 0
    assert rendered.overflow <= 0  # its tables fit, or scroll inside the page: the page never scrolls sideways
    assert rendered.shot.stat().st_size > 20_000


def test_the_headline_chain_ships_the_sft_config_and_the_align_configs() -> None:
    """configs/headlines_ship.yaml's SFT run is configs/sft_headlines.yaml, and its stages are the
    configs `make align` runs, so the two commands train the same models."""
    path = ROOT / "configs" / "headlines_ship.yaml"
    settings = parse(yaml.safe_load(path.read_text()), path)
    sft = yaml.safe_load((ROOT / "configs" / "sft_headlines.yaml").read_text())
    assert S.relocate(settings.base, Path("x")) == S.relocate(sft, Path("x"))
    assert settings.pipeline == "decoder" and settings.stages[-1] == "report"
    for stage in ("reward", "dpo", "ppo", "grpo"):
        assert settings.section(stage)["config"] == f"configs/{stage}_headlines.yaml"
    grpo = yaml.safe_load((ROOT / "configs" / "grpo_headlines.yaml").read_text())["model"]["init_args"]
    assert settings.section("pairs")["reward_fn"] == grpo["reward_fn"]  # pairs ranked by the RL reward
    assert settings.section("pairs")["reward_weights"] == grpo["reward_weights"]


@pytest.mark.slow
def test_the_chain_summary_renders_as_a_results_page(shipped: Path) -> None:
    """summary.json is a result file: benchmarks/to_markdown.py renders it for the docs."""
    import sys

    summary = json.loads((shipped / "run" / "report" / "summary.json").read_text())
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from to_markdown import render
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = render(summary)
    grpo = next(m for m in summary["models"] if m["model"] == "grpo")
    assert (
        f"| GRPO | {grpo['reward']:+.3f} | {grpo['rouge1']:.3f} | {grpo['rougeL']:.3f} | {grpo['kl_to_sft']:.2f} |"
        in text
    )
    for a in summary["artifacts"]:
        agreement = "–" if a["greedy_agreement"] is None else f"{a['greedy_agreement']:.3f}"
        decided = f"{a['greedy_decided_steps']} of {a['greedy_steps']}"
        assert f"| {a['model']} | int8-cpu | {a['mib']:.1f} | passed | {agreement} | {decided} |" in text
    assert "reward: count_e (ppo_rewards)." in text  # the summary's own reward, weights and all
    assert text.rstrip().endswith(f"Command: `{summary['command']}`")


def test_each_stage_scores_with_its_own_reward_or_else_the_pairs_one(tmp_path: Path) -> None:
    """One rule for the evaluate and generate stages, the report's description of the reward included."""
    config = yaml.safe_load(CHAIN.read_text())
    pairs = config["ship"]["pairs"]
    config["ship"]["evaluate"] = {**config["ship"].get("evaluate", {}), "reward_fn": ["a:x", "b:y"],
                                  "reward_weights": [1.0, 0.5]}  # fmt: skip
    settings = parse(config, tmp_path / "chain.yaml")
    assert settings.reward_section("evaluate")["reward_fn"] == ["a:x", "b:y"]
    assert settings.reward_section("generate") == pairs
    del pairs["reward_fn"]
    with pytest.raises(InputError, match=r"chain\.yaml: ship\.generate\.reward_fn: .*set ship\.pairs\.reward_fn"):
        parse(config, tmp_path / "chain.yaml").reward_section("generate")


def test_a_bar_charts_values_sit_past_each_bars_end_negative_ones_included(tmp_path: Path, monkeypatch) -> None:
    """The held-out rewards are negative: their values are written left of their bars, not over them."""
    from lightkit.cli.ship import report

    drawn = {}
    monkeypatch.setattr(report, "figure_png", lambda fig, path: drawn.setdefault("fig", fig) and path)
    report.plot_bars("held-out reward", ["sft", "dpo", "x"], {"reward": [-0.04, 0.02, None]}, "mean reward", tmp_path)
    ax = drawn["fig"].axes[0]
    labels = {t.get_text(): t for t in ax.texts}
    assert set(labels) == {"-0.04", "0.02", "n/a"}
    bars = {round(b.get_width(), 2): b for b in ax.patches}
    assert labels["-0.04"].xy[0] == bars[-0.04].get_x() + bars[-0.04].get_width()  # at the bar's far end
    assert labels["-0.04"].get_ha() == "right" and labels["0.02"].get_ha() == "left"  # and written away from it


def test_curve_panels_say_what_each_stage_logged_and_wrap_after_three(tmp_path: Path, monkeypatch) -> None:
    """`val_accuracy` is next-token accuracy for SFT, pair accuracy for the reward model and DPO:
    each stage's panel says which. Five panels take two rows, so their type stays readable."""
    from lightkit.cli.ship import chain_report

    drawn = {}

    def keep(fig, path: Path) -> Path:  # the figure itself, to read its titles and layout
        drawn[path.name] = fig
        return path

    monkeypatch.setattr(chain_report, "figure_png", keep)
    curve = [(0, 0.5), (10, 0.6)]
    keys = ("train_loss_step", "val_greedy_reward", "val_rougeL", "val_accuracy", "val_margin")
    chain_report.plot_panels("dpo", dict.fromkeys(keys, curve), tmp_path)
    chain_report.plot_panels("fit", dict.fromkeys(("val_loss", "val_accuracy"), curve), tmp_path)
    chain_report.plot_panels("reward", dict.fromkeys(("val_loss", "val_accuracy", "val_margin"), curve), tmp_path)
    titles = {name: [ax.get_title() for ax in fig.axes if ax.get_visible()] for name, fig in drawn.items()}
    assert titles["curves-fit.png"][1] == "fit: next-token accuracy, validation"
    assert titles["curves-reward.png"][1:] == [
        "reward: pair accuracy, held-out pairs",
        "reward: score margin, chosen - rejected",
    ]
    assert titles["curves-dpo.png"][3] == "dpo: pair accuracy (implicit reward), validation pairs"
    dpo = drawn["curves-dpo.png"]
    assert dpo.axes[0].get_subplotspec().get_geometry()[:2] == (2, 3) and len(titles["curves-dpo.png"]) == 5
