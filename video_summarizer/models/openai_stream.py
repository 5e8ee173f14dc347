"""Streaming chat completions against OpenAI-compatible servers, shared by both model clients.

Stages must not import each other, so the streaming, retry and health-check code that the
VLM client and the summarizer's API backend have in common lives here. It returns plain
dataclasses, never ``openai`` objects, and never raises for network or model failures.

Server differences handled (see ../shared/notes/stack.md): usage in a last chunk with empty
``choices`` or on the ``finish_reason`` chunk; ``[DONE]`` missing; a first chunk with only
the role; reasoning as ``<think>…</think>`` in the content or in a separate
``reasoning_content`` / ``reasoning`` field.
"""
from __future__ import annotations

import email.utils
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from video_summarizer.errors import BackendUnavailable

# Fields servers use for reasoning text: vLLM / DeepSeek, Ollama / OpenRouter / newer vLLM.
REASONING_FIELDS = ("reasoning_content", "reasoning")
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


@dataclass
class StreamOutcome:
    """What one streamed chat call produced, with its timing (epoch seconds from time.time())."""

    text: str  # the answer, reasoning removed
    success: bool
    start_time: float  # before the first attempt was sent
    end_time: float
    completion_start_time: float | None = None  # first content-or-reasoning chunk arrived
    reasoning: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    attempts: int = 0
    error: str | None = None
    error_kind: str | None = None  # the kinds listed in model_results.GenerationResult
    server_model: str | None = None  # the model name the server put in its chunks
    asked_usage: bool = True  # False once the server rejected stream_options


@dataclass
class RetryPolicy:
    """Bounded retries with jittered exponential backoff; Retry-After is honoured up to a cap."""

    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0  # a server asking for a longer wait gets no retry

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay before retry number attempt+1: half fixed, half random ("equal jitter")."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt))
        return cap / 2 + rng() * cap / 2


def redact_url(url: str) -> str:
    """The URL with any user:password part masked, safe for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def split_thinking(content: str) -> tuple[str, str]:
    """Split streamed content into (answer, reasoning): Qwen3 `<think>` blocks never reach the answer."""
    reasoning: list[str] = []
    # Some templates put the opening <think> in the prompt, so the reply starts inside it.
    if "</think>" in content and "<think>" not in content.split("</think>", 1)[0]:
        head, content = content.split("</think>", 1)
        reasoning.append(head)

    def _take(match: re.Match) -> str:
        reasoning.append(match.group(0).removeprefix("<think>").removesuffix("</think>"))
        return ""

    answer = _THINK_BLOCK.sub(_take, content)
    return answer.strip(), "".join(reasoning).strip()


def make_client(base_url: str, api_key: str, timeout_s: float) -> Any:
    """An openai.OpenAI client with its own retries off (retries are ours, with our counting)."""
    from openai import OpenAI  # lazy: keeps `--help` and imports fast

    client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=0, timeout=timeout_s)
    # openai imports its resource modules on first access (~15 ms here): do it now, so it is
    # not counted in the first request's TTFT.
    client.chat.completions  # noqa: B018
    return client


def _retry_after_s(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), None if it did not say."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # HTTP-date form
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(exc: Exception) -> tuple[str, bool, str]:
    """(error_kind, retryable, message) for an exception from the openai client."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        # Not retried: a real-time loop is better served by moving on to the next frame.
        return "timeout", False, "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return "connection", True, f"connection error: {cause or exc}"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _error_detail(exc)
        if status == 429:
            return "rate_limit", True, f"HTTP 429 rate limited: {detail}"
        if status >= 500:
            return "server_error", True, f"HTTP {status}: {detail}"
        return "client_error", False, f"HTTP {status}: {detail}"
    if isinstance(exc, openai.APIError):  # an error event inside a 200 stream
        return "server_error", True, f"server error in stream: {exc}"
    # JSON that does not parse, chunks of the wrong shape: the server is not speaking the protocol.
    return "bad_response", False, f"bad response ({type(exc).__name__}: {exc})"


