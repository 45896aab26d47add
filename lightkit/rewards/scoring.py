"""Rewards for PPO and GRPO: plain Python callables named in YAML, or a trained reward model.

Both score text, so a policy and a reward model need not share a tokenizer:

    reward(prompts: list[str], responses: list[str]) -> list[float]

A callable may also name text columns of the prompt data (e.g. `reference`, the reference answer
of an instruction row) as keyword parameters, and gets them per response, as TRL's reward
functions get dataset columns.

A callable is named by import path (`package.module:function` or `package.module.function`);
several are summed with weights (as TRL's `reward_funcs` and `reward_weights`), and each one's
mean is kept for logging. A reward model and callables mix the same way: the model's score times
`model_weight` plus the callables' weighted sum (a learned reward kept honest by a rule, e.g. a
length window).
Every call is checked: an exception, a result of the wrong length or a non-finite value stops the
run with a message naming the callable, because a silently wrong reward trains a wrong policy.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from lightkit.io.errors import InputError
from lightkit.models.loading import load_trained, trained_settings
from lightkit.models.reward_inputs import encode_scored

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


def path_parts(path: str) -> tuple[str, str]:
    """`module:attr` or `module.attr` -> (module, attr); either may be empty in a malformed path."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    return module_name, attr


def import_callable(path: str) -> RewardFn:
    """`module:attr` or `module.attr` -> the object, with an error naming what was missing."""
    module_name, attr = path_parts(path)
    if not module_name or not attr:
        raise InputError(f"reward_fn: '{path}' is not an import path like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        moved = " (it moved to lightkit.rewards.text)" * (module_name == "lightkit.text_rewards")
        raise InputError(f"reward_fn: cannot import module '{module_name}' of '{path}' ({e}){moved}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"reward_fn: '{module_name}' has no callable '{attr}' (from '{path}')")
    return fn


class CallableReward:
    """A user's reward function, with every call checked (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fn = import_callable(path)
        try:
            params = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):  # a builtin or C callable: no signature to read
            params = []
        self.takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self.takes = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        # The data columns it cannot run without: named parameters after (prompts, responses) with no default.
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.needs = {f"reward_fn '{path}'": {p.name for p in named[2:] if p.default is p.empty}}

    def __call__(self, prompts: list[str], responses: list[str], **columns: list[str]) -> torch.Tensor:
        # The batch's other text columns (e.g. `reference`) go to a callable that names them.
        extra = {k: v for k, v in columns.items() if self.takes_all or k in self.takes}
        try:
            scores = self.fn(list(prompts), list(responses), **extra)
        except Exception as e:  # noqa: BLE001 - any failure of user code is reported the same way
            raise InputError(f"reward_fn '{self.path}' raised {type(e).__name__}: {e}") from e
        try:
            values = [float(s) for s in scores]
        except (TypeError, ValueError):
            raise InputError(
                f"reward_fn '{self.path}' must return a list of floats, got {type(scores).__name__}"
            ) from None
        if len(values) != len(responses):
            raise InputError(f"reward_fn '{self.path}' returned {len(values)} scores for {len(responses)} responses")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise InputError(f"reward_fn '{self.path}' returned non-finite scores at positions {bad[:5]}")
        return torch.tensor(values)


class ModelReward(torch.nn.Module):
    """A sequence classification / regression model as reward: a lightkit checkpoint or HF folder.

    The score is the scalar head's output (num_labels == 1, e.g. a lightkit reward model) or the
    logit of `label` (e.g. steering a policy toward a topic with a topic classifier).

    Args:
        path: the model.
        tasks: the task classes whose checkpoints hold a suitable model, the first being the one
            whose `auto_model` loads a Hugging Face folder (the caller names them: the core does
            not import tasks).
        label: label name or index whose logit is the score; required when num_labels > 1.
        text: score `prompt_and_response` (default) or the `response` alone.
        max_length: longest reward-model input in its own tokens; by default the length a lightkit
            reward model was trained on (`lightkit.json`), else 512.
        revision: the Hub revision of a Hub id `path`.
        trust_remote_code: let transformers run the repository's own code.
    """

    def __init__(
        self,
        path: str,
        tasks: tuple[type, ...],
        label: str | int | None = None,
        text: Literal["prompt_and_response", "response"] = "prompt_and_response",
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.tokenizer = load_trained(
            path, tasks[0], "reward_model", tasks[1:], revision=revision, trust_remote_code=trust_remote_code
        )
        if self.tokenizer is None:
            raise InputError(f"reward_model: {path} has no tokenizer files; save it with its tokenizer")
        self.model.eval().requires_grad_(False)
        self.text = text
        # A lightkit reward model reads what it was trained on, as it was trained, unless told otherwise.
        settings = trained_settings(path)
        self.max_length = max_length or settings.get("input_max_length") or 512
        self.response_first = bool(settings.get("response_first", False))
        self.reference_column: str | None = settings.get("reference_column")
        # What the stage-start column check asks of the prompt data (as a callable's parameters).
        self.needs = {f"reward_model '{path}'": {self.reference_column}} if self.reference_column else {}
        config = self.model.config
        if config.num_labels == 1:
            self.index = 0
        elif label is None:
            raise InputError(
                f"reward_model: {path} has {config.num_labels} labels {list(config.label2id)}; set reward_label to "
                "the one to reward"
            )
        elif isinstance(label, int) or str(label).isdigit():
            self.index = int(label)
        elif label in config.label2id:
            self.index = config.label2id[label]
        else:
            raise InputError(f"reward_label: '{label}' is not a label of {path}: {list(config.label2id)}")

    @torch.no_grad()
    def forward(self, prompts: list[str], responses: list[str], **columns: list[str]) -> torch.Tensor:
        prompts = list(prompts) if self.text == "prompt_and_response" else [""] * len(responses)
        device = next(self.model.parameters()).device
        references = None
        if self.reference_column:
            references = columns.get(self.reference_column)
            if references is None:
                raise InputError(f"reward_model: it reads each answer beside its reference (reference_column "
                                 f"'{self.reference_column}'), which the prompts came without")  # fmt: skip
            references = list(references)
        # As PreferenceDataModule trained it.
        batch = encode_scored(self.tokenizer, prompts, list(responses), self.max_length, self.response_first,
                              references)  # fmt: skip
        return self.model(**batch.to(device)).logits[:, self.index].float().cpu()


class WeightedRewards:
    """The weighted sum of several rewards; `last_parts` holds each one's batch mean, by name."""

    def __init__(self, parts: list[tuple[str, Callable[..., torch.Tensor]]], weights: list[float]) -> None:
        self.parts = parts
        self.weights = [float(w) for w in weights]
        self.last_parts: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: list[str], responses: list[str], **columns: list[str]) -> torch.Tensor:
        total = torch.zeros(len(responses))
        for (name, part), weight in zip(self.parts, self.weights):
            scores = part(prompts, responses, **columns)
            self.last_parts[f"reward_{name}"] = scores.mean()
            total += weight * scores
        return total

    @property
    def needs(self) -> dict[str, set[str]]:
        """The data columns each callable part cannot run without, by part."""
        return {who: cols for _, part in self.parts for who, cols in getattr(part, "needs", {}).items()}

    @property
    def model(self) -> ModelReward | None:
        """The reward model among the parts, if any (the task holds it as a frozen companion)."""
        return next((part for _, part in self.parts if isinstance(part, ModelReward)), None)


def build_reward(
    reward_fn: str | list[str] | None,
    reward_model: str | None,
    weights: list[float] | None = None,
    model_weight: float = 1.0,
    **model_kwargs: Any,
) -> CallableReward | WeightedRewards | ModelReward:
    """The reward a config asks for: one callable, weighted callables, a reward model, or a reward
    model plus weighted callables (`model_weight` x the model's score + the callables' sum)."""
    if not reward_fn and reward_model is None:
        raise InputError(
            "set reward_fn (an import path, or a list of them), reward_model (a model folder or checkpoint), or both"
        )
    paths = [] if not reward_fn else [reward_fn] if isinstance(reward_fn, str) else list(reward_fn)
    if weights is not None and not paths:
        raise InputError("reward_weights weigh reward_fn callables; a reward_model alone takes none")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths):
        raise InputError(f"reward_weights has {len(weights)} weights for {len(paths)} reward_fn callables {paths}")
    if reward_model is not None and not paths:
        return ModelReward(reward_model, **model_kwargs)
    if reward_model is None and isinstance(reward_fn, str) and len(weights) == 1 and weights[0] == 1.0:
        return CallableReward(reward_fn)
    parts: list[tuple[str, Callable[..., torch.Tensor]]] = []
    if reward_model is not None:
        parts.append(("model", ModelReward(reward_model, **model_kwargs)))
        weights = [model_weight, *weights]
    for path in paths:
        fn = CallableReward(path)
        parts.append((fn.fn.__name__, fn))
    return WeightedRewards(parts, weights)


def describe_reward(reward_fn: str | list[str], weights: list[float] | None = None) -> str:
    """The weighted callables as a reader writes them, `rouge_l + 0.5 * copied_lead (pkg.module)`,
    so a report says what its reward was, weights included, without importing anything."""
    paths = [reward_fn] if isinstance(reward_fn, str) else list(reward_fn)
    weights = [1.0] * len(paths) if weights is None else list(weights)
    split = [path_parts(p) for p in paths]
    terms = [name if w == 1 else f"{w:g} * {name}" for (_, name), w in zip(split, weights)]
    modules = {module for module, _ in split}
    return " + ".join(terms) + (f" ({modules.pop()})" if len(modules) == 1 else "")
