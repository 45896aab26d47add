"""GenerationMetrics: validation answers a fixed slice greedily; ROUGE-L, length and reward are
logged, checkpoints select on them, and the answers are written for reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DATA, ROOT, series
from torchmetrics.functional.text.rouge import rouge_score

from lightkit.cli.main import cli
from lightkit.io.errors import InputError

INSTRUCT = ROOT / "tests" / "conf" / "instruct.yaml"
GRPO = ROOT / "tests" / "conf" / "grpo.yaml"


def answers_of(root: Path) -> dict[int, list[dict]]:
    folder = next(root.rglob("val_generations"))
    return {int(p.stem.removeprefix("step-")): [json.loads(x) for x in p.read_text().splitlines()]
            for p in folder.glob("step-*.jsonl")}  # fmt: skip


def test_instruction_tuning_logs_answer_metrics_and_checkpoints_on_them(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    callbacks = [
        {
            "class_path": "GenerationMetrics",
            "init_args": {"rows": 6, "max_new_tokens": 6, "batch_size": 4, "reward_fn": "ppo_rewards:count_e"},
        },  # fmt: skip
        {
            "class_path": "ModelCheckpoint",
            "init_args": {"monitor": "val_rougeL", "mode": "max", "dirpath": str(tmp_path / "best")},
        },  # fmt: skip
    ]
    config = tmp_path / "callbacks.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    trainer = cli(["fit", "--config", str(INSTRUCT), "--config", str(config), "--data.tokenizer", str(bpe),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "true",
                   "--trainer.enable_checkpointing", "true", "--trainer.max_epochs", "3"]).trainer  # fmt: skip
    rouge, words, reward = (series(tmp_path, k) for k in ("val_rougeL", "val_words", "val_greedy_reward"))
    assert len(rouge) == len(words) == len(reward) == 3  # one value per validation, none from the sanity check
    written = answers_of(tmp_path)
    assert len(written) == 3
    for (_, rows), r, w, g in zip(sorted(written.items()), rouge, words, reward):
        assert len(rows) == 6 and all(row["prompt"].startswith("Q: ") for row in rows)
        answers, references = [row["answer"] for row in rows], [row["reference"] for row in rows]
        # What was logged is what the written answers score.
        assert r == pytest.approx(float(rouge_score(answers, references, rouge_keys="rougeL")["rougeL_fmeasure"]))
        assert w == pytest.approx(sum(len(a.split()) for a in answers) / 6)
        assert g == pytest.approx(sum(a.count("e") for a in answers) / 6)
        assert [row["reward"] for row in rows] == [float(a.count("e")) for a in answers]
    kept = trainer.checkpoint_callback  # selected on the answers, not on the loss
    assert float(kept.best_model_score) == pytest.approx(max(rouge))
    assert torch.load(kept.best_model_path, weights_only=True)["epoch"] == rouge.index(max(rouge))


def test_grpo_scores_its_greedy_answers_with_its_own_reward(bpe: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    task = cli(["fit", "--config", str(GRPO), "--data.tokenizer", str(bpe), "--trainer.max_epochs", "1",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks+=GenerationMetrics",
                "--trainer.callbacks.rows", "4", "--trainer.callbacks.max_new_tokens", "4"])  # fmt: skip
    rows = next(iter(answers_of(tmp_path).values()))
    assert len(rows) == 4
    logged = task.trainer.callback_metrics
    assert float(logged["val_greedy_reward"]) == pytest.approx(sum(r["answer"].count("e") for r in rows) / 4)
    assert {"val_rougeL", "val_words", "val_reward"} <= logged.keys()


@pytest.mark.slow  # two DPO fits
def test_dpo_answers_a_prompts_file_and_pairs_alone_are_refused(tiny_lm: dict, tmp_path: Path) -> None:
    from test_dpo_grpo import dpo_args, write_pairs

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    refused = dpo_args(tiny_lm, tmp_path / "a", pairs, "--trainer.max_epochs", "1",
                       "--trainer.callbacks+=GenerationMetrics")  # fmt: skip
    with pytest.raises(InputError, match="preference pairs hold no reference answers; give it a prompts file"):
        cli(["fit", *refused])
    prompts = tmp_path / "prompts.jsonl"
    rows = [json.loads(x) for x in (DATA / "lm" / "instruct.jsonl").read_text().splitlines()[:5]]
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"], "reference": r["response"]}) + "\n" for r in rows))
    task = cli(["fit", *dpo_args(tiny_lm, tmp_path / "b", pairs, "--trainer.max_epochs", "1",
                                 "--trainer.callbacks+=GenerationMetrics", "--trainer.callbacks.prompts", str(prompts),
                                 "--trainer.callbacks.max_new_tokens", "4")])  # fmt: skip
    written = next(iter(answers_of(tmp_path / "b").values()))
    assert [w["prompt"] for w in written] == [f"Q: {r['prompt']}\nA: " for r in rows]  # the pairs' prompt_template
    assert [w["reference"] for w in written] == [r["response"] for r in rows]
    assert "val_rougeL" in task.trainer.callback_metrics and "val_greedy_reward" not in task.trainer.callback_metrics


def test_a_prompts_file_without_references_is_named(bpe: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "where ?"}) + "\n")
    with pytest.raises(InputError, match=r"prompts.jsonl:1: .*reference"):
        cli(["fit", "--config", str(INSTRUCT), "--data.tokenizer", str(bpe), "--trainer.max_epochs", "1",
             "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks+=GenerationMetrics",
             "--trainer.callbacks.prompts", str(prompts)])  # fmt: skip


def test_greedy_answers_skip_the_kl_forwards_of_a_model_that_is_its_own_reference(tiny_lm: dict) -> None:
    """The report's SFT row: its KL to itself comes out exactly 0 when computed (a copy of the
    same weights as reference), so it is not computed; a moved model's KL is."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightkit.metrics.answers import greedy_answers

    model = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm["bpe"])
    prompts = ["the cat sat on", "a dog ran to the", "one two"]
    twin = copy.deepcopy(model)
    computed = greedy_answers(model, tokenizer, prompts, 6, 2, reference=twin)
    assert computed["kl"] == [0.0, 0.0, 0.0]

    def forwards(reference: object) -> tuple[dict, int]:
        calls = []
        handle = model.register_forward_hook(lambda *_: calls.append(1))
        try:
            return greedy_answers(model, tokenizer, prompts, 6, 2, reference=reference), len(calls)
        finally:
            handle.remove()

    skipped, calls = forwards(model)
    assert skipped == computed
    assert calls == forwards(None)[1]  # generation's forwards only, as with no reference at all
    with torch.no_grad():
        next(twin.parameters()).add_(0.5)
    moved = greedy_answers(model, tokenizer, prompts, 6, 2, reference=twin)
    assert all(kl > 0 for kl in moved["kl"]) and moved["answers"] == computed["answers"]


