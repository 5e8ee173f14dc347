"""Checks that need no model: output paths and the known-faces folder, said before anything loads.

Every output file option follows one rule: its folder must exist (nothing is created behind
the user's back), the path must not be a folder, and this process must be able to create a
file there. Writability is probed by creating and removing a temporary file, because
``os.access`` says yes to root on a folder whose mode forbids writing and cannot see every
refusal (a read-only mount, a kernel file system); the probe leaves nothing behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from video_summarizer.errors import InputError


def _probe_writable(folder: Path, what: str, option: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    except OSError as e:
        raise InputError(f"cannot write {what} in {folder}: {e.strerror or e}", option=option) from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | None, option: str) -> None:
    """An output file the run will write: its folder exists and takes a new file; not a folder."""
    if path is None or path == "-":
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise InputError(f"{path} is a folder; give a file path", option=option)
    folder = target.parent
    if not folder.exists():
        raise InputError(f"folder {folder} does not exist; create it first (mkdir -p {folder})", option=option)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder, so {path} cannot be written", option=option)
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"cannot write {path}: permission denied", option=option)
    if target.exists() and not target.is_file():
        return  # a device or a pipe (/dev/null, a FIFO) is written in place: its folder is not ours
    _probe_writable(folder, target.name, option)


def check_output_dir(path: str | None, option: str = "--output-dir") -> None:
    """The batch folder: a folder (or one that can be created under an existing one) that takes files."""
    if path is None:
        return
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{path} is a file, not a folder", option=option)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{existing} is not a folder, so {path} cannot be created", option=option)
    _probe_writable(existing, "summaries" if existing == folder else f"the folder {folder}", option)


def check_known_faces(path: str | None, option: str = "--known-faces") -> None:
    """The known-faces folder exists and is a folder (its images are read when faces load)."""
    if path is None:
        return
    folder = Path(path).expanduser()
    hint = ("give a folder with one image per person named after them (obama.jpg), or a "
            "subfolder per person (obama/1.jpg)")
    if not folder.exists():
        raise InputError(f"known-faces folder {path} does not exist: {hint}", option=option)
    if not folder.is_dir():
        raise InputError(f"known-faces path {path} is not a folder: {hint}", option=option)
    if not os.access(folder, os.R_OK | os.X_OK):
        raise InputError(f"cannot read the known-faces folder {path}: permission denied", option=option)
