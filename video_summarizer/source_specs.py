"""What a --source names, known before anything is opened: its kind, its label, the files a
folder or glob stands for, the checks that need no decoder, and the messages for bad input.

``sources.open_source`` uses these; the public ones are re-exported there.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Iterable

from video_summarizer.errors import InputError
from video_summarizer.redact import CAMERA_QUERY_KEYS, MASK, parse_url

log = logging.getLogger("video_summarizer.sources")  # one logger for everything about sources

OPTION = "--source"

VIDEO_EXTENSIONS = frozenset(
    {
        ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mjpeg", ".mjpg", ".mkv", ".mov", ".mp4",
        ".mpeg", ".mpg", ".mts", ".mxf", ".ogv", ".ts", ".webm", ".wmv", ".y4m",
    }
)

_CAMERA_RE = re.compile(r"^(?:cam(\d+)|(\d+))$", re.IGNORECASE)
_DEVICE_RE = re.compile(r"^/dev/video(\d+)$")
_STREAM_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
SNIFF_BYTES = 12
_LABEL_MAX = 80
_DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}


def source_label(spec: str) -> str:
    """The label of a source, opening nothing: 'cam0', 'stdin', a file's stem, a stream's host and path."""
    kind = kind_of(spec)
    if kind == "stdin":
        return "stdin"
    if kind == "camera":
        match = _CAMERA_RE.match(spec) or _DEVICE_RE.match(spec)
        return f"cam{int(next(g for g in match.groups() if g is not None))}"
    if kind == "stream":
        return _stream_label(spec)
    return Path(spec).stem


def unique_labels(labels: list[str]) -> list[str]:
    """The labels with repeats made distinct: the first keeps its label, later ones get -2, -3, ..."""
    taken = set(labels)
    seen: set[str] = set()
    out = []
    for label in labels:
        if label in seen:
            n = 2
            while f"{label}-{n}" in taken:
                n += 1
            new = f"{label}-{n}"
            taken.add(new)
            out.append(new)
        else:
            seen.add(label)
            out.append(label)
    return out


def _stream_label(url: str) -> str:
    """Host and the plain words of the path ('rtsp://u:pw@nvr:554/cam1' -> 'nvr-cam1'): the label
    goes into trace user ids, metric labels and file names, so it holds only what redact_url
    shows, less the port and what it masks (user info, tokens, key-like path segments)."""
    parts = parse_url(url)
    if parts is None:
        return "stream"
    segments = [seg for seg in parts.segments if seg not in ("", ".", "..", MASK)]
    if segments:
        segments[-1] = os.path.splitext(segments[-1])[0] or segments[-1]  # a.mjpg -> a, live.sdp -> live
    words = [parts.hostname, *segments]
    words += [f"{key}{value}" for key, value in parts.query
              if key.lower() in CAMERA_QUERY_KEYS and value not in (None, MASK)]
    # Characters that are safe in file names, log lines and Langfuse ids.
    label = re.sub(r"[^A-Za-z0-9._]+", "-", "-".join(words)).strip("-.")
    return label[:_LABEL_MAX].rstrip("-.") or "stream"


def check_source(spec: str) -> None:
    """Fail fast on a file that cannot be a video (missing, a folder, empty, unreadable) or a
    camera with no device node (Linux).

    Cheap and opens nothing, so the CLI can run it before loading models; a camera that exists
    but is busy, streams and stdin are only known once opened.
    """
    kind = kind_of(spec)
    if kind == "file":
        file_target(spec)
    elif kind == "camera":
        camera_target(spec)


def expand_sources(specs: Iterable[str]) -> list[str]:
    """Expand folders and glob patterns to their video files (sorted); other specs pass through.

    A folder is searched without its subfolders (an output folder often lives inside the input
    folder); they are named once in an INFO line. Files are listed by name only: an empty or
    unreadable one stays in the list and fails in open_source, so a batch can go on without it.
    """
    out: list[str] = []
    dangling: set[str] = set()
    for spec in specs:
        if kind_of(spec) != "file":
            files = [spec]
        elif os.path.isdir(os.path.expanduser(spec)):
            files = _folder_videos(spec, dangling)
        elif any(ch in spec for ch in "*?["):
            matches = glob.glob(os.path.expanduser(spec), recursive=True)
            _say_dangling((m for m in matches if _is_video_name(m)), dangling)
            files = sorted(m for m in matches if os.path.isfile(m) and _is_video_name(m))
            if not files:
                raise InputError(f"no video files match {spec}", option=OPTION)
        else:
            files = [spec]
        out.extend(f for f in files if f not in out)
    return out


def _say_dangling(paths: Iterable[str | Path], said: set[str]) -> None:
    """Name each video-named symlink whose target is gone, once: it is skipped, not silently."""
    for path in paths:
        path = str(path)
        if path not in said and os.path.islink(path) and not os.path.exists(path):
            said.add(path)
            log.warning("%s: skipped: dangling symlink (to %s, which does not exist)", path, os.readlink(path))


def _folder_videos(spec: str, dangling: set[str]) -> list[str]:
    """The video files directly in a folder, sorted; says once which subfolders were not searched."""
    folder = Path(spec).expanduser()
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(f"folder {spec} cannot be listed ({e.strerror or e})", option=OPTION) from e
    _say_dangling((p for p in entries if _is_video_name(p.name)), dangling)
    files = [str(p) for p in entries if p.is_file() and _is_video_name(p.name)]
    subfolders = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
    hint = ""
    if subfolders:
        shown = ", ".join(subfolders[:3]) + (", ..." if len(subfolders) > 3 else "")
        pattern = os.path.join(spec, "**", "*.mp4")
        hint = (f"{len(subfolders)} subfolder{'s' if len(subfolders) != 1 else ''} not searched ({shown}); "
                f"give them as --source too, or a glob such as '{pattern}'")
    if not files:
        raise InputError(f"no video files in folder {spec} (looked for {_ext_list()})"
                         + (f"; {hint}" if hint else ""), option=OPTION)
    if hint:
        log.info("%s: %s", spec, hint)
    return files


def kind_of(spec: str) -> str:
    """'stdin', 'camera', 'stream' or 'file'."""
    if spec == "-":
        return "stdin"
    if _CAMERA_RE.match(spec) or _DEVICE_RE.match(spec):
        return "camera"
    if _STREAM_RE.match(spec):
        return "stream"
    return "file"


def camera_target(spec: str) -> int | str:
    """What OpenCV opens for a camera spec; InputError when the camera's device node is missing.

    A camera index means /dev/videoN to OpenCV's V4L2 backend, so on Linux a missing node is
    known without opening anything; elsewhere an index is only known once opened.
    """
    match = _CAMERA_RE.match(spec)
    if match:
        target: int | str = int(match.group(1) or match.group(2))
        device = f"/dev/video{target}" if sys.platform.startswith("linux") else None
    else:
        target = device = spec
    if device is not None and not os.path.exists(device):
        raise InputError(f"camera {spec}: no such device {device} ({_cameras_present()})", option=OPTION)
    return target


def _cameras_present() -> str:
    found = sorted(glob.glob("/dev/video[0-9]*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    if not found:
        return "no /dev/video* devices on this machine"
    return "cameras here: " + ", ".join(f"cam{p[len('/dev/video'):]}" for p in found)


def file_target(spec: str) -> tuple[str, bytes]:
    """(the path to open, its first bytes); InputError for a missing, empty or unreadable file."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"video file not found: {spec}", option=OPTION)
    if path.is_dir():
        raise InputError(f"{spec} is a folder: give a video file (folders are expanded in batch mode)", option=OPTION)
    if not path.is_file():  # a named pipe: reading ahead would take bytes from the decoder
        if not os.access(path, os.R_OK):
            raise InputError(f"{spec} is not readable (permission denied)", option=OPTION)
        return str(path), b""
    if path.stat().st_size == 0:
        raise InputError(f"{spec} is empty (0 bytes): an unfinished copy or upload?", option=OPTION)
    try:
        # A real read, not os.access: root passes os.access, yet NFS and FUSE mounts can refuse it.
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        raise InputError(f"{spec} is not readable ({e.strerror or e}): check its permissions", option=OPTION) from e
    return str(path), head


