"""LoRA SFT of SmolLM2-135M-Instruct on BBC headlines: lightkit `fit` against TRL's `SFTTrainer`.

    python benchmarks/sft_vs_trl.py --steps 16 --warmup 2 --seeds 0 1 2 --out benchmarks/results/sft-vs-trl-cpu.json

The same job on both sides: the packaged SmolLM2-135M-Instruct, the HeadlineDataModule's training
rows (the article prompt as a user turn, the headline as the assistant turn, rendered by the
model's chat template, loss on the answer only: lightkit's chat masking against TRL's
prompt-completion `completion_only_loss`), the same LoRA config (r 16, alpha 32, dropout 0.05,
all-linear, through `peft_config` for TRL), batch, sequence cap, learning rate, steps, bf16
autocast and torch threads.

TRL gets its documented settings for this: conversational prompt/completion data, `padding_free`
off (it needs flash attention), no packing (each row is one example), and length-grouped batches
(`train_sampling_strategy="group_by_length"`, what lightkit does by default). Gradient
checkpointing is the same on both sides (`--gradient_checkpointing`; off by default, for speed:
TRL's SFTConfig turns it on by default, lightkit's tasks leave it off), and so is gradient
clipping (`--max_grad_norm`, 1.0: the Trainer's default; Lightning clips only when asked).

lightkit runs twice per round: `lightkit` with `chunked_loss` (its setting in
configs/sft_headlines.yaml: the loss from the answer positions' hidden states through torch's
chunked linear cross-entropy, without the (B, T, V) logits) and `lightkit-full-logits` with the
model's own loss over full logits, as TRL computes it. `--sides` picks a subset.

Each side runs in its own process, so its peak RSS is its own; it is compared at the end of
training, before lightkit's merged-model save or either side's evaluation. Sides alternate, one
round per seed in `--seeds` (both sides take the round's seed for data order, LoRA init and
dropout), and medians over the rounds are reported, with the ROUGE mean and spread over seeds;
the first `--warmup` steps are not timed. After training, each side answers the same held-out
articles greedily with the same generation code, scored with ROUGE (torchmetrics) against the
real headlines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from measure import (  # benchmarks/ is first on sys.path when run as a script
    peak_rss_mib,
    peer_header,
    run_side,
    write_result,
)
from training_meters import Counting, HFMeter, LightningMeter, Meter  # the same timed window and counts

from lightkit.io.measure import median

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SIDES = ("lightkit", "lightkit-full-logits", "trl")
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}


def rows(max_length: int) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The headline task's tokenizer, training conversations and held-out test rows."""
    from lightkit.data import HeadlineDataModule

    dm = HeadlineDataModule(tokenizer=MODEL, holdout=(0.02, 0.05), split_seed=13, max_length=max_length)
    splits = dm.splits(dm._read, dm.split_key)
    return dm, splits["train"], splits["test"]


def score(model: Any, tokenizer: Any, test: list[dict[str, Any]], batch: int = 8) -> dict[str, float]:
    """Greedy answers to the held-out prompts, scored against the references with ROUGE-L."""
    import torch
    from torchmetrics.text.rouge import ROUGEScore

    rouge = ROUGEScore(rouge_keys=("rouge1", "rougeL"))
    model.eval()
    for i in range(0, len(test), batch):
        chunk = test[i : i + batch]
        enc = tokenizer([r["gen_prompt"] for r in chunk], return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False)  # fmt: skip
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers = [
            a.strip() for a in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        ]
        rouge.update(answers, [r["reference"] for r in chunk])
    values = rouge.compute()
    return {"rouge1": float(values["rouge1_fmeasure"]), "rougeL": float(values["rougeL_fmeasure"])}


def measured(meter: Meter) -> dict[str, float]:
    """Tokens/s of the timed steps, and host memory in training (see Meter)."""
    return {"tokens_per_s": meter.result()["tokens_per_s"], "step_rss_mib": meter.step_rss_mib,
            "training_peak_rss_mib": meter.training_peak_rss_mib}  # fmt: skip


