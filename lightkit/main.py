"""The `lightkit` command: one LightningCLI for every subcommand.

    lightkit fit|validate|test|predict --config configs/ner.yaml [--trainer.max_epochs 3 ...]
    lightkit export   --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt --output runs/ner/onnx
    lightkit evaluate --config configs/ner.yaml --artifact runs/ner/onnx --form int8-cpu --output runs/ner/eval
    lightkit benchmark --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt --artifact runs/ner/onnx \
        --output runs/ner/benchmark
    lightkit ship --config configs/ner_ship.yaml   # every stage above, resumable, with a report (lightkit.ship)
    lightkit generate runs/sft_headlines/onnx --prompts prompts.txt --chat   # lightkit.export.generate_command

Every subcommand is built by the same `cli()`: the task and DataModule from the config, chosen in
YAML by class name (subclass mode), with what the data knows (tokenizer, label names) linked into
the task when both are instantiated, so a config states it once. `export`, `evaluate` and
`benchmark` are methods of `LightkitTrainer`, so LightningCLI lists them in `lightkit --help`,
reads their settings from `--config` files as well as flags, and hands them the built task and
DataModule. A PredictionWriter is always present, configurable as `--prediction_writer.output`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

import lightkit.callbacks  # noqa: F401 - registers callbacks for short class_path names
import lightkit.tasks  # noqa: F401 - registers tasks for short class_path names
from lightkit.callbacks import ExactResume, PredictionWriter
from lightkit.checkpointing import AtomicCheckpointIO
from lightkit.compat import CheckpointHparams
from lightkit.data import BaseDataModule
from lightkit.errors import InputError
from lightkit.precision import default_precision
from lightkit.task import BaseTask

# DataModule attribute -> task argument, linked when both are built.
LINKS = {
    "tokenizer_name": "tokenizer",
    "tokenizer_revision": "tokenizer_revision",
    "label_names": "label_names",
    "prompt_template": "prompt_template",
}
ARTIFACT_COMMANDS = ("export", "evaluate", "benchmark")


class LightkitTrainer(Trainer):
    """Lightning's Trainer, plus the commands that start from a trained model: `export`, `evaluate`."""

    #: The `--config` files of the command, recorded in an export's manifest (set by LightkitCLI).
    config_files: list[str] = []

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        ckpt_path: str,
        output: str,
        forms: list[str] | str | None = None,
        overwrite: bool = False,
        parity_batches: int | None = None,
        tolerance: dict[str, dict[str, float]] | None = None,
        opset: int | None = None,
        embedding_bits: Literal[8, 4] = 8,
    ) -> Path:
        """Export a checkpoint to ONNX forms, each checked for parity against PyTorch.

        Args:
            ckpt_path: checkpoint written by `lightkit fit`.
            output: folder to create: one folder per form, tokenizer/ and manifest.json.
            forms: one or a list (`[fp32, int8-cpu]`) of fp32, fp16, int8-gpu, int8-cpu, qat.
                Default fp32 and int8-cpu (qat instead for a QAT checkpoint), plus fp16 and
                int8-gpu where CUDA is present.
            overwrite: replace an existing output folder.
            parity_batches: test-split batches the parity gate scores (default: the task's).
            tolerance: per form, limits replacing the defaults, e.g. `{int8-cpu:
                {max_metric_drop: 0.05}}`; keys max_abs_diff, min_argmax_agreement,
                max_metric_drop, min_greedy_agreement.
            opset: ONNX opset (default: lightkit.export.onnx_export.OPSET, 17).
            embedding_bits: int8-gpu: bits of the embedding tables (4 makes the file smaller;
                check the parity report).
        """
        from lightkit.export.exporter import export_checkpoint

        return export_checkpoint(
            model, datamodule, ckpt_path=ckpt_path, output=output, forms=forms, overwrite=overwrite,
            parity_batches=parity_batches, tolerance=tolerance, opset=opset, embedding_bits=embedding_bits,
            config_files=self.config_files,
        )  # fmt: skip

    def evaluate(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        artifact: str,
        form: str,
        output: str,
        device: Literal["auto", "cpu"] = "auto",
    ) -> dict[str, Any]:
        """Score an exported artifact with the task's own test loop, reports and metrics.

        Args:
            artifact: folder written by `lightkit export`.
            form: which form of the artifact (see its manifest.json).
            output: folder for the test reports and evaluation.json.
            device: auto: ONNX Runtime's CUDA execution provider when present; cpu: the CPU.
        """
        from lightkit.export.evaluate import evaluate_artifact

        return evaluate_artifact(self, model, datamodule, artifact, form, output, device)

    def benchmark(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        artifact: str,
        ckpt_path: str,
        output: str,
        batch_sizes: list[int] | None = None,
        repeats: int = 20,
        warmup: int = 2,
        rounds: int = 4,
    ) -> dict[str, Any]:
        """Time every form of an artifact beside the PyTorch model of its checkpoint, on this machine.

        Args:
            artifact: folder written by `lightkit export` (an encoder's: classification, NER).
            ckpt_path: the checkpoint the artifact was exported from (its PyTorch side).
            output: folder for benchmark.json.
            batch_sizes: rows per call, cut from the first test batch (default 1 and that batch).
            repeats: timed calls per side and batch size, spread over `rounds`.
            warmup: untimed calls of a side at the start of each of its blocks.
            rounds: interleaved rounds: in each, every side runs a block of calls in turn.
        """
        from lightkit.export.benchmark import benchmark_artifact

        sizes = batch_sizes or sorted({1, datamodule.eval_batch_size})
        return benchmark_artifact(model, datamodule, artifact, ckpt_path, output, sizes, repeats, warmup, rounds)


