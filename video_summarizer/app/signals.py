"""SIGINT/SIGTERM for a run, and the exit codes the commands return."""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StartupInterrupted(KeyboardInterrupt):
    """A signal before any source ran (models loading): nothing to save, exit at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopSignal:
    """First SIGINT/SIGTERM: stop reading and shut down in order. Second: exit at once.

    Until the first source runs (the models may take minutes to load) a signal interrupts
    the start-up instead, as Ctrl-C would without a handler.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._sources: list[Any] = []
        self._lock = threading.Lock()
        self._saved: dict[int, Any] = {}

    def install(self) -> Callable[[], None]:
        """Handle SIGINT and SIGTERM (main thread only); returns restore (also a method)."""
        self._saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in self._saved:
            signal.signal(sig, self._handle)
        return self.restore

    def restore(self) -> None:
        """Put back the handlers install() replaced (nothing when it was not called)."""
        saved, self._saved = self._saved, {}
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)

    def watch(self, source: Any) -> None:
        """Stop this source too when a signal comes."""
        with self._lock:
            self._sources.append(source)
            if self.event.is_set():
                source.stop()

    def _handle(self, signum: int, _frame: Any) -> None:
        with self._lock:
            started = bool(self._sources)
        if not started and threading.current_thread() is threading.main_thread():
            raise StartupInterrupted(signum)
        if self.event.is_set():
            sys.stderr.write("\nSecond signal: exiting now without the final summary.\n")
            sys.stderr.flush()
            os._exit(EXIT_SIGNAL.get(signum, 1))
        self.signum = signum
        self.event.set()
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping; finishing in-flight frames "
                         "and writing the summary (send again to exit at once).\n")
        sys.stderr.flush()
        with self._lock:
            for src in self._sources:
                src.stop()

    @property
    def exit_code(self) -> int | None:
        """130/143 when a signal stopped the run, else None."""
        return None if self.signum is None else EXIT_SIGNAL.get(self.signum, 1)