def run_lightkit(args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L
    import torch

    from lightkit.tasks import CausalLMTask

    dm, _, test = rows(args.max_length)
    L.seed_everything(args.seed)
    task = CausalLMTask(pretrained=MODEL, tokenizer=MODEL, peft=LORA, learning_rate=args.learning_rate,
                        weight_decay=0.0, save_dir=str(Path(args.scratch) / "lightkit-hf"),
                        gradient_checkpointing=args.gradient_checkpointing,
                        chunked_loss=args.side == "lightkit")  # fmt: skip
    total = args.warmup + args.steps
    meter = Meter(args.warmup, total, torch.device("cpu"))
    dm.hparams.batch_size = args.batch_size
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.collate_fn = meter.counting(loader.collate_fn)
    # gradient_clip_val: the Trainer's default max_grad_norm, so both sides optimise alike.
    trainer = L.Trainer(max_steps=total, precision="bf16-mixed", accelerator="cpu", logger=False,
                        gradient_clip_val=args.max_grad_norm, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=args.scratch, callbacks=[LightningMeter(meter)])  # fmt: skip
    trainer.fit(task, train_dataloaders=loader)
    return {**measured(meter), **score(task.model, dm.tokenizer, test[: args.eval_rows])}


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    class CountingSFTTrainer(Counting, SFTTrainer):
        pass

    from lightkit.models.resources import resolve_path

    dm, train, test = rows(args.max_length)
    # TRL's conversational prompt/completion format: the loss is on the completion only.
    conversations = []
    for r in train:
        conversations.append({
            "prompt": [{"role": "user", "content": r["user"]}],
            "completion": [{"role": "assistant", "content": r["reference"]}],
        })  # fmt: skip
    meter = Meter(args.warmup, args.warmup + args.steps, torch.device("cpu"))
    model = AutoModelForCausalLM.from_pretrained(resolve_path(MODEL), dtype=torch.float32)
    config = SFTConfig(
        output_dir=args.scratch, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0,
        bf16=True, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", seed=args.seed,
        max_length=args.max_length, packing=False, completion_only_loss=True, disable_tqdm=True,
        dataloader_num_workers=0, gradient_checkpointing=args.gradient_checkpointing, max_grad_norm=args.max_grad_norm,
        gradient_checkpointing_kwargs={"use_reentrant": False}, train_sampling_strategy="group_by_length",
    )  # fmt: skip
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")  # fmt: skip
    trainer = CountingSFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(conversations),
                                 processing_class=dm.tokenizer, peft_config=lora, callbacks=[HFMeter(meter)],
                                 meter=meter)  # fmt: skip
    trainer.data_collator = meter.counting(trainer.data_collator)
    trainer.train()
    return {**measured(meter), **score(trainer.model, dm.tokenizer, test[: args.eval_rows])}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (run_trl if args.side == "trl" else run_lightkit)(args)
    result["peak_rss_mib"] = peak_rss_mib()  # the whole process: lightkit's includes saving the merged model
    print("RESULT " + json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=SIDES, default=None, help="internal: run one side")
    ap.add_argument("--sides", choices=SIDES, nargs="+", default=list(SIDES), help="the sides each round runs")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=320)
    ap.add_argument("--learning_rate", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval_rows", type=int, default=48)
    ap.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping on both sides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one round per seed, both sides alike")
    ap.add_argument("--seed", type=int, default=0, help="internal: this round's seed")
    ap.add_argument("--scratch", default="/tmp/lightkit-sft-bench")
    ap.add_argument("--out", default="benchmarks/results/sft-vs-trl-cpu.json")
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
    for seed in args.seeds:
        for side in args.sides:
            argv = ["--side", side, "--seed", str(seed), *sys.argv[1:]]
            runs[side].append(run_side(__file__, argv, args.threads, side))
            print(side, runs[side][-1], flush=True)
    medians = {s: {k: median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()}
    rouge = {
        s: {"mean": statistics.mean(r["rougeL"] for r in rs), "stdev": statistics.pstdev(r["rougeL"] for r in rs)}
        for s, rs in runs.items()
    }
    result = {
        **peer_header(
            "LoRA SFT tokens/s, peak RSS and held-out ROUGE-L, lightkit fit vs TRL SFTTrainer, same job",
            "sft_vs_trl.py",
            args.threads,
            sys.argv[1:],
        ),
        "job": {
            "model": MODEL,
            "lora": LORA,
            "gradient_checkpointing": args.gradient_checkpointing,
            "seeds": args.seeds,
            "max_grad_norm": args.max_grad_norm,
            "steps_timed": args.steps,
            "warmup": args.warmup,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "precision": "bf16 autocast",
            "eval_rows": args.eval_rows,
        },
        **medians,
        "rougeL_over_seeds": rouge,
        "runs": runs,
        "ratio_tokens_per_s": {
            side: medians[side]["tokens_per_s"] / medians["trl"]["tokens_per_s"] for side in medians if side != "trl"
        }
        if "trl" in medians
        else None,
    }
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in (*args.sides, "ratio_tokens_per_s", "rougeL_over_seeds")}, indent=2))


if __name__ == "__main__":
    main()
