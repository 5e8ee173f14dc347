"""The webhook target: each notification POSTed as JSON, signed with HMAC-SHA256 when a secret is given.

Headers: ``X-Summarizer-Signature: sha256=<hex HMAC of the body with --notify-secret>`` (the
receiver recomputes it over the raw body), ``X-Summarizer-Notification: <id>`` (an update of a
notification comes with the same id). A 2xx delivers; a 408, 429 or 5xx, a timeout or a refused
connection is retried by the sender (after Retry-After when the answer has one); any other 4xx
is given up (``rejected``: sending it again would get the same answer). http:// only to this
machine, where nothing crosses a network in clear.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any

from video_summarizer import defaults as D
from video_summarizer.alerts.delivery import DeliveryError
from video_summarizer.errors import InputError
from video_summarizer.redact import redact_url

OPTION = "--notify"
SIGNATURE_HEADER = "X-Summarizer-Signature"
ID_HEADER = "X-Summarizer-Notification"
RETRIED = {408, 425, 429}


def check_hook_url(url: str) -> str:
    """The URL if it may be used: https anywhere, http to loopback only; else an InputError naming --notify."""
    from urllib.parse import urlsplit

    from video_summarizer.privacy import is_local_endpoint

    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise InputError(f"{shown}: {e}", option=OPTION) from None
    if not parts.hostname:
        raise InputError(f"{shown}: give the hook's host", option=OPTION)
    if parts.scheme == "http" and not is_local_endpoint(url):
        raise InputError(f"{shown}: http:// only to this machine (127.0.0.1, localhost); use https://",
                         option=OPTION)
    return url


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for a body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class WebhookTarget:
    """POSTs each notification to one URL."""

    def __init__(self, url: str, secret: str | None, *, timeout_s: float = D.NOTIFY_TIMEOUT_S) -> None:
        self.url, self.shown, self.secret, self.timeout_s = check_hook_url(url), redact_url(url), secret, timeout_s
        self._client: Any = None

    def start(self) -> None:
        """Open the HTTP client (connections are kept)."""
        import httpx

        self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)

    def send(self, message: dict) -> None:
        """POST the message; raise DeliveryError on anything but a 2xx."""
        import httpx

        if message.get("kind") == "snapshot":
            return  # images go to MQTT's image entity only
        body = json.dumps({k: v for k, v in message.items() if not k.startswith("_")},
                          ensure_ascii=False, default=str).encode("utf-8")
        headers = {"Content-Type": "application/json", ID_HEADER: str(message.get("id", ""))}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        try:
            answer = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise DeliveryError(f"{type(e).__name__}: {e}") from None
        if 200 <= answer.status_code < 300:
            return
        reason = f"HTTP {answer.status_code}"
        if answer.status_code in RETRIED or answer.status_code >= 500:
            raise DeliveryError(reason, retry_after=retry_after(answer.headers.get("Retry-After")))
        raise DeliveryError(reason, permanent=True)

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()
