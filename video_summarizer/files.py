"""Files the project writes: private to the user, and said once when they cannot be written.

What a run makes (events, trace log, summaries, the batch folder's files, dataset folders, the
face cache, the index folder) is created 0600 in folders made 0700: captions, names and frames
are nobody else's business on a shared machine. A file or folder that exists already keeps its
mode (the user chose it).

An output that cannot be written (a full disk, a revoked permission, a folder gone) is one line
naming its option when it first fails; the run goes on without it, and the exit names it again
(``Not written: --events (No space left on device)``) with exit status 1.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_opener(path: str, flags: int) -> int:
    """For ``open(..., opener=private_opener)``: a file it creates is 0600, whatever the umask."""
    return os.open(path, flags, PRIVATE_FILE)


def open_private(path: str | os.PathLike, mode: str = "a", **kw: Any) -> IO:
    """``open`` whose new file is 0600 (an existing one keeps its mode)."""
    return open(path, mode, opener=private_opener, **kw)


def make_private_dir(path: str | os.PathLike) -> Path:
    """Make ``path`` and its missing parents 0700; folders that exist are left as they are."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.parent != path and not path.parent.exists():
        make_private_dir(path.parent)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        if not path.is_dir():
            raise
    return path


def reason(error: BaseException | str) -> str:
    """An error as the few words a user needs: 'No space left on device'."""
    if isinstance(error, str):
        return error
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return (text[0][:200] if text else "") or type(error).__name__


class WriteFailures:
    """The outputs that could not be written, by option: each said once, all named at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}  # option -> why, from its first failure

    def record(self, option: str, what: str, error: BaseException | str,
               then: str = "the run goes on without it") -> bool:
        """Note that ``option``'s output ``what`` failed; the first time, say it in one line."""
        why = reason(error)
        with self._lock:
            first = option not in self._failed
            if first:
                self._failed[option] = why
        if first:
            details = error if isinstance(error, BaseException) and log.isEnabledFor(logging.DEBUG) else None
            log.error("%s: cannot write %s (%s); %s", option, what, why, then, exc_info=details)
        return first

    def failed(self) -> dict[str, str]:
        """Option -> why, in the order they failed."""
        with self._lock:
            return dict(self._failed)

    def summary(self) -> str | None:
        """'Not written: --events (No space left on device), ...', or None when all was written."""
        failed = self.failed()
        if not failed:
            return None
        return "Not written: " + ", ".join(f"{option} ({why})" for option, why in failed.items())

    def clear(self) -> None:
        """Forget every failure (a test running several runs in one process)."""
        with self._lock:
            self._failed.clear()


# One per process: a failed output is a fact about this process's run, whichever thread saw it.
NOT_WRITTEN = WriteFailures()

