"""Streamed chat completions against OpenAI-compatible servers, shared by both model clients.

``ChatEndpoint`` is the one place that talks to a server: the reachability check (GET
/models), one streamed chat call with the time of its first token, and the client's own
retries. It returns plain dataclasses, never ``openai`` objects, and never raises for
network or model failures (only ``check()`` raises, with a message that says what to do).

Retries, backoff and ``Retry-After`` are the openai client's own (``max_retries=``). One
thing is ours: a request that times out is not retried (see ``_TimeoutNotRetried``).

Server differences handled (see ../shared/notes/stack.md): usage in a last chunk with empty
``choices`` or on the ``finish_reason`` chunk; ``[DONE]`` missing; a first chunk with only
the role; reasoning as ``<think>…</think>`` in the content or in a separate
``reasoning_content`` / ``reasoning`` field; a web page (HTML, 200) where the API should be.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterator
from video_summarizer import defaults as D
from video_summarizer.errors import BackendUnavailable
from video_summarizer.redact import redact_text, redact_url, user_info_misread

# Fields servers use for reasoning text: vLLM / DeepSeek, Ollama / OpenRouter / newer vLLM.
REASONING_FIELDS = ("reasoning_content", "reasoning")
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
CHECK_TIMEOUT_S = 5.0  # a reachability check must be cheap, whatever the request timeout


@dataclass(frozen=True)
class EndpointNames:
    """What the messages about one endpoint call it, and the options and variables that set it."""

    label: str  # "VLM", "LLM"
    url_option: str  # "--vlm-base-url"
    model_option: str  # "--vlm-model"
    env_prefix: str  # "VLM": VLM_BASE_URL, VLM_MODEL, VLM_API_KEY
    serve_hint: str  # a command that starts a suitable server


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
    attempts: int = 0  # HTTP requests sent, the client's retries included
    error: str | None = None
    error_kind: str | None = None  # the kinds listed in results.GenerationResult
    server_model: str | None = None  # the model name the server put in its chunks
    asked_usage: bool = True  # False once the server rejected stream_options


class NotAnAPI(Exception):
    """A 200 answer that is not JSON or an event stream: a web page, a proxy's login form."""

    def __init__(self, content_type: str) -> None:
        super().__init__(content_type)
        self.content_type = content_type


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


