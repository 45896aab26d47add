"""DPO and GRPO: the maths on hand-computed values, the reference, and runs through the real CLI."""

from __future__ import annotations

import json
import math
import random
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import DATA, ROOT, series

from lightkit.cli.main import cli, main
from lightkit.io.errors import InputError
from lightkit.objectives.rlhf import best_of_groups, chosen_nll, dpo_loss, group_advantages, grpo_loss

DPO = ROOT / "tests" / "conf" / "dpo.yaml"
GRPO = ROOT / "tests" / "conf" / "grpo.yaml"


# -- maths -------------------------------------------------------------------------------------
def test_dpo_loss_margin_and_accuracy_match_hand_computed_values() -> None:
    chosen, rejected = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.0])
    ref_chosen, ref_rejected = torch.tensor([-3.5, -4.5]), torch.tensor([-3.5, -4.5])
    loss, r_c, r_r = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    # pair 0: h = (-3 + 4) - 0 = 1 -> -log σ(0.5); pair 1: h = (-5 + 4) - 0 = -1 -> -log σ(-0.5)
    assert loss.tolist() == pytest.approx([-math.log(1 / (1 + math.exp(-0.5))), -math.log(1 / (1 + math.exp(0.5)))])
    assert r_c.tolist() == pytest.approx([0.25, -0.25]) and r_r.tolist() == pytest.approx([-0.25, 0.25])
    margin = r_c - r_r
    assert margin.tolist() == pytest.approx([0.5, -0.5])
    assert (margin > 0).float().mean().item() == 0.5  # the accuracy DPOTask logs
    smoothed, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5, label_smoothing=0.1)
    assert smoothed[0].item() == pytest.approx(
        -0.9 * F.logsigmoid(torch.tensor(0.5)) - 0.1 * F.logsigmoid(torch.tensor(-0.5))
    )
    ipo, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5, loss_type="ipo")
    assert ipo.tolist() == pytest.approx([(1 - 1) ** 2, (-1 - 1) ** 2])  # (h - 1/(2 beta))²


