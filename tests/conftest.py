"""Shared fixtures: tests run from the repository root (configs use relative paths) and keep
tokenised-dataset caches in a temp folder, never in the user's ~/.cache.

The Hugging Face caches point at a temp folder too, in offline mode, set before any test module
imports transformers (huggingface_hub and datasets read these once, at import): the suite never
reaches the network, and a Hub id resolves only to what `tests/hub_fakes.py` put in that cache.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

HUB_CACHE = Path(tempfile.mkdtemp(prefix="lightkit-hf-"))
atexit.register(shutil.rmtree, HUB_CACHE, ignore_errors=True)
os.environ.update(
    HF_HUB_CACHE=str(HUB_CACHE / "hub"),
    HF_HUB_OFFLINE="1",
    HF_DATASETS_CACHE=str(HUB_CACHE / "datasets"),
    HF_DATASETS_OFFLINE="1",
)

# onnxruntime.transformers puts its own folder on sys.path when first imported, and its optimizer
# imports its siblings from there (`from fusion_options import ...`). Imported first inside a test
# that restores sys.path afterwards (test_benchmarks' run_script, monkeypatch.syspath_prepend), the
# entry was lost and every later export failed with "No module named 'fusion_options'", in some
# test orders only. Imported here, the entry is there before any test saves sys.path.
import onnxruntime.transformers  # noqa: E402, F401
from helpers import DATA, ROOT, TINY_CLM, TINY_GQA_TIED, TINY_NER, make_bpe, make_chat_tokenizer  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["LIGHTKIT_CACHE"] = str(tmp_path_factory.mktemp("lightkit-cache"))
    os.chdir(ROOT)


@pytest.fixture(scope="session")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' byte-level BPE, trained once per session (read-only for the tests that use it)."""
    return make_bpe(tmp_path_factory.mktemp("bpe") / "tokenizer")


@pytest.fixture(scope="session")
def ner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny NER model of tests/conf/ner.yaml fitted as configured (8 epochs), once per session:
    its run folder (checkpoints/best.ckpt, hf_model/). Tests may add files there, never replace
    the checkpoints or the saved model."""
    from lightkit.cli.main import main

    root = tmp_path_factory.mktemp("ner-run")
    main(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(root)])
    return root


@pytest.fixture(scope="session")
def ner_brief(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny NER model fitted for only 2 epochs: deliberately half-trained, so its argmax
    tags break the scheme and it disagrees with the gold tags (a KD teacher, the refiner's input).
    Its run folder, read-only."""
    from lightkit.cli.main import main

    root = tmp_path_factory.mktemp("ner-brief")
    main(["fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "2"])
    return root


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny causal LM trained briefly and saved as a Hugging Face folder (`hf`), with its BPE
    (`bpe`): the 'pretrained' base that LoRA and sharding tests start from."""
    from lightkit.cli.main import main

    root = tmp_path_factory.mktemp("tiny-llama")
    main(["fit", "--config", str(TINY_CLM), "--data.tokenizer", str(root / "bpe"), "--trainer.default_root_dir",
          str(root), "--trainer.max_epochs", "1", "--model.init_args.save_dir", str(root / "hf")])  # fmt: skip
    return {"root": root, "hf": root / "hf", "bpe": root / "bpe"}


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GQA Llama with tied embeddings and a ChatML tokenizer, fitted briefly and exported
    (fp32 and int8-cpu): what `lightkit generate`, the refiner and their benchmark run on."""
    from lightkit.cli.main import main

    root = tmp_path_factory.mktemp("generate")
    tokenizer = make_chat_tokenizer(root / "tokenizer")
    common = ["--config", str(TINY_CLM), "--data.tokenizer", str(tokenizer),
              "--model.init_args.model_config", TINY_GQA_TIED]  # fmt: skip
    main(["fit", *common, "--trainer.default_root_dir", str(root / "run"), "--trainer.max_epochs", "2",
          "--trainer.enable_checkpointing", "true"])  # fmt: skip
    ckpt = next((root / "run").rglob("*.ckpt"))
    main(["export", *common, "--ckpt_path", str(ckpt), "--output", str(root / "onnx"), "--forms", "[fp32, int8-cpu]"])
    return root / "onnx"


@pytest.fixture(scope="session")
def hub_bert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny BERT (random weights, the tests' WordPiece tokenizer) in the offline Hub cache as
    `lightkit-test/tiny-bert`, tagged v1: a Hub model as a download leaves it."""
    import torch
    from hub_fakes import hub_model
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer")
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    commit = hub_model(HUB_CACHE / "hub", "lightkit-test/tiny-bert", folder, tags=("v1",))
    return {"id": "lightkit-test/tiny-bert", "commit": commit}


@pytest.fixture(scope="session")
def hub_chat(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny Llama with a ChatML tokenizer in the offline Hub cache as `lightkit-test/tiny-chat`:
    the stand-in for a small Hub chat model."""
    import torch
    from hub_fakes import hub_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = make_chat_tokenizer(tmp_path_factory.mktemp("tiny-chat"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return {"id": "lightkit-test/tiny-chat", "commit": hub_model(HUB_CACHE / "hub", "lightkit-test/tiny-chat", folder)}


@pytest.fixture(scope="session")
def hub_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local dataset repositories in the shapes users bring from the Hub (tests/hub_fakes.py)."""
    import hub_fakes

    root = tmp_path_factory.mktemp("datasets")
    shapes = ("conll2003", "imdb", "trl_sft", "trl_preferences", "trl_prompts")
    return {name: getattr(hub_fakes, name)(root / name) for name in shapes}
