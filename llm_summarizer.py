"""Rolling summaries of timestamped captions with Mistral-7B-Instruct (local transformers or served).

``LLMSummarizer`` is the one class the CLI builds, a SummaryModel (video_summarizer.backends).
It holds one of two small backends, chosen once from whether a base URL is set:

- ``LocalBackend``: ``AutoTokenizer`` / ``AutoModelForCausalLM`` (a hub id or a local folder),
  generation in a thread with a streamer that stamps the moment the first generated token
  ids arrive: the real time to first token, not the first text chunk.
- ``ServerBackend`` (``--llm-base-url`` / ``LLM_BASE_URL``): the same result type over a
  streamed OpenAI-compatible call.

Both have ``check()`` (cheap: the files are there / the server lists the model), ``load()``
(the local model, with a progress line; nothing for a server), ``count_tokens``,
``prompt_tokens`` and ``generate``.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

from video_summarizer import defaults as D
from video_summarizer.backends import SummaryModel
from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.hf import (
    InProcessModel,
    ModelSpec,
    TokenTimer,
    generate_in_thread,
    load_error,
    resolve_dtype,  # noqa: F401 - part of this module's interface (tests, older callers)
    sampling,
)
from video_summarizer.models.openai_stream import ChatEndpoint, EndpointNames
from video_summarizer.models.summary_prompt import (
    DEFAULT_BUDGET,
    build_messages,
    estimate_prompt_tokens,
    estimate_tokens,
    fold_system,
)
from video_summarizer.prompts import SYSTEM_PROMPT
from video_summarizer.redact import redact_url
from video_summarizer.results import SummaryResult, TimedCaption
from video_summarizer.stats import ModelStats

DEFAULT_MODEL = D.LLM_MODEL
DEFAULT_API_KEY = D.API_KEY_PLACEHOLDER
SERVE_HINT = f"vllm serve {D.LLM_MODEL}"
NAMES = EndpointNames(label="LLM", url_option="--llm-base-url", model_option="--llm-model",
                      env_prefix="LLM", serve_hint=SERVE_HINT)
SPEC = ModelSpec(
    role="summary model", option="--llm-model", example=DEFAULT_MODEL,
    contents="config.json, weights and tokenizer",
    served=f"to use a served model instead set --llm-base-url / LLM_BASE_URL (e.g. `{SERVE_HINT}`)",
    download_note="Mistral needs its licence accepted on huggingface.co",
)
_SYSTEM_PROBE = "system-probe-7f3a"

__all__ = ["LLMSummarizer", "LocalBackend", "ServerBackend", "fold_system", "resolve_dtype"]


class LLMSummarizer(SummaryModel):
    """Rolls timestamped captions into a running summary with a local or served chat model."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        device: str = D.DEVICE,
        dtype: str = "auto",
        base_url: str | None = None,
        api_key: str | None = None,
        max_new_tokens: int = D.LLM_MAX_NEW_TOKENS,
        prompt_token_budget: int = DEFAULT_BUDGET,
        timeout_s: float = D.LLM_TIMEOUT_S,
        max_retries: int = D.LLM_MAX_RETRIES,
        temperature: float | None = None,
    ) -> None:
        self.model = model_name  # shown in traces: the hub id, or a local folder as given
        self.base_url = (base_url or "").rstrip("/") or None
        self.prompt_token_budget = prompt_token_budget
        self.stats = ModelStats(f"LLM {model_name}")
        if self.base_url:
            api_key = api_key or DEFAULT_API_KEY
            self._backend: _SummaryBackend = ServerBackend(
                ChatEndpoint(self.base_url, api_key, model_name, NAMES, timeout_s=timeout_s,
                             max_retries=max_retries),
                max_new_tokens=max_new_tokens, temperature=temperature)
        else:
            self._backend = LocalBackend(model_name, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                                         timeout_s=timeout_s, temperature=temperature)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], model_name: str = DEFAULT_MODEL, **kw: Any) -> "LLMSummarizer":
        """A summarizer served at LLM_BASE_URL with LLM_API_KEY when set (the CLI reads them as options)."""
        return cls(model_name, base_url=environ.get("LLM_BASE_URL"), api_key=environ.get("LLM_API_KEY"), **kw)

    @property
    def backend(self) -> str:
        """'api' when an OpenAI-compatible base URL is set, else 'local'."""
        return self._backend.name

    @property
    def device(self) -> str:
        """Where the model runs: the local device ('auto' until loaded), or 'server'."""
        return self._backend.device

    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer once loaded (local backend), else None."""
        return self._backend.tokenizer

    @property
    def hf_model(self) -> Any:
        """The transformers model once loaded (local backend), else None."""
        return self._backend.hf_model

    def __repr__(self) -> str:
        where = redact_url(self.base_url) if self.base_url else self.device
        return f"LLMSummarizer(model={self.model!r}, backend={self.backend!r}, at={where!r})"

    def check_fit(self) -> Any:
        """The local model refused if it cannot fit in memory, before any download (models.fit.Fit); None: a server."""
        check = getattr(self._backend, "check_fit", None)
        return check() if check is not None else None

    def check(self) -> None:
        """Cheap reachability: the server lists the model, or the model's files are there; nothing loads."""
        self._backend.check()

    def load(self) -> None:
        """Load the local model once, with a progress line (a served model: nothing to load)."""
        self._backend.load()

    def close(self) -> None:
        """Release the server connections (the local model is left to the garbage collector)."""
        self._backend.close()

    # -- prompt ------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens in text: the model's tokenizer locally, a conservative estimate for a server."""
        return self._backend.count_tokens(text)

    def prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the prompt as it will be sent (exact locally, estimated for a server)."""
        return self._backend.prompt_tokens(messages)

    def build_messages(
        self,
        captions: Sequence[TimedCaption],
        previous_summary: str | None,
        *,
        final: bool = False,
        system_prompt: str | None = None,
    ) -> list[dict]:
        """Chat messages (system + user) that fit prompt_token_budget however many captions come in."""
        system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
        return build_messages(captions, previous_summary, final=final, system_prompt=system_prompt,
                              budget=self.prompt_token_budget, count_tokens=self.count_tokens,
                              prompt_tokens=self.prompt_tokens)

    # -- generation --------------------------------------------------------------------------
    def update_summary(self, captions: Sequence[TimedCaption], previous_summary: str | None) -> SummaryResult:
        """The running summary updated with new captions."""
        return self.generate(self.build_messages(captions, previous_summary))

    def final_summary(self, captions: Sequence[TimedCaption], previous_summary: str | None) -> SummaryResult:
        """The summary of the whole video, at the end of a file."""
        return self.generate(self.build_messages(captions, previous_summary, final=True))

    def generate(self, messages: list[dict]) -> SummaryResult:
        """Run the model on chat messages; model failures come back as success=False."""
        result = self._backend.generate(messages)
        self.stats.record(result)
        return result


class _SummaryBackend(ABC):
    """Where LLMSummarizer's model runs: what both places do, and what only a local model has."""

    name: str  # "api" or "local"
    device: str = "server"  # a local model: its device ("auto" until loaded)
    tokenizer: Any = None  # a local model's tokenizer, once loaded
    hf_model: Any = None  # a local model, once loaded

    @abstractmethod
    def check(self) -> None:
        """Cheap: the server lists the model, or its files are there."""

    @abstractmethod
    def load(self) -> None:
        """Load the model (a server: nothing)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections or the model."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens in text."""

    @abstractmethod
    def prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the chat as it will be sent."""

    @abstractmethod
    def generate(self, messages: list[dict]) -> SummaryResult:
        """One generation; failures are results."""


class ServerBackend(_SummaryBackend):
    """A chat model on an OpenAI-compatible server."""

    name = "api"

    def __init__(self, endpoint: ChatEndpoint, *, max_new_tokens: int, temperature: float | None) -> None:
        self.endpoint = endpoint
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature  # None: the server's default

    def check(self) -> None:
        """GET /models: the server answers and lists the model."""
        self.endpoint.check()

    def load(self) -> None:
        """Nothing to load: the model lives on the server."""

    def close(self) -> None:
        """Close the connections."""
        self.endpoint.close()

    def count_tokens(self, text: str) -> int:
        """An estimate: the server's tokenizer is not ours to run."""
        return estimate_tokens(text)

    def prompt_tokens(self, messages: list[dict]) -> int:
        """An estimate of the folded chat."""
        return estimate_prompt_tokens(messages)

    def generate(self, messages: list[dict]) -> SummaryResult:
        """One streamed call; failures are results."""
        # Mistral's template rejects a system role and we cannot see the server's: fold it.
        sent = fold_system(messages)
        out = self.endpoint.chat(sent, max_tokens=self.max_new_tokens, temperature=self.temperature)
        success, error, kind = out.success, out.error, out.error_kind
        if success and not out.text:
            success, kind, error = False, "bad_response", "the model returned an empty summary"
        return SummaryResult(
            text=out.text if success else "", success=success, model=self.endpoint.model,
            start_time=out.start_time, end_time=out.end_time,
            completion_start_time=out.completion_start_time,
            input_tokens=out.input_tokens, output_tokens=out.output_tokens,
            error=error, error_kind=kind,
            metadata={"backend": "api", "attempts": out.attempts, "finish_reason": out.finish_reason,
                      "system_folded": sent is not messages},
            generation_start_time=out.start_time,  # tokenization happens on the server
        )


