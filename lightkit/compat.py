"""The one place lightkit reaches into private Lightning APIs, each with its upstream reference.

Everything else in lightkit uses public APIs only. Each use here has a test in tests/test_compat.py
that fails loudly, naming the private name, when an upgrade removes or changes it.

1. Checkpoint hyperparameters under `--ckpt_path`. LightningCLI's `_parse_ckpt_path` merges a
   checkpoint's saved task hyperparameters over the whole parsed config, so a flag given on the
   same command line (`test --ckpt_path best.ckpt --model.decoding viterbi`) is silently lost, and
   link targets the CLI will fill again (tokenizer, label_names) come back as unknown keywords.
   Upstream: Lightning-AI/pytorch-lightning#21455 (CLI arguments override checkpoint hparams) and
   #21408 (an `adapt_checkpoint_hparams` hook), both open. Until one lands, `CheckpointHparams`
   overrides `_parse_ckpt_path`, and reads the `--model.*` flags of the command line itself.

2. Hyperparameters of a task built inside another task's `__init__` (a KD teacher, a PPO reward
   model loaded from a checkpoint). While LightningCLI instantiates the configured task, it hands
   its hyperparameters to `save_hyperparameters` through a ContextVar
   (`lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters`), which a nested task
   would record as its own. `fresh_hyperparameters` builds it in an empty context instead.
   Upstream: Lightning-AI/pytorch-lightning#21116 (instantiating from checkpoint hparams).

3. Frozen companions that move with their task (a KD teacher, a PPO reference and reward model).
   They are kept unregistered, so they reach no optimizer, DDP sync, `train()` or checkpoint; but
   torch has no public hook to move an unregistered module along when its owner moves. Every move
   (`.to`, `.cuda`, `.half`, Lightning's device and precision setup) goes through
   `nn.Module._apply`, so `MovesUnregistered` overrides it, taking `*args, **kwargs` as
   pytorch/pytorch#104197 asks of overriders.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from torch import nn

T = TypeVar("T")


def model_flags(argv: Iterable[str]) -> dict[str, object]:
    """Task arguments given as flags (`--model.decoding viterbi`, `--model.init_args.top_k=5`)."""
    flags, argv = {}, list(argv)
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


class CheckpointHparams(LightningCLI):
    """LightningCLI whose `--ckpt_path` hyperparameters sit between the config and the flags.

    As LightningCLI's: a checkpoint's saved task hyperparameters override the config. Unlike it,
    (1) flags given on this command line win over the checkpoint, and (2) link targets (`links`)
    are left out: the links supply them from the DataModule again.
    """

    links: tuple[str, ...] = ()

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        self.argv = [] if isinstance(args, dict) else [str(a) for a in (sys.argv[1:] if args is None else args)]
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:  # private in Lightning, see the module docstring
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        for key in ("_instantiator", *self.links):
            hparams.pop(key, None)
        if "_class_path" not in hparams:
            return
        hparams.update(model_flags(self.argv))
        model = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)


def fresh_hyperparameters(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`build(*args, **kwargs)` outside any hyperparameters LightningCLI is handing down."""
    return contextvars.Context().run(build, *args, **kwargs)


class MovesUnregistered(nn.Module):
    """Modules held in `self.__dict__["_frozen"]` follow every device and dtype move of this one."""

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # private in torch, see (3)
        super()._apply(fn, *args, **kwargs)
        for model in self.__dict__.get("_frozen", {}).values():
            model._apply(fn, *args, **kwargs)
        return self
