"""Preference pairs for the headline task, offline, from the training articles only.

    python -m lightkit.data.headline_pairs --out runs/align/pairs.jsonl --policy runs/sft_headlines/hf_model
    python -m lightkit.data.headline_pairs --out runs/align/pairs.jsonl --source reference

Both read the training articles of `HeadlineDataModule` (the same carved split as the headline
configs, so no validation or test article is used).

- `sampled` (the default, on-policy): the policy (the SFT model, after `make sft`) samples `k`
  headlines per article; they are scored with the reward callables of the RL configs and the best
  is chosen over the worst where their rewards differ by at least `min_margin`
  (`lightkit.data.sampled_pairs`). Beside it, `<out>-all.jsonl` holds every pair of the k answers
  that are `min_margin` apart (up to 6 per article for k = 4): what a reward model learns the
  ranking from; those of the last fifth of the articles are `<out>-all-val.jsonl`, its held-out
  pairs. Each row also holds the prompt as the model is fed it (`rendered_prompt`), so a
  reward model trains on the very text PPO will score (`prompt_template: "{rendered_prompt}"`),
  and both rewards.
- `reference`: the article's real headline over what the untuned model writes for it (typically
  the first sentence, three times too long): off-policy pairs, kept as an option.

The pairs file is written atomically; a run finding the file with the same settings reuses it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lightkit.data.headlines import HeadlineDataModule
from lightkit.data.sampled_pairs import pair_files, policy_pairs, prompt_rows, write_pairs
from lightkit.io.atomic import atomic_write_text
from lightkit.models.hub import load_causal_lm
from lightkit.rewards.scoring import build_reward

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The reward of configs/ppo_headlines.yaml and grpo_headlines.yaml, which the pairs are ranked by.
HEADLINE_REWARD = [f"lightkit.rewards.text:{name}" for name in ("rouge_l", "headline_length", "copied_lead")]
HEADLINE_WEIGHTS = [1.0, 1.0, 0.5]


def training_articles(model_name: str, rows: int, seed: int, **data: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The tokenizer, and `rows` training articles in a seeded order."""
    dm = HeadlineDataModule(tokenizer=model_name, prompts_only=True, **data)
    articles = dm.splits(dm._read, dm.split_key)["train"]
    order = torch.randperm(len(articles), generator=torch.Generator().manual_seed(seed))[:rows].tolist()
    return dm.tokenizer, [articles[i] for i in order]


def sampled_pairs(
    policy: str,
    rows: int = 256,
    k: int = 4,
    min_margin: float = 0.2,
    reward_fn: list[str] | None = None,
    reward_weights: list[float] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    seed: int = 13,
    every_margin: float | None = None,
    **data: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """On-policy pairs (module docstring): the policy's best of `k` over its worst, per article
    (for DPO), and every pair of its answers at least `every_margin` apart (`min_margin` by
    default; for a reward model)."""
    tokenizer, articles = training_articles(policy, rows, seed, **data)
    reward = build_reward(reward_fn or HEADLINE_REWARD, None, weights=reward_weights or HEADLINE_WEIGHTS)

    def progress(done: int, total: int) -> None:
        print(f"sampled headlines: {done}/{total} articles", flush=True)

    return policy_pairs(load_causal_lm(policy), tokenizer, prompt_rows(articles, "headline articles"), reward, k,
                        min_margin, max_new_tokens, temperature, batch_size, seed, progress,
                        every_margin)  # fmt: skip


def zero_shot_pairs(
    model_name: str = SMOLLM2,
    rows: int = 256,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    temperature: float = 0.0,
    seed: int = 13,
    **data: Any,
) -> list[dict[str, str]]:
    """`rows` pairs {prompt, chosen, rejected} from the training articles (greedy by default,
    or sampled at `temperature` with `seed`). `data` goes to HeadlineDataModule (split settings)."""
    tokenizer, articles = training_articles(model_name, rows, seed, **data)
    model = load_causal_lm(model_name)
    torch.manual_seed(seed)
    pairs = []
    for start in range(0, len(articles), batch_size):
        chunk = articles[start : start + batch_size]
        enc = tokenizer([a["gen_prompt"] for a in chunk], return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)  # fmt: skip
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **sampling)  # fmt: skip
        answers = tokenizer.batch_decode(out[:, enc["input_ids"].size(1) :], skip_special_tokens=True)
        for article, answer in zip(chunk, answers):
            if answer.strip() and answer.strip() != article["reference"].strip():
                pairs.append({"prompt": article["user"], "chosen": article["reference"], "rejected": answer.strip()})
        print(f"zero-shot headlines: {start + len(chunk)}/{len(articles)}", flush=True)
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", choices=["sampled", "reference"], default="sampled")
    ap.add_argument("--policy", default="runs/sft_headlines/hf_model", help="the model that samples (sampled)")
    ap.add_argument("--model", default=SMOLLM2, help="the model whose answers are rejected (reference)")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--k", type=int, default=4, help="answers sampled per article (sampled)")
    ap.add_argument("--min-margin", type=float, default=0.2, help="least reward margin of a kept pair (sampled)")
    ap.add_argument("--every-margin", type=float, default=0.05,
                    help="least reward margin of the reward model's training pairs (sampled); 0.05 gives it 3.7 "
                         "times the pairs of 0.2 from the same answers")  # fmt: skip
    ap.add_argument("--temperature", type=float, default=None, help="default: 1.0 sampled, 0 (greedy) reference")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--holdout", type=float, nargs=2, default=[0.02, 0.05])
    ap.add_argument("--split-seed", type=int, default=13)
    args = ap.parse_args()
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    weights = Path(args.policy, "model.safetensors")
    if args.source == "sampled" and weights.exists():  # a re-trained policy samples new pairs
        settings["policy_mtime_ns"] = weights.stat().st_mtime_ns
    out = Path(args.out)
    meta = out.with_suffix(".settings.json")
    written = [out, meta] + (list(pair_files(out).values()) if args.source == "sampled" else [])
    if all(p.exists() for p in written) and json.loads(meta.read_text()) == settings:
        print(f"{out}: {len(out.read_text().splitlines())} pairs made with these settings; reused")
        return
    split = {"holdout": args.holdout, "split_seed": args.split_seed}
    if args.source == "sampled":
        temperature = args.temperature or 1.0
        best, every = sampled_pairs(args.policy, args.rows, args.k, args.min_margin, temperature=temperature,
                                    seed=args.seed, every_margin=args.every_margin, **split)  # fmt: skip
        # every ranked pair too, for a reward model, those of the last fifth of the articles apart
        # (and held out only as far apart as DPO's, so its accuracy is measured on the same pairs)
        counts = write_pairs(out, best, every, args.rows, val_margin=args.min_margin)
    else:
        pairs = zero_shot_pairs(args.model, args.rows, temperature=args.temperature or 0.0, seed=args.seed, **split)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        counts = {str(out): len(pairs)}
    for path, n in counts.items():
        print(f"wrote {n} preference pairs to {path}")
    atomic_write_text(meta, json.dumps(settings, indent=2) + "\n")


if __name__ == "__main__":
    main()
