"""Load a trained model for use inside another task: a KD teacher, a PPO policy or reward model.

Accepts what lightkit produces and what users bring: a lightkit checkpoint (`.ckpt`, loaded with
`weights_only=True`, so it can't run code), or a packaged name, Hugging Face folder or Hub id
(`lightkit.models.hub`).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lightkit.compat import fresh_hyperparameters
from lightkit.io.errors import InputError
from lightkit.models.hub import load_tokenizer, resolve_model

# The task's settings a saved model carries beside its weights (BaseTask.saved_settings writes it).
SETTINGS_FILE = "lightkit.json"


def init_parameters(cls: type) -> set[str]:
    """Names of the keyword arguments `cls(...)` accepts, along its chain of __init__ methods."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}


def load_trained(
    spec: str,
    task: type,
    what: str,
    accept: tuple[type, ...] = (),
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """The transformers model (and tokenizer, when known) of a `task` checkpoint or HF folder.

    Args:
        spec: a `.ckpt` written by `lightkit fit` for `task`, or a packaged model name, Hugging
            Face folder or Hub id (loaded with `task.auto_model`).
        task: the lightkit task class the model was trained with (e.g. CausalLMTask).
        what: the config field being loaded, for error messages (e.g. "teacher").
        accept: other task classes whose checkpoints hold a suitable model (e.g. a
            RewardModelTask checkpoint where a sequence classifier is needed).
        revision: the Hub revision of a Hub id.
        trust_remote_code: let transformers run a Hub repository's own code.
    """
    source = resolve_model(spec, what, revision, trust_remote_code)
    path = source.path
    if source.hub or not path.is_file():
        model = source.from_pretrained(task.auto_model, what)
        if source.hub:
            has_tokenizer = True  # a Hub repository without one fails in load_tokenizer, naming it
        else:
            has_tokenizer = (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()
        return model, load_tokenizer(spec, revision, trust_remote_code, what=what) if has_tokenizer else None
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(f"{what}: {path} is not a readable lightkit checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{what}: {path} is not a lightkit checkpoint (no state_dict)")
    hparams: dict[str, Any] = dict(ckpt.get("hyper_parameters", {}))
    name = str(hparams.pop("_class_path", task.__name__)).rsplit(".", 1)[-1]
    known = {t.__name__: t for t in (task, *accept)}
    if name not in known:
        raise InputError(
            f"{what}: {path} is a {name} checkpoint, but a {' or '.join(known)} is needed here; "
            "give a checkpoint of that task, or its hf_model folder"
        )
    task = known[name]
    # LightningCLI also records link targets the task does not take (e.g. prompt_template).
    kwargs = {k: v for k, v in hparams.items() if k in init_parameters(task)}
    # Built while LightningCLI instantiates the configured task: it records its own hyperparameters.
    instance = fresh_hyperparameters(task, **kwargs)
    instance.load_trained_state(ckpt["state_dict"], what)
    return instance.plain_model(keep_adapters=False), instance.tokenizer


def trained_settings(spec: str | Path) -> dict[str, Any]:
    """What a lightkit task saved with the model at `spec`: its folder's `lightkit.json`, or a
    checkpoint's hyperparameters (read through mmap, without the weights); empty for anything
    else (e.g. a Hub id)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        settings = path / SETTINGS_FILE
        return json.loads(settings.read_text()) if settings.exists() else {}
    if path.is_file():
        return dict(torch.load(path, weights_only=True, map_location="cpu", mmap=True).get("hyper_parameters", {}))
    return {}
