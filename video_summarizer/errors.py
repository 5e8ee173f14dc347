"""The project's domain exceptions.

Stages raise these with a message that says what to do; only the CLI turns them into
click errors (with the option that caused them) and exit codes.
"""
from __future__ import annotations


class SummarizerError(Exception):
    """Base class: something the user can act on, reported as one line."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option  # the CLI option that names the culprit, e.g. "--source"


class InputError(SummarizerError):
    """Bad input: a missing or unreadable video, a camera that will not open, a bad folder."""


class BackendUnavailable(SummarizerError):
    """A model endpoint or model that cannot be reached or loaded."""
