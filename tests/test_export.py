"""`lightkit export` on tiny trained models: every form, the parity gate, the manifest, safe writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import ROOT, TINY_NER

from lightkit.cli.main import main
from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.sessions import OrtModel
from lightkit.io.errors import InputError

TINY_CLS = ROOT / "tests" / "conf" / "classification.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ner_run: Path) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("export-cls")
    main(["fit", "--config", str(TINY_CLS), "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "10"])
    return {
        "ner": (TINY_NER, ner_run / "checkpoints" / "best.ckpt"),
        "cls": (TINY_CLS, next((root / "checkpoints").glob("*.ckpt"))),
    }


def export(conf: Path, ckpt: Path, out: Path, *extra: str) -> dict:
    main(["export", "--config", str(conf), "--ckpt_path", str(ckpt), "--output", str(out), *extra])
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["ner", "cls"])
def test_export_writes_checked_forms_and_a_manifest(trained: dict, name: str, tmp_path: Path) -> None:
    conf, ckpt = trained[name]
    out = tmp_path / "onnx"
    manifest = export(conf, ckpt, out)
    assert set(manifest["forms"]) == {"fp32", "int8-cpu"}
    fp32, int8 = manifest["forms"]["fp32"], manifest["forms"]["int8-cpu"]
    # fp32 is the same function: logits equal to float precision, same predictions, same metric.
    assert fp32["parity"]["max_abs_diff"] < 1e-3 and fp32["parity"]["argmax_agreement"] == 1.0
    assert fp32["parity"]["onnx"] == pytest.approx(fp32["parity"]["pytorch"], abs=1e-6)
    assert all(form["parity"]["passed"] for form in manifest["forms"].values())
    assert int8["parity"]["argmax_agreement"] >= 0.95
    # The INT8 CPU artifact really is integer: dynamic quantisation nodes, no float MatMul left,
    # and the fused attention and embedding tables quantised too (not left in fp32).
    ops = {n.op_type for n in onnx.load(out / int8["file"]).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger", "QAttention", "QEmbedLayerNormalization"} <= ops
    assert not ops & {"MatMul", "Attention", "EmbedLayerNormalization"}
    assert int8["bytes"] < 0.4 * fp32["bytes"]  # int8 weights and tables; float norms, biases, scales
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    names = [i["name"] for i in manifest["inputs"]]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert manifest["labels"] and manifest["outputs"][0]["shape"][-1] == len(manifest["labels"])
    assert {"torch", "onnxruntime", "onnx", "transformers", "lightkit"} <= set(manifest["versions"])
    # The artifact runs on its own, from the manifest's input names.
    session = OrtModel(out / fp32["file"], device="cpu")
    assert session.inputs == names


def test_an_artifact_given_wrong_inputs_says_what_it_takes(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["cls"]
    out = export(conf, ckpt, tmp_path / "onnx", "--forms", "fp32")
    session = OrtModel(tmp_path / "onnx" / out["forms"]["fp32"]["file"], device="cpu")

    with pytest.raises(ValueError, match=r"missing inputs \['attention_mask'"):
        session(input_ids=torch.ones(1, 4, dtype=torch.long))


def test_existing_output_is_kept_without_overwrite(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["cls"]
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        export(conf, ckpt, out, "--forms", "fp32")
    assert (out / "keep.txt").read_text() == "mine"
    export(conf, ckpt, out, "--forms", "fp32", "--overwrite", "true")
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def test_a_failed_parity_gate_writes_nothing(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["ner"]
    out = tmp_path / "onnx"
    with pytest.raises(InputError, match=r"parity gate failed, nothing written:\n  int8-cpu: argmax agreement"):
        export(conf, ckpt, out, "--tolerance", '{"int8-cpu": {"min_argmax_agreement": 1.01}}')
    assert not out.exists() and not list(tmp_path.glob(".onnx*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--forms", "int4"], r"forms: unknown \['int4'\]"),
        (["--forms", "[fp32, int4-cpu]"], r"forms: \['int4-cpu'\] are decoder forms \(4-bit weights\)"),
        (["--tolerance", '{"fp32": {"speed": 1}}'], "tolerance.fp32: unknown key 'speed'"),
        (["--tolerance", '{"int4": {"max_abs_diff": 1}}'], "tolerance: unknown form 'int4'"),
    ],
)
def test_bad_export_options_are_named(trained: dict, tmp_path: Path, extra: list[str], message: str) -> None:
    conf, ckpt = trained["cls"]
    with pytest.raises(InputError, match=message):
        export(conf, ckpt, tmp_path / "onnx", *extra)


def test_a_checkpoint_of_another_task_is_refused(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not fit the task of"):
        export(trained["cls"][0], trained["ner"][1], tmp_path / "onnx")


# -- quantisation-aware training -----------------------------------------------------------------
def test_qat_fake_quantises_only_linear_layers_and_leaves_the_hf_output_float(tmp_path: Path) -> None:
    from torch import nn
    from transformers import AutoConfig, AutoModelForTokenClassification

    from lightkit.training.fake_quant import ATTR, QATLinear, fake_quantizers, prepare_qat, set_qat, strip_qat_state

    config = AutoConfig.for_model(
        "bert",
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(config).eval()
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    before = model(input_ids=ids).logits
    names = prepare_qat(model)
    assert names == linears and len(fake_quantizers(model)) == 2 * len(linears)
    assert all(isinstance(model.get_submodule(n), QATLinear) for n in linears)
    assert not any(ATTR in n for n, m in model.named_modules() if isinstance(m, (nn.Embedding, nn.LayerNorm)))
    set_qat(model, fake_quant=False, observe=False)
    assert torch.equal(model(input_ids=ids).logits, before)  # off: exactly the float model
    set_qat(model, fake_quant=True, observe=True)
    model(input_ids=ids)  # observers see data, then fake quantisation changes the output
    set_qat(model, fake_quant=True, observe=False)
    assert not torch.equal(model(input_ids=ids).logits, before)
    model.save_pretrained(tmp_path, state_dict=strip_qat_state(model.state_dict()))
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert set(reloaded.state_dict()) == set(AutoModelForTokenClassification.from_config(config).state_dict())


def test_qat_training_exports_a_qdq_model_that_matches_its_fake_quantised_self(tmp_path: Path) -> None:
    root = tmp_path / "run"
    main([
        "fit", "--config", str(TINY_NER), "--trainer.default_root_dir", str(root),
        "--trainer.callbacks+=QuantizationAwareTraining", "--trainer.callbacks.start_step=8",
        "--trainer.callbacks.freeze_observers_step=24",
    ])  # fmt: skip
    ckpt = next((root / "checkpoints").glob("*.ckpt"))

    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(".lightkit_qat.weight.scale" in k for k in state)  # quantiser scales are checkpointed
    from safetensors import safe_open

    with safe_open(str(root / "hf_model" / "model.safetensors"), "pt") as f:
        assert f.keys() and not any("lightkit_qat" in k for k in f.keys())  # the HF output stays float
    out = tmp_path / "onnx"
    manifest = export(TINY_NER, ckpt, out)
    assert set(manifest["forms"]) == {
        "fp32",
        "qat",
    }  # a QAT checkpoint's CPU int8 form is qat, not post-training int8-cpu
    linears = sum(k.endswith(".lightkit_qat.weight.scale") for k in state)
    assert linears == 13  # 6 per layer x 2 layers + the classifier
    # Shipped compact: int8 weight initializers (no float weight behind a QuantizeLinear), query/key/
    # value joined per layer, embedding tables 8-bit (the demo's model: 23.6 MiB instead of 86.4).
    graph = onnx.load(out / "qat" / "model.onnx").graph
    inits = {t.name: t for t in graph.initializer}
    assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    assert manifest["quantization"]["qat"]["joined_layer_groups"] == 2
    assert [n.op_type for n in graph.node].count("GatherBlockQuantized") == 2  # word and position tables
    float_matrices = [
        t.name
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and not t.name.endswith("_scales")
    ]
    assert len(float_matrices) == 1 and "token_type" in float_matrices[0]  # 2 rows: left float
    # ... and every linear layer runs as an integer kernel once ONNX Runtime has optimised the graph
    # (before the join, ORT's CSE merged the query/key/value input quantizers and left them float).
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "qat-optimised.onnx")
    ort.InferenceSession(str(out / "qat" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimised = [n.op_type for n in onnx.load(tmp_path / "qat-optimised.onnx").graph.node]
    assert optimised.count("MatMulIntegerToFloat") == linears - 2 * 2 and "DequantizeLinear" not in optimised
    qat = manifest["forms"]["qat"]["parity"]
    assert qat["passed"] and qat["argmax_agreement"] >= 0.98
    # The QAT model in PyTorch (fake-quantised) keeps the task: the tiny corpus is still tagged well.
    assert manifest["parity_data"]["pytorch_fake_quantised"]["f1"] >= 0.8
    # Serving the folder without naming a form runs the QAT int8 model, not the float one beside it.
    from lightkit.export.runtime.serving import Artifact

    served = Artifact(out, device="cpu")
    assert served.form == "qat" and len(next(served.tag(["a b c"]))) == 3


# -- lightkit evaluate ---------------------------------------------------------------------------
def test_evaluate_scores_an_artifact_with_the_reports_of_test(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["ner"]
    artifact = tmp_path / "onnx"
    manifest = export(conf, ckpt, artifact)
    results = {}
    for form in ("fp32", "int8-cpu"):
        out = tmp_path / f"eval-{form}"
        main(
            [
                "evaluate",
                "--config",
                str(conf),
                "--artifact",
                str(artifact),
                "--form",
                form,
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        results[form] = json.loads((out / "evaluation.json").read_text())
        report = json.loads((out / "seqeval_report.json").read_text())  # the same files as `lightkit test`
        assert report["micro avg"]["f1-score"] == pytest.approx(results[form]["metrics"]["test_f1"], abs=1e-6)
        assert (out / "test_predictions.conll").is_file()
        # Every test batch ran through the artifact, timed once each (16 examples in the tiny split).
        assert results[form]["examples"] == 16 and results[form]["providers"] == ["CPUExecutionProvider"]
        assert results[form]["batches"] == -(-16 // results[form]["batch_size"])
    # fp32 ONNX scores exactly what PyTorch scored at export time, on the same test split.
    assert results["fp32"]["metrics"]["test_f1"] == pytest.approx(manifest["parity_data"]["pytorch"]["f1"], abs=1e-6)
    assert results["int8-cpu"]["metrics"]["test_f1"] == pytest.approx(
        manifest["forms"]["int8-cpu"]["parity"]["onnx"], abs=1e-6
    )


def test_evaluate_names_a_missing_form(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["cls"]
    artifact = tmp_path / "onnx"
    export(conf, ckpt, artifact, "--forms", "fp32")
    with pytest.raises(InputError, match=r"form: 'int8-cpu' is not in .*manifest.json \(forms: \['fp32'\]\)"):
        main(
            [
                "evaluate",
                "--config",
                str(conf),
                "--artifact",
                str(artifact),
                "--form",
                "int8-cpu",
                "--output",
                str(tmp_path / "e"),
            ]
        )


def test_a_qat_causal_lm_exports_compact_with_its_kv_cache(tmp_path: Path) -> None:
    """Llama layers read one input twice: query/key/value and gate/up are joined per layer."""
    conf = ROOT / "tests" / "conf" / "clm.yaml"
    main(
        [
            "fit",
            "--config",
            str(conf),
            "--data.tokenizer",
            str(tmp_path / "bpe"),
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.enable_checkpointing",
            "true",
            "--trainer.max_epochs",
            "2",
            "--trainer.callbacks+=QuantizationAwareTraining",
            "--trainer.callbacks.start_step=2",
        ]
    )
    out = tmp_path / "onnx"
    manifest = export(conf, next((tmp_path / "run").rglob("*.ckpt")), out, "--forms", "[fp32, qat]")
    assert manifest["quantization"]["qat"]["joined_layer_groups"] == 2 * 2
    assert "15 weight quantizers" in manifest["quantization"]["qat"]["weights"]  # 7 per layer + the LM head
    qat, fp32 = manifest["forms"]["qat"]["parity"], manifest["forms"]["fp32"]["parity"]
    assert qat["passed"] and qat["metric"] == "perplexity" and abs(qat["metric_drop"]) < 0.01
    # The cached decode loop runs on the compacted graph: it follows PyTorch's fake-quantised
    # greedy path on every step decided beyond the form's logit error (near-ties are the CPU's).
    assert qat["greedy_agreement"] >= 0.97 and qat["greedy_decided_steps"] >= 16
    assert qat["greedy_decided_steps"] + qat["greedy_near_ties"] == 4 * 16
    # The fp32 form is judged against the float model's greedy path, not the fake-quantised one.
    assert fp32["greedy_agreement"] == 1.0 and fp32["greedy_decided_steps"] >= 60


# -- causal LM with a KV cache -------------------------------------------------------------------
def test_causal_lm_exports_with_a_kv_cache_that_decodes_like_pytorch(tmp_path: Path) -> None:
    conf = ROOT / "tests" / "conf" / "clm.yaml"
    common = ["--config", str(conf), "--data.tokenizer", str(tmp_path / "bpe")]
    main(
        [
            "fit",
            *common,
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
            "--trainer.enable_checkpointing",
            "true",
            "--trainer.max_epochs",
            "4",
        ]
    )
    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    out = tmp_path / "onnx"
    main(["export", *common[:2], "--ckpt_path", str(ckpt), "--output", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    names = [i["name"] for i in manifest["inputs"]]
    assert names == [  # no position_ids: the fused graph's GroupQueryAttention derives them
        "input_ids",
        "attention_mask",
        "past.0.key",
        "past.0.value",
        "past.1.key",
        "past.1.value",
    ]
    assert [o["name"] for o in manifest["outputs"]][1:] == [
        "present.0.key",
        "present.0.value",
        "present.1.key",
        "present.1.value",
        "next_token",
        "top_logits",
        "top_ids",
    ]
    fp32, int8 = manifest["forms"]["fp32"]["parity"], manifest["forms"]["int8-cpu"]["parity"]
    assert fp32["metric"] == "perplexity" and abs(fp32["metric_drop"]) < 1e-3
    # Prefill + cached one-token steps reproduce full forwards: every decided step, same logits.
    assert fp32["greedy_agreement"] == 1.0 and fp32["greedy_decided_steps"] >= 60 and fp32["decode_max_abs_diff"] < 1e-4
    assert int8["passed"] and int8["greedy_agreement"] >= 0.97 and int8["greedy_decided_steps"] >= 1
    # Every projection (Q/K/V packed in one) and the untied LM head are weight-only 8-bit matmuls
    # with int8 compute in the CPU artifact, the token table an 8-bit GatherBlockQuantized,
    # attention one GroupQueryAttention per layer, the RMSNorms fused.
    graph = onnx.load(out / "int8-cpu" / "model.onnx").graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") == 2 * 5 + 1 and "MatMul" not in ops
    assert ops.count("GroupQueryAttention") == 2
    assert all(
        a.i == 4 for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "accuracy_level"
    )
    assert ops.count("GatherBlockQuantized") == 1 and "MatMulInteger" not in ops
    how = manifest["quantization"]["int8-cpu"]
    assert (
        how["fusions"]["SkipSimplifiedLayerNormalization"] == 2 * 2
        and how["fusions"]["SimplifiedLayerNormalization"] == 1
    )
    assert how["token table"]["op"] == "GatherBlockQuantized"  # untied: its own table
    session = OrtModel(out / "fp32" / "model.onnx", device="cpu")
    # The gate's greedy check fails a cache that holds the wrong past: here each row's cache is
    # another row's prompt (rows rolled), against a reference of the artifact's own full forwards.
    from lightkit.export.builder.parity import greedy_agreement, reference_decode

    prompts = torch.randint(3, 300, (4, 8), generator=torch.Generator().manual_seed(1))
    reference = reference_decode(session, {"input_ids": prompts, "attention_mask": torch.ones_like(prompts)})
    assert greedy_agreement(reference, DecodeLoop(session), 0.0)["greedy_agreement"] == 1.0
    stale = greedy_agreement({**reference, "input_ids": prompts.roll(1, dims=0)}, DecodeLoop(session), 0.0)
    # The fp32 gate's max_abs_diff covers the cached steps too, and catches it outright; this tiny
    # model leans on its last token, so only a few greedy picks change.
    assert stale["decode_max_abs_diff"] > 0.1 and stale["greedy_agreement"] < 1.0
    prompt = torch.tensor([5, 17, 42, 9])
    loop = DecodeLoop(session)
    greedy = loop.greedy(prompt.view(1, -1), torch.ones(1, 4, dtype=torch.long), 8)[0]
    # Sampling reads only the in-graph top-k candidates: top_k=1 is greedy, a seed reproduces a
    # draw, and every first token is among the k best of the full logits.
    one = torch.ones(1, 4, dtype=torch.long)
    assert torch.equal(loop.generate(prompt.view(1, -1), one, 8, temperature=0.7, top_k=1, seed=3)[0], greedy)
    drawn = [loop.generate(prompt.view(1, -1), one, 8, temperature=1.0, top_k=5, seed=s)[0] for s in (0, 0, 1, 2, 3)]
    assert torch.equal(drawn[0], drawn[1]) and len({tuple(d.tolist()) for d in drawn}) > 1
    best5 = set(session(input_ids=prompt.view(1, -1), attention_mask=one).logits[0, -1].topk(5).indices.tolist())
    assert {int(d[0]) for d in drawn} <= best5
    nucleus = loop.generate(prompt.view(1, -1), one, 8, temperature=1.0, top_p=1e-6, seed=4)[0]
    assert torch.equal(nucleus, greedy)  # a vanishing nucleus keeps only the best token
    with pytest.raises(InputError, match="top_k=65"):
        loop.generate(prompt.view(1, -1), one, 2, temperature=1.0, top_k=65)


# -- GPU forms -------------------------------------------------------------------------------------
def test_gpu_forms_are_fused_fp16_and_weight_only_int8_and_never_labelled_gpu_unchecked(
    trained: dict, tmp_path: Path
) -> None:
    conf, ckpt = trained["ner"]
    out = tmp_path / "onnx"
    manifest = export(conf, ckpt, out, "--forms", "[fp16, int8-gpu]")
    assert set(manifest["forms"]) == {"fp16", "int8-gpu"} and not (out / "fp32").exists()
    fp16_ops = {n.op_type for n in onnx.load(out / "fp16" / "model.onnx").graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= fp16_ops  # ORT's transformer fusions applied
    int8_ops = [n.op_type for n in onnx.load(out / "int8-gpu" / "model.onnx").graph.node]
    assert "MatMulNBits" in int8_ops and "MatMul" not in int8_ops and "MatMulInteger" not in int8_ops
    int8_graph = onnx.load(out / "int8-gpu" / "model.onnx").graph
    bits = {
        (n.op_type, a.i)
        for n in int8_graph.node
        if n.op_type in ("MatMulNBits", "GatherBlockQuantized")
        for a in n.attribute
        if a.name == "bits"
    }
    assert bits == {("MatMulNBits", 8), ("GatherBlockQuantized", 8)}  # the embedding tables too
    tables = manifest["quantization"]["int8-gpu"]["embedding tables"]["tables"]
    assert any("word_embeddings" in t for t in tables)
    assert not {t.name for t in int8_graph.initializer} & set(tables)  # no float copy left behind
    for form in ("fp16", "int8-gpu"):
        info = manifest["forms"][form]
        assert info["parity"]["passed"], info["parity"]  # checked here on the CPU EP, which runs both
        if not torch.cuda.is_available():
            assert info["placement"]["checked"] is False and info["gpu_ready"] is None
    assert manifest["forms"]["int8-gpu"]["bytes"] < manifest["forms"]["fp16"]["bytes"]


def test_int8_gpu_with_4bit_embedding_tables_is_smaller_and_passes_parity(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["ner"]
    eight = export(conf, ckpt, tmp_path / "eight", "--forms", "int8-gpu")
    four = export(conf, ckpt, tmp_path / "four", "--forms", "int8-gpu", "--embedding_bits", "4")
    graph = onnx.load(tmp_path / "four" / "int8-gpu" / "model.onnx").graph
    bits = {
        n.input[0]: a.i
        for n in graph.node
        if n.op_type == "GatherBlockQuantized"
        for a in n.attribute
        if a.name == "bits"
    }
    assert sorted(bits.values()) == [4, 8]  # the token table at 4 bits; the position table stays at 8
    assert [t for t, b in bits.items() if b == 4] == [t for t in bits if "word_embeddings" in t]
    tables = four["quantization"]["int8-gpu"]["embedding tables"]["tables"]
    word = next(t for t in tables if "word_embeddings" in t)
    assert tables[word].startswith("4 bits, asymmetric") and all(
        v.startswith("8 bits") for t, v in tables.items() if t != word
    )
    assert four["forms"]["int8-gpu"]["parity"]["passed"]
    assert four["forms"]["int8-gpu"]["bytes"] < eight["forms"]["int8-gpu"]["bytes"]


def test_placement_reads_each_nodes_provider_from_the_profile(trained: dict, tmp_path: Path) -> None:
    from lightkit.export.builder.placement import placement

    conf, ckpt = trained["cls"]
    out = tmp_path / "onnx"
    export(conf, ckpt, out, "--forms", "fp32")
    session = OrtModel(out / "fp32" / "model.onnx", device="cpu")
    feeds = session.feeds(
        input_ids=torch.ones(2, 8, dtype=torch.long),
        attention_mask=torch.ones(2, 8, dtype=torch.long),
        token_type_ids=torch.zeros(2, 8, dtype=torch.long),
    )
    on_cpu = placement(out / "fp32" / "model.onnx", feeds, want="CPUExecutionProvider")
    assert on_cpu["checked"] and on_cpu["ok"] and on_cpu["nodes"] > 10


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_gpu_runs_every_compute_node_on_cuda(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["ner"]
    manifest = export(conf, ckpt, tmp_path / "onnx", "--forms", "[fp16, int8-gpu]")
    for form in ("fp16", "int8-gpu"):
        assert manifest["forms"][form]["placement"]["checked"]
        assert manifest["forms"][form]["gpu_ready"], manifest["forms"][form]["placement"]["off_provider_ops"]


# -- serving raw text ------------------------------------------------------------------------------
def test_artifact_tags_raw_text_exactly_like_lightkit_predict(trained: dict, tmp_path: Path) -> None:
    from itertools import count, islice

    from helpers import DATA

    from lightkit.export.runtime.serving import Artifact

    conf, ckpt = trained["ner"]
    export(conf, ckpt, tmp_path / "onnx", "--forms", "fp32")
    predicted = tmp_path / "pred.conll"
    main(
        [
            "predict",
            "--config",
            str(conf),
            "--ckpt_path",
            str(ckpt),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--prediction_writer.output",
            str(predicted),
        ]
    )
    expected = [
        [tuple(line.split("\t")) for line in block.splitlines()]
        for block in predicted.read_text().strip().split("\n\n")
    ]
    sentences = [line for line in (DATA / "ner" / "predict.txt").read_text().splitlines() if line.strip()]
    served = list(Artifact(tmp_path / "onnx", device="cpu").tag(sentences, batch_size=2))
    assert served == expected
    # Input is consumed lazily: an endless stream still yields its first results.
    endless = (sentences[i % len(sentences)] for i in count())
    assert len(list(islice(Artifact(tmp_path / "onnx", device="cpu").tag(endless, batch_size=3), 7))) == 7


@pytest.mark.slow  # a long input file, to show memory stays flat: end-to-end, so make test-slow
def test_artifact_streams_sentences_in_flat_memory(trained: dict, tmp_path: Path) -> None:
    """Results are yielded batch by batch and nothing is kept: streaming 4x more sentences
    raises peak memory by less than a kept result list would take."""
    from collections import deque
    from itertools import count, islice

    from helpers import DATA
    from memory import assert_flat, traced

    from lightkit.export.runtime.serving import Artifact

    conf, ckpt = trained["ner"]
    export(conf, ckpt, tmp_path / "onnx", "--forms", "fp32")
    artifact = Artifact(tmp_path / "onnx", device="cpu")
    sentences = [line for line in (DATA / "ner" / "predict.txt").read_text().splitlines() if line.strip()]

    def stream(n: int, keep: bool = False) -> dict[str, int]:
        source = (sentences[i % len(sentences)] for i in count())
        with traced() as seen:
            results = islice(artifact.tag(source, batch_size=32), n)
            kept = list(results) if keep else deque(results, maxlen=0)  # keep every result, or consume and keep nothing
        del kept
        return seen

    stream(2_500)  # warm up the session's arena and the allocator
    small, large, kept = stream(2_500), stream(10_000), stream(10_000, keep=True)
    assert_flat(small, large, kept, "sentences")


def test_artifact_classifies_raw_text_like_lightkit_predict(trained: dict, tmp_path: Path) -> None:
    from lightkit.export.runtime.serving import Artifact

    conf, ckpt = trained["cls"]
    export(conf, ckpt, tmp_path / "onnx", "--forms", "fp32")
    predicted = tmp_path / "pred.jsonl"
    main(
        [
            "predict",
            "--config",
            str(conf),
            "--ckpt_path",
            str(ckpt),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--prediction_writer.output",
            str(predicted),
        ]
    )
    rows = [json.loads(line) for line in predicted.read_text().splitlines()]
    served = list(Artifact(tmp_path / "onnx", device="cpu").classify([r["text"] for r in rows], batch_size=3))
    assert [label for label, _ in served] == [r["label"] for r in rows]
    for (_, probs), row in zip(served, rows):
        assert probs == pytest.approx(row["probabilities"], abs=1e-4)
    with pytest.raises(InputError, match="a SequenceClassificationTask artifact serves 'labels', not 'word_tags'"):
        next(Artifact(tmp_path / "onnx", device="cpu").tag(["a b"]))
    # Generation and its refiner need a decoder.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a b\n")
    with pytest.raises(InputError, match="artifact is not a decoder; --refine needs one exported from a causal LM"):
        main(["generate", str(tmp_path / "onnx"), "--prompts", str(prompts), "--refine"])


# -- fixed-shape serving ---------------------------------------------------------------------------
def test_bound_run_matches_a_plain_run_and_takes_new_values_in_place(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["ner"]
    export(conf, ckpt, tmp_path / "onnx", "--forms", "fp32")
    model = OrtModel(tmp_path / "onnx" / "fp32" / "model.onnx", device="cpu")
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(5, 90, (2, 12), generator=g),
            "attention_mask": torch.ones(2, 12, dtype=torch.long),
            "token_type_ids": torch.zeros(2, 12, dtype=torch.long),
        }
        for _ in range(2)
    ]
    first, second = (model.feeds(**b) for b in batches)
    bound = model.bind(first)
    bound.run()
    np.testing.assert_allclose(bound.output(), model.session.run(["logits"], first)[0], rtol=1e-5, atol=1e-5)
    bound.update(second)  # same buffers, new values: what a replayed CUDA graph reads
    bound.run()
    np.testing.assert_allclose(bound.output(), model.session.run(["logits"], second)[0], rtol=1e-5, atol=1e-5)
    assert bound.output().shape == (2, 12, len(json.loads((tmp_path / "onnx" / "manifest.json").read_text())["labels"]))


def test_bind_refuses_an_input_type_it_would_otherwise_coerce(tmp_path: Path) -> None:
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Not", ["flags"], ["logits"])],
        "g",
        [h.make_tensor_value_info("flags", onnx.TensorProto.BOOL, ["batch"])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.BOOL, ["batch"])],
    )
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(tmp_path / "model.onnx"))
    model = OrtModel(tmp_path / "model.onnx", device="cpu")
    with pytest.raises(InputError, match=r"input 'flags' has type tensor\(bool\); bind\(\) handles"):
        model.bind({"flags": np.array([True, False])})


def test_cuda_graph_without_a_gpu_is_refused_by_name(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["cls"]
    export(conf, ckpt, tmp_path / "onnx", "--forms", "fp32")
    with pytest.raises(InputError, match="cuda_graph=True needs"):
        OrtModel(tmp_path / "onnx" / "fp32" / "model.onnx", device="cpu", cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_equals_a_plain_cuda_run(trained: dict, tmp_path: Path) -> None:
    conf, ckpt = trained["ner"]
    export(conf, ckpt, tmp_path / "onnx", "--forms", "[fp16, int8-gpu]")
    ids = torch.randint(5, 90, (4, 16), generator=torch.Generator().manual_seed(1))
    for form in ("fp16", "int8-gpu"):
        path = tmp_path / "onnx" / form / "model.onnx"
        plain, graphed = OrtModel(path), OrtModel(path, cuda_graph=True)
        feeds = plain.feeds(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
        bound = graphed.bind(feeds)
        for _ in range(3):  # capture, then replays
            bound.run()
        np.testing.assert_allclose(bound.output(), plain.session.run(["logits"], feeds)[0], rtol=1e-3, atol=1e-3)
        bound.update({"input_ids": feeds["input_ids"][::-1].copy()})
        bound.run()
        np.testing.assert_allclose(
            bound.output(),
            plain.session.run(["logits"], {**feeds, "input_ids": feeds["input_ids"][::-1].copy()})[0],
            rtol=1e-3,
            atol=1e-3,
        )


def test_greedy_agreement_skips_near_ties_and_counts_decided_flips() -> None:
    """A flip where PyTorch's top-2 gap is within twice the form's logit error is a near-tie
    (the CPU's kernels decide it); a flip beyond it is a disagreement the gate counts."""
    from types import SimpleNamespace

    from lightkit.export.builder.parity import greedy_agreement

    # PyTorch's path: 2 rows x 3 steps over 4 tokens; row 0 step 1 is a near-tie (gap 0.01).
    reference_logits = torch.tensor(
        [[[5.0, 1, 0, 0], [2.0, 1.99, 0, 0], [0, 0, 3.0, 0]], [[0, 4.0, 0, 0], [0, 0, 0, 6.0], [1.0, 0, 0, 0]]]
    )
    reference = {
        "input_ids": torch.ones(2, 2, dtype=torch.long),
        "attention_mask": torch.ones(2, 2, dtype=torch.long),
        "tokens": reference_logits.argmax(-1),
        "logits": reference_logits,
    }

    def loop(logits: torch.Tensor) -> SimpleNamespace:  # a DecodeLoop whose forced decoding gives `logits`
        return SimpleNamespace(forced=lambda ids, mask, tokens: logits)

    near_tie = reference_logits.clone()
    near_tie[0, 1, 1] = 2.005  # within an error of 0.01: the artifact picks the other token
    result = greedy_agreement(reference, loop(near_tie), logit_error=0.01)
    assert result == {
        "greedy_agreement": 1.0,
        "greedy_decided_steps": 5,
        "greedy_near_ties": 1,
        "greedy_near_tie_flips": 1,
        "decode_max_abs_diff": pytest.approx(0.015, abs=1e-6),
    }
    decided = reference_logits.clone()
    decided[1, 1, 0] = 7.0  # a decided step (gap 6) now picks another token
    result = greedy_agreement(reference, loop(decided), logit_error=0.01)
    assert result["greedy_agreement"] == pytest.approx(4 / 5) and result["greedy_near_tie_flips"] == 0


def test_tracing_leaves_the_model_in_eval_mode(tmp_path: Path) -> None:
    """The exporter restores the traced module's own mode; the PyTorch references scored after a
    trace (the qat form's fake-quantised model, the latency) must not run with dropout on."""
    from transformers import BertConfig, BertForTokenClassification, LlamaConfig, LlamaForCausalLM

    from lightkit.export.builder.onnx_export import export_causal_lm, export_fp32

    encoder = BertForTokenClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, num_labels=3)).eval()  # fmt: skip
    export_fp32(encoder, tmp_path / "encoder.onnx", logits_axes=["batch", "sequence", 3])
    config = LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=9)
    decoder = LlamaForCausalLM(config).eval()
    export_causal_lm(decoder, tmp_path / "decoder.onnx")
    assert not any(m.training for m in [*encoder.modules(), *decoder.modules()])


def test_remove_qat_gives_back_the_float_model() -> None:
    from torch import nn

    from lightkit.training.fake_quant import fake_quantizers, prepare_qat, remove_qat

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    expected = model(x)
    prepare_qat(model)
    assert len(fake_quantizers(model)) == 4
    remove_qat(model)
    assert fake_quantizers(model) == [] and all(type(m) is nn.Linear for m in (model[0], model[2]))
    assert torch.equal(model(x), expected) and set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
