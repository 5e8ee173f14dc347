"""Langfuse's settings, read from the environment once at the edge and handed on as values."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class LangfuseSettings:
    """The keys, the host and the SDK knobs (None: the tracker's or the SDK's own default)."""

    public_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    timeout_s: float | None = None
    flush_at: int | None = None
    enabled: bool = True  # LANGFUSE_TRACING_ENABLED=false turns the client off, keys or not

    @property
    def has_keys(self) -> bool:
        """Both keys are set (then no trace log is written unless asked for, and the outbox is kept)."""
        return bool(self.public_key and self.secret_key)

    @property
    def sends(self) -> bool:
        """Traces go to Langfuse: both keys, and tracing not turned off."""
        return self.has_keys and self.enabled

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "LangfuseSettings":
        """LANGFUSE_* as the SDK reads them; a value that is not a positive number is left out."""
        return cls(public_key=environ.get("LANGFUSE_PUBLIC_KEY") or None,
                   secret_key=environ.get("LANGFUSE_SECRET_KEY") or None,
                   base_url=(environ.get("LANGFUSE_BASE_URL") or environ.get("LANGFUSE_HOST") or None),
                   timeout_s=_number(environ, "LANGFUSE_TIMEOUT", float),
                   flush_at=_number(environ, "LANGFUSE_FLUSH_AT", int),
                   enabled=environ.get("LANGFUSE_TRACING_ENABLED", "true").strip().lower() != "false")

    def tracker_kwargs(self) -> dict[str, Any]:
        """The LangfuseTracker arguments these settings make (all of them: it reads no environment)."""
        return {"public_key": self.public_key, "secret_key": self.secret_key, "base_url": self.base_url,
                "timeout_s": self.timeout_s, "flush_at": self.flush_at, "enabled": self.enabled,
                "read_env": False}


def _number(environ: Mapping[str, str], name: str, kind: type) -> Any:
    """The variable as a positive number, else None (the default), said when it is set but unusable."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value > 0:
        logging.getLogger("video_summarizer.tracker").warning(
            "%s=%r is not a positive %s; using the default", name, raw, "number" if kind is float else "integer")
        return None
    return value