def test_group_advantages_match_hand_computed_values() -> None:
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])  # two groups of 3
    adv = group_advantages(rewards, group_size=3)
    # group 0: mean 2, unbiased std 1; group 1: all equal -> 0 (teaches nothing)
    assert adv.tolist() == pytest.approx([-1 / 1.0001, 0.0, 1 / 1.0001, 0.0, 0.0, 0.0], abs=1e-6)
    assert group_advantages(rewards, 3, scale=False).tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def test_best_of_groups_marks_each_groups_best_only_past_the_margin() -> None:
    rewards = torch.tensor([0.1, 0.5, 0.2, 0.0, 0.1, 0.1, 0.25, 0.1, 0.3, 0.7, 0.7, 0.2])  # three groups of 4
    # group 0: 0.5 is 0.5 above the worst; group 1: 0.25 only 0.15 above; group 2: a tie, the first wins
    assert best_of_groups(rewards, 4, margin=0.2).tolist() == [False, True, False, False] + [False] * 4 + [
        False, True, False, False]  # fmt: skip
    assert best_of_groups(rewards, 4, margin=0.0)[4:8].tolist() == [False, False, True, False]
    logprobs = torch.tensor([[-1.0, -2.0], [-3.0, -5.0], [-7.0, -11.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # the second response has one token
    chosen = torch.tensor([False, True, True])
    assert chosen_nll(logprobs, mask, chosen).item() == pytest.approx((3 + 7 + 11) / 3)
    assert chosen_nll(logprobs, mask, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_grpo_clipped_loss_matches_hand_computed_values() -> None:
    old = torch.zeros(2, 2)
    new = torch.log(torch.tensor([[1.5, 0.9], [0.5, 1.0]]))
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the second response has one token
    loss, stats = grpo_loss(new, old, adv, mask, clip=0.2)
    # row 0: -min(1.5, 1.2) = -1.2 and -min(0.9, 0.9) = -0.9 -> mean -1.05
    # row 1: -min(0.5 * -2, 0.8 * -2) = 1.6
    assert loss.item() == pytest.approx((-1.05 + 1.6) / 2)
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)  # tokens (0,0) and (1,0) clipped
    dapo, _ = grpo_loss(new, old, adv, mask, clip=0.2, loss_type="dapo")
    assert dapo.item() == pytest.approx((-1.2 - 0.9 + 1.6) / 3)
    ref = torch.log(torch.tensor([[1.0, 0.9], [0.5, 2.0]]))  # k3 KL per token: e^d - d - 1, d = ref - new
    with_kl, stats = grpo_loss(new, old, adv, mask, clip=0.2, ref_logprobs=ref, beta=0.5)
    d = math.log(1 / 1.5)
    assert with_kl.item() == pytest.approx(((-1.2 + 0.5 * (math.exp(d) - d - 1) - 0.9) / 2 + 1.6) / 2)
    assert stats["kl"].item() == pytest.approx((math.exp(d) - d - 1) / 3)


def test_labelled_logprobs_equal_the_full_logits(tiny_lm: dict) -> None:
    from transformers import AutoModelForCausalLM

    from lightkit.objectives.lm_loss import labelled_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"]).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7], [4, 4, 8, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 9, 13, 2, -100], [-100, 4, 8, 3, -100, -100]])
    with torch.no_grad():
        got = labelled_logprobs(model, {"input_ids": ids, "attention_mask": mask}, labels, "test", temperature=0.7)
        full = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1] / 0.7, -1)
    target = labels[:, 1:]
    want = full.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (target != -100)
    assert torch.allclose(got, want, atol=1e-5)


# -- DPO through the CLI -------------------------------------------------------------------------
def write_pairs(path: Path, n: int = 60, seed: int = 0) -> Path:
    """Pairs where the chosen answer is the city and the rejected one a filler word."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in (DATA / "lm" / "instruct.jsonl").read_text().splitlines()]
    fillers = ["the", "news", "today", "yesterday", "with"]
    lines = []
    for _ in range(n):
        row = rng.choice(rows)
        lines.append(json.dumps({"prompt": row["prompt"], "chosen": row["response"], "rejected": rng.choice(fillers)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def dpo_args(tiny_lm: dict, root: Path, pairs: Path, *extra: str) -> list[str]:
    return ["--config", str(DPO), "--data.tokenizer", str(tiny_lm["bpe"]), "--data.train_file", str(pairs),
            "--model.init_args.pretrained", str(tiny_lm["hf"]), "--trainer.default_root_dir", str(root),
            "--model.init_args.save_dir", str(root / "hf"), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def plain_dpo(tiny_lm: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One logged DPO fit, counting the reference's forwards: read by the test of DPO itself and
    by RPO's, which compares its chosen side against this run's."""
    from lightkit.tasks import DPOTask

    root = tmp_path_factory.mktemp("plain-dpo")
    pairs = write_pairs(root / "pairs.jsonl")
    calls = {"reference": 0}
    original = DPOTask.sequence_logps

    def counting(self: DPOTask, batch: dict, reference: bool = False) -> torch.Tensor:
        calls["reference"] += reference
        return original(self, batch, reference)

    DPOTask.sequence_logps = counting  # type: ignore[method-assign]
    try:
        task = cli(["fit", *dpo_args(tiny_lm, root / "run", pairs, "--trainer.logger", "true")]).model
    finally:
        DPOTask.sequence_logps = original  # type: ignore[method-assign]
    return {"task": task, "root": root / "run", "pairs": pairs, "reference_calls": calls["reference"]}


def test_dpo_with_lora_learns_the_preferences_and_caches_the_reference(plain_dpo: dict) -> None:
    from transformers import AutoModelForCausalLM

    task, root, pairs = plain_dpo["task"], plain_dpo["root"], plain_dpo["pairs"]
    assert "reference" not in task.__dict__.get("_frozen", {})  # adapters off, not a copy
    # 48 training pairs (6 batches) and 12 validation pairs (2 batches): each pair's reference is
    # computed once, though training runs 3 epochs and validation 4 times (with the sanity check).
    assert plain_dpo["reference_calls"] == 6 + 2
    assert len(task.reference_cache) == len(set(pairs.read_text().splitlines()))  # one entry per distinct pair
    accuracy, margin, loss = (series(root, f"val_{k}") for k in ("accuracy", "margin", "loss"))
    assert accuracy[-1] == 1.0 and margin[-1] > margin[0] + 1.0 and loss[-1] < loss[0] - 0.2, (accuracy, margin, loss)
    chosen, rejected = series(root, "val_logp_chosen"), series(root, "val_logp_rejected")
    assert chosen[-1] - rejected[-1] > chosen[0] - rejected[0] + 1  # nats: the pairs pulled apart
    merged = AutoModelForCausalLM.from_pretrained(root / "hf")  # the tuned policy, plain transformers
    assert merged.config.num_hidden_layers == 2


def test_dpo_raises_a_simple_callable_reward(tiny_lm: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pairs that prefer an answer full of the letter e: after DPO, the policy's greedy answers
    score higher on the PPO/GRPO tests' callable reward (letters e) than the base model's."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from ppo_rewards import count_e

    rows = [json.loads(line) for line in (DATA / "lm" / "instruct.jsonl").read_text().splitlines()]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": "the rene here", "rejected": r["response"]})
                             + "\n" for r in rows))  # fmt: skip
    task = cli(["fit", *dpo_args(tiny_lm, tmp_path, pairs)]).model.eval()
    prompts = [f"Q: {r['prompt']}\nA: " for r in rows[:16]]
    enc = task.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    task.hparams.max_new_tokens = 6

    def answers() -> list[str]:
        with torch.no_grad():
            new = task.generate(enc["input_ids"], enc["attention_mask"])
        return task.tokenizer.batch_decode(new, skip_special_tokens=True)

    after = sum(count_e(prompts, answers()))
    with task.model.disable_adapter():  # the base model
        before = sum(count_e(prompts, answers()))
    assert after >= before + 16, (before, after)  # at least one more e per answer


