"""On-policy preference pairs: k sampled answers per prompt, ranked by a reward, best over worst.

DPO learns most from pairs its own policy could have written (the on-policy recipe of RLHF after
SFT: sample, rank, train): the chosen answer is the best of the k the model sampled for a prompt
and the rejected one the worst, and a pair is kept only when their rewards differ by at least
`min_margin`, so ties and near-ties (which teach nothing, or noise) are dropped.

Sampling is transformers' `generate` with the KV cache (`lightkit.models.batched_generate`), `k`
return sequences per prompt (each prompt prefilled once: `lightkit.models.shared_prefill`), batched,
from a seeded generator, so the same settings write the same pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lightkit.io.atomic import atomic_write_text
from lightkit.io.errors import InputError
from lightkit.models.batched_generate import generate_batches

Reward = Callable[..., torch.Tensor]


@torch.no_grad()
def sample_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    k: int,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """`k` sampled answers to each of `prompts` (already rendered as the model is fed them)."""
    torch.manual_seed(seed)
    answers: list[list[str]] = []
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
    for enc, out in generate_batches(model, tokenizer, prompts, batch_size, num_return_sequences=k,
                                     max_new_tokens=max_new_tokens, **sampling):  # fmt: skip
        new = out[:, enc["input_ids"].size(1) :]
        texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        # generate keeps each prompt's k answers together
        answers += [texts[i * k : (i + 1) * k] for i in range(len(texts) // k)]
        if progress is not None:
            progress(len(answers), len(prompts))
    return answers


def best_over_worst(
    answers: Sequence[Sequence[str]], rewards: Sequence[Sequence[float]], min_margin: float
) -> list[tuple[int, int, float] | None]:
    """Per prompt, (index of the best answer, index of the worst, their reward margin), or None
    where the margin is below `min_margin` or best and worst are the same text."""
    picks: list[tuple[int, int, float] | None] = []
    for texts, scores in zip(answers, rewards):
        best = max(range(len(scores)), key=lambda i: scores[i])
        worst = min(range(len(scores)), key=lambda i: scores[i])
        margin = scores[best] - scores[worst]
        keep = margin >= min_margin and texts[best].strip() and texts[best] != texts[worst]
        picks.append((best, worst, margin) if keep else None)
    return picks


def every_ranked(
    answers: Sequence[Sequence[str]], rewards: Sequence[Sequence[float]], min_margin: float
) -> list[list[tuple[int, int, float]]]:
    """Per prompt, every (better, worse, margin) of two different answers at least `min_margin`
    apart: up to k(k-1)/2 pairs where best-over-worst keeps one. A reward model learns the
    ranking from many pairs; DPO is given the one clearest pair per prompt."""
    out = []
    for texts, scores in zip(answers, rewards):
        pairs = []
        for i in range(len(scores)):
            for j in range(len(scores)):
                margin = scores[i] - scores[j]
                if margin >= min_margin and margin > 0 and texts[i].strip() and texts[i] != texts[j]:
                    pairs.append((i, j, margin))
        out.append(pairs)
    return out


def ranked_pairs(
    prompts: Sequence[str],
    answers: Sequence[Sequence[str]],
    reward: Reward,
    min_margin: float,
    columns: dict[str, Sequence[str]] | None = None,
) -> tuple[list[tuple[int, int, int, float]], list[list[float]]]:
    """Scores every answer with `reward(prompts, responses, **columns)` (the RL tasks' reward
    signature: per-prompt text columns such as `reference` are repeated per answer) and picks each
    prompt's pair: ([(prompt index, chosen index, rejected index, margin)], the scores)."""
    k = len(answers[0])
    flat_prompts = [p for p in prompts for _ in range(k)]
    flat_answers = [a for group in answers for a in group]
    repeated = {name: [v for v in values for _ in range(k)] for name, values in (columns or {}).items()}
    scores = reward(flat_prompts, flat_answers, **repeated).tolist()
    grouped = [scores[i * k : (i + 1) * k] for i in range(len(prompts))]
    picks = best_over_worst(answers, grouped, min_margin)
    return [(i, *pick) for i, pick in enumerate(picks) if pick is not None], grouped


