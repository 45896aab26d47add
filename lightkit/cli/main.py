"""The `lightkit` command: one LightningCLI for every subcommand.

    lightkit fit|validate|test|predict --config configs/ner.yaml [--trainer.max_epochs 3 ...]
    lightkit export   --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt --output runs/ner/onnx
    lightkit evaluate --config configs/ner.yaml --artifact runs/ner/onnx --form int8-cpu --output runs/ner/eval
    lightkit benchmark --config configs/ner.yaml --ckpt_path runs/ner/checkpoints/best.ckpt --artifact runs/ner/onnx \
        --output runs/ner/benchmark
    lightkit ship --config configs/ner_ship.yaml   # every stage above, resumable, with a report (lightkit.cli.ship)
    lightkit generate runs/sft_headlines/onnx --prompts prompts.txt --chat   # lightkit.export.runtime.generate_command
    lightkit serve runs/sft_headlines/onnx --form int8-cpu   # an OpenAI-compatible HTTP API (lightkit.cli.serve)

Every subcommand is built by the same `cli()`: the task and DataModule from the config, chosen in
YAML by class name (subclass mode), with what the data knows (tokenizer, label names) linked into
the task when both are instantiated, so a config states it once. `export`, `evaluate`,
`benchmark`, `generate` and `ship` are methods of `LightkitTrainer`, so LightningCLI lists them in
`lightkit --help`, reads their settings from `--config` files as well as flags (`--print_config`
shows them), and hands them the built task and DataModule; `generate` and `ship` build none (they
read an export folder, or run the other commands stage by stage). A PredictionWriter is always
present, configurable as `--prediction_writer.output`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

import lightkit.callbacks  # noqa: F401 - registers callbacks for short class_path names
import lightkit.tasks  # noqa: F401 - registers tasks for short class_path names
from lightkit.callbacks import ExactResume, PredictionWriter
from lightkit.compat import CheckpointHparams
from lightkit.data import BaseDataModule
from lightkit.io.errors import InputError
from lightkit.training.checkpointing import AtomicCheckpointIO
from lightkit.training.precision import default_precision
from lightkit.training.task import BaseTask

# DataModule attribute -> task argument, linked when both are built.
LINKS = {
    "tokenizer_name": "tokenizer",
    "tokenizer_revision": "tokenizer_revision",
    "label_names": "label_names",
    "prompt_template": "prompt_template",
    "input_max_length": "input_max_length",
    "response_first": "response_first",
    "reference_column": "reference_column",
}
ARTIFACT_COMMANDS = ("export", "evaluate", "benchmark")
# Commands that build no task or DataModule here: generate reads an export folder (or exports a
# checkpoint through `export`), ship runs the other commands stage by stage, serve serves a folder.
UNBUILT_COMMANDS = ("generate", "ship", "serve")


class LightkitTrainer(Trainer):
    """Lightning's Trainer, plus the commands that start from a trained model: `export`, `evaluate`."""

    #: The `--config` files of the command, recorded in an export's manifest (set by LightkitCLI).
    config_files: list[str] = []

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        output: str,
        ckpt_path: str | None = None,
        forms: list[str] | str | None = None,
        overwrite: bool = False,
        parity_batches: int | None = None,
        tolerance: dict[str, dict[str, float]] | None = None,
        opset: int | None = None,
        embedding_bits: Literal[8, 4] = 8,
    ) -> Path:
        """Export a checkpoint to ONNX forms, each checked for parity against PyTorch.

        Args:
            output: folder to create: one folder per form, tokenizer/ and manifest.json.
            ckpt_path: checkpoint written by `lightkit fit`. Without one, the model the config builds
                is exported as it is: its `pretrained` weights, e.g. a DPO, PPO or GRPO run's merged
                `hf_model` with `--model.init_args.pretrained` (and `peft` off).
            forms: one or a list (`[fp32, int8-cpu]`) of fp32, fp16, int8-gpu, int8-cpu, qat, and for
                decoders int4-cpu and int4-gpu (4-bit weights).
                Default fp32 and int8-cpu (qat instead for a QAT checkpoint), plus fp16 and
                int8-gpu where CUDA is present.
            overwrite: replace an existing output folder.
            parity_batches: test-split batches the parity gate scores (default: the task's).
            tolerance: per form, limits replacing the defaults, e.g. `{int8-cpu:
                {max_metric_drop: 0.05}}`; keys max_abs_diff, min_argmax_agreement,
                max_metric_drop, min_greedy_agreement.
            opset: ONNX opset (default: lightkit.export.builder.onnx_export.OPSET, 17).
            embedding_bits: int8-gpu: bits of the embedding tables (4 makes the file smaller;
                check the parity report).
        """
        from lightkit.export.builder.exporter import export_checkpoint

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
        from lightkit.export.runtime.evaluate import evaluate_artifact

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
        from lightkit.export.runtime.benchmark import benchmark_artifact

        sizes = batch_sizes or sorted({1, datamodule.eval_batch_size})
        return benchmark_artifact(model, datamodule, artifact, ckpt_path, output, sizes, repeats, warmup, rounds)

    def generate(
        self,
        model: LightningModule | None = None,
        datamodule: LightningDataModule | None = None,
        *,
        artifact: str,
        form: str | None = None,
        device: Literal["auto", "cpu"] = "auto",
        prompts: str = "-",
        output: str = "-",
        chat: bool = False,
        system_prompt: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | str | None = None,
        batch_size: int = 8,
        refine: bool = False,
        refine_calls: int = 32,
        refine_ms: float | None = None,
        refine_top_k: int = 4,
        length_weight: float | None = None,
        reward_fn: list[str] | str | None = None,
        reward_weights: list[float] | None = None,
    ) -> None:
        """Text from an exported decoder, as JSON lines (lightkit.export.runtime.generate_command).

        Args:
            artifact: folder written by `lightkit export` from a causal LM (also given first, without
                the flag: `lightkit generate runs/sft/onnx ...`), or a checkpoint, exported first
                (parity-gated, `form` or fp32) with the `--config` it was trained with.
            form: which form (default: the manifest's best for this machine).
            device: auto: ONNX Runtime's CUDA execution provider when present; cpu: the CPU.
            prompts: a .txt (one prompt per line) or .jsonl file, or - for standard input.
            output: JSON-lines file to write (whole or not at all), or - for standard output.
            chat: apply the tokenizer's chat template to each prompt.
            system_prompt: a system turn before each prompt (with chat).
            max_new_tokens: tokens to generate at most per answer.
            temperature: sampling temperature; 0 is greedy.
            top_k: sample among the k likeliest tokens.
            top_p: sample within this probability mass.
            seed: seed of the sampling.
            stop: a stop string, or a list of them.
            batch_size: prompts decoded together.
            refine: refine each answer toward a better objective (lightkit.export.runtime.refiner).
            refine_calls: the refiner's budget in model calls per answer.
            refine_ms: its budget in milliseconds per answer.
            refine_top_k: candidate tokens per position.
            length_weight: objective term per answer token (default: the first answer's mean token
                cost, so its length is neutral; 0 is pure argmax log P, which shortens answers).
            reward_fn: reward(prompts, responses) import path, or a list of them.
            reward_weights: one weight per reward_fn.
        """
        settings = SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("self", "model", "datamodule")})
        from lightkit.export.runtime.generate_command import command

        command(settings, self.config_files, export=export_for_generate)

    def serve(
        self,
        model: LightningModule | None = None,
        datamodule: LightningDataModule | None = None,
        *,
        artifact: str,
        form: str | None = None,
        device: Literal["auto", "cpu"] = "auto",
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key_env: str | None = "LIGHTKIT_API_KEY",
        model_name: str | None = None,
        max_body_bytes: int = 1 << 20,
        max_prompt_tokens: int | None = None,
        max_tokens: int = 256,
        default_max_tokens: int | None = None,
        max_n: int = 8,
        max_inputs: int = 64,
        queue_size: int = 64,
        batch_size: int = 32,
        batch_wait_ms: float = 5.0,
        join_tokens: int = 256,
        timeout_s: float = 120.0,
        rewards: dict[str, str] | None = None,
    ) -> None:
        """Serve an artifact over HTTP: OpenAI's chat and text completions for decoders, tag and
        classify for encoders, /v1/models, /health, /metrics and a playground at / (lightkit.cli.serve).

        Args:
            artifact: folder written by `lightkit export` (also given first, without the flag).
            form: which form (default: the manifest's best for this machine).
            device: auto: ONNX Runtime's CUDA execution provider when present; cpu: the CPU.
            host: address to bind; localhost unless told otherwise (0.0.0.0: every interface).
            port: TCP port.
            api_key_env: environment variable holding the API key clients must send
                (`Authorization: Bearer`); when it is unset or empty, no key is required.
            model_name: the model id clients name (default: the artifact folder's name).
            max_body_bytes: largest request body.
            max_prompt_tokens: longest prompt in tokens (default: the model's context).
            max_tokens: most tokens a request may ask for (`max_tokens`).
            default_max_tokens: tokens per answer when a request does not say (default 64, or
                max_tokens if lower).
            max_n: most choices per request (`n`).
            max_inputs: most texts per tag or classify request.
            queue_size: requests waiting at most; past it requests are refused with 429.
            batch_size: rows decoded (or texts encoded) together in one wave.
            batch_wait_ms: how long a wave waits for more requests before it starts.
            join_tokens: a decoder's requests join a running wave as its rows finish while its
                cache has grown fewer than this many tokens past the wave's start (0: never; a
                request then waits for the next wave).
            timeout_s: a request not answered by then gets 504 (and shutdown waits this long).
            rewards: rewards a request may refine toward, by name (`{length:
                lightkit.rewards.text:headline_length}`), asked for as `"lightkit": {"reward": "length"}`.
        """
        from lightkit.cli.serve.command import serve
        from lightkit.cli.serve.settings import ServeSettings

        settings = ServeSettings(
            host=host, port=port, api_key_env=api_key_env, model_name=model_name, max_body_bytes=max_body_bytes,
            max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens, default_max_tokens=default_max_tokens,
            max_n=max_n, max_inputs=max_inputs, queue_size=queue_size, batch_size=batch_size,
            batch_wait_ms=batch_wait_ms, join_tokens=join_tokens, timeout_s=timeout_s, rewards=rewards or {},
        )  # fmt: skip
        serve(artifact, form, device, settings)

    def ship(
        self,
        model: LightningModule | None = None,
        datamodule: LightningDataModule | None = None,
        force: bool = False,
        start: str | None = None,
    ) -> Path:
        """Run the pipeline of the config's `ship:` section: every stage, resumable (lightkit.cli.ship).

        Args:
            force: rerun from a stage whose settings changed.
            start: rerun from this stage, done or not (`--from` works too).
        """
        from lightkit.cli.ship.command import ship

        if len(self.config_files) != 1:
            raise InputError("lightkit ship: give its pipeline as one config: --config X.yaml (with a `ship:` section)")
        return ship(self.config_files[0], cli=cli, force=force, start=start)


