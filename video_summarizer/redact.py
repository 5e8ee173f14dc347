"""One redaction for every URL that is printed, logged, traced or turned into a label.

A URL can carry secrets in three places: user info (``rtsp://admin:pw@nvr/``), the query
(``?token=…``, ``?X-Amz-Signature=…``) and the path (``rtmp://host/app/sk_live_…``, a
camera's access token). ``redact_url`` keeps what tells one endpoint from another and masks
the rest with ``***``, failing closed:

- user info: always masked, a user name alone too, whatever it holds ('#', '@', '/', '%xx');
- the query: every value masked except a few keys that only pick a camera on a recorder
  (``channel=2&subtype=0``); a key that is not a plain name is masked too;
- the path: a segment is shown only when it looks like a name (``cam1``, ``Streaming``, ``101``,
  ``live.sdp``); anything else (``sk_live_ABC123``, ``a8Fk2xQ``, ``%20``) is masked;
- the fragment is dropped; what cannot be read for sure (no host after the last '@', a
  broken IPv6 address) is shown as ``scheme://***``, never as it came.

urllib is not used to split the URL: it reads ``http://u:pa#ss@host/`` as the host ``u`` with
a fragment, and would print the password. ``redact_text`` applies ``redact_url`` to every URL
in free text (log lines, error messages) and masks secret-named parameters of bare paths
(``/v1/models?api_key=…``); ``RedactingFilter`` does it to every log record, the HTTP
clients' debug lines (``HTTP Request: POST http://user:pw@…``) included.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

MASK = "***"
# Query keys that pick a camera on a recorder (Dahua: ?channel=1&subtype=0) and carry no secret.
CAMERA_QUERY_KEYS = frozenset({"cam", "camera", "ch", "channel", "chn", "stream", "subtype"})

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# A host (name, IPv4, or bracketed IPv6 with an optional zone) and an optional port.
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._~-]*)(?::(\d{1,5}))?")
# A path segment that reads as a name: a lower-case word, a short upper-case one, or up to four
# capitalised words; up to 4 digits after it, or only up to 4 digits; an optional extension.
_WORD = r"(?:[a-z]{1,20}|[A-Z]{1,6}|[A-Z]?[a-z]+(?:[A-Z][a-z]+){0,3})"
_PLAIN_SEGMENT = re.compile(rf"(?:{_WORD}\d{{0,4}}|\d{{1,4}})(?:\.[A-Za-z0-9]{{1,5}})?")
_PLAIN_SEGMENT_MAX = 24
_QUERY_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
_QUERY_VALUE = re.compile(r"[A-Za-z0-9_.-]{0,16}")
# In free text: a URL runs to a space or a quote; trailing punctuation belongs to the sentence.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_TRAILING = ".,;:!?)]}"
# A secret-named parameter outside a full URL ("/v1/models?api_key=..." in a client's message).
_SECRET_PARAM = re.compile(
    r"([?&;][\w.-]*(?:token|key|secret|passw|pwd|auth|sig|credential|session)[\w.-]*=)[^&\s'\"<>#]+",
    re.IGNORECASE)


@dataclass(frozen=True)
class UrlParts:
    """A URL read for showing: its secrets already masked."""

    scheme: str
    host: str  # as written: a name, an IPv4 address or a bracketed IPv6 address
    port: str  # "" when none
    had_user_info: bool
    segments: tuple[str, ...]  # the path's segments, MASK where one is not a plain name
    query: tuple[tuple[str, str | None], ...]  # (key, value), MASK where either may be a secret; None: no '='

    def shown(self) -> str:
        """The URL as it may be printed."""
        user = f"{MASK}@" if self.had_user_info else ""
        port = f":{self.port}" if self.port else ""
        path = "/".join(self.segments)
        query = "&".join(f"{k}={v}" if v is not None else k for k, v in self.query)
        return f"{self.scheme}://{user}{self.host}{port}{path}" + (f"?{query}" if self.query else "")

    @property
    def hostname(self) -> str:
        """The host without IPv6 brackets."""
        return self.host.strip("[]")


def parse_url(url: str) -> UrlParts | None:
    """The URL's parts with its secrets masked; None when it is not a URL or cannot be read for sure."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    authority = _split_authority(rest)
    if authority is None:
        return None
    had_user_info, host, port, tail = authority
    tail = tail.split("#", 1)[0]  # a fragment never leaves the client: not shown
    path, _, query = tail.partition("?")
    segments = tuple(seg if _plain_segment(seg) else MASK for seg in path.split("/")) if path else ()
    return UrlParts(scheme.lower(), host, port, had_user_info, segments, _query(query) if query else ())


