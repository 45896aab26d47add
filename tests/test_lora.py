"""LoRA through peft on a tiny pretrained Llama: only adapters train and are checkpointed, resume
is exact, the merged save is a plain transformers model equal to the adapter model, and bad
settings or a foreign adapter are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_NER, lora_args
from transformers import AutoModelForCausalLM

from lightkit.cli.main import main
from lightkit.io.errors import InputError


def test_lora_trains_and_checkpoints_only_the_adapters_and_saves_a_merged_model(tiny_lm: dict, tmp_path: Path) -> None:
    from lightkit.cli.main import cli

    run = cli(["fit", *lora_args(tiny_lm, tmp_path, "--trainer.enable_checkpointing", "true",
                                 "--trainer.max_epochs", "2")])  # fmt: skip
    task = run.model
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ckpt = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert set(ckpt["state_dict"]) == set(trainable)  # the base weights are not in the checkpoint
    # The adapters moved; the frozen base did not.
    plain = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"])
    frozen = {n: p for n, p in task.model.named_parameters() if not p.requires_grad and "lora_" not in n}
    name = next(n for n in frozen if n.endswith("q_proj.base_layer.weight"))
    original = dict(plain.named_parameters())[name.removeprefix("base_model.model.").replace(".base_layer", "")]
    assert torch.equal(frozen[name], original)
    # Merged save: plain transformers, same outputs as the adapter model; the adapter beside it.
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert (tmp_path / "hf" / "adapter" / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    task.model.eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, task.model(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(merged(input_ids=ids).logits, plain.eval()(input_ids=ids).logits, atol=1e-4)


def test_lora_resume_is_exact(tiny_lm: dict, tmp_path: Path) -> None:
    """Two epochs straight, against one epoch then a resume from its last checkpoint."""
    from lightkit.cli.main import cli

    straight = cli(["fit", *lora_args(tiny_lm, tmp_path / "a", "--trainer.max_epochs", "2")]).model
    first = tmp_path / "b"
    cli(["fit", *lora_args(tiny_lm, first, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true",
                           "--trainer.callbacks+=LastCheckpoint")])  # fmt: skip
    resumed = cli(["fit", *lora_args(tiny_lm, first, "--trainer.max_epochs", "2",
                                     "--trainer.enable_checkpointing", "true", "--trainer.callbacks+=LastCheckpoint",
                                     "--ckpt_path", str(first / "checkpoints" / "last.ckpt"))]).model  # fmt: skip
    a = {n: p for n, p in straight.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_target_modules_that_match_nothing_are_named_with_the_model_layers(tiny_lm: dict, tmp_path: Path) -> None:
    args = lora_args(tiny_lm, tmp_path, "--model.init_args.peft", "{target_modules: [query_key]}")
    with pytest.raises(InputError, match=r"matches no layer .* linear layers are \[.*'q_proj'"):
        main(["fit", *args])


def test_unknown_lora_settings_are_named(tiny_lm: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"peft: unknown key\(s\) \['rank'\]"):
        main(["fit", *lora_args(tiny_lm, tmp_path, "--model.init_args.peft", "{rank: 4}")])


def test_an_adapter_of_another_setting_is_refused(tiny_lm: dict, tmp_path: Path) -> None:
    main(["fit", *lora_args(tiny_lm, tmp_path, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true")])
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    other = lora_args(tiny_lm, tmp_path / "other", "--model.init_args.peft", "{r: 8}")
    with pytest.raises(InputError, match="the adapter does not fit this base model"):
        main(["test", *other, "--ckpt_path", str(ckpt)])


def test_gradient_checkpointing_trains_the_same_adapters(tiny_lm: dict, tmp_path: Path) -> None:
    """Recomputing activations changes memory, not the result."""
    from lightkit.cli.main import cli

    plain = cli(["fit", *lora_args(tiny_lm, tmp_path / "a", "--trainer.max_epochs", "1")]).model
    checkpointed = cli(["fit", *lora_args(tiny_lm, tmp_path / "b", "--trainer.max_epochs", "1",
                                          "--model.init_args.gradient_checkpointing", "true")]).model  # fmt: skip
    assert checkpointed.model.base_model.model.is_gradient_checkpointing
    a = {n: p for n, p in plain.named_parameters() if p.requires_grad}
    b = {n: p for n, p in checkpointed.named_parameters() if p.requires_grad}
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)


def test_chunked_loss_trains_the_same_adapters_and_scores_the_same(tiny_lm: dict, tmp_path: Path) -> None:
    """torch's chunked linear cross-entropy changes memory, not the loss, gradients or metrics."""
    from lightkit.cli.main import cli

    runs = {
        chunked: cli(
            [
                "fit",
                *lora_args(
                    tiny_lm,
                    tmp_path / str(chunked),
                    "--trainer.max_epochs",
                    "1",
                    "--model.init_args.chunked_loss",
                    str(chunked).lower(),
                ),
            ]
        )  # fmt: skip
        for chunked in (False, True)
    }
    a, b = ({n: p for n, p in r.model.named_parameters() if p.requires_grad} for r in runs.values())
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)
    plain, chunked = (r.trainer.callback_metrics for r in runs.values())
    for name in ("val_perplexity", "val_accuracy"):
        assert torch.allclose(plain[name], chunked[name], rtol=1e-4), name


