"""What a command's failure looks like to the user: one line naming the option, the right exit code."""
from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

import click

from video_summarizer.app.signals import EXIT_SIGNAL, EXIT_SOME_FAILED, EXIT_USAGE, StartupInterrupted
from video_summarizer.errors import SummarizerError

log = logging.getLogger("video_summarizer.cli")


class UsageProblem(click.ClickException):
    """One line on stderr naming the option, exit code 2."""

    exit_code = EXIT_USAGE


def guarded(debug: bool, body: Callable[[], int]) -> int:
    """Run a command's body: a SummarizerError is one line (exit 2), Ctrl-C while starting 130/143, and
    the outputs that could not be written are named last (such a run exits 1, not 0)."""
    try:
        code = body()
    except SummarizerError as e:
        raise _problem(e, debug) from None
    except KeyboardInterrupt as e:  # Ctrl-C while starting up (models loading): nothing to save yet
        sys.stderr.write("\nInterrupted while starting up.\n")
        code = EXIT_SIGNAL[e.signum if isinstance(e, StartupInterrupted) else signal.SIGINT]
    return _name_unwritten(code)


def _problem(err: SummarizerError, debug: bool) -> UsageProblem:
    if debug:
        log.error("details", exc_info=err)
    from video_summarizer.redact import redact_text

    prefix = f"{err.option}: " if err.option else ""
    return UsageProblem(redact_text(f"{prefix}{err}"))  # a message may quote a URL as given


def _name_unwritten(code: int) -> int:
    from video_summarizer.files import NOT_WRITTEN

    line = NOT_WRITTEN.summary()
    if line is None:
        return code
    sys.stderr.write(line + "\n")
    return code or EXIT_SOME_FAILED
