"""JSON Lines files bounded on disk: PATH rotated to PATH.1 ... PATH.5 at a line boundary.

The trace log (``--trace-log-max-mb``) and the events file (``--events-max-mb``) of a camera
left running would grow without end (about 7 lines a frame, ~1.5 GB a month). With a bound,
a line that would take PATH to ``max_bytes`` or past it first moves PATH to PATH.1 (PATH.1
to PATH.2 ..., PATH.5 is dropped), so every file holds whole lines and the total stays under
``(BACKUPS + 1) * max_bytes`` plus one line. The renaming is ``logging.handlers``'
``RotatingFileHandler``; its size test is replaced (see ``_Handler.shouldRollover``).
``rotated_paths(PATH)`` lists the files oldest first, as ``trace_report.py PATH`` reads them.

One writer per file: two processes appending to the same PATH would each rotate it.
"""
from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

from video_summarizer.files import open_private

BACKUPS = 5
MB = 1024 * 1024


def max_bytes_of(mb: float | None) -> int:
    """A --*-max-mb value in bytes (0: unbounded)."""
    return int(mb * MB) if mb and mb > 0 else 0


def rotated_paths(path: str | os.PathLike) -> list[Path]:
    """PATH's rotated files that exist (PATH.5 ... PATH.1), then PATH: oldest first."""
    path = Path(path)
    older = [path.with_name(f"{path.name}.{i}") for i in range(BACKUPS, 0, -1)]
    return [p for p in older if p.is_file()] + [path]


class _Handler(RotatingFileHandler):
    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - the stdlib's name
        # Bytes, not characters (captions are UTF-8), and never an empty file rotated away for
        # one line longer than the bound (3.11's test does both).
        if self.stream is None:
            self.stream = self._open()
        pos = self.stream.tell()
        size = len(self.format(record).encode("utf-8")) + 1
        return pos > 0 and pos + size > self.maxBytes and os.path.isfile(self.baseFilename)

    def _open(self):  # type: ignore[override]
        # FileHandler's open follows the umask and takes no mode: this is its one open() call
        # with an opener that makes each file of the set 0600.
        return open_private(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        raise  # the writer counts failed writes itself (called inside emit's except)


class RotatingLines:
    """A text file to append lines to, rotated at ``max_bytes``; ``write``/``flush``/``close``."""

    def __init__(self, path: str | os.PathLike, max_bytes: int, backups: int = BACKUPS) -> None:
        self.path = os.fspath(path)
        self._handler = _Handler(self.path, mode="a", maxBytes=max_bytes, backupCount=backups,
                                 encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, text: str) -> None:
        """Append ``text`` (one or more whole lines ending in a newline); flushed."""
        # split("\n"), not splitlines(): a caption may hold U+2028, which JSON leaves as it is
        for line in text.rstrip("\n").split("\n"):
            self._handler.emit(logging.makeLogRecord({"msg": line}))

    def flush(self) -> None:
        """Every write is flushed already."""

    def close(self) -> None:
        """Close the file."""
        self._handler.close()