def test_lora_on_a_token_classifier_trains_the_new_head_too(tmp_path: Path) -> None:
    """A classifier's head is new, so peft keeps it trainable (and checkpointed) beside the adapters."""
    from lightkit.cli.main import cli

    ner = TINY_NER
    main(["fit", "--config", str(ner), "--trainer.default_root_dir", str(tmp_path / "base"),
          "--trainer.max_epochs", "1", "--model.init_args.save_dir", str(tmp_path / "hf")])  # fmt: skip
    run = cli(["fit", "--config", str(ner), "--trainer.default_root_dir", str(tmp_path / "lora"),
               "--trainer.max_epochs", "2", "--model.init_args.model_config", "null",
               "--model.init_args.pretrained", str(tmp_path / "hf"), "--model.init_args.peft", "{r: 4}",
               "--model.init_args.save_dir", str(tmp_path / "lora-hf")])  # fmt: skip
    trainable = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("classifier" in n and "lora_" not in n for n in trainable)
    assert "test_f1" not in run.trainer.callback_metrics and "val_f1" in run.trainer.callback_metrics
    ckpt = torch.load(next((tmp_path / "lora" / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert set(ckpt["state_dict"]) == set(trainable)
    main(["test", "--config", str(ner), "--trainer.default_root_dir", str(tmp_path / "lora"),
          "--model.init_args.model_config", "null", "--model.init_args.pretrained", str(tmp_path / "hf"),
          "--model.init_args.peft", "{r: 4}",
          "--ckpt_path", str(next((tmp_path / "lora" / "checkpoints").glob("*.ckpt")))])  # fmt: skip


def test_a_lora_checkpoint_exports_as_a_plain_graph_that_matches_pytorch(tiny_lm: dict, tmp_path: Path) -> None:
    import json

    import onnx

    args = lora_args(tiny_lm, tmp_path, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true")
    main(["fit", *args])
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    out = tmp_path / "onnx"
    main(["export", *args[: args.index("--trainer.default_root_dir")], "--ckpt_path", str(ckpt), "--output", str(out),
          "--forms", "fp32"])  # fmt: skip
    parity = json.loads((out / "manifest.json").read_text())["forms"]["fp32"]["parity"]
    assert parity["passed"] and parity["greedy_agreement"] == 1.0
    graph = onnx.load(str(out / "fp32" / "model.onnx"), load_external_data=False).graph
    assert not any("lora" in init.name for init in graph.initializer)  # merged, not adapters beside
