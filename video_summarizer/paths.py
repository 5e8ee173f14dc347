"""Where the project keeps its caches, read from the environment given (the edge passes os.environ)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping


def cache_home(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME, else ~/.cache."""
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")

