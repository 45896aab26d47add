"""The `lightkit` command: LightningCLI over every lightkit task and DataModule.

    lightkit fit|validate|test|predict --config configs/ner.yaml [--trainer.max_epochs 3 ...]

Tasks and DataModules are chosen in YAML by class name (subclass mode); what the data knows
(tokenizer, label names) is linked into the task when both are instantiated, so a config states
it once. A PredictionWriter is always present, configurable as `--prediction_writer.output`.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import lightkit.callbacks  # noqa: F401 - registers callbacks for short class_path names
import lightkit.tasks  # noqa: F401 - registers tasks for short class_path names
from lightkit.callbacks import PredictionWriter
from lightkit.data import BaseDataModule
from lightkit.errors import InputError
from lightkit.task import BaseTask


class LightkitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # A link whose target the chosen task lacks is skipped, so tasks without labels are fine.
        parser.link_arguments("data.tokenizer_name", "model.init_args.tokenizer", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.init_args.label_names", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def instantiate_classes(self) -> None:
        # jsonargparse reports an error raised inside a task's or DataModule's __init__ as
        # "Does not validate against any of the Union subtypes", with ours buried in the text;
        # raise the original (it names the file, line or field) instead.
        try:
            super().instantiate_classes()
        except ValueError as e:
            cause = e
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
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
        except (InputError, FileNotFoundError) as e:
            print(f"lightkit: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    else:
        _run(args)


def _run(args: ArgsType) -> None:
    LightkitCLI(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