def _httpx() -> Any:
    """The HTTP library the installed openai client is built on (httpx2, or httpx before it)."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # openai releases before the httpx2 move
        import httpx

        return httpx


def _timeout_not_retried_transport() -> Any:
    """An HTTP transport whose timeouts reach the client as APITimeoutError, which it does not retry.

    Why not the client's own handling: it retries timeouts like connection errors. Measured
    against a server that never answers (timeout 0.5 s, max_retries=3): 5.25 s and 4 requests
    a call with the client's retries, 0.51 s and 1 request with this transport. At the default 60 s and 3 retries a hung
    server would hold each frame for over 4 minutes; a real-time loop is better served by
    moving on to the next frame. Connection errors, 429 and 5xx keep the client's retries.
    """
    import openai

    httpx = _httpx()

    class _TimeoutNotRetried(httpx.HTTPTransport):
        def handle_request(self, request: Any) -> Any:
            try:
                return super().handle_request(request)
            except httpx.TimeoutException as exc:
                # openai passes its own errors through its retry loop unchanged.
                raise openai.APITimeoutError(request=request) from exc

    return _TimeoutNotRetried()


def make_client(base_url: str, api_key: str, timeout_s: float, max_retries: int = 2) -> Any:
    """An openai.OpenAI client with its own retries and backoff; timeouts are not retried."""
    import openai  # lazy: keeps `--help` and imports fast

    http_client = openai.DefaultHttpxClient(transport=_timeout_not_retried_transport())
    client = openai.OpenAI(base_url=base_url, api_key=api_key or D.API_KEY_PLACEHOLDER, max_retries=max_retries,
                           timeout=timeout_s, http_client=http_client)
    # openai imports its resource modules on first access (~15 ms here): do it now, so it is
    # not counted in the first request's TTFT.
    client.chat.completions  # noqa: B018
    return client


def _media_type(headers: Any) -> str:
    return (headers.get("content-type") or "").split(";", 1)[0].strip().lower()


def _check_media_type(headers: Any) -> None:
    """Raise NotAnAPI for a 200 answer that is neither JSON nor an event stream."""
    media = _media_type(headers)
    if media and "json" not in media and "event-stream" not in media:
        raise NotAnAPI(media)


def _is_timeout(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, (openai.APITimeoutError, _httpx().TimeoutException, _Deadline))


def classify(exc: Exception, url_option: str = "the base URL") -> tuple[str, str]:
    """(error_kind, message) for an exception from the openai client; URLs in it redacted."""
    kind, message = _classify(exc, url_option)
    return kind, redact_text(message)  # it goes to events, traces and logs


def _classify(exc: Exception, url_option: str) -> tuple[str, str]:
    import openai

    if _is_timeout(exc):
        return "timeout", "request timed out"
    if isinstance(exc, NotAnAPI):
        return "bad_response", (f"the server answered {exc.content_type}, not an OpenAI-compatible API: "
                                f"is {url_option} right?")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return "connection", f"connection error: {cause or exc}"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _error_detail(exc)
        if status == 429:
            return "rate_limit", f"HTTP 429 rate limited: {detail}"
        if status >= 500:
            return "server_error", f"HTTP {status}: {detail}"
        return "client_error", f"HTTP {status}: {detail}"
    if isinstance(exc, openai.APIError):  # an error event inside a 200 stream
        return "server_error", f"server error in stream: {exc}"
    # JSON that does not parse, chunks of the wrong shape: the server is not speaking the protocol.
    return "bad_response", f"bad response ({type(exc).__name__}: {exc})"


def _error_detail(exc: Any) -> str:
    """The server's own error message, if it sent one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        msg = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if msg:
            return str(msg)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _requests_sent(exc: BaseException) -> int:
    """HTTP requests the client sent for a failed call: its retry count header says which try failed."""
    request = getattr(exc, "request", None)
    headers = getattr(request, "headers", None)
    try:
        return int(headers.get("x-stainless-retry-count", 0)) + 1 if headers is not None else 1
    except (TypeError, ValueError):
        return 1


def sse_chunks(response: Any) -> Iterator[dict]:
    """The JSON chunks of a chat completion's server-sent events, as dicts, up to ``[DONE]``.

    What the openai client's own stream does (an ``error`` object in a chunk raises
    ``openai.APIError``; a timeout or a broken connection while reading raises
    ``openai.APITimeoutError`` / ``openai.APIConnectionError``; undecodable JSON raises
    ``ValueError``), without building a pydantic model per chunk: that took about half the
    client's CPU a caption (4.7 of 10.5 ms against a local server).
    """
    import openai

    httpx = _httpx()
    data: list[str] = []
    try:
        for line in chain(response.iter_lines(), [""]):  # "": the last event may lack its blank line
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
                continue
            if line or not data:  # event:, id:, retry:, comments; or a blank line between events
                continue
            text, data = "\n".join(data), []
            if text.startswith("[DONE]"):
                return
            chunk = json.loads(text)
            if isinstance(chunk, dict) and chunk.get("error"):
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else None
                raise openai.APIError(message if isinstance(message, str) and message
                                      else "An error occurred during streaming",
                                      request=response.request, body=error)
            if isinstance(chunk, dict):
                yield chunk
    except httpx.TimeoutException as exc:
        raise openai.APITimeoutError(request=response.request) from exc
    except httpx.RequestError as exc:
        raise openai.APIConnectionError(request=response.request) from exc


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
    ask_usage: bool = True,
    url_option: str = "the base URL",
) -> StreamOutcome:
    """Stream one chat completion; TTFT is the first chunk with non-empty content or reasoning.

    The client retries connection errors, 429 and 5xx before any token arrived; a stream cut
    after tokens arrived is a failed call with its partial text, never retried. ask_usage
    sends stream_options.include_usage; a server that rejects it is asked again without, and
    the outcome's asked_usage tells the caller to stop sending it.
    """
    start = time.time()
    sent = 0
    while True:
        state = _Attempt()
        try:
            state.run(client, model=model, messages=messages, max_tokens=max_tokens,
                      temperature=temperature, timeout_s=timeout_s, ask_usage=ask_usage)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a counted result
            if state.finish_reason is not None:
                sent += state.requests
            elif state.got_token:
                # Tokens already streamed: report the partial text, never retry (it would double TTFT).
                kind = "timeout" if _is_timeout(exc) else "stream_broken"
                why = "timed out" if kind == "timeout" else classify(exc, url_option)[1]
                error = f"stream broke after {state.chunks} chunks ({why}); partial text: {state.raw[:200]!r}"
                return state.outcome(start, sent + state.requests, False, error, kind, ask_usage)
            else:
                sent += state.requests or _requests_sent(exc)
                kind, error = classify(exc, url_option)
                if kind == "client_error" and ask_usage and "stream_options" in error:
                    ask_usage = False  # an older server that rejects the field: ask again without it
                    continue
                if sent > 1:
                    error += f" (after {sent} attempts)"
                return state.outcome(start, sent, False, error, kind, ask_usage)
        else:
            sent += state.requests
        if state.finish_reason is None:
            if state.got_token:
                error = f"stream ended without a finish_reason; partial text: {state.raw[:200]!r}"
                return state.outcome(start, sent, False, error, "stream_broken", ask_usage)
            return state.outcome(start, sent, False, "stream ended with no tokens", "bad_response", ask_usage)
        return state.outcome(start, sent, True, None, None, ask_usage)