def prompt_rows(rows: Sequence[dict[str, Any]], where: str) -> list[dict[str, str]]:
    """Instruction rows (InstructionDataModule's, from any split) as `{user, rendered, reference}`:
    the user turn a pairs file holds, the prompt as the model is fed it, the reference answer."""
    out = []
    for i, row in enumerate(rows):
        if "user" not in row:
            raise InputError(
                f"{where}: row {i} is a multi-turn conversation; sampled preference pairs need single-turn "
                "prompt rows (prompt and response, or one user turn and its answer)"
            )
        rendered = row.get("gen_prompt", row.get("prompt"))
        out.append({"user": row["user"], "rendered": rendered, "reference": row.get("reference", row.get("response"))})
    return out


def policy_pairs(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, str]],
    reward: Reward,
    k: int = 4,
    min_margin: float = 0.2,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    batch_size: int = 8,
    seed: int = 13,
    progress: Callable[[int, int], None] | None = None,
    every_margin: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The policy's best of `k` over its worst per prompt (for DPO), and every pair of its answers
    at least `every_margin` apart (for a reward model; `min_margin` by default), as pairs-file
    rows. `rows` are `prompt_rows`; each pair row keeps the user turn (`prompt`), the rendered
    prompt (what a reward model reads, `rendered_prompt`), the prompt's reference answer where it
    has one (`reference`, for a reward model that reads it), both rewards and the row index
    (`article`)."""
    prompts = [r["rendered"] for r in rows]
    answers = sample_answers(model, tokenizer, prompts, k, max_new_tokens, temperature, batch_size=batch_size,
                             seed=seed, progress=progress)  # fmt: skip
    best, scores = ranked_pairs(prompts, answers, reward, min_margin, {"reference": [r["reference"] for r in rows]})
    every_margin = min_margin if every_margin is None else every_margin
    every = [(i, *p) for i, ranked in enumerate(every_ranked(answers, scores, every_margin)) for p in ranked]

    def row(i: int, c: int, r: int, margin: float) -> dict[str, Any]:
        return {"article": i, "prompt": rows[i]["user"], "chosen": answers[i][c], "rejected": answers[i][r],
                "rendered_prompt": prompts[i], "reference": rows[i]["reference"], "reward_chosen": scores[i][c],
                "reward_rejected": scores[i][r], "margin": margin}  # fmt: skip

    return [row(*p) for p in best], [row(*p) for p in every]


def pair_files(out: Path) -> dict[str, Path]:
    """Where `write_pairs` puts the DPO pairs (`dpo`) and the reward model's (`every`, `every_val`)."""
    return {
        "dpo": out,
        "every": out.with_name(f"{out.stem}-all{out.suffix}"),
        "every_val": out.with_name(f"{out.stem}-all-val{out.suffix}"),
    }


def write_pairs(
    out: Path,
    best: list[dict[str, Any]],
    every: list[dict[str, Any]],
    prompts: int,
    val_fraction: float = 0.2,
    val_margin: float = 0.0,
) -> dict[str, int]:
    """The pairs files, each atomically: best-over-worst pairs for DPO, and every ranked pair for a
    reward model, those of the last `val_fraction` of the `prompts` prompts held out, so its pair
    accuracy is measured on prompts it never saw. Held-out pairs closer than `val_margin` are left
    out: a reward model may learn from close pairs while its accuracy is measured on pairs as far
    apart as DPO's, the same held-out pairs whatever it trained on. Returns the pairs written per
    file."""
    files = pair_files(out)
    seen = int((1 - val_fraction) * prompts)
    written = {
        files["dpo"]: best,
        files["every"]: [p for p in every if p["article"] < seen],
        files["every_val"]: [p for p in every if p["article"] >= seen and p["margin"] >= val_margin],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, pairs in written.items():
        atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return {str(path): len(pairs) for path, pairs in written.items()}
