"""PPO and reward models: the maths on hand-computed values, and RLHF through the real CLI."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import DATA, ROOT, ppo, series

from lightkit.cli.main import cli, main
from lightkit.data.files import read_table
from lightkit.data.prompts import PreferenceDataModule
from lightkit.io.errors import InputError
from lightkit.objectives.rlhf import AdaptiveKL, gae, masked_whiten, policy_loss, token_logprobs, value_loss

PPO = ROOT / "tests" / "conf" / "ppo.yaml"
REWARD_MODEL = ROOT / "tests" / "conf" / "reward_model.yaml"


# -- maths -------------------------------------------------------------------------------------
def test_gae_matches_a_hand_computed_case() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second rollout ends after 2 tokens
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # Row 0: d2 = 2 - 0.1 = 1.9; d1 = 0 + .9*.1 - .2 = -0.11; d0 = 1 + .9*.2 - .5 = 0.68
    a2 = 1.9
    a1 = -0.11 + 0.72 * a2
    a0 = 0.68 + 0.72 * a1
    # Row 1: the value 9.0 after the end must not leak in: d1 = 1 - .4 = 0.6; d0 = .5 + .9*.4 - .3
    b1 = 0.6
    b0 = 0.56 + 0.72 * b1
    assert adv.flatten().tolist() == pytest.approx([a0, a1, a2, b0, b1, 0.0])
    assert ret.flatten().tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1, b0 + 0.3, b1 + 0.4, 0.0])


def test_whitening_uses_only_real_tokens() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, unbiased variance 1 over the three real entries
    assert masked_whiten(x, mask).flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)


def test_clipped_policy_and_value_losses_match_hand_computed_cases() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -2.0, 3.0]])
    mask = torch.ones(1, 3)
    loss, clip_frac, approx_kl, ratio = policy_loss(new, old, adv, mask, clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(1.0, 1.6) = 1.6 (clipped); token 2: -3.3
    assert loss.item() == pytest.approx((-1.2 + 1.6 - 3.3) / 3)
    assert clip_frac.item() == pytest.approx(2 / 3)
    expected_kl = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert approx_kl.item() == pytest.approx(expected_kl)
    assert ratio.flatten().tolist() == pytest.approx([1.5, 0.5, 1.1])

    values, old_values, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.1]])
    vf, vf_clip = value_loss(values, old_values, returns, torch.ones(1, 2), clip=0.2)
    # token 0: clipped value 0.7 -> max(1.0, 1.69) = 1.69; token 1: 0.01 both ways
    assert vf.item() == pytest.approx(0.5 * (1.69 + 0.01) / 2)
    assert vf_clip.item() == pytest.approx(0.5)


def test_adaptive_kl_follows_its_target() -> None:
    ctl = AdaptiveKL(0.1, target=6.0, horizon=100)
    ctl.update(12.0, n_rollouts=10)  # error clipped to +0.2: coef *= 1 + 0.2 * 10/100
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(3.0, n_rollouts=10)  # error -0.5 clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = AdaptiveKL(0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1


# -- through the CLI ---------------------------------------------------------------------------
def test_ppo_raises_a_callable_reward_and_keeps_the_reference_frozen(bpe: Path, tmp_path: Path) -> None:
    from lightkit.tasks import PPOTask

    seen: dict[str, object] = {}
    start, end = PPOTask.on_fit_start, PPOTask.on_fit_end

    def on_fit_start(self: PPOTask) -> None:
        seen["reference"] = {k: v.clone() for k, v in self.frozen("reference").state_dict().items()}
        seen["policy"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        start(self)

    def on_fit_end(self: PPOTask) -> None:
        seen["reference_after"] = self.frozen("reference")
        seen["policy_after"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        seen["optimized"] = {id(p) for g in self.trainer.optimizers[0].param_groups for p in g["params"]}
        end(self)

    PPOTask.on_fit_start, PPOTask.on_fit_end = on_fit_start, on_fit_end  # type: ignore[method-assign]
    try:
        ppo(bpe, tmp_path, "--trainer.logger", "true", "--trainer.enable_checkpointing", "true")
    finally:
        PPOTask.on_fit_start, PPOTask.on_fit_end = start, end  # type: ignore[method-assign]

    # Measured with seed 0: train reward 0.3 -> 5.1 letters "e" per 8-token response, validation
    # 0.75 -> 6.4; KL to the reference grows to ~20 nats per response and stays finite.
    train, val = series(tmp_path, "train_reward_epoch"), series(tmp_path, "val_reward")
    assert train[-1] >= train[0] + 2.0, train
    assert val[-1] >= val[0] + 2.0, val
    for key in (
        "train_kl_epoch",
        "val_kl",
        "train_policy_loss_epoch",
        "train_value_loss_epoch",
        "train_entropy_epoch",
        "train_approx_kl_epoch",
        "train_clip_frac_epoch",
        "train_response_length_epoch",
    ):
        values = series(tmp_path, key)
        assert values and all(math.isfinite(v) for v in values), key
    # The ratio guard may skip the odd minibatch (it does once with this seed and data order), never many.
    skipped = series(tmp_path, "train_skipped_minibatches_epoch")
    assert len(skipped) == len(train) and sum(skipped) <= 2, skipped

    reference = seen["reference_after"]
    for name, p in reference.named_parameters():
        assert torch.equal(p, seen["reference"][name]), name  # never changes
        assert p.grad is None and id(p) not in seen["optimized"], name
    assert any(not torch.equal(seen["policy_after"][k], v) for k, v in seen["policy"].items())  # the policy did
    ckpt = torch.load(
        next((tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")), weights_only=True
    )
    assert all(k.startswith(("model.", "value_head.")) for k in ckpt["state_dict"]), "no reference in the checkpoint"
    assert "kl_coef" in ckpt


def test_ppo_runs_the_policy_once_per_minibatch_and_not_again_for_its_rollout(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its first update the policy is the one that sampled, so the first minibatch's
    forward also gives the rollout's log-probs and values: exactly what a separate forward over
    every sample gives, with the other rows computed once, and the LM head only on the response."""
    from lightkit.tasks import PPOTask

    calls = []
    forward_policy = PPOTask.forward_policy

    def counted(self: PPOTask, samples: object, idx: torch.Tensor | None = None) -> object:
        calls.append(torch.is_grad_enabled())
        return forward_policy(self, samples, idx)

    monkeypatch.setattr(PPOTask, "forward_policy", counted)
    task = cli(["fit", "--config", str(PPO), "--data.tokenizer", str(bpe), "--trainer.max_steps", "2",
                "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path),
                "--model.init_args.ppo_epochs", "1", "--model.init_args.minibatch_size", "8"]).model  # fmt: skip
    monkeypatch.undo()
    assert calls == [True, True], calls  # one forward per step (one minibatch of 8), none without gradient

    batch = next(iter(task.trainer.datamodule.train_dataloader()))
    task.eval()
    sampled = task.sample(batch["input_ids"], batch["attention_mask"])
    widths: list[tuple[int, int]] = []
    hook = task.model.register_forward_hook(
        lambda module, args, kwargs, out: widths.append((len(kwargs["input_ids"]), out.logits.size(1))),
        with_kwargs=True,
    )
    with torch.no_grad():
        logprobs, _, values = task.forward_policy(sampled)
    idx, rest = torch.tensor([5, 1, 6, 2]), torch.tensor([7, 0, 3, 4])
    graph, (first_logprobs, first_values) = task.first_update(sampled, idx, rest)
    hook.remove()
    assert torch.equal(first_logprobs, logprobs) and torch.equal(first_values, values)
    assert graph[0].requires_grad and torch.equal(graph[0].detach(), logprobs[idx])
    keep = sampled.response.size(1) + 1
    assert widths == [(8, keep), (4, keep), (4, keep)]  # all rows; the minibatch; the other rows


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("ppo_rewards:raises", "reward_fn 'ppo_rewards:raises' raised RuntimeError: reward service unavailable"),
        ("ppo_rewards:one_short", "reward_fn 'ppo_rewards:one_short' returned 7 scores for 8 responses"),
        ("ppo_rewards:not_finite", "reward_fn 'ppo_rewards:not_finite' returned non-finite scores at positions [0]"),
        ("ppo_rewards:missing", "reward_fn: 'ppo_rewards' has no callable 'missing'"),
        ("no_such_module.fn", "reward_fn: cannot import module 'no_such_module'"),
        ("lightkit.text_rewards:rouge_l", "(it moved to lightkit.rewards.text)"),
    ],
)
def test_a_broken_reward_callable_is_named(bpe: Path, tmp_path: Path, fn: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        ppo(bpe, tmp_path, "--model.init_args.reward_fn", fn, "--trainer.max_epochs", "1")


def write_preferences(path: Path, n: int, seed: int) -> None:
    """Pairs where the chosen answer names a city and the rejected one a filler word."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in (DATA / "lm" / "instruct.jsonl").read_text().splitlines()]
    fillers = ["the", "news", "today", "yesterday", "with"]
    with path.open("w") as f:
        for _ in range(n):
            row = rng.choice(rows)
            f.write(
                json.dumps(
                    {"prompt": row["prompt"], "chosen": " " + row["response"], "rejected": " " + rng.choice(fillers)}
                )
                + "\n"
            )


def fit_reward_model(bpe: Path, prefs: Path, root: Path, *overrides: str) -> Path:
    """One epoch of tests/conf/reward_model.yaml on `prefs` through the CLI; its saved hf_model."""
    main(["fit", "--config", str(REWARD_MODEL), "--data.tokenizer", str(bpe), "--data.train_file", str(prefs),
          *overrides, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root)])  # fmt: skip
    return root / "lightning_logs" / "version_0" / "hf_model"


def scores_as_trained(scorer: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reward model's scores of one collated pair's chosen and rejected sides, as training read
    them: what `ModelReward` must reproduce from the texts."""
    with torch.no_grad():
        return torch.stack([
            scorer.model(**{k.removeprefix(f"{side}_"): v for k, v in batch.items() if k.startswith(side)}).logits[0, 0]
            for side in ("chosen", "rejected")
        ])  # fmt: skip


def test_warmup_under_ppo_counts_its_updates(bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PPO makes ppo_epochs x minibatches updates per batch: LRWarmup plans and sets the LR per
    update, so warmup and decay span the whole run instead of its first batches."""
    from lightkit.callbacks.warmup import lr_multiplier

    monkeypatch.syspath_prepend(str(ROOT / "tests"))  # probes.LRAtEachUpdate
    record = tmp_path / "lrs.json"
    ppo(bpe, tmp_path, "--trainer.max_epochs", "1", "--model.init_args.ratio_threshold", "1e9",
        "--trainer.callbacks+=LRWarmup", "--trainer.callbacks.warmup_ratio", "0.25",
        "--trainer.callbacks+=probes.LRAtEachUpdate", "--trainer.callbacks.path", str(record))  # fmt: skip
    seen = json.loads(record.read_text())
    lrs, total = seen["lrs"], seen["total_steps"]
    # One epoch of 3 batches (24 prompts, 8 a batch), 4 PPO epochs x 2 minibatches of 4 each: 24
    # updates planned, and all made (ratio_threshold off, so none is skipped).
    assert total == 24 and len(lrs) == 24 and seen["warmup"] == 6
    assert lrs == pytest.approx([0.01 * lr_multiplier(s, total, 6) for s in range(total)])
    assert lrs[-1] < lrs[6] / 4  # decayed over the run, not within its first batch


def test_reward_model_learns_preferences_and_steers_ppo(bpe: Path, tmp_path: Path) -> None:
    prefs = tmp_path / "prefs.jsonl"
    write_preferences(prefs, 120, seed=0)
    root = tmp_path / "rm"
    main(
        [
            "fit",
            "--config",
            str(REWARD_MODEL),
            "--data.tokenizer",
            str(bpe),
            "--data.train_file",
            str(prefs),
            "--trainer.default_root_dir",
            str(root),
        ]
    )
    accuracy = series(root, "val_accuracy")
    assert accuracy[-1] >= 0.9, accuracy  # cities vs filler words: a tiny model ranks them
    losses = series(root, "train_loss_epoch")
    assert losses[-1] < 0.5 * losses[0], losses
    saved = root / "lightning_logs" / "version_0" / "hf_model"
    assert json.loads((saved / "config.json").read_text())["id2label"] == {"0": "reward"}  # one scalar output
    # The trained reward model (as a lightkit checkpoint) drives PPO.
    ckpt = next((root / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    ppo(
        bpe,
        tmp_path / "ppo",
        "--model.init_args.reward_fn",
        "null",
        "--model.init_args.reward_model",
        str(ckpt),
        "--trainer.max_epochs",
        "1",
        "--trainer.logger",
        "true",
    )
    rewards = series(tmp_path / "ppo", "val_reward")
    assert rewards and all(math.isfinite(v) for v in rewards)  # logged, and finite
    # Mixed with a callable: model_weight x the model's score + the callables' weighted sum.
    from lightkit.rewards.scoring import ModelReward, build_reward
    from lightkit.tasks import REWARD_MODEL_TASKS

    alone = ModelReward(str(ckpt), REWARD_MODEL_TASKS)
    mixed = build_reward("ppo_rewards:count_e", str(ckpt), weights=[2.0], model_weight=0.5, tasks=REWARD_MODEL_TASKS)
    prompts, responses = ["Q: where ?\nA: ", "Q: who ?\nA: "], ["oslo", "the e e"]
    want = 0.5 * alone(prompts, responses) + 2.0 * torch.tensor([0.0, 3.0])
    assert torch.allclose(mixed(prompts, responses), want)
    assert set(mixed.last_parts) == {"reward_model", "reward_count_e"} and mixed.model is not None
    # PPO reads a long prompt as the reward model was trained to (max_length 32, cut from the left),
    # from the checkpoint or the saved folder, not transformers' 512 default.
    assert json.loads((saved / "lightkit.json").read_text()) == {
        "input_max_length": 32,
        "response_first": False,
        "reference_column": None,
    }
    folder = ModelReward(str(saved), REWARD_MODEL_TASKS)
    assert alone.max_length == folder.max_length == 32

    dm = PreferenceDataModule(tokenizer=str(bpe), train_file=str(prefs), max_length=32)
    long_prompt = "Q: " + "where is it ? " * 20 + "\nA: "
    batch = dm.collate([{"prompt": long_prompt, "chosen": "oslo", "rejected": "e e"}])
    trained = scores_as_trained(folder, batch)
    assert batch["chosen_input_ids"].shape[1] == 32
    assert torch.allclose(folder([long_prompt] * 2, ["oslo", "e e"]), trained)
    assert folder.tokenizer.truncation_side == dm.tokenizer.truncation_side == "right"  # cut left, left as given
    task = cli(["--config", str(PPO), "--data.tokenizer", str(bpe), "--model.init_args.reward_model", str(ckpt),
                "--model.init_args.reward_model_weight", "0.5"], run=False).model  # fmt: skip
    assert "reward" in task.__dict__["_frozen"]  # the reward model moves with the policy, never trained or saved


def test_a_reward_model_reading_the_response_first_keeps_the_start_of_a_long_prompt(bpe: Path, tmp_path: Path) -> None:
    """An encoder reward model reads `[CLS] response [SEP] prompt`, the prompt cut from its end, so
    an article's lead stays in view where the default left cut keeps only its last words; the
    order is saved with the model and PPO's ModelReward scores exactly as training read."""
    from lightkit.models.loading import load_tokenizer
    from lightkit.models.reward_inputs import encode_scored
    from lightkit.rewards.scoring import ModelReward
    from lightkit.tasks import REWARD_MODEL_TASKS

    minilm = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    article = "Write a headline.\n\nThe bank raised rates today. " + "Markets moved on the news again. " * 40
    first = minilm.decode(encode_scored(minilm, [article], ["rates rise"], 24, response_first=True)["input_ids"][0])
    assert first.startswith("[CLS] rates rise [SEP] write a headline. the bank raised rates today"), first
    assert len(minilm(first, add_special_tokens=False)["input_ids"]) == 24 and first.endswith("[SEP]")
    last = minilm.decode(encode_scored(minilm, [article], ["rates rise"], 24)["input_ids"][0])
    assert last.endswith("news again. rates rise [SEP]") and "bank" not in last, last
    assert minilm.truncation_side == "right"  # left as given

    prefs = tmp_path / "prefs.jsonl"
    write_preferences(prefs, 40, seed=0)
    saved = fit_reward_model(bpe, prefs, tmp_path / "rm", "--data.init_args.response_first", "true")
    assert json.loads((saved / "lightkit.json").read_text()) == {
        "input_max_length": 32,
        "response_first": True,
        "reference_column": None,
    }
    scorer = ModelReward(str(saved), REWARD_MODEL_TASKS)
    dm = PreferenceDataModule(tokenizer=str(bpe), train_file=str(prefs), max_length=32, response_first=True)
    long_prompt = "Q: " + "where is it ? " * 20 + "\nA: "
    batch = dm.collate([{"prompt": long_prompt, "chosen": "oslo", "rejected": "e e"}])
    trained = scores_as_trained(scorer, batch)
    assert scorer.response_first and scorer.max_length == 32
    assert torch.allclose(scorer([long_prompt] * 2, ["oslo", "e e"]), trained)
    plain = PreferenceDataModule(tokenizer=str(bpe), train_file=str(prefs), max_length=32)
    assert not torch.equal(plain.collate([{"prompt": long_prompt, "chosen": "oslo", "rejected": "e e"}])[
        "chosen_input_ids"], batch["chosen_input_ids"])  # fmt: skip


def test_a_reward_model_reading_the_reference_scores_each_answer_against_it(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reference_column`: the reward model reads each answer beside the prompt's reference answer,
    in the prompt's place. The column is saved with the model, so PPO's ModelReward reads the
    prompt data's references as training read the pairs', and PPO on prompts without them stops
    as it starts, before any sampling."""
    from lightkit.metrics.answers import reward_model_report
    from lightkit.models.loading import load_tokenizer
    from lightkit.models.reward_inputs import encode_scored
    from lightkit.rewards.scoring import ModelReward
    from lightkit.tasks import REWARD_MODEL_TASKS, PPOTask

    minilm = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    article, answer, reference = (
        ["Write a headline.\n\nThe bank raised rates today."],
        ["rates rise"],
        ["Bank lifts rates"],
    )
    pair = encode_scored(minilm, article, answer, 24, response_first=True, references=reference)
    assert minilm.decode(pair["input_ids"][0]) == "[CLS] rates rise [SEP] bank lifts rates [SEP]"
    assert minilm.decode(encode_scored(minilm, article, answer, 24, references=reference)["input_ids"][0]) == (
        "[CLS] bank lifts rates rates rise [SEP]"
    )

    prefs = tmp_path / "prefs.jsonl"
    write_preferences(prefs, 40, seed=0)
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    prefs.write_text("".join(json.dumps({**r, "reference": r["chosen"].strip()}) + "\n" for r in rows))
    saved = fit_reward_model(bpe, prefs, tmp_path / "rm", "--data.init_args.reference_column", "reference")
    assert json.loads((saved / "lightkit.json").read_text()) == {
        "input_max_length": 32, "response_first": False, "reference_column": "reference"
    }  # fmt: skip
    scorer = ModelReward(str(saved), REWARD_MODEL_TASKS)
    assert scorer.needs == {f"reward_model '{saved}'": {"reference"}}
    dm = PreferenceDataModule(tokenizer=str(bpe), train_file=str(prefs), max_length=32, reference_column="reference")
    prompt = "Q: where did erin go ?\nA: "
    batch = dm.collate([{"prompt": prompt, "chosen": "oslo", "rejected": "e e", "reference": "oslo"}])
    trained = scores_as_trained(scorer, batch)
    scored = scorer([prompt] * 2, ["oslo", "e e"], reference=["oslo", "oslo"])
    assert torch.allclose(scored, trained)
    assert not torch.allclose(scorer([prompt] * 2, ["oslo", "e e"], reference=["lima", "lima"]), scored)  # read
    # The reports of `make align` and `lightkit ship` score it the same way, references given.

    report = reward_model_report(
        saved, REWARD_MODEL_TASKS, [0.5, 0.75], [prompt] * 2, {"m": ["oslo", "e e"]}, [1.0, 0.0], ["oslo"] * 2
    )
    assert report["model"] == str(saved) and report["held_out_pair_accuracy"] == 0.75
    assert report["answers_scored"] == 2 and report["pair_accuracy_per_validation"] == [0.5, 0.75]
    assert report["sd_per_model"]["m"]["learned_sd"] == pytest.approx(float(scored.std()), rel=1e-4)
    with pytest.raises(InputError, match="reference_column 'reference'"):
        scorer([prompt], ["oslo"])  # scored without the references it was trained with

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: reference_column 'reference' must hold .* got missing"):
        PreferenceDataModule(tokenizer=str(bpe), train_file=str(bad), reference_column="reference").setup("fit")

    monkeypatch.syspath_prepend(str(ROOT / "tests"))  # ppo_rewards
    seen: list[list[str]] = []
    scored_by = ModelReward.forward

    def spy(self: ModelReward, prompts: list[str], responses: list[str], **columns: list[str]) -> torch.Tensor:
        seen.append(columns["reference"])
        return scored_by(self, prompts, responses, **columns)

    monkeypatch.setattr(ModelReward, "forward", spy)

    def ppo_on(data_module: str, train: Path, **init: Any) -> None:
        data = tmp_path / "data.yaml"
        init |= {"tokenizer": str(bpe), "train_file": str(train), "batch_size": 4}
        data.write_text(json.dumps({"class_path": data_module, "init_args": init}))
        main(["fit", "--config", str(PPO), "--data", str(data), "--trainer.default_root_dir", str(tmp_path / "ppo"),
              "--model.init_args.reward_model", str(saved), "--trainer.max_steps", "1"])  # fmt: skip

    instructions = tmp_path / "instructions.jsonl"  # prompts and their reference answers
    answers = {r["prompt"]: r["chosen"].strip() for r in rows}
    instructions.write_text("".join(json.dumps({"prompt": q, "response": a}) + "\n" for q, a in answers.items()))
    ppo_on("InstructionDataModule", instructions, prompt_template="Q: {prompt}\nA: ", prompts_only=True)
    assert seen and set(seen[0]) <= set(answers.values())  # each sampled prompt's own reference
    monkeypatch.setattr(PPOTask, "sample", lambda *a, **k: pytest.fail("sampled before the columns were checked"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("where did erin go ?\nwhere did bob go ?\n" * 4)  # prompts alone: no reference answers
    message = (
        rf"prompts\.txt: PPOTask: reward_model '{re.escape(str(saved))}' needs the data's column\(s\) \['reference'\]"
    )
    with pytest.raises(InputError, match=message):
        ppo_on("PromptDataModule", prompts)


def test_ppo_runs_under_the_trainers_mixed_precision(bpe: Path, tmp_path: Path) -> None:
    # Manual optimisation still goes through Lightning's precision plugin (manual_backward).
    ppo(bpe, tmp_path, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed", "--trainer.logger", "true")
    for key in ("train_reward_epoch", "train_kl_epoch", "train_policy_loss_epoch", "val_reward"):
        values = series(tmp_path, key)
        assert values and all(math.isfinite(v) for v in values), key


def test_ppo_with_lora_takes_the_adapters_off_policy_as_its_reference(tiny_lm: dict, tmp_path: Path) -> None:
    """No second model in memory: the reference is the policy with its adapters disabled, which
    is exactly the pretrained model, while the trained policy has moved away from it."""
    from transformers import AutoModelForCausalLM

    from lightkit.cli.main import cli

    task = cli(["fit", "--config", str(PPO), "--data.tokenizer", str(tiny_lm["bpe"]), "--trainer.max_epochs", "1",
                "--trainer.default_root_dir", str(tmp_path), "--model.init_args.model_config", "null",
                "--model.init_args.pretrained", str(tiny_lm["hf"]),
                "--model.init_args.peft", "{r: 4, alpha: 8, dropout: 0.0}"]).model  # fmt: skip
    assert "reference" not in task.__dict__.get("_frozen", {})
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("value_head.") for n in trainable)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": torch.arange(5).unsqueeze(0)}
    labels = ids.clone()
    labels[:, :2] = -100  # the last three tokens are the response
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"]).eval()
    task.eval()
    with torch.no_grad():
        expected = token_logprobs(pretrained(input_ids=ids).logits[:, 1:-1], ids[:, 2:])
        assert torch.allclose(task.logprobs(inputs, labels, reference=True)[:, 1:], expected, atol=1e-5)
        assert not torch.allclose(task.logprobs(inputs, labels)[:, 1:], expected, atol=1e-3)


def test_a_weighted_reward_is_described_with_its_weights() -> None:
    """What reports print as their reward: a weight of 1 unsaid, the module once where all share it."""
    from lightkit.rewards.scoring import describe_reward

    text = "lightkit.rewards.text"
    paths = [f"{text}:rouge_l", f"{text}:headline_length", f"{text}.copied_lead"]
    assert describe_reward(paths, [1.0, 1.0, 0.5]) == f"rouge_l + headline_length + 0.5 * copied_lead ({text})"
    assert describe_reward("mypkg.rewards:brevity") == "brevity (mypkg.rewards)"
    assert describe_reward(["a:x", "b:y"], [2.0, -1.0]) == "2 * x + -1 * y"


def test_rewards_say_which_data_columns_they_cannot_run_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """A callable needs the named parameters after (prompts, responses) that have no default; a
    weighted sum needs what its callables need, by callable (the fit-start check names them)."""
    from lightkit.rewards.scoring import build_reward

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    assert build_reward("ppo_rewards:count_e", None).needs == {"reward_fn 'ppo_rewards:count_e'": set()}
    mixed = build_reward(["ppo_rewards:count_e", "ppo_rewards:reference_or_default"], None)
    assert mixed.needs == {"reward_fn 'ppo_rewards:count_e'": set(),
                           "reward_fn 'ppo_rewards:reference_or_default'": {"reference"}}  # fmt: skip


def test_a_reward_models_margin_scale_subtracts_each_pairs_margin_column(bpe: Path, tmp_path: Path) -> None:
    """TRL's and Llama 2's margin loss, `-log σ(r_c - r_r - scale * margin)`, from the pairs' own
    `margin` column; without the column a scale is refused, and a bad margin is named by line."""
    import torch.nn.functional as F

    prefs = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "Q: where ?\nA:", "chosen": " oslo", "rejected": " the", "margin": m} for m in (0.5, 2.0)]
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--config", str(REWARD_MODEL), "--data.tokenizer", str(bpe), "--data.train_file", str(prefs)]
    run = cli([*args, "--model.init_args.margin_scale", "1.5"], run=False)
    task, dm = run.model, run.datamodule
    batch = dm.collate(dm.from_rows([{**r, "_where": "x"} for r in rows], "train"))
    assert batch["margin"].tolist() == [0.5, 2.0]
    gap = task.score(batch, "chosen") - task.score(batch, "rejected")
    want = -F.logsigmoid(gap - 1.5 * torch.tensor([0.5, 2.0])).mean()
    assert torch.allclose(task.step(batch).loss, want)
    assert not torch.allclose(want, -F.logsigmoid(gap).mean())  # the margin changed the loss
    plain = cli(args, run=False).model
    plain.model.load_state_dict(task.model.state_dict())
    assert torch.allclose(plain.step(batch).loss, -F.logsigmoid(gap).mean())  # scale 0 ignores the column
    without = dm.collate(dm.from_rows([{**rows[0], "margin": None, "_where": "x"}], "train"))
    assert "margin" not in without
    with pytest.raises(
        InputError, match=r"a batch: RewardModelTask: margin_scale needs the data's column\(s\) \['margin'\]"
    ):
        task.step(without)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "margin": "wide"}) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: `margin` must be a finite number.*'wide'"):
        PreferenceDataModule(tokenizer=str(bpe), train_file=str(bad)).from_rows(
            read_table(bad, ["chosen", "rejected"], "utf-8"), "train"
        )
    with pytest.raises(ValueError, match="margin_scale must be a finite number >= 0"):
        cli([*args, "--model.init_args.margin_scale", "-1"], run=False)
    # Through the CLI, pairs without margins stop the run at fit start, naming the file.
    some = tmp_path / "some.jsonl"
    some.write_text(json.dumps(rows[0]) + "\n" + json.dumps({k: v for k, v in rows[1].items() if k != "margin"}) + "\n")
    ran = ["--data.train_file", str(some), "--data.holdout", "[0.0, 0.0]", "--data.val_file", str(prefs),
           "--trainer.default_root_dir", str(tmp_path / "rm")]  # fmt: skip
    with pytest.raises(
        InputError,
        match=r"some\.jsonl: RewardModelTask: margin_scale needs `margin` in every row; 1 of its 2 rows have none",
    ):
        main(["fit", *args, "--model.init_args.margin_scale", "1.5", *ran])