class _Attempt:
    """The state of one streamed request, kept when it breaks so partial text can be reported."""

    def __init__(self) -> None:
        self.raw = ""
        self.reasoning = ""
        self.chunks = 0
        self.requests = 0  # HTTP requests the client sent, once the response headers came
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
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=True, timeout=timeout_s, **kwargs)
        self.requests = raw.retries_taken + 1
        try:
            _check_media_type(raw.headers)
        except NotAnAPI:
            raw.http_response.close()
            raise
        response = raw.http_response
        try:
            for chunk in sse_chunks(response):
                now = time.time()
                self.server_model = self.server_model or chunk.get("model")
                if isinstance(chunk.get("usage"), dict):
                    self.usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    self._take_delta(choice.get("delta"), now)
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
                if self.finish_reason and self.usage is not None:
                    break  # all we need; servers that omit [DONE] may keep the connection open
                if now - attempt_start > timeout_s:
                    raise _Deadline()
        finally:
            self.end = time.time()
            response.close()

    def _take_delta(self, delta: Any, now: float) -> None:
        if not isinstance(delta, dict):
            return
        content = delta.get("content") or ""
        reasoning = "".join(delta.get(f) or "" for f in REASONING_FIELDS)
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
            input_tokens=usage.get("prompt_tokens") if usage else None,
            output_tokens=usage.get("completion_tokens") if usage else None,
            finish_reason=self.finish_reason,
            attempts=max(1, attempts),
            error=error,
            error_kind=kind,
            server_model=self.server_model,
            asked_usage=asked_usage,
        )