def test_rpo_adds_the_chosen_tokens_nll_and_holds_the_chosen_side_up(
    tiny_lm: dict, plain_dpo: dict, tmp_path: Path
) -> None:
    """RPO's term is the mean NLL over the chosen responses' tokens (as TRL's rpo_alpha), checked
    against the full logits; trained with it, the chosen side's log-prob ends higher than plain
    DPO's, which may widen the margin by lowering both sides."""
    pairs = plain_dpo["pairs"]
    rpo = cli(["fit", *dpo_args(tiny_lm, tmp_path / "rpo", pairs, "--trainer.logger", "true",
                                "--model.init_args.rpo_alpha", "10")])  # fmt: skip
    task = rpo.model.eval()
    batch = next(iter(rpo.datamodule.val_dataloader()))
    with torch.no_grad():
        with_nll = task.step(batch)
        task.hparams.rpo_alpha = None
        without = task.step(batch)
        pairs_in_batch = batch["pair_key"].size(0)
        ids, labels = batch["input_ids"][:pairs_in_batch], batch["labels"][:pairs_in_batch]
        logits = task.model(input_ids=ids, attention_mask=batch["attention_mask"][:pairs_in_batch]).logits
        nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    assert "nll_chosen" not in without.logs
    assert with_nll.logs["nll_chosen"].item() == pytest.approx(nll.item(), rel=1e-4)
    assert with_nll.loss.item() == pytest.approx(without.loss.item() + 10 * nll.item(), rel=1e-4)
    assert series(tmp_path / "rpo", "val_nll_chosen")
    held, dropped = series(tmp_path / "rpo", "val_logp_chosen"), series(plain_dpo["root"], "val_logp_chosen")
    # nats per chosen response (0.47 apart when written; equal if the NLL term did nothing)
    assert held[-1] > dropped[-1] + 0.25, (held, dropped)
    with pytest.raises(InputError, match="rpo_alpha must be >= 0"):
        cli(["fit", *dpo_args(tiny_lm, tmp_path / "bad", pairs, "--model.init_args.rpo_alpha", "-1")])


