"""Preference pairs for the headline task, offline: the real headline over the zero-shot model's.

    python -m lightkit.data.headline_pairs --out runs/align/pairs.jsonl

For each training article of `HeadlineDataModule` (the same carved split as the headline configs,
so no validation or test article is used), the chosen response is the article's real headline and
the rejected one is what the untuned model writes for it: typically the article's first sentence,
three times too long. The model's answers are generated once, in batches, and the pairs file is
written atomically; a run finding the file with the same settings reuses it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lightkit.data.headlines import HeadlineDataModule
from lightkit.io.atomic import atomic_write_text
from lightkit.models.hub import resolve_model

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


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
    from transformers import AutoModelForCausalLM

    dm = HeadlineDataModule(tokenizer=model_name, prompts_only=True, **data)
    articles = dm.splits(dm._read, dm.split_key)["train"]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(articles), generator=generator)[:rows].tolist()
    articles = [articles[i] for i in order]
    model = resolve_model(model_name, "model").from_pretrained(AutoModelForCausalLM, "model").eval()
    tokenizer = dm.tokenizer
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
    ap.add_argument("--model", default=SMOLLM2)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--holdout", type=float, nargs=2, default=[0.02, 0.05])
    ap.add_argument("--split-seed", type=int, default=13)
    args = ap.parse_args()
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    out = Path(args.out)
    meta = out.with_suffix(".settings.json")
    if out.exists() and meta.exists() and json.loads(meta.read_text()) == settings:
        print(f"{out}: {len(out.read_text().splitlines())} pairs made with these settings; reused")
        return
    pairs = zero_shot_pairs(args.model, args.rows, temperature=args.temperature, seed=args.seed,
                            holdout=args.holdout, split_seed=args.split_seed)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    atomic_write_text(meta, json.dumps(settings, indent=2) + "\n")
    print(f"wrote {len(pairs)} preference pairs to {out}")


if __name__ == "__main__":
    main()
