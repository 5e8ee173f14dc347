"""A local stand-in for an OpenAI-compatible chat-completions server (vLLM, Ollama, LM Studio).

It speaks the real wire protocol (HTTP/1.1, chunked Server-Sent Events), so the real
``openai`` client talks to it unchanged. Tests, the fault suite and the benchmarks use it::

    with FakeOpenAIServer(reply="A man speaks at a podium.", first_chunk_delay=0.2) as srv:
        client = VLMClient(base_url=srv.base_url, model="qwen3")
        ...
        srv.requests        # JSON bodies of the chat requests received, in order
        srv.fail_next(status=503, n=2, headers={"Retry-After": "1"})
        srv.set_mode("cut")  # "ok" | "hang" | "cut" | "garbage" | "html"

Stream shape (like vLLM): a role chunk with empty content right after the headers, then
``first_chunk_delay`` seconds, then one chunk per word (``chunk_delay`` apart), a chunk
with ``finish_reason``, the usage (``usage="last_chunk"``: its own chunk with empty
``choices``, sent only when the request asks with ``stream_options.include_usage``;
``"finish_chunk"``: on the finish chunk, like ``transformers serve``; ``None``: no usage),
then ``data: [DONE]`` unless ``send_done=False``.

Usage reported: ``prompt_tokens`` (fixed when given, else words of the text parts plus 100
per image) and ``completion_tokens`` = the number of content and reasoning chunks sent.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MODES = ("ok", "hang", "cut", "garbage", "html", "stream_error")
# What a web server or a proxy's login page answers where an API was expected.
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>It works.</body></html>"


def split_pieces(text: str) -> list[str]:
    """The chunks the server streams for a text: one per word, leading space kept."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text)