def not_a_video(name: str, head: bytes, *, live: bool) -> str:
    """What to say when FFmpeg cannot open an input whose first bytes are ``head``."""
    if head[4:8] == b"ftyp":
        if name == "stdin" and live:
            return ("stdin: an MP4 cannot be read live through a pipe (its index comes last): "
                    "drop --live, or pipe MPEG-TS or MKV")
        return (f"{name}: an MP4/MOV whose index (moov) is missing, so nothing can be decoded: "
                "the file is truncated or was not finished; copy it again, or re-record it")
    if name == "stdin":
        return "stdin: what was piped in is not a video OpenCV/FFmpeg can read (pipe a video file, or MPEG-TS/MKV)"
    return f"{name}: not a video OpenCV/FFmpeg can read (unknown format or corrupt)"


def stream_problem(url: str, elapsed: float, timeout: float) -> str:
    """Why a stream did not open, found with one TCP connect after FFmpeg gave up."""
    parts = parse_url(url)  # not urlsplit: a '#' or '@' in a password would make its host a secret
    if parts is None:
        return "the URL cannot be read (a '#', '@' or '/' in the user name or password must be written %23, %40, %2F)"
    host, port = parts.hostname, int(parts.port) if parts.port else _DEFAULT_PORTS.get(parts.scheme)
    if elapsed >= timeout * 0.9:
        return f"no answer within {timeout:g} s (check the URL, and that the server is up and reachable)"
    if not host or not port:
        return "check the URL and that the server is up"
    try:
        with socket.create_connection((host, port), timeout=min(2.0, timeout)):
            pass
    except socket.gaierror:
        return f"host {host} not found (check the URL)"
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection (check the port, and that the server is up)"
    except OSError as e:
        return f"{host}:{port} cannot be reached ({e.strerror or e}; check the URL and the network)"
    return (f"{host}:{port} answered, but not with a video OpenCV/FFmpeg can read "
            "(check the path, the credentials, and that the camera is streaming)")


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _ext_list() -> str:
    return ", ".join(sorted(VIDEO_EXTENSIONS))
