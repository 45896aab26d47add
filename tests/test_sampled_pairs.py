"""On-policy preference pairs: k samples per prompt, ranked by the reward, best over worst with a margin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightkit.data.headline_pairs import sampled_pairs
from lightkit.data.sampled_pairs import (
    best_over_worst,
    every_ranked,
    pair_files,
    ranked_pairs,
    sample_answers,
    write_pairs,
)


def test_best_over_worst_keeps_pairs_with_a_margin() -> None:
    answers = [["a", "b", "c"], ["x", "y", "z"], ["same", "same", "same"]]
    rewards = [[0.1, 0.9, -0.3], [0.5, 0.55, 0.52], [0.0, 1.0, 0.5]]
    picks = best_over_worst(answers, rewards, min_margin=0.2)
    assert picks[0] == (1, 2, pytest.approx(1.2))
    assert picks[1] is None  # a near tie teaches nothing
    assert picks[2] is None  # best and worst are the same text


def test_every_ranked_pair_of_a_prompts_answers() -> None:
    ranked = every_ranked([["a", "b", "c"], ["x", "x"]], [[0.9, 0.5, 0.0], [1.0, 0.0]], min_margin=0.45)
    assert ranked[0] == [(0, 2, pytest.approx(0.9)), (1, 2, pytest.approx(0.5))]  # a over b is 0.4: below the margin
    assert ranked[1] == []  # the same text twice prefers nothing


def test_ranked_pairs_score_every_answer_with_its_prompts_columns() -> None:
    seen = {}

    def reward(prompts: list[str], responses: list[str], reference: list[str]) -> torch.Tensor:
        seen.update(prompts=prompts, reference=reference)
        return torch.tensor([float(r == ref) - 0.1 * len(r) for r, ref in zip(responses, reference)])

    answers = [["oslo", "the city of oslo"], ["lima", "peru"]]
    pairs, scores = ranked_pairs(["p0", "p1"], answers, reward, 0.5, {"reference": ["oslo", "quito"]})
    assert seen == {"prompts": ["p0", "p0", "p1", "p1"], "reference": ["oslo", "oslo", "quito", "quito"]}
    assert pairs == [(0, 0, 1, pytest.approx(0.6 + 1.6))]  # p1's answers differ by 0 reward: no pair
    assert scores[1] == pytest.approx([-0.4, -0.4])


def test_sampling_is_k_per_prompt_and_seeded(tiny_lm: dict) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_lm["hf"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm["bpe"])
    prompts = ["Q: where is oslo ?\nA: ", "Q: who ?\nA: ", "Q: what ?\nA: "]
    first = sample_answers(model, tokenizer, prompts, k=3, max_new_tokens=6, batch_size=2, seed=5)
    assert [len(group) for group in first] == [3, 3, 3]
    assert sample_answers(model, tokenizer, prompts, k=3, max_new_tokens=6, batch_size=2, seed=5) == first
    assert sample_answers(model, tokenizer, prompts, k=3, max_new_tokens=6, batch_size=2, seed=6) != first


def test_headline_pairs_come_from_the_policys_samples_on_training_articles(tiny_lm: dict, tmp_path: Path) -> None:
    """The BBC articles' training split, a tiny policy (no chat template): each kept pair is two of
    its own answers, the higher-reward one chosen, and the reward recorded is the pair's."""
    from lightkit.data.headline_pairs import HEADLINE_REWARD, HEADLINE_WEIGHTS
    from lightkit.data.headlines import HeadlineDataModule
    from lightkit.rewards.scoring import build_reward

    pairs, every = sampled_pairs(str(tiny_lm["hf"]), rows=6, k=3, min_margin=0.0, max_new_tokens=8, max_length=512)
    assert len(every) >= len(pairs) and {(p["prompt"], p["chosen"], p["rejected"]) for p in pairs} <= {
        (p["prompt"], p["chosen"], p["rejected"]) for p in every
    }  # best over worst is one of the ranked pairs
    assert pairs and all(p["reward_chosen"] - p["reward_rejected"] == pytest.approx(p["margin"]) for p in pairs)
    assert all(p["margin"] >= 0 and p["chosen"] != p["rejected"] for p in pairs)
    dm = HeadlineDataModule(tokenizer=str(tiny_lm["hf"]), prompts_only=True, max_length=512)
    splits = dm.splits(dm._read, dm.split_key)
    held_out = {r["prompt"] for split in ("validation", "test") for r in splits[split]}
    assert all(p["rendered_prompt"] not in held_out for p in pairs)  # never a validation or test article
    reward = build_reward(HEADLINE_REWARD, None, weights=HEADLINE_WEIGHTS)
    train = {r["prompt"]: r["response"] for r in splits["train"]}
    first = pairs[0]
    again = reward([first["rendered_prompt"]] * 2, [first["chosen"], first["rejected"]],
                   reference=[train[first["rendered_prompt"]]] * 2)  # fmt: skip
    assert again.tolist() == pytest.approx([first["reward_chosen"], first["reward_rejected"]])
    references: dict[str, set[str]] = {}  # (an article may appear twice, with other headlines)
    for r in splits["train"]:
        references.setdefault(r["prompt"], set()).add(r["response"])
    assert all(p["reference"] in references[p["rendered_prompt"]] for p in every)  # for a reward model to read
    json.dumps(pairs)  # a JSONL row each
    # The reward model's pairs have their own margin; DPO's are the same whatever it is.
    same, none = sampled_pairs(str(tiny_lm["hf"]), rows=6, k=3, min_margin=0.0, max_new_tokens=8, max_length=512,
                               every_margin=1e9)  # fmt: skip
    assert same == pairs and none == []


def test_the_reward_models_held_out_pairs_are_as_far_apart_as_dpos(tmp_path: Path) -> None:
    """Training pairs may be closer (`every_margin`); held-out ones keep `val_margin`, so the
    accuracy is measured on the same pairs whatever the reward model learned from."""
    every = [{"article": a, "chosen": f"c{a}{m}", "rejected": "r", "margin": m} for a in (0, 4) for m in (0.1, 0.3)]
    counts = write_pairs(tmp_path / "pairs.jsonl", every[:1], every, prompts=5, val_margin=0.2)
    files = pair_files(tmp_path / "pairs.jsonl")
    read = {k: [json.loads(line) for line in files[k].read_text().splitlines()] for k in files}
    assert read["dpo"] == every[:1] and read["every"] == every[:2]  # article 0: both, however close
    assert read["every_val"] == [every[3]]  # article 4, the last fifth: only the pair 0.3 apart
    assert counts == {str(files["dpo"]): 1, str(files["every"]): 2, str(files["every_val"]): 1}