class LightkitCLI(CheckpointHparams):
    links = tuple(LINKS.values())
    #: The config sets no logger: `default_loggers` are attached once the trainer exists.
    _default_loggers = False

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**CheckpointHparams.subcommands(), **{name: {"model", "datamodule"} for name in ARTIFACT_COMMANDS}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # A link whose target the chosen task lacks is skipped, so tasks without labels are fine.
        for source, target in LINKS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        # A config written for `lightkit ship` is also a config of every other subcommand.
        parser.add_argument("--ship", type=dict | None, default=None, help="lightkit ship's section; ignored here")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        # An unset trainer.precision becomes bf16-mixed on a GPU with native bf16 (see
        # lightkit.precision). Written into the parsed config, so the run's saved config.yaml
        # records the precision that actually ran.
        if trainer.get("precision") is None:
            trainer["precision"] = default_precision(
                trainer.get("accelerator", "auto"), trainer.get("strategy", "auto")
            )
        if self.subcommand in ARTIFACT_COMMANDS:
            trainer["logger"] = False  # not a training run: no logger folders
        elif trainer.get("logger") in (None, True):
            # Unset: CSV and TensorBoard (default_loggers), attached once the trainer exists, so
            # Lightning's own default (TensorBoard alone, no metrics.csv) is never made.
            trainer["logger"] = False
            self._default_loggers = True
        if self.subcommand == "evaluate":
            trainer["default_root_dir"] = config["output"]  # the test loop writes its reports there

    def before_export(self) -> None:
        self.trainer.config_files = [str(path) for path in self.config["export"].get("config") or []]

    def before_predict(self) -> None:
        # The PredictionWriter streams every batch to a file; Lightning would also keep them all
        # in memory to return them, so a long input file would grow memory without bound.
        if self.config_init["predict"].get("return_predictions") is None:
            self.config_init["predict"]["return_predictions"] = False

    def before_fit(self) -> None:
        # Where to look while it trains, said before the first step rather than found afterwards.
        if rank_zero_only.rank != 0:
            return
        for logger in self.trainer.loggers:
            print(f"lightkit: {type(logger).__name__} logs to {logger.log_dir}")
            if isinstance(logger, TensorBoardLogger):
                print(f"lightkit: watch it with  tensorboard --logdir {logger.root_dir}")

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if self._default_loggers:
            trainer.loggers = default_loggers(trainer.default_root_dir)
        # Checkpoints are written whole or not at all; a CheckpointIO the user configured
        # (trainer.plugins) is left alone.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def instantiate_classes(self) -> None:
        # jsonargparse reports an error raised inside a task's or DataModule's __init__ as
        # "Does not validate against any of the Union subtypes", with ours buried in the text;
        # raise the original (it names the file, line or field) instead.
        try:
            super().instantiate_classes()
        except ValueError as e:
            cause: BaseException = e
            while (inner := cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)) is not None:
                cause = inner  # `raise ... from None` ends the chain: that error is the message
            if cause is e:
                raise
            raise cause from None


def default_loggers(root: str) -> list[Logger]:
    """CSV first (its folder holds metrics.csv, config.yaml and the checkpoints, as before
    TensorBoard was added), then TensorBoard in a sibling folder of the same layout."""
    return [
        CSVLogger(root, name="lightning_logs"),
        TensorBoardLogger(root, name="tensorboard", default_hp_metric=False),
    ]


def cli(args: ArgsType = None, run: bool = True) -> LightkitCLI:
    """The one builder behind every `lightkit` subcommand (run=False: build, don't run).

    A list of `args` runs as if typed: it stands in sys.argv while the command runs, so a DDP
    launcher that re-executes the command line replays these arguments (not those of the calling
    process, `lightkit ship ...` or pytest's), and LightningCLI does not warn about the two.
    """
    argv = sys.argv
    if isinstance(args, list):
        sys.argv, args = [argv[0], *args], None
    try:
        return LightkitCLI(
            BaseTask,
            BaseDataModule,
            trainer_class=LightkitTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [ExactResume()]},  # always present, not configurable
            args=args,
            run=run,
        )
    finally:
        sys.argv = argv


def export_for_generate(configs: list[str], ckpt_path: str, output: str, form: str) -> None:
    """`lightkit generate CKPT --config ...`: the checkpoint exported by `lightkit export` first."""
    cli(["export", *(a for c in configs for a in ("--config", c)), "--ckpt_path", ckpt_path, "--output", output,
         "--forms", f"[{form}]"])  # fmt: skip


def main(args: ArgsType = None) -> None:
    """Entry point of the `lightkit` console script; `args` lets tests call it in-process.

    From the shell, bad input (a malformed file, a missing path) ends with one clear line and exit
    status 2 instead of a traceback; called with `args`, the exception propagates to the caller.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["generate"]:  # needs only an export folder, not a config: its own small parser

        def command() -> None:
            from lightkit.export.generate_command import main as generate

            generate(argv[1:], export=export_for_generate)
    elif argv[:1] == ["ship"]:  # a pipeline over the other subcommands, each run through `cli`

        def command() -> None:
            from lightkit.ship.command import main as ship

            ship(argv[1:], cli=cli)
    else:

        def command() -> None:
            cli(args)

    if args is not None:
        command()
        return
    try:
        command()
    except (InputError, FileNotFoundError, FloatingPointError) as e:
        print(f"lightkit: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
