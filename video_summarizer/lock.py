"""The batch folder's lock: one run at a time per --output-dir, taken safely in a shared folder.

Whoever can write the output folder can put anything at the lock's name. So the file is opened
without following a link (``O_NOFOLLOW``: a link to /etc/passwd is refused, not truncated),
must be a regular file with no other name (a hard link would let our write reach another
file), is created 0600, and is written only once its ``flock`` is held. The lock is the
``flock``, which the kernel drops when the holder exits: a held lock always means a live
holder, and the message names that process (from /proc/locks where the kernel says it, else
the pid it wrote, when that process is alive).
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from pathlib import Path

from video_summarizer.errors import InputError
from video_summarizer.files import PRIVATE_FILE

_RECORD = re.compile(r"pid (\d+) since (\S+)")


class FolderLock:
    """An exclusive, non-blocking lock on one file of a folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, option: str) -> None:
        self.path = Path(path)
        self.option = option
        self._fd: int | None = None

    def acquire(self, note: str) -> None:
        """Take the lock and write ``note`` (the holder's 'pid N since T') into the file."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd) if e.errno in (errno.EAGAIN, errno.EACCES) else None
            os.close(fd)
            if holder is None:
                raise InputError(f"cannot lock {self.path}: {e.strerror}", option=self.option) from e
            raise InputError(f"{self.path.parent} is in use by another run ({holder}); wait for it or use "
                             "another folder", option=self.option) from None
        data = (note + "\n").encode()
        os.pwrite(fd, data, 0)  # over the last holder's note, then cut: never empty while held
        os.ftruncate(fd, len(data))
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: the lock is the flock, not the file)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, PRIVATE_FILE)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: the BSDs' answer to O_NOFOLLOW
                raise InputError(f"{self.path} is a symbolic link; refusing to lock through it (remove it)",
                                 option=self.option) from None
            raise InputError(f"cannot use the lock file {self.path}: {e.strerror}", option=self.option) from e
        st = os.fstat(fd)
        why = ("is not a regular file" if not stat.S_ISREG(st.st_mode) else
               f"has {st.st_nlink} names (hard links)" if st.st_nlink != 1 else None)
        if why:
            os.close(fd)
            raise InputError(f"{self.path} {why}; refusing to use it as the lock (remove it)", option=self.option)
        return fd


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _kernel_holder(fd: int) -> int | None:
    """The pid /proc/locks gives for the flock on this file (Linux), or None."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    flocks = [parts for parts in (line.split() for line in lines)
              if "->" not in parts and len(parts) >= 6 and parts[1] == "FLOCK"]
    exact = [parts[4] for parts in flocks if parts[5] == key]
    # btrfs and overlayfs show another device there than fstat: then the inode alone, if unique
    same_inode = [parts[4] for parts in flocks if parts[5].rsplit(":", 1)[-1] == str(st.st_ino)]
    found = exact or (same_inode if len(same_inode) == 1 else [])
    return int(found[0]) if found and found[0].isdigit() else None


def _holder(fd: int) -> str:
    """Who holds the lock, as the message says it: 'pid N since T', 'pid N', or unknown."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    match = _RECORD.search(text)
    recorded = int(match[1]) if match else None
    pid = _kernel_holder(fd)
    if pid is not None and _alive(pid):
        return match[0] if recorded == pid else f"pid {pid}"
    if recorded is not None and _alive(recorded):
        return match[0]
    return "held by a process that did not say its pid"