def test_dpo_reference_with_adapters_off_is_the_base_model(tiny_lm: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    task = cli(["fit", *dpo_args(tiny_lm, tmp_path, pairs, "--trainer.max_epochs", "1")]).model.eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"]).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    labels = torch.tensor([[-100, -100, -100, 13, 2, 7]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        want = torch.log_softmax(base(**inputs).logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        want = want * (labels[:, 1:] != -100)
        assert torch.allclose(task.logprobs(inputs, labels, reference=True), want, atol=1e-5)
        assert not torch.allclose(task.logprobs(inputs, labels), want, atol=1e-3)  # the policy moved


def test_dpo_resume_is_exact(tiny_lm: dict, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    every = ["--trainer.max_epochs", "2", "--trainer.enable_checkpointing", "true",
             "--trainer.callbacks+=LastCheckpoint", "--trainer.callbacks.every_n_train_steps", "4"]  # fmt: skip
    whole = cli(["fit", *dpo_args(tiny_lm, tmp_path / "whole", pairs, *every)]).model
    part = tmp_path / "part"
    cli(["fit", *dpo_args(tiny_lm, part, pairs, *every, "--trainer.max_steps", "4")])
    saved = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4 and len(saved["dpo_reference_cache"]["keys"]) > 0
    resumed = cli(
        ["fit", *dpo_args(tiny_lm, part, pairs, *every), "--ckpt_path", str(part / "checkpoints" / "last.ckpt")]
    ).model
    a, b = whole.state_dict(), resumed.state_dict()
    trained = [k for k in a if "lora_" in k]
    assert trained and all(torch.equal(a[k], b[k]) for k in trained)


def test_lora_less_dpo_says_what_the_reference_copy_costs(tiny_lm: dict, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    args = dpo_args(tiny_lm, tmp_path, pairs, "--model.init_args.peft", "null", "--trainer.max_epochs", "1")
    with pytest.raises(
        InputError, match=r"frozen reference copy of the model: \d+ MiB more memory.*reference_copy: true"
    ):
        main(["fit", *args])
    task = cli(["fit", *args, "--model.init_args.reference_copy", "true"]).model
    assert "reference" in task.__dict__["_frozen"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "where ?", "chosen": "oslo"}, r"pairs.jsonl:1: missing column\(s\) \['rejected'\]"),
        (
            {"prompt": "where ?", "chosen": "oslo", "rejected": " oslo "},
            "pairs.jsonl:1: chosen and rejected are the same",
        ),
        ({"chosen": "oslo", "rejected": "lima"}, "pairs.jsonl:1: prompt_template needs field 'prompt'"),
        (
            {"prompt": "where ?", "chosen": "", "rejected": "lima"},
            r"pairs.jsonl:1: \['chosen'\] must be non-empty text",
        ),
    ],
)
def test_bad_preference_rows_are_named(tiny_lm: dict, tmp_path: Path, row: dict, message: str) -> None:
    pairs = tmp_path / "pairs.jsonl"
    good = {"prompt": "where did bob go ?", "chosen": "lima", "rejected": "today"}
    pairs.write_text(json.dumps(row) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match=message):
        main(["fit", *dpo_args(tiny_lm, tmp_path, pairs, "--trainer.max_epochs", "1")])


