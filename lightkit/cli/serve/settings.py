"""What `lightkit serve` is allowed to do: where it listens, who may call it, and its limits.

Every setting is an argument of `lightkit serve` (flag or `--config serve.yaml`); the defaults are
safe for a first start: localhost only, a key required when `LIGHTKIT_API_KEY` is set, bounded
bodies, prompts, answers, queue and time. A request over a limit gets a 4xx naming the field; it
never reaches the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lightkit.io.errors import InputError


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str | None = "LIGHTKIT_API_KEY"
    model_name: str | None = None
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None
    max_tokens: int = 256
    default_max_tokens: int | None = None  # None: 64, or max_tokens if that is lower
    max_n: int = 8
    max_inputs: int = 64
    queue_size: int = 64
    batch_size: int = 32
    batch_wait_ms: float = 5.0
    join_tokens: int = 256
    timeout_s: float = 120.0
    rewards: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_max_tokens is None:
            object.__setattr__(self, "default_max_tokens", min(64, self.max_tokens))
        positive = ("port", "max_body_bytes", "max_tokens", "default_max_tokens", "max_n", "max_inputs",
                    "queue_size", "batch_size")  # fmt: skip
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"serve: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.default_max_tokens > self.max_tokens:
            raise InputError(
                f"serve: default_max_tokens ({self.default_max_tokens}) is over max_tokens ({self.max_tokens})"
            )
        if not isinstance(self.join_tokens, int) or self.join_tokens < 0:
            raise InputError(f"serve: join_tokens must be an integer >= 0 (0: no joining), got {self.join_tokens!r}")
        if self.timeout_s <= 0 or self.batch_wait_ms < 0:
            raise InputError(f"serve: timeout_s must be > 0 and batch_wait_ms >= 0, got {self.timeout_s}, "
                             f"{self.batch_wait_ms}")  # fmt: skip
        for name, path in self.rewards.items():
            if ":" not in path:
                raise InputError(f"serve: rewards.{name}: expected an import path module:function, got {path!r}")

    @property
    def api_key(self) -> str | None:
        """The key clients must send (`Authorization: Bearer ...`), or None: no key required."""
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None