class LocalBackend(InProcessModel, _SummaryBackend):
    """A causal LM loaded into this process with transformers (CPU, CUDA or MPS)."""

    name = "local"
    model_class = "AutoModelForCausalLM"
    spec = SPEC

    def __init__(self, model: str, *, device: str, dtype: str, max_new_tokens: int, timeout_s: float,
                 temperature: float | None) -> None:
        super().__init__(model, device=device, dtype=dtype)
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        self.temperature = temperature  # None or 0: greedy
        self.tokenizer: Any = None
        self._system_ok: bool | None = None  # does the chat template accept a system message?

    def _prepare(self) -> Any:
        return self._load_tokenizer()

    def _load_tokenizer(self) -> Any:
        # Prompts are built (and their tokens counted) before the model is needed.
        if self.tokenizer is None:
            self.check()
            try:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(self._source or self.model,
                                                               local_files_only=self._source is not None)
            except Exception as exc:  # noqa: BLE001 - OSError, ValueError, ...
                raise load_error(self.model, SPEC, exc) from exc
        return self.tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens in text by the model's tokenizer."""
        return len(self._load_tokenizer()(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the chat as the template renders it."""
        return int(self._encode(messages)[0]["input_ids"].shape[1])

    def _encode(self, messages: list[dict]) -> tuple[Any, bool]:
        """Token ids for the chat, folding the system message when the template rejects it."""
        tok = self._load_tokenizer()
        if self._system_ok is None:
            self._system_ok = _template_accepts_system(tok)
        folded = not self._system_ok and any(m["role"] == "system" for m in messages)
        chat = fold_system(messages) if folded else messages
        enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        return enc, folded

    def generate(self, messages: list[dict]) -> SummaryResult:
        """Generate on a worker thread, stopped at timeout_s; failures are results."""
        try:
            self.load()
        except BackendUnavailable as exc:
            return self._failure(time.time(), None, "model_error", str(exc))
        with self._generate_lock:
            start = time.time()
            try:
                enc, folded = self._encode(messages)
            except Exception as exc:  # noqa: BLE001 - a template error is reported, not raised
                return self._failure(start, None, "model_error", f"chat template failed: {exc}")
            n_input = int(enc["input_ids"].shape[1])
            enc = enc.to(self.hf_model.device)
            kwargs = dict(enc, max_new_tokens=self.max_new_tokens, **sampling(self.temperature))
            run = generate_in_thread(self.hf_model, kwargs, self.timeout_s, name="llm-generate")
            timer, generation_start = run.timer, run.start_time
            end = timer.end_time or time.time()
            ids = timer.token_ids
            meta = {"backend": "local", "device": str(self.hf_model.device), "system_folded": folded}
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if run.cancelled:
                return self._failure(start, generation_start, "timeout",
                                     f"generation passed {self.timeout_s:g} s; partial text: {text[:200]!r}",
                                     timer, n_input, meta)
            if run.error is not None:
                exc = run.error
                return self._failure(start, generation_start, "model_error",
                                     f"generation failed: {type(exc).__name__}: {exc}", timer, n_input, meta)
            if not text:
                return self._failure(start, generation_start, "bad_response",
                                     "the model generated an empty summary", timer, n_input, meta)
            return SummaryResult(
                text=text, success=True, model=self.model, start_time=start, end_time=end,
                completion_start_time=timer.first_token_time, input_tokens=n_input,
                output_tokens=len(ids), metadata=meta, generation_start_time=generation_start,
            )

    def _failure(self, start: float, generation_start: float | None, kind: str, error: str,
                 timer: TokenTimer | None = None, n_input: int | None = None,
                 meta: dict | None = None) -> SummaryResult:
        return SummaryResult(
            text="", success=False, model=self.model, start_time=start,
            end_time=(timer.end_time if timer and timer.end_time else time.time()),
            completion_start_time=timer.first_token_time if timer else None,
            input_tokens=n_input, output_tokens=len(timer.token_ids) if timer else None,
            error=error, error_kind=kind, metadata=meta or {"backend": "local"},
            generation_start_time=generation_start,
        )


def _template_accepts_system(tokenizer: Any) -> bool:
    """True when the chat template renders a system message (Mistral's raises; some drop it)."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "hi"}],
            tokenize=False, add_generation_prompt=True,
        )
    except Exception:  # noqa: BLE001 - jinja2 TemplateError from raise_exception, or others
        return False
    return _SYSTEM_PROBE in text
