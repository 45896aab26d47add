"""The `lightkit` command: LightningCLI over every lightkit task and DataModule.

    lightkit fit|validate|test|predict --config configs/ner.yaml [--trainer.max_epochs 3 ...]
    lightkit export --config configs/ner.yaml --ckpt_path ... --output ...   (see lightkit.export.cli)
    lightkit evaluate --config configs/ner.yaml --artifact ... --form int8-cpu --output ...

Tasks and DataModules are chosen in YAML by class name (subclass mode); what the data knows
(tokenizer, label names) is linked into the task when both are instantiated, so a config states
it once. A PredictionWriter is always present, configurable as `--prediction_writer.output`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

from lightning.pytorch import Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

import lightkit.callbacks  # noqa: F401 - registers callbacks for short class_path names
import lightkit.tasks  # noqa: F401 - registers tasks for short class_path names
from lightkit.callbacks import PredictionWriter
from lightkit.checkpointing import AtomicCheckpointIO
from lightkit.data import BaseDataModule
from lightkit.errors import InputError
from lightkit.precision import default_precision
from lightkit.task import BaseTask


# DataModule attribute -> task argument, linked when both are built.
LINKS = {"tokenizer_name": "tokenizer", "label_names": "label_names", "prompt_template": "prompt_template"}


class LightkitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # A link whose target the chosen task lacks is skipped, so tasks without labels are fine.
        for source, target in LINKS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)] if not isinstance(args, dict) else []
        super().parse_arguments(parser, args)

    def _model_flags(self) -> dict[str, object]:
        """Task arguments given as flags (`--model.decoding viterbi`, `--model.init_args.top_k=5`)."""
        flags, argv = {}, self._argv
        for i, arg in enumerate(argv):
            if not arg.startswith("--model."):
                continue
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    continue
                value = argv[i + 1]
            parts = key.split(".")[1:]
            parts = parts[1:] if parts[:1] == ["init_args"] else parts
            if len(parts) == 1 and parts[0] != "class_path":
                flags[parts[0]] = yaml.safe_load(value)  # typed as jsonargparse types a flag
        return flags

    def _parse_ckpt_path(self) -> None:
        # As LightningCLI's: a checkpoint's saved task hyperparameters override the config. Unlike
        # it, (1) flags given on this command line win over the checkpoint (`test --ckpt_path ...
        # --model.decoding viterbi` must decode with Viterbi), and (2) link targets are left out:
        # the links supply them from the DataModule again, and for a task that takes **kwargs
        # they would otherwise reach BaseTask as unknown keywords.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        for key in ("_instantiator", *LINKS.values()):
            hparams.pop(key, None)
        if "_class_path" not in hparams:
            return
        hparams.update(self._model_flags())
        model = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, object]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand == "predict" and kwargs.get("return_predictions") is None:
            # The PredictionWriter streams every batch to a file; Lightning would also keep them
            # all in memory to return them, so a long input file would grow memory without bound.
            kwargs["return_predictions"] = False
        return kwargs

    def before_instantiate_classes(self) -> None:
        # An unset trainer.precision becomes bf16-mixed on a GPU with native bf16 (see
        # lightkit.precision). Written into the parsed config, so the run's saved config.yaml
        # records the precision that actually ran.
        trainer = self._get(self.config, "trainer")
        if trainer.get("precision") is None:
            trainer["precision"] = default_precision(trainer.get("accelerator", "auto"), trainer.get("strategy", "auto"))

    def instantiate_trainer(self, **kwargs: object) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
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


def main(args: ArgsType = None) -> None:
    """Entry point of the `lightkit` console script; `args` lets tests call it in-process.

    From the shell, bad input (a malformed file, a missing path) ends with one clear line and exit
    status 2 instead of a traceback; called with `args`, the exception propagates to the caller.
    """
    if args is None:
        try:
            _run(args)
        except (InputError, FileNotFoundError, FloatingPointError) as e:
            print(f"lightkit: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    else:
        _run(args)


def _run(args: ArgsType) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["export"]:
        from lightkit.export.cli import export_main

        export_main(argv[1:])
        return
    if argv[:1] == ["evaluate"]:
        from lightkit.export.evaluate import evaluate_main

        evaluate_main(argv[1:])
        return
    cli(args)


def cli(args: ArgsType = None, run: bool = True) -> LightkitCLI:
    """The LightningCLI behind `lightkit fit|validate|test|predict` (run=False: build, don't run)."""
    return LightkitCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