class LightkitCLI(CheckpointHparams):
    links = tuple(LINKS.values())
    #: The config sets no logger: `default_loggers` are attached once the trainer exists.
    _default_loggers = False

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = (*ARTIFACT_COMMANDS, *UNBUILT_COMMANDS)
        return {**CheckpointHparams.subcommands(), **{name: {"model", "datamodule"} for name in commands}}

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # As LightningCLI's, but model and data are optional in the parser: generate and ship need
        # neither. before_instantiate_classes asks for them where a command builds them.
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=True, required=False)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True, required=False)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # A link whose target the chosen task lacks is skipped, so tasks without labels are fine.
        for source, target in LINKS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        # A config written for `lightkit ship` is also a config of every other subcommand.
        parser.add_argument("--ship", type=dict | None, default=None, help="lightkit ship's section; ignored here")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        missing = [key for key in ("model", "data") if config.get(key) is None]
        if missing and self.subcommand not in UNBUILT_COMMANDS:
            raise InputError(
                f"lightkit {self.subcommand or ''}: no {' and no '.join(missing)} to build; give a config that "
                "names them (--config configs/ner.yaml) or --model / --data"
            )
        trainer = config["trainer"]
        # An unset trainer.precision becomes bf16-mixed on a GPU with native bf16 (see
        # lightkit.training.precision). Written into the parsed config, so the run's saved config.yaml
        # records the precision that actually ran.
        if trainer.get("precision") is None:
            trainer["precision"] = default_precision(
                trainer.get("accelerator", "auto"), trainer.get("strategy", "auto")
            )
        if self.subcommand in (*ARTIFACT_COMMANDS, *UNBUILT_COMMANDS):
            trainer["logger"] = False  # not a training run: no logger folders
        elif trainer.get("logger") in (None, True):
            # Unset: CSV and TensorBoard (default_loggers), attached once the trainer exists, so
            # Lightning's own default (TensorBoard alone, no metrics.csv) is never made.
            trainer["logger"] = False
            self._default_loggers = True
        if self.subcommand == "evaluate":
            trainer["default_root_dir"] = config["output"]  # the test loop writes its reports there

    def after_instantiate_classes(self) -> None:
        # Every command's trainer knows the --config files it came from (export records them in
        # its manifest, generate exports a checkpoint with them, ship reads its pipeline there).
        if self.subcommand:
            self.trainer.config_files = [str(path) for path in self.config[self.subcommand].get("config") or []]

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
        if self.subcommand in UNBUILT_COMMANDS:  # a bare trainer to call the command on
            self.config_init, self.model, self.datamodule = self.config, None, None
            self.trainer = self.trainer_class(logger=False, enable_checkpointing=False, enable_model_summary=False)
            return
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