class FakeOpenAIServer:
    """OpenAI chat-completions server on 127.0.0.1 with scripted replies, delays and faults."""

    def __init__(
        self,
        reply: str = "A man speaks at a podium.",
        *,
        first_chunk_delay: float = 0.0,
        chunk_delay: float = 0.0,
        models: list[str] | tuple[str, ...] = ("qwen3",),
        usage: str | None = "last_chunk",
        send_done: bool = True,
        think: str | None = None,
        reasoning_field: bool | str = False,
        reply_fn: Callable[[dict], str] | None = None,
        prompt_tokens: int | None = None,
        api_key: str | None = None,
        reject_stream_options: bool = False,
        capacity: int | None = None,
        port: int = 0,
    ) -> None:
        if usage not in ("last_chunk", "finish_chunk", None):
            raise ValueError(f"usage must be 'last_chunk', 'finish_chunk' or None, not {usage!r}")
        self.reply = reply
        self.first_chunk_delay = first_chunk_delay
        self.chunk_delay = chunk_delay
        self.models = list(models)
        self.usage = usage
        self.send_done = send_done
        self.think = think
        # True means vLLM's `reasoning_content`; a string names the field (Ollama: "reasoning").
        self.reasoning_field = "reasoning_content" if reasoning_field is True else (reasoning_field or None)
        self.reply_fn = reply_fn
        self.prompt_tokens = prompt_tokens
        self.api_key = api_key
        self.reject_stream_options = reject_stream_options  # like servers older than the field
        # capacity: chat requests served at once (a GPU server's batch); the others queue.
        self.capacity = capacity
        self._capacity = threading.BoundedSemaphore(capacity) if capacity else None
        self._answer_times: list[float] = []
        self._serving = self._peak_serving = 0
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._request_times: list[float] = []
        self._model_list_hits = 0
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._mode = "ok"
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        """Start serving in a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; hanging and delayed handlers are released."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what tests read -----------------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """Base URL for an OpenAI client, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        """Parsed JSON bodies of the chat-completion requests received (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_times(self) -> list[float]:
        """time.time() at which each chat-completion request arrived (a copy)."""
        with self._lock:
            return list(self._request_times)

    @property
    def answer_times(self) -> list[float]:
        """time.time() at which each chat-completion answer was fully sent (a copy)."""
        with self._lock:
            return list(self._answer_times)

    @property
    def peak_serving(self) -> int:
        """The most chat requests served at the same moment so far."""
        with self._lock:
            return self._peak_serving

    @property
    def model_list_hits(self) -> int:
        """How many GET /v1/models requests arrived."""
        with self._lock:
            return self._model_list_hits

    # -- fault injection -----------------------------------------------------------------
    def fail_next(self, status: int = 503, n: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next n chat requests with this HTTP status and an OpenAI-style error body."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}))] * n)

    def set_mode(self, mode: str) -> None:
        """ok: normal; hang: accept and never answer; cut: drop the connection mid-stream; garbage: non-JSON
        events; stream_error: a 200 stream whose only event is an error object; html: every route (GET /v1/models too) answers 200 with an HTML page."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self._mode = mode

    # -- used by the handler -------------------------------------------------------------
    def _record(self, body: dict) -> tuple[str, tuple[int, dict[str, str]] | None]:
        with self._lock:
            self._requests.append(body)
            self._request_times.append(time.time())
            failure = self._failures.pop(0) if self._failures else None
            return self._mode, failure

    @property
    def mode(self) -> str:
        """The current mode (see set_mode)."""
        with self._lock:
            return self._mode

    def _count_model_list(self) -> None:
        with self._lock:
            self._model_list_hits += 1

    def _usage_for(self, body: dict, completion_tokens: int) -> dict:
        prompt = self.prompt_tokens
        if prompt is None:
            prompt = 0
            for msg in body.get("messages", []):
                content = msg.get("content")
                parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
                for part in parts:
                    if part.get("type") == "text":
                        prompt += len(part.get("text", "").split())
                    elif part.get("type") == "image_url":
                        prompt += 100
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server is closing; True when it is closing."""
        return self._closing.wait(seconds) if seconds > 0 else self._closing.is_set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined]

    # -- helpers -------------------------------------------------------------------------
    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error"}.get(status, "server_error")
        self._send_json(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    def _send_html(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HTML_PAGE)))
        self.end_headers()
        self.wfile.write(HTML_PAGE)

    def _authorized(self) -> bool:
        key = self.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send_error(401, "Invalid API key")
        return False

    def _chunk(self, data: str) -> None:
        raw = data.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))

    def _event(self, payload: dict | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._chunk(f"data: {text}\n\n")

    # -- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.fake.mode == "html":
            self.fake._count_model_list()
            self._send_html()
            return
        if self.path.rstrip("/") != "/v1/models":
            self._send_error(404, f"no route {self.path}")
            return
        self.fake._count_model_list()
        if not self._authorized():
            return
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.fake.mode == "html":  # a web server answers any path with its page
            try:
                self.fake._record(json.loads(raw or b"{}"))
            except ValueError:
                pass
            self._send_html()
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_error(400, "body is not JSON")
            return
        mode, failure = self.fake._record(body)
        if not self._authorized():
            return
        if failure is not None:
            status, headers = failure
            self._send_error(status, f"fake failure {status}", headers)
            return
        if body.get("model") not in self.fake.models:
            self._send_error(404, f"The model `{body.get('model')}` does not exist.")
            return
        if self.fake.reject_stream_options and "stream_options" in body:
            self._send_error(400, "Unrecognized request argument supplied: stream_options")
            return
        if mode == "hang":
            self.fake._wait(3600)
            self.close_connection = True
            return
        if self.fake._capacity is not None:
            self.fake._capacity.acquire()
        with self.fake._lock:
            self.fake._serving += 1
            self.fake._peak_serving = max(self.fake._peak_serving, self.fake._serving)
        try:
            if body.get("stream"):
                self._stream(body, mode)
            else:
                self._complete(body)
        finally:
            if self.fake._capacity is not None:
                self.fake._capacity.release()
            with self.fake._lock:
                self.fake._serving -= 1
                self.fake._answer_times.append(time.time())

    def _pieces(self, body: dict) -> tuple[list[tuple[str, str]], str]:
        """(field, text) chunks to send and the finish reason, honouring max_tokens."""
        fake = self.fake
        reply = fake.reply_fn(body) if fake.reply_fn else fake.reply
        pieces: list[tuple[str, str]] = []
        if fake.think is not None:
            if fake.reasoning_field:
                pieces += [(fake.reasoning_field, p) for p in split_pieces(fake.think)]
            else:
                pieces += [("content", p) for p in ["<think>", *split_pieces(fake.think), "</think>", "\n\n"]]
        pieces += [("content", p) for p in split_pieces(reply)]
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit is not None and len(pieces) > int(limit):
            return pieces[: int(limit)], "length"
        return pieces, "stop"

    def _complete(self, body: dict) -> None:
        pieces, finish = self._pieces(body)
        content = "".join(t for f, t in pieces if f == "content")
        message = {"role": "assistant", "content": content}
        reasoning = "".join(t for f, t in pieces if f != "content")
        if reasoning:
            message[self.fake.reasoning_field] = reasoning
        self._send_json(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self.fake._usage_for(body, len(pieces)),
        })

    def _stream(self, body: dict, mode: str) -> None:
        fake = self.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "garbage":
            self._chunk("data: this is not JSON {\n\n")
            self._chunk("")
            return
        pieces, finish = self._pieces(body)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model")}

        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}

        self._event(chunk({"role": "assistant", "content": ""}))
        if mode == "stream_error":  # a 200 stream that reports an error instead of tokens (vLLM, TGI)
            self._event({"error": {"message": "model overloaded", "type": "server_error", "code": 503}})
            self._chunk("")
            return
        cut_after = max(1, len(pieces) // 2) if mode == "cut" else None
        for i, (field, text) in enumerate(pieces):
            if fake._wait(fake.first_chunk_delay if i == 0 else fake.chunk_delay):
                return
            if cut_after is not None and i == cut_after:
                # Drop the connection without the terminating chunk: the client sees a broken body.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._event(chunk({field: text}))
        usage = fake._usage_for(body, len(pieces))
        if fake.usage == "finish_chunk":
            self._event(chunk({}, finish, usage=usage))
        else:
            self._event(chunk({}, finish))
        include = (body.get("stream_options") or {}).get("include_usage")
        if fake.usage == "last_chunk" and include:
            self._event({**base, "choices": [], "usage": usage})
        if fake.send_done:
            self._event("[DONE]")
        self._chunk("")  # terminating zero-length chunk