# -- GRPO through the CLI ------------------------------------------------------------------------
def grpo_args(bpe: Path, root: Path, *extra: str) -> list[str]:
    return ["--config", str(GRPO), "--data.tokenizer", str(bpe), "--trainer.default_root_dir", str(root), *extra]


def test_grpo_raises_a_callable_reward(bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    main(["fit", *grpo_args(bpe, tmp_path, "--trainer.logger", "true")])
    train, val = series(tmp_path, "train_reward_epoch"), series(tmp_path, "val_reward")
    assert train[-1] >= train[0] + 1.5 and val[-1] >= val[0] + 1.5, (train, val)
    for key in (
        "train_policy_loss_epoch",
        "train_clip_frac_epoch",
        "train_response_length_epoch",
        "train_reward_std_epoch",
    ):
        values = series(tmp_path, key)
        assert values and all(math.isfinite(v) for v in values), key


def test_grpo_weighted_rewards_see_the_reference_and_are_logged(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    main(["fit", *grpo_args(bpe, tmp_path, "--trainer.logger", "true", "--trainer.max_epochs", "1",
                            "--model.init_args.reward_fn", "[ppo_rewards:count_e, ppo_rewards:reference_overlap]",
                            "--model.init_args.reward_weights", "[0.5, 2.0]")])  # fmt: skip
    e, overlap = (
        series(tmp_path, "train_reward_count_e_epoch"),
        series(tmp_path, "train_reward_reference_overlap_epoch"),
    )
    total = series(tmp_path, "train_reward_epoch")
    assert len(total) == len(e) == len(overlap) == 1  # one epoch, each part logged
    assert total == pytest.approx([0.5 * a + 2.0 * b for a, b in zip(e, overlap)])


def test_grpo_with_lora_and_kl_uses_the_adapters_off_reference(
    tiny_lm: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    extra = ["--trainer.logger", "true", "--trainer.max_epochs", "1", "--model.init_args.model_config", "null",
             "--model.init_args.pretrained", str(tiny_lm["hf"]),
             "--model.init_args.peft", "{r: 4, alpha: 8, dropout: 0.0}",
             "--model.init_args.beta", "0.1", "--model.init_args.num_iterations", "2",
             "--model.init_args.minibatch_size", "8"]  # fmt: skip
    task = cli(["fit", *grpo_args(tiny_lm["bpe"], tmp_path, *extra)]).model
    assert "reference" not in task.__dict__.get("_frozen", {})
    assert task.updates_per_batch() == 2 * 2  # 4 prompts x 4 samples in minibatches of 8, twice
    kl = series(tmp_path, "train_kl_epoch")  # the k3 estimator: never negative
    assert kl and all(math.isfinite(v) and v >= 0 for v in kl), kl
    sampled = series(tmp_path, "val_kl")  # log-ratio summed over sampled responses: any sign on few samples
    assert sampled and all(math.isfinite(v) for v in sampled), sampled


def test_grpo_sft_alpha_adds_the_reference_answers_nll_and_holds_them_up(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The term is the mean NLL over each reference answer's tokens and its EOS after the prompt,
    checked against the full logits of each row alone; trained with it, the policy's NLL of the
    reference answers ends lower than GRPO's without it, which the letter-e reward pulls away."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    common = ["--trainer.logger", "true", "--trainer.max_epochs", "2"]
    plain = cli(["fit", *grpo_args(bpe, tmp_path / "plain", *common)]).model.eval()
    run = cli(["fit", *grpo_args(bpe, tmp_path / "sft", *common, "--model.init_args.sft_alpha", "1.0")])
    task = run.model.eval()
    batch = next(iter(run.datamodule.val_dataloader()))
    eos = task.tokenizer.eos_token_id
    with torch.no_grad():
        answers = task.reference_answers(batch)
        nll, without = task.reference_nll(answers), plain.reference_nll(answers)
        logps = []
        for ids, mask, reference in zip(batch["input_ids"], batch["attention_mask"], batch["reference"]):
            prompt = ids[mask.bool()].tolist()
            answer = task.tokenizer(reference, add_special_tokens=False)["input_ids"] + [eos]
            logits = task.model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            logps += [logp[len(prompt) - 1 + i, token].item() for i, token in enumerate(answer)]
    assert nll.item() == pytest.approx(-sum(logps) / len(logps), rel=1e-4)
    assert series(tmp_path / "sft", "train_nll_reference_epoch")
    # nats per token (2.7 against 6.2 when written; equal if the term did nothing)
    assert nll.item() < without.item() - 1.5, (nll.item(), without.item())
    with pytest.raises(
        InputError,
        match=r"a batch: GRPOTask: sft_alpha needs the data's column\(s\) \['reference'\]; it has \['attention_mask'",
    ):
        task.reference_answers({k: v for k, v in batch.items() if k != "reference"})


def test_grpo_best_alpha_adds_the_best_responses_nll_and_nothing_where_no_group_passes_the_margin(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A margin no group reaches leaves the term at 0 and the run bit for bit plain GRPO's; a margin
    of 0 logs a positive NLL and trains other weights."""
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    common = ["--trainer.logger", "true", "--trainer.max_epochs", "1"]
    best = ["--model.init_args.best_alpha", "1.0", "--model.init_args.best_margin"]

    def weights(root: Path, *extra: str) -> dict[str, torch.Tensor]:
        return cli(["fit", *grpo_args(bpe, root, *common, *extra)]).model.state_dict()

    plain, unreached, every = (weights(tmp_path / "plain"), weights(tmp_path / "unreached", *best, "1e9"),
                               weights(tmp_path / "every", *best, "0"))  # fmt: skip
    assert plain.keys() == unreached.keys() == every.keys()
    assert all(torch.equal(plain[k], unreached[k]) for k in plain)
    assert series(tmp_path / "unreached", "train_nll_best_epoch") == [0.0]
    (nll,) = series(tmp_path / "every", "train_nll_best_epoch")
    assert nll > 0.5, nll
    assert not all(torch.equal(plain[k], every[k]) for k in plain)


def test_grpo_resume_is_exact(bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    every = ["--trainer.max_epochs", "2", "--trainer.enable_checkpointing", "true",
             "--trainer.callbacks+=LastCheckpoint", "--trainer.callbacks.every_n_train_steps", "3"]  # fmt: skip
    whole = cli(["fit", *grpo_args(bpe, tmp_path / "whole", *every)]).model
    part = tmp_path / "part"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli(["fit", *grpo_args(bpe, part, *every, "--trainer.max_steps", "3")])
    # Saving after the optimizer step is what resuming needs, so Lightning's warning about it is not shown.
    assert not [w for w in seen if "manual optimization" in str(w.message)]
    resumed = cli(["fit", *grpo_args(bpe, part, *every), "--ckpt_path", str(part / "checkpoints" / "last.ckpt")]).model
    a, b = whole.state_dict(), resumed.state_dict()
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("setting", "who"),
    [
        (["--model.init_args.sft_alpha", "1.0"], "sft_alpha"),
        (["--model.init_args.reward_fn", "lightkit.rewards.text:rouge_l"], "reward_fn 'lightkit.rewards.text:rouge_l'"),
    ],
)
def test_a_column_the_run_needs_missing_from_the_prompts_stops_it_before_sampling(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: list[str], who: str
) -> None:
    """sft_alpha and a reward callable that names `reference` both need that column: prompts alone
    stop the run at fit start, naming what needs it, before a minute of sampling."""
    from lightkit.tasks.grpo import GRPOTask

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Name a fruit\nName a colour\n" * 4)
    data = tmp_path / "data.yaml"  # prompts alone: no reference answers
    init = {"tokenizer": str(bpe), "train_file": str(prompts), "batch_size": 4}
    data.write_text(json.dumps({"class_path": "PromptDataModule", "init_args": init}))
    monkeypatch.setattr(
        GRPOTask, "sample", lambda *a, **k: pytest.fail("sampled before the data's columns were checked")
    )
    message = (rf"prompts\.txt: GRPOTask: {re.escape(who)} needs the data's column\(s\) \['reference'\]; "
               r"it has \['prompt'\] \(HeadlineDataModule")  # fmt: skip
    with pytest.raises(InputError, match=message):
        main(["fit", "--config", str(GRPO), "--data", str(data), "--trainer.default_root_dir", str(tmp_path), *setting])


@pytest.mark.parametrize(("stage", "split"), [("validate", "val_file"), ("test", "test_file")])
def test_a_column_the_reward_needs_missing_from_evaluation_prompts_stops_validate_and_test(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str, split: str
) -> None:
    """`lightkit validate` and `test` check the split they read as they start, as fit does: a
    reward callable that needs `reference` stops them on prompts alone, naming the file, before
    any answer is sampled."""
    from lightkit.tasks.grpo import GRPOTask

    train, prompts = tmp_path / "train.jsonl", tmp_path / "prompts.txt"
    train.write_text("".join(json.dumps({"prompt": f"Name {w}", "reference": w}) + "\n" for w in ("a", "b") * 4))
    prompts.write_text("Name a fruit\nName a colour\n" * 4)
    data = tmp_path / "data.yaml"  # training rows with references; the evaluated split has none
    init = {"tokenizer": str(bpe), "train_file": str(train), split: str(prompts), "batch_size": 4}
    data.write_text(json.dumps({"class_path": "PromptDataModule", "init_args": init}))
    monkeypatch.setattr(GRPOTask, "sample", lambda *a, **k: pytest.fail("sampled before the columns were checked"))
    who = re.escape("reward_fn 'lightkit.rewards.text:rouge_l'")
    message = rf"prompts\.txt: GRPOTask: {who} needs the data's column\(s\) \['reference'\]"
    with pytest.raises(InputError, match=message):
        main([stage, "--config", str(GRPO), "--data", str(data), "--trainer.default_root_dir", str(tmp_path),
              "--model.init_args.reward_fn", "lightkit.rewards.text:rouge_l"])  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.init_args.num_generations", "1"], "num_generations must be at least 2, got 1"),
        (["--model.init_args.reward_fn", "ppo_rewards:raises"], "reward_fn 'ppo_rewards:raises' raised RuntimeError"),
        (["--model.init_args.reward_fn", "ppo_rewards:one_short"], "returned 3 scores for 4 responses"),
        (["--model.init_args.reward_fn", "ppo_rewards:not_finite"], "returned non-finite scores at positions [0]"),
        (["--model.init_args.reward_weights", "[1.0, 2.0]"], "reward_weights has 2 weights for 1 reward_fn"),
        (["--model.init_args.sft_alpha", "-1"], "sft_alpha must be >= 0 or null, got -1"),
        (["--model.init_args.best_alpha", "-0.5"], "best_alpha must be >= 0 or null, got -0.5"),
        (["--model.init_args.best_margin", "-1"], "best_margin must be >= 0, got -1"),
    ],
)
def test_grpo_bad_input_is_named(
    bpe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list, message: str
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    with pytest.raises(InputError, match=re.escape(message)):
        main(["fit", *grpo_args(bpe, tmp_path, "--trainer.max_epochs", "1", *extra)])


@pytest.mark.parametrize("setting", [{"prompts_only": True}, {"response_field": "answer"}])
def test_preference_pairs_refuse_settings_they_cannot_use(bpe: Path, tmp_path: Path, setting: dict) -> None:
    from lightkit.data import PolicyPreferenceDataModule

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    with pytest.raises(InputError, match=f"{next(iter(setting))} does not apply to preference pairs"):
        PolicyPreferenceDataModule(tokenizer=str(bpe), train_file=str(pairs), **setting)
