"""The refiner against best-of-N sampling, on one objective, at matched model calls and time.

    python benchmarks/refiner_vs_best_of_n.py --artifact runs/sft_headlines/onnx --form int8-cpu \\
        --out benchmarks/results/refiner-vs-best-of-n-cpu.json

Prompts are held-out articles of the headline task (the test split of configs/sft_headlines.yaml,
never trained on), or `--prompts` rows `{"prompt", "reference"}`; each goes through the chat
template. The objective both methods climb is the refiner's (lightkit.export.runtime.refiner):

    log P(Y|X) + w x |Y| + reward(X, Y)

- w is the greedy answer's own mean token cost (the refiner's default, here fixed per prompt for
  both methods, so the two are ranked on the same scale);
- reward is the headline job's reference-free part (`headline_length` + 0.5 x `copied_lead`,
  lightkit.rewards.text); ROUGE-L against the real headline is *not* in it, so it measures
  whether a better objective is a better headline.

Methods, per prompt:
- greedy: the answer every refinement starts from;
- refine(B): greedy, then the refiner with B model calls (its prompt run included);
- best-of-N: N answers sampled in one batch (temperature 0.8, top-p 0.95, seeded), scored on the
  objective over the cached prompt, the best kept.
Every `session.run` is counted (a model call of any batch), and wall time is measured per
prompt, so the table shows both costs; a batch of N rows costs more per call than one row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from align_report import held_out
from measure import command_line, write_result

from lightkit.export.runtime.decode_loop import DecodeLoop
from lightkit.export.runtime.generation import Generator, Prompt
from lightkit.export.runtime.refiner import objective, refine
from lightkit.export.runtime.serving import Artifact
from lightkit.io.measure import provenance
from lightkit.rewards.text import copied_lead, headline_length, rouge_l


class CallCounter:
    """Counts the artifact session's model calls (plain and IO-bound runs)."""

    def __init__(self, session: Any) -> None:
        self.calls, inner = 0, session.session
        counter = self

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def run(self, *args: Any, **kwargs: Any) -> Any:
                counter.calls += 1
                return inner.run(*args, **kwargs)

            def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
                counter.calls += 1
                return inner.run_with_iobinding(*args, **kwargs)

        session.session = Counted()


def text_reward(prompt: str, texts: list[str]) -> list[float]:
    prompts = [prompt] * len(texts)
    return [a + 0.5 * b for a, b in zip(headline_length(prompts, texts), copied_lead(prompts, texts))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", default="runs/sft_headlines/onnx")
    ap.add_argument("--form", default="int8-cpu")
    ap.add_argument("--prompts", default=None, help='JSON lines {"prompt", "reference"}; default: held-out articles')
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--max_new_tokens", type=int, default=24)
    ap.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32], help="refiner model calls")
    ap.add_argument("--n", type=int, nargs="+", default=[4, 8, 16], help="best-of-N sample counts")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top_p", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/refiner-vs-best-of-n-cpu.json")
    args = ap.parse_args()

    artifact = Artifact(args.artifact, form=args.form, device="cpu")
    session, tokenizer = artifact.session, artifact.tokenizer
    counter = CallCounter(session)
    loop = DecodeLoop(session)
    generator = Generator(session, tokenizer, artifact.manifest.get("context") or 10**9, args.artifact)
    if args.prompts:
        rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line.strip()][: args.rows]
    else:
        rows = [{"prompt": r["user"], "reference": r["reference"]} for r in held_out()[1]][: args.rows]
    eos = tokenizer.eos_token_id
    methods = ["greedy", *(f"refine({b})" for b in args.budgets), *(f"best-of-{n}" for n in args.n)]
    per: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    samples = []

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True).strip()

    for number, row in enumerate(rows):
        ids = torch.tensor(generator.encode(Prompt(row["prompt"], "", {}), chat=True, system_prompt=None))
        one = torch.ones(1, ids.numel(), dtype=torch.long)

        def reward(candidates: list[list[int]], prompt: str = row["prompt"]) -> list[float]:
            return text_reward(prompt, [decode(c) for c in candidates])

        def record(method: str, tokens: list[int], value: float, calls: int, seconds: float) -> None:
            text = decode(tokens)
            rl = rouge_l([row["prompt"]], [text], [row["reference"]])[0]
            per[method].append({"objective": value, "rougeL": rl, "calls": calls, "ms": 1000 * seconds,
                                "words": len(text.split())})  # fmt: skip

        counter.calls, start = 0, time.perf_counter()
        out = loop.generate(ids.view(1, -1), one, args.max_new_tokens)[0].tolist()
        greedy = out[: out.index(eos) + 1] if eos in out else out
        greedy_s, greedy_calls = time.perf_counter() - start, counter.calls
        body = len(greedy) - (greedy[-1] == eos)
        # One scoring of greedy gives log P + reward; the weight that zeroes log P + w x |Y| is then known.
        value, logp = objective(session, ids, [greedy], reward=reward, eos_token_id=eos)[0]
        weight = -logp / max(body, 1)
        value += weight * body
        record("greedy", greedy, value, greedy_calls, greedy_s)
        sample = {"reference": row["reference"], "greedy": decode(greedy)}
        for budget in args.budgets:
            counter.calls, start = 0, time.perf_counter()
            r = refine(session, ids, greedy, length_weight=weight, reward=reward, max_calls=budget, eos_token_id=eos)
            record(f"refine({budget})", r.tokens, r.after, greedy_calls + counter.calls,
                   greedy_s + time.perf_counter() - start)  # fmt: skip
            sample[f"refine({budget})"] = decode(r.tokens)
        for n in args.n:
            counter.calls, start = 0, time.perf_counter()
            drawn = loop.generate(ids.view(1, -1).repeat(n, 1), one.repeat(n, 1), args.max_new_tokens,
                                     temperature=args.temperature, top_p=args.top_p,
                                     seed=args.seed + 1000 * number + n).tolist()  # fmt: skip
            answers = [d[: d.index(eos) + 1] if eos in d else d for d in drawn]
            scored = objective(session, ids, answers, length_weight=weight, reward=reward, eos_token_id=eos)
            best = max(range(n), key=lambda i: scored[i][0])
            record(f"best-of-{n}", answers[best], scored[best][0], counter.calls, time.perf_counter() - start)
            sample[f"best-of-{n}"] = decode(answers[best])
        if number < 6:
            samples.append(sample)
        print(f"{number + 1}/{len(rows)}", flush=True)

    summary = {}
    for method, values in per.items():
        summary[method] = {k: statistics.fmean(v[k] for v in values) for k in values[0]}
        gain = [v["objective"] - g["objective"] for v, g in zip(values, per["greedy"])]
        summary[method]["objective_gain_over_greedy"] = statistics.fmean(gain)
    result = {
        "what": "refiner vs best-of-N sampling on the refiner's objective (held-out headline prompts)",
        "command": command_line("refiner_vs_best_of_n.py", args),
        **provenance("onnxruntime"),
        "engine": f"ONNX Runtime CPU EP, form {args.form}",
        "objective": "log P(Y|X) + w x |Y| + headline_length + 0.5 x copied_lead, w = greedy's mean token cost",
        "prompts": len(rows),
        "summary": summary,
        "samples": samples,
    }
    write_result(args.out, result)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