def test_a_cached_reference_reads_each_prompt_once_and_gives_the_full_forward_kl(
    tiny_lm: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's KL to SFT with `CachedPrompts`: across several models the reference reads
    each batch of prompts once and then one answer token per forward; a copy of the reference
    scores 0 (both sides take generate's path), and a moved model's KL equals the exact
    KL from full forwards of both models over prompt and answer."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightkit.metrics.answers import greedy_answers
    from lightkit.models.prompt_cache import CachedPrompts, positions

    reference = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm["bpe"])
    prompts = ["the cat sat on", "a dog ran to the", "one two"]
    moved = copy.deepcopy(reference)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if "mlp" in name:
                p.mul_(1.2)
    twin = copy.deepcopy(reference)
    reader = CachedPrompts(reference)
    widths: list[int] = []
    handle = reference.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["input_ids"].size(1)),
                                                 with_kwargs=True)  # fmt: skip
    try:
        twin = greedy_answers(twin, tokenizer, prompts, 6, 2, reader, context=torch.no_grad)
        first = greedy_answers(moved, tokenizer, prompts, 6, 2, reader, context=torch.no_grad)
        read = len(widths)
        again = greedy_answers(moved, tokenizer, prompts, 6, 2, reader, context=torch.no_grad)
    finally:
        handle.remove()
    assert max(twin["kl"]) < 1e-6 and len(twin["kl"]) == 3  # 0 but for a last bit's rounding
    assert again == first
    assert sorted(set(widths[read:])) == [1]  # the second model's turn: answer tokens only, one at a time
    assert sum(w > 1 for w in widths) == 2  # the two batches of prompts, each read once for all three models

    # the exact KL, from one forward of each model over prompt and answer
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    expected = []
    for start in (0, 2):
        ids, mask = enc["input_ids"][start : start + 2], enc["attention_mask"][start : start + 2]
        with torch.no_grad():
            out = moved.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
        response = out[:, ids.size(1) :]
        is_eos = response == tokenizer.eos_token_id
        keep = ((is_eos.long().cumsum(1) - is_eos.long()) == 0).float()
        attention = torch.cat([mask, torch.ones_like(response)], 1)
        kwargs = {"input_ids": out, "attention_mask": attention, "position_ids": positions(attention)}
        with torch.no_grad():
            logp = torch.log_softmax(moved(**kwargs).logits[:, ids.size(1) - 1 : -1], -1)
            logq = torch.log_softmax(reference(**kwargs).logits[:, ids.size(1) - 1 : -1], -1)
        expected += ((logp.exp() * (logp - logq)).sum(-1) * keep).sum(1).tolist()
    assert all(kl > 0 for kl in first["kl"])
    assert first["kl"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert reader.kept_bytes > 0

    # Over its memory budget the reference keeps nothing and reads the prompts for every model.
    spent = CachedPrompts(reference, max_bytes=0)
    widths.clear()
    handle = reference.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["input_ids"].size(1)),
                                                 with_kwargs=True)  # fmt: skip
    try:
        for _ in range(2):
            assert greedy_answers(moved, tokenizer, prompts, 6, 2, spent, context=torch.no_grad) == first
    finally:
        handle.remove()
    assert sum(w > 1 for w in widths) == 4 and spent.kept_bytes == 0

    # A cache that cannot be cut back to the prompt (sliding-window layers): one forward over
    # prompt and answer per model, the same KL but for rounding.
    from transformers.cache_utils import Cache

    monkeypatch.setattr(Cache, "is_croppable", property(lambda self: False))
    uncut = greedy_answers(moved, tokenizer, prompts, 6, 2, CachedPrompts(reference), context=torch.no_grad)
    assert uncut["answers"] == first["answers"] and uncut["kl"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_policy_comparison_scores_every_policy_against_the_reference_it_loaded_once(
    tiny_lm: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `lightkit ship`'s evaluate stage and align_report share: the reference named as a policy
    answers as itself (KL 0, not loaded again); another policy is loaded from its folder, and its
    answers, KL and scores are `greedy_answers` against that reference and `answer_scores` of them."""
    import copy

    from transformers import AutoTokenizer

    from lightkit.metrics import answers

    loads: list[str] = []
    load = answers.load_causal_lm
    monkeypatch.setattr(answers, "load_causal_lm", lambda name: loads.append(str(name)) or load(name))
    reference = load(tiny_lm["hf"])
    moved = copy.deepcopy(reference)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if "mlp" in name:
                p.mul_(1.2)
    moved.save_pretrained(tmp_path / "moved")
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm["bpe"])
    prompts, references = ["the cat sat on", "a dog ran to the", "one two"], ["the cat", "a dog", "two"]

    def reward(prompts: list[str], responses: list[str], reference: list[str]) -> torch.Tensor:
        return torch.tensor([float(len(r.split()) - len(ref.split())) for r, ref in zip(responses, reference)])

    comparison = answers.PolicyComparison(tiny_lm["hf"], tokenizer, prompts, references, reward, 6, 2)
    own_out, own = comparison.score(tiny_lm["hf"])
    out, scored = comparison.score(tmp_path / "moved")
    assert loads == [str(tiny_lm["hf"]), str(tmp_path / "moved")]
    assert own_out == answers.greedy_answers(reference, tokenizer, prompts, 6, 2) and own["kl_to_sft"] == 0.0
    expected = answers.greedy_answers(moved, tokenizer, prompts, 6, 2, answers.CachedPrompts(reference))
    assert out == expected and all(kl > 0 for kl in out["kl"])
    assert scored == answers.answer_scores(expected, prompts, references, reward)
    assert scored["rewards"] == reward(prompts, expected["answers"], references).tolist()


def test_reward_agreement_gives_a_reward_model_each_prompts_columns() -> None:
    """A reward model that reads each answer's reference gets the references of the very prompts
    it scores, batch by batch, for every model's answers."""
    from lightkit.metrics.answers import reward_agreement

    seen: list[tuple[list[str], list[str]]] = []

    def scorer(prompts: list[str], answers: list[str], reference: list[str]) -> torch.Tensor:
        seen.append((prompts, reference))
        return torch.tensor([float(a == r) for a, r in zip(answers, reference)])

    prompts, references = ["p0", "p1", "p2"], ["a", "b", "c"]
    answers = {"good": ["a", "b", "c"], "bad": ["x", "b", "y"]}
    out = reward_agreement(scorer, prompts, answers, [1.0, 1.0, 1.0, 0.0, 1.0, 0.0], batch_size=2,
                           columns={"reference": references})  # fmt: skip
    assert seen == [(["p0", "p1"], ["a", "b"]), (["p2"], ["c"])] * 2
    assert out["answers_scored"] == 6 and out["pearson_with_callable_reward"] == pytest.approx(1.0)
    # Each model's spread under both: "good" scores 1, 1, 1 under both; "bad" 0, 1, 0.
    assert out["sd_per_model"] == {
        "good": {"learned_sd": 0.0, "callable_sd": 0.0},
        "bad": {"learned_sd": pytest.approx(0.57735, rel=1e-4), "callable_sd": pytest.approx(0.57735, rel=1e-4)},
    }