def check_endpoint(client: Any, *, base_url: str, model: str, names: EndpointNames,
                   timeout_s: float = CHECK_TIMEOUT_S) -> list[str]:
    """GET /models once (no retries); raise BackendUnavailable with one actionable message, else the ids."""
    import openai

    url = redact_url(base_url.rstrip("/"))
    where = f"{names.url_option} / {names.env_prefix}_BASE_URL"
    try:
        raw = client.with_options(timeout=timeout_s, max_retries=0).models.with_raw_response.list()
        _check_media_type(raw.headers)
        ids = [m.id for m in raw.parse()]
    except NotAnAPI as exc:
        raise BackendUnavailable(
            f"GET {url}/models answered {exc.content_type}, not an OpenAI-compatible API: "
            f"is {names.url_option} right? (it usually ends in /v1, e.g. http://localhost:8000/v1)",
            option=names.url_option,
        ) from exc
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        reason = "timed out" if _is_timeout(exc) else _short_reason(cause)
        raise BackendUnavailable(
            f"Cannot reach the {names.label} server at {url} ({reason}). Start an OpenAI-compatible server, "
            f"e.g. `{names.serve_hint}`, or point {where} at a running one.",
            option=names.url_option,
        ) from exc
    except openai.AuthenticationError as exc:
        raise BackendUnavailable(
            f"The {names.label} server at {url} rejected the API key (HTTP {exc.status_code}). "
            f"Set {names.env_prefix}_API_KEY to a key it accepts.",
            option=names.url_option,
        ) from exc
    except openai.NotFoundError as exc:
        raise BackendUnavailable(
            f"GET {url}/models answered 404: {url} is not the base of an OpenAI-compatible API. "
            f"The base URL usually ends in /v1 (e.g. http://localhost:8000/v1); fix {where}.",
            option=names.url_option,
        ) from exc
    except openai.APIStatusError as exc:
        raise BackendUnavailable(
            f"The {names.label} server at {url} answered HTTP {exc.status_code} to GET /models; "
            f"check the server's log, or {where}.",
            option=names.url_option,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - JSON of the wrong shape
        raise BackendUnavailable(
            f"{url} does not answer like an OpenAI-compatible API ({type(exc).__name__}: "
            f"{str(exc)[:120]}); check {where}.",
            option=names.url_option,
        ) from exc
    # Ollama lists "name:latest" for a model requested as "name".
    if model in ids or f"{model}:latest" in ids:
        return ids
    listed = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "") if ids else "no models"
    raise BackendUnavailable(
        f"The {names.label} server at {url} does not serve model '{model}' (it lists: {listed}). "
        f"Pass one of those with {names.model_option} / {names.env_prefix}_MODEL, or serve it, "
        f"e.g. `{names.serve_hint}`.",
        option=names.model_option,
    )


class ChatEndpoint:
    """One model on an OpenAI-compatible server: check() it, then chat() with it (thread-safe)."""

    def __init__(self, base_url: str, api_key: str, model: str, names: EndpointNames, *,
                 timeout_s: float, max_retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.names = names
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._api_key = api_key
        self._client: Any = None  # built on first use: importing openai is not free
        self._ask_usage = True  # stream_options.include_usage, until a server rejects it
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # The key is left out on purpose: reprs end up in logs.
        return f"ChatEndpoint({redact_url(self.base_url)!r}, model={self.model!r})"

    def client(self) -> Any:
        """The openai client, built once (the check warms its connection too)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        names = self.names
        fix = (f"a '#', '/' or '?' in the user name or password must be written %23, %2F, %3F; "
               f"fix {names.url_option} / {names.env_prefix}_BASE_URL")
        if user_info_misread(self.base_url):
            raise BackendUnavailable(f"{redact_url(self.base_url)} cannot be used as written: {fix}",
                                     option=names.url_option)
        try:
            return make_client(self.base_url, self._api_key, self.timeout_s, self.max_retries)
        except Exception as exc:  # noqa: BLE001 - httpx's InvalidURL; its text may quote part of the password
            raise BackendUnavailable(f"{redact_url(self.base_url)} is not a valid URL ({type(exc).__name__}): {fix}",
                                     option=names.url_option) from None

    def check(self) -> list[str]:
        """GET /models: the server answers, speaks the API and serves the model; else BackendUnavailable."""
        return check_endpoint(self.client(), base_url=self.base_url, model=self.model, names=self.names,
                              timeout_s=min(self.timeout_s, CHECK_TIMEOUT_S))

    def chat(self, messages: list[dict], *, max_tokens: int | None, temperature: float | None) -> StreamOutcome:
        """One streamed chat call; failures come back in the outcome, never raised."""
        out = stream_chat(self.client(), model=self.model, messages=messages, max_tokens=max_tokens,
                          temperature=temperature, timeout_s=self.timeout_s, ask_usage=self._ask_usage,
                          url_option=self.names.url_option)
        self._ask_usage = out.asked_usage
        return out

    def close(self) -> None:
        """Close the client's connections (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _short_reason(exc: BaseException) -> str:
    """The innermost, most specific reason in an exception chain, e.g. 'Connection refused'."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen) or type(seen).__name__
    match = re.search(r"\[Errno -?\d+\] ([^\]\)']+)", text)
    return match.group(1) if match else text[:120]
