"""Where a model named in a config comes from: a package, a local folder, or the Hugging Face Hub.

One resolver for every loader (tasks, KD teachers, reward models, DPO/PPO/GRPO references,
tokenizers, export, generate, ship), trying in this order:
1. a packaged name (`lightkit.models.resources.PACKAGED_MODELS`): the offline default of our demos;
2. a local path that exists (a Hugging Face folder, or a lightkit `.ckpt` where one is accepted);
3. a Hub id (`org/name` or `name`), loaded through transformers' own `from_pretrained`, so its
   cache (`HF_HUB_CACHE`), offline mode (`HF_HUB_OFFLINE=1`) and token handling apply unchanged.

Resolving a Hub id fetches (or finds in the cache) its `config.json` once, so a bad id fails
here, in one line that names it, says whether offline mode was on and what to do, before any
model is built. The resolved commit is what manifests and saved models record.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightkit.io.errors import InputError
from lightkit.models.resources import PACKAGED_MODELS, PKG_SCHEME, resolve_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# What a Hub repository id looks like (huggingface_hub's validate_repo_id, without its length cap).
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name: a folder on disk, or a Hub id and the commit it resolved to."""

    name: str  # as written in the config
    location: str  # the folder (or checkpoint file), or the Hub id
    hub: bool = False
    revision: str | None = None  # as asked for (branch, tag or commit); Hub ids only
    commit: str | None = None  # the commit the Hub id resolved to
    trust_remote_code: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)

    def from_pretrained(self, loader: Any, what: str, **kwargs: Any) -> Any:
        """`loader.from_pretrained(...)` for this model, with its revision and remote-code setting."""
        extra: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.hub:
            extra["revision"] = self.commit or self.revision
        try:
            return loader.from_pretrained(self.location, **extra, **kwargs)
        except OSError as e:  # a file the first look did not need (weights, tokenizer) is missing
            if not self.hub:
                raise
            raise InputError(hub_error(what, self.name, self.revision, e)) from None
        except ValueError as e:
            if "trust_remote_code" not in str(e) or self.trust_remote_code:
                raise
            raise InputError(
                f"{what}: '{self.name}' needs its repository's own Python code, which lightkit does not run "
                "unasked; read it, then set trust_remote_code: true"
            ) from None

    def record(self) -> dict[str, Any]:
        """What manifests and saved models note about where the model came from."""
        record = {"model": self.name, "hub_id": self.location if self.hub else None, "revision": self.commit}
        if not self.hub and self.path.is_dir():  # a model lightkit trained records its own base
            record.update(saved_source(self.path))
        return record


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_error(what: str, name: str, revision: str | None, error: Exception) -> str:
    """One line for a Hub id that did not load: the id, offline mode, the cause and what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cause, model = error.__cause__ or error, f"'{name}@{revision}'" if revision else f"'{name}'"
    where = f"{what}: {model} is not a packaged model or local path"
    if isinstance(cause, LocalEntryNotFoundError):
        mode = "offline mode is on (HF_HUB_OFFLINE=1)" if offline() else "the Hub could not be reached"
        return (
            f"{where}, nor in the Hugging Face cache ({constants.HF_HUB_CACHE}), and {mode}; run once with network "
            f"access (or `hf download {name}`) to fill the cache, or name a local folder"
        )
    if isinstance(cause, GatedRepoError):
        todo = "accept its terms on the Hub and log in (`hf auth login` or HF_TOKEN)"
    elif isinstance(cause, RepositoryNotFoundError):
        todo = "check the id; a private repository needs `hf auth login` or HF_TOKEN"
    elif isinstance(cause, RevisionNotFoundError):
        todo = "check the revision (a branch, tag or commit of the repository)"
    else:
        todo = "name a packaged model, a local folder or a Hub id"
    detail = str(cause).strip().splitlines()[0].rstrip(".") if str(cause).strip() else type(cause).__name__
    return f"{where}, and the Hugging Face Hub refused it (offline mode is off): {detail}; {todo}"


@functools.lru_cache(maxsize=64)
def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit `repo_id` at `revision` resolves to, found (or fetched into the cache) once per
    process: a DataModule, its task and their loaders all name the same id, and online each look
    is a request. Failures are not cached (lru_cache keeps only returned values)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from transformers.utils import cached_file

    try:
        found = cached_file(repo_id, "config.json", revision=revision)
    except OSError as e:
        cause = e.__cause__
        # A tokenizer-only repository has no config.json; when the Hub could not be reached at
        # all, a second file would only wait through huggingface_hub's retries again.
        unreachable = isinstance(cause, LocalEntryNotFoundError) and not offline()
        if unreachable or not isinstance(cause, EntryNotFoundError):
            raise
        try:
            found = cached_file(repo_id, "tokenizer_config.json", revision=revision)
        except OSError:
            raise e from e.__cause__
    # .../models--org--name/snapshots/<commit>/config.json
    return Path(found).parent.name if Path(found).parent.parent.name == "snapshots" else None


def resolve_model(
    name: str | Path, what: str, revision: str | None = None, trust_remote_code: bool = False
) -> ModelRef:
    """A packaged name, then a local path, then a Hub id (see the module docstring)."""
    text = str(name)
    if text in PACKAGED_MODELS or text.startswith(PKG_SCHEME) or Path(text).expanduser().exists():
        return ModelRef(text, str(resolve_path(text, what=what)), trust_remote_code=trust_remote_code)
    if not HUB_ID.match(text) or text.startswith((".", "-")) or text.endswith((".ckpt", ".gguf")):
        raise InputError(f"{what}: '{text}' does not exist (looked at {Path(text).expanduser()})")
    try:
        commit = hub_commit(text, revision)
    except OSError as e:
        raise InputError(hub_error(what, text, revision, e)) from None
    return ModelRef(text, text, hub=True, revision=revision, commit=commit, trust_remote_code=trust_remote_code)


def load_tokenizer(
    name: str, revision: str | None = None, trust_remote_code: bool = False, what: str = "tokenizer"
) -> PreTrainedTokenizerBase:
    """A fast tokenizer by packaged name, local folder or Hub id."""
    from transformers import AutoTokenizer

    tokenizer = resolve_model(name, what, revision, trust_remote_code).from_pretrained(AutoTokenizer, what)
    if not tokenizer.is_fast:
        raise InputError(
            f"{what} '{name}' has no fast (Rust) version; lightkit aligns labels and "
            "masks whole words through the fast tokenizer's word_ids()"
        )
    return tokenizer


def load_causal_lm(name: str | Path, what: str = "model") -> Any:
    """A causal LM by packaged name, local folder or Hub id, in eval mode: a finished model to
    answer with or to sample from, never to train."""
    from transformers import AutoModelForCausalLM

    return resolve_model(name, what).from_pretrained(AutoModelForCausalLM, what).eval()


def model_card(source: ModelRef | None, task: str) -> str:
    """The README.md saved with a trained model. Its `base_model` is how the Hub links a fine-tune
    to the model it came from; `base_model_revision` is the commit that was trained."""
    header = ["library_name: transformers", "tags: [lightkit]"]
    if source is not None:
        header += [f"base_model: {source.name}"] + ([f"base_model_revision: {source.commit}"] if source.commit else [])
    base = f"`{source.name}`" + (f" at commit `{source.commit}`" if source.commit else "") if source else "scratch"
    body = f"Trained with lightkit ({task}) from {base}."
    return "---\n" + "\n".join(header) + "\n---\n\n" + body + "\n"


def saved_source(folder: Path) -> dict[str, str]:
    """The base model a lightkit-saved folder records in its model card (empty if none)."""
    card = folder / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8")
    front = text.split("---", 2)[1] if text.startswith("---") else ""
    pairs = (line.split(":", 1) for line in front.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs if k.strip() in ("base_model", "base_model_revision")}