# Switches of generate and ship that were bare flags before they joined the one parser, where a
# boolean takes a value (`--chat true`).
SWITCHES = {"generate": ("--chat", "--refine"), "ship": ("--force",)}


def short_forms(argv: list[str]) -> list[str]:
    """The spellings generate and ship had before they joined the one parser, still accepted:
    `lightkit generate ARTIFACT` (the parser takes `--artifact`), bare switches (`--chat`), and
    `lightkit ship --from STAGE` (`from` is a Python keyword, so the argument is `start`)."""
    command = argv[0] if argv else None
    if command in ("generate", "serve") and len(argv) > 1 and not argv[1].startswith("-"):
        argv = [command, "--artifact", *argv[1:]]
    if command == "ship":
        argv = [re.sub(r"^--from(?==|$)", "--start", a) for a in argv]
    switches = SWITCHES.get(command, ())
    return [
        f"{a}=true" if a in switches and (i + 1 == len(argv) or argv[i + 1].startswith("-")) else a
        for i, a in enumerate(argv)
    ]


def main(args: ArgsType = None) -> None:
    """Entry point of the `lightkit` console script; `args` lets tests call it in-process.

    From the shell, bad input (a malformed file, a missing path) ends with one clear line and exit
    status 2 instead of a traceback; called with `args`, the exception propagates to the caller.
    """
    if args is not None:
        cli(short_forms(list(args)))
        return
    try:
        cli(short_forms(sys.argv[1:]))
    except (InputError, FileNotFoundError, FloatingPointError) as e:
        print(f"lightkit: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