def _error_detail(exc: Any) -> str:
    """The server's own error message, if it sent one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        msg = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if msg:
            return str(msg)[:300]
    return str(getattr(exc, "message", exc))[:300]


class _Deadline(Exception):
    """The per-request timeout passed while chunks were still arriving."""


def stream_chat(
    client: Any,
    *,
    model: str,
    messages: list[dict],
    max_tokens: int | None,
    temperature: float | None,
    timeout_s: float,
    retry: RetryPolicy,
    ask_usage: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> StreamOutcome:
    """Stream one chat completion with retries; TTFT is the first content-or-reasoning chunk.

    ask_usage sends stream_options.include_usage; a server that rejects it is asked again
    without, and the outcome's asked_usage tells the caller to stop sending it.
    """
    start = time.time()
    kind = error = None
    attempt = 0
    while True:
        attempt += 1
        state = _Attempt()
        try:
            state.run(client, model=model, messages=messages, max_tokens=max_tokens,
                      temperature=temperature, timeout_s=timeout_s, ask_usage=ask_usage)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a counted result
            if state.finish_reason is not None:
                pass  # everything arrived; only the tail ([DONE], usage) broke
            elif state.got_token:
                # Tokens already streamed: report the partial text, never retry (it would double TTFT).
                kind = "timeout" if isinstance(exc, _Deadline) else "stream_broken"
                why = "timed out" if isinstance(exc, _Deadline) else classify(exc)[2]
                error = f"stream broke after {state.chunks} chunks ({why}); partial text: {state.raw[:200]!r}"
                return state.outcome(start, attempt, False, error, kind, ask_usage)
            else:
                kind, retryable, error = ("timeout", False, "request timed out") if isinstance(
                    exc, _Deadline) else classify(exc)
                if kind == "client_error" and ask_usage and "stream_options" in error:
                    ask_usage = False  # an older server that rejects the field: ask again without it
                    continue
                wait = _retry_after_s(exc) if kind == "rate_limit" else None
                if wait is not None and wait > retry.retry_after_max_s:
                    error += f" (server asked to retry after {wait:.0f} s; not waiting)"
                    retryable = False
                if retryable and attempt <= retry.max_retries:
                    sleep(wait if wait is not None else retry.backoff(attempt - 1))
                    continue
                if attempt > 1:
                    error += f" (after {attempt} attempts)"
                return state.outcome(start, attempt, False, error, kind, ask_usage)
        if state.finish_reason is None:
            if state.got_token:
                error = f"stream ended without a finish_reason; partial text: {state.raw[:200]!r}"
                return state.outcome(start, attempt, False, error, "stream_broken", ask_usage)
            return state.outcome(start, attempt, False, "stream ended with no tokens", "bad_response", ask_usage)
        return state.outcome(start, attempt, True, None, None, ask_usage)


class _Attempt:
    """The state of one streamed request, kept when it breaks so partial text can be reported."""

    def __init__(self) -> None:
        self.raw = ""
        self.reasoning = ""
        self.chunks = 0
        self.first_token_time: float | None = None
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.server_model: str | None = None
        self.end: float | None = None

    @property
    def got_token(self) -> bool:
        return self.first_token_time is not None

    def run(self, client: Any, *, model: str, messages: list[dict], max_tokens: int | None,
            temperature: float | None, timeout_s: float, ask_usage: bool = True) -> None:
        """Send the request and read the stream to its end (or to finish + usage)."""
        attempt_start = time.time()
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if ask_usage else {}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, timeout=timeout_s, **kwargs)
        try:
            for chunk in stream:
                now = time.time()
                self.server_model = self.server_model or getattr(chunk, "model", None)
                if getattr(chunk, "usage", None) is not None:
                    self.usage = chunk.usage
                for choice in chunk.choices or ():
                    self._take_delta(choice.delta, now)
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
                if self.finish_reason and self.usage is not None:
                    break  # all we need; servers that omit [DONE] may keep the connection open
                if now - attempt_start > timeout_s:
                    raise _Deadline()
        finally:
            self.end = time.time()
            stream.close()

    def _take_delta(self, delta: Any, now: float) -> None:
        if delta is None:
            return
        content = delta.content or ""
        reasoning = "".join(getattr(delta, f, None) or "" for f in REASONING_FIELDS)
        if content or reasoning:
            self.chunks += 1
            if self.first_token_time is None:
                self.first_token_time = now
        self.raw += content
        self.reasoning += reasoning

    def outcome(self, start: float, attempts: int, success: bool, error: str | None,
                kind: str | None, asked_usage: bool = True) -> StreamOutcome:
        answer, think = split_thinking(self.raw)
        reasoning = "\n".join(r for r in (self.reasoning.strip(), think) if r)
        usage = self.usage
        return StreamOutcome(
            text=answer if success else "",
            success=success,
            start_time=start,
            end_time=self.end if success and self.end else time.time(),
            completion_start_time=self.first_token_time,
            reasoning=reasoning,
            input_tokens=getattr(usage, "prompt_tokens", None),
            output_tokens=getattr(usage, "completion_tokens", None),
            finish_reason=self.finish_reason,
            attempts=attempts,
            error=error,
            error_kind=kind,
            server_model=self.server_model,
            asked_usage=asked_usage,
        )


def check_endpoint(
    client: Any,
    *,
    base_url: str,
    model: str,
    label: str,
    url_option: str,
    model_option: str,
    env_prefix: str,
    serve_hint: str,
    timeout_s: float = 5.0,
) -> list[str]:
    """GET /models; raise BackendUnavailable with one actionable message, else return the model ids."""
    import openai

    url = redact_url(base_url.rstrip("/"))
    try:
        ids = [m.id for m in client.with_options(timeout=timeout_s).models.list()]
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        reason = "timed out" if isinstance(exc, openai.APITimeoutError) else _short_reason(cause)
        raise BackendUnavailable(
            f"Cannot reach the {label} server at {url} ({reason}). Start an OpenAI-compatible server, "
            f"e.g. `{serve_hint}`, or point {url_option} / {env_prefix}_BASE_URL at a running one.",
            option=url_option,
        ) from exc
    except openai.AuthenticationError as exc:
        raise BackendUnavailable(
            f"The {label} server at {url} rejected the API key (HTTP {exc.status_code}). "
            f"Set {env_prefix}_API_KEY to a key it accepts.",
            option=url_option,
        ) from exc
    except openai.NotFoundError as exc:
        raise BackendUnavailable(
            f"GET {url}/models answered 404: {url} is not the base of an OpenAI-compatible API. "
            f"The base URL usually ends in /v1 (e.g. http://localhost:8000/v1); fix {url_option} "
            f"/ {env_prefix}_BASE_URL.",
            option=url_option,
        ) from exc
    except openai.APIStatusError as exc:
        raise BackendUnavailable(
            f"The {label} server at {url} answered HTTP {exc.status_code} to GET /models; "
            f"check the server's log, or {url_option} / {env_prefix}_BASE_URL.",
            option=url_option,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. an HTML page where JSON was expected
        raise BackendUnavailable(
            f"{url} does not answer like an OpenAI-compatible API ({type(exc).__name__}: "
            f"{str(exc)[:120]}); check {url_option} / {env_prefix}_BASE_URL.",
            option=url_option,
        ) from exc
    # Ollama lists "name:latest" for a model requested as "name".
    if model in ids or f"{model}:latest" in ids:
        return ids
    listed = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "") if ids else "no models"
    raise BackendUnavailable(
        f"The {label} server at {url} does not serve model '{model}' (it lists: {listed}). "
        f"Pass one of those with {model_option} / {env_prefix}_MODEL, or serve it, e.g. `{serve_hint}`.",
        option=model_option,
    )


def _short_reason(exc: BaseException) -> str:
    """The innermost, most specific reason in an exception chain, e.g. 'Connection refused'."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen) or type(seen).__name__
    match = re.search(r"\[Errno -?\d+\] ([^\]\)']+)", text)
    return match.group(1) if match else text[:120]