def redact_url(url: str) -> str:
    """The URL with user info, query values and key-like path segments masked; fails closed."""
    parts = parse_url(url)
    if parts is not None:
        return parts.shown()
    scheme, sep, _ = url.partition("://")
    if sep:
        return f"{scheme if _SCHEME.fullmatch(scheme) else MASK}://{MASK}"
    if "@" in url:  # "user:pw@host/v1" without a scheme: still no user info shown
        return f"{MASK}@{url.rsplit('@', 1)[1]}"
    return url


def user_info_misread(url: str) -> bool:
    """True when HTTP clients would read part of the URL's user info as its host ('#', '/', '?' unencoded)."""
    from urllib.parse import urlsplit

    parts = parse_url(url)
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return True
    return parts is not None and parts.had_user_info and "@" not in netloc


def redact_text(text: str) -> str:
    """Free text with every URL in it redacted and secret-named query parameters masked."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(_redact_match, text)
    if "=" in text:
        text = _SECRET_PARAM.sub(rf"\1{MASK}", text)
    return text


def _redact_match(match: re.Match) -> str:
    url = match.group(0)
    stripped = url.rstrip(_TRAILING)
    # A bracket closing the URL's own IPv6 host is not the sentence's.
    if stripped.count("[") > stripped.count("]") and url[len(stripped):].startswith("]"):
        stripped += "]"
    return redact_url(stripped) + url[len(stripped):]


class RedactingFilter(logging.Filter):
    """A handler filter that redacts URLs in every record: the message, its arguments and traceback.

    A record logged with ``extra={"redact": False}`` is left as it is (a secret shown on purpose,
    once, such as the watch page's address with its token).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if getattr(record, "redact", True) is False:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it itself
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            # The formatter uses a traceback text already set; exception messages may hold URLs.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of the logger (the root's by default), once each.

    Also to ``logging.lastResort``, which prints records when no handler is set (a Ray worker).
    """
    handlers = list((logger or logging.getLogger()).handlers)
    if logger is None and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def _split_authority(rest: str) -> tuple[bool, str, str, str] | None:
    """(had user info, host, port, what follows) of what comes after '://'; None when unsure.

    User info ends at the last '@' that a host and an optional port follow: a password may hold
    '@', '#', '/' or ':' unencoded, and reading too much as user info only hides more.
    """
    at_signs = [i for i, ch in enumerate(rest) if ch == "@"]
    for start in [i + 1 for i in reversed(at_signs)] + ([] if at_signs else [0]):
        match = _HOST_PORT.match(rest, start)
        end = match.end()
        if end == len(rest) or rest[end] in "/?#":
            return bool(at_signs), match.group(1), match.group(2) or "", rest[end:]
    return None


def _plain_segment(segment: str) -> bool:
    return segment in ("", ".", "..") or (
        len(segment) <= _PLAIN_SEGMENT_MAX and _PLAIN_SEGMENT.fullmatch(segment) is not None)


def _query(query: str) -> tuple[tuple[str, str | None], ...]:
    items: list[tuple[str, str | None]] = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if not eq:  # "?s3cr3t": a bare value
            items.append((MASK, None))
            continue
        safe_key = key if _QUERY_KEY.fullmatch(key) else MASK
        keep = key.lower() in CAMERA_QUERY_KEYS and _QUERY_VALUE.fullmatch(value) is not None
        items.append((safe_key, value if keep and value else MASK))
    return tuple(items)
