"""`lightkit generate`: text from an exported decoder, as JSON lines.

    lightkit generate runs/sft_headlines/onnx --form int8-cpu --prompts prompts.txt --chat \\
        --max_new_tokens 32 --stop "\\n" --output answers.jsonl
    echo "Write a haiku about rain" | lightkit generate runs/sft_headlines/onnx --chat --temperature 0.7 --seed 1
    lightkit generate runs/sft_headlines/onnx --prompts heldout.jsonl --chat --refine --refine_calls 24 \\
        --reward_fn lightkit.rewards.text:rouge_l

It needs only the export folder (its manifest, tokenizer and forms), not the training config; its
settings are those of `lightkit.cli.main.LightkitTrainer.generate`, on the one `lightkit` parser, so
`--help`, `--config` and `--print_config` work as for every subcommand. Given a checkpoint and
the `--config` it was trained with instead, it runs `lightkit export` into a temporary folder
first, parity gate included.

Prompts come from a text file (one per line), a JSON-lines file (`{"prompt": ..., "reference":
...}`: other text fields go to a reward callable that names them) or standard input (`-`, the
default). Records go to `--output` (written whole or not at all) or standard output; the speed
goes to standard error.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

from lightkit.io.atomic import atomic_open
from lightkit.io.errors import InputError
from lightkit.rewards.scoring import build_reward


def run(args: Any, out: IO[str]) -> dict[str, Any]:
    from lightkit.export.runtime.generation import RefineSettings, read_prompts
    from lightkit.export.runtime.serving import Artifact

    refine_with = None
    if args.refine:
        reward = build_reward(args.reward_fn, None, args.reward_weights) if args.reward_fn else None
        refine_with = RefineSettings(
            max_calls=args.refine_calls, max_ms=args.refine_ms, top_k=args.refine_top_k,
            length_weight=args.length_weight, reward=reward,
        )  # fmt: skip
    artifact = Artifact(args.artifact, form=args.form, device=args.device)
    records = artifact.generate(
        read_prompts(args.prompts), chat=args.chat, system_prompt=args.system_prompt, refine=refine_with,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, stop=args.stop, batch_size=args.batch_size,
    )  # fmt: skip
    start, answers, tokens = time.perf_counter(), 0, 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        answers, tokens = answers + 1, tokens + record["tokens"]
    seconds = time.perf_counter() - start
    return {"answers": answers, "tokens": tokens, "seconds": seconds, "form": artifact.form}


#: Exports a checkpoint: (config files, checkpoint, output folder, form). lightkit.cli.main passes its
#: `lightkit export`, which sits above this module.
Export = Callable[[list[str], str, str, str], object]


def command(args: Any, configs: list[str], export: Export | None = None) -> None:
    """Generate with `args` (the settings of `lightkit generate`, as attributes); a checkpoint in
    `args.artifact` is exported first with its training `configs`."""
    if not Path(args.artifact).is_file():
        return generate(args)
    if not configs:
        raise InputError(
            f"{args.artifact}: a checkpoint needs --config (the config it was trained with) to be exported first; "
            "or give a folder written by lightkit export"
        )
    if export is None:
        raise InputError(f"{args.artifact}: generating from a checkpoint needs the `lightkit generate` command")
    with tempfile.TemporaryDirectory(prefix="lightkit-generate-") as tmp:
        export(configs, args.artifact, f"{tmp}/onnx", args.form or "fp32")
        args.artifact = f"{tmp}/onnx"
        generate(args)


def generate(args: Any) -> None:
    with atomic_open(args.output) if args.output != "-" else nullcontext(sys.stdout) as out:
        stats = run(args, out)
    speed = stats["tokens"] / stats["seconds"] if stats["seconds"] > 0 else 0.0
    print(
        f"lightkit generate: {stats['answers']} answers, {stats['tokens']} tokens in {stats['seconds']:.1f} s "
        f"({speed:.1f} tokens/s, form {stats['form']}" + (", refiner included)" if args.refine else ")"),
        file=sys.stderr,
    )
