"""Rolling summaries of timestamped captions with Mistral-7B-Instruct (local transformers or served).

Local backend: ``AutoTokenizer`` / ``AutoModelForCausalLM`` loaded lazily (a hub id or a
local folder), generation in a thread with a streamer that stamps the moment the first
generated token ids arrive: that is the real time to first token, not the first text chunk.
API backend (``LLM_BASE_URL``): the same result type over a streamed OpenAI-compatible call.
"""
from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, Sequence

from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.hf import (
    TokenTimer,
    generate_in_thread,
    resolve_device,
    resolve_dtype,
)
from video_summarizer.models.openai_stream import (
    RetryPolicy,
    check_endpoint,
    make_client,
    redact_url,
    stream_chat,
)
from video_summarizer.prompts import SYSTEM_PROMPT
from video_summarizer.results import SummaryResult, TimedCaption
from video_summarizer.stats import ModelStats
from video_summarizer.timecodes import format_video_time

DEFAULT_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"
DEFAULT_API_KEY = "EMPTY"
SERVE_HINT = "vllm serve mistralai/Mistral-7B-Instruct-v0.3"
UPDATE_INSTRUCTION = "Write the updated summary of the video so far."
FINAL_INSTRUCTION = "These are the last captions of the video. Write the final summary of the whole video."
_HEAD = "Summary so far:\n{summary}\n\nNew captions ([mm:ss] video time, recognized faces in brackets):\n"
_TEMPLATE_RESERVE = 24  # tokens the chat template adds around the messages ([INST], BOS, ...)
_SYSTEM_PROBE = "system-probe-7f3a"


class LLMSummarizer:
    """Rolls timestamped captions into a running summary with a local or served chat model."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        base_url: str | None = None,
        api_key: str | None = None,
        max_new_tokens: int = 200,
        prompt_token_budget: int = 1536,
        timeout_s: float = 300.0,
        max_retries: int = 2,
        temperature: float | None = None,
    ) -> None:
        self.model = model_name  # shown in traces: the hub id, or a local folder as given
        self.base_url = (base_url or os.environ.get("LLM_BASE_URL") or "").rstrip("/") or None
        self._api_key = api_key or os.environ.get("LLM_API_KEY") or DEFAULT_API_KEY
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.prompt_token_budget = prompt_token_budget
        self.timeout_s = timeout_s
        self.temperature = temperature  # None: greedy locally, the server's default remotely
        self.retry = RetryPolicy(max_retries=max_retries)
        self.stats = ModelStats(f"LLM {model_name}")
        self.tokenizer: Any = None  # transformers tokenizer, once loaded (local backend)
        self.hf_model: Any = None  # transformers model, once loaded (local backend)
        self._client: Any = None
        self._ask_usage = True  # stream_options.include_usage, until a server rejects it
        self._system_ok: bool | None = None  # does the chat template accept a system message?
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one local generation at a time

    @property
    def backend(self) -> str:
        """'api' when an OpenAI-compatible base URL is set, else 'local'."""
        return "api" if self.base_url else "local"

    def __repr__(self) -> str:
        where = redact_url(self.base_url) if self.base_url else self.device
        return f"LLMSummarizer(model={self.model!r}, backend={self.backend!r}, at={where!r})"

    # -- loading and checks ----------------------------------------------------------------
    def check(self) -> None:
        """API backend: GET /models like the VLM check; local backend: load the model now."""
        if self.backend == "api":
            check_endpoint(
                self._get_client(), base_url=self.base_url, model=self.model, label="LLM",
                url_option="--llm-base-url", model_option="--llm-model", env_prefix="LLM",
                serve_hint=SERVE_HINT, timeout_s=min(self.timeout_s, 5.0),
            )
        else:
            self.load()

    def load(self) -> None:
        """Load tokenizer and model once (local backend); BackendUnavailable says what to do."""
        if self.backend == "api" or self.hf_model is not None:
            return
        with self._load_lock:
            if self.hf_model is not None:
                return
            self._load_tokenizer()
            try:
                from transformers import AutoModelForCausalLM

                device = resolve_device(self.device)
                dtype = resolve_dtype(self.dtype, device, option="--llm-dtype")
                model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype)
                self.hf_model = model.to(device).eval()
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - OSError, ValueError, RuntimeError (CUDA OOM), ...
                raise BackendUnavailable(self._load_message(exc), option="--llm-model") from exc
            self.device = device

    def _load_tokenizer(self) -> Any:
        if self.tokenizer is None:
            try:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(self.model)
            except Exception as exc:  # noqa: BLE001 - see load()
                raise BackendUnavailable(self._load_message(exc), option="--llm-model") from exc
        return self.tokenizer

    def _load_message(self, exc: Exception) -> str:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        name = self.model
        if name.startswith((".", "~", os.sep)) or os.path.exists(name):
            path = os.path.expanduser(name)
            if not os.path.isdir(path):
                return (f"The summarizer model folder '{name}' does not exist. Pass --llm-model a folder "
                        f"saved with save_pretrained (config.json, weights, tokenizer) or a hub id such as {DEFAULT_MODEL}.")
            return (f"Cannot load the summarizer model folder '{name}' ({type(exc).__name__}: {reason}). "
                    "It must hold a causal LM saved with save_pretrained: config.json, weights and tokenizer.")
        return (
            f"Cannot load the summarizer model '{self.model}' ({type(exc).__name__}: {reason}). "
            f"For a hub id, download it once while online (`hf download {self.model}`; Mistral needs "
            "its licence accepted on huggingface.co), or pass a local model folder with --llm-model; "
            f"to use a served model instead set --llm-base-url / LLM_BASE_URL (e.g. `{SERVE_HINT}`)."
        )

    def _get_client(self) -> Any:
        with self._load_lock:
            if self._client is None:
                self._client = make_client(self.base_url, self._api_key, self.timeout_s)
            return self._client

    # -- prompt ------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens in text: the model's tokenizer locally, a conservative estimate for a server."""
        if self.backend == "local":
            return len(self._load_tokenizer()(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / 3)  # Mistral averages ~4 characters a token in English

    def build_messages(
        self,
        captions: Sequence[TimedCaption],
        previous_summary: str | None,
        final: bool = False,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> list[dict]:
        """Chat messages (system + user) that fit prompt_token_budget however many captions come in."""
        budget = self.prompt_token_budget - _TEMPLATE_RESERVE
        instruction = FINAL_INSTRUCTION if final else UPDATE_INSTRUCTION
        faces = sorted({f for c in captions for f in c.faces if f})
        people = f"\n\nPeople recognized in these captions: {', '.join(faces)}." if faces else ""
        # 16 more for the "(N earlier caption lines omitted...)" note and the joins.
        fixed = sum(self.count_tokens(t) for t in (system_prompt, _HEAD, people, instruction)) + 16
        summary = (previous_summary or "").strip()
        if summary:
            # Written by us, so at most max_new_tokens long; still cap it: 40 % of the budget, and
            # leave a quarter for the captions.
            cap = max(8, min(budget * 2 // 5, budget - fixed - budget // 4))
            summary = self._truncate(summary, cap)
        else:
            summary = "(none yet: the video has just started)"
        head = _HEAD.format(summary=summary)
        room = budget - fixed - self.count_tokens(summary)
        lines = _caption_lines(captions)
        kept: list[str] = []
        for line in reversed(lines):  # newest first: the oldest give way
            line = self._truncate(line, max(16, budget // 4))
            cost = self.count_tokens(line) + 1
            if cost > room:
                break
            kept.append(line)
            room -= cost
        kept.reverse()
        # Parts were counted one by one; check the whole prompt as sent and drop more if needed.
        while True:
            omitted = len(lines) - len(kept)
            body = "\n".join(kept) if kept else "(no new captions)"
            if omitted:
                body = f"({omitted} earlier caption lines omitted to fit the prompt)\n{body}"
            user = f"{head}{body}{people}\n\n{instruction}"
            messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
            # A budget smaller than the instructions themselves cannot be met: send the minimum.
            if not kept or self.prompt_tokens(messages) <= self.prompt_token_budget:
                return messages
            kept.pop(0)

    def prompt_tokens(self, messages: list[dict]) -> int:
        """Tokens of the prompt as it will be sent (exact locally, estimated for a server)."""
        if self.backend == "local":
            return int(self._encode(messages)[0]["input_ids"].shape[1])
        return sum(self.count_tokens(m["content"]) for m in fold_system(messages)) + _TEMPLATE_RESERVE

    def _truncate(self, text: str, max_tokens: int) -> str:
        """Text cut to at most max_tokens (keeping its start), marked with an ellipsis."""
        count = self.count_tokens(text)
        while count > max_tokens and text:
            text = text[: max(0, int(len(text) * max_tokens / count * 0.9) - 1)].rstrip() + "…"
            count = self.count_tokens(text)
        return text

    # -- generation --------------------------------------------------------------------------
    def update_summary(self, captions: Sequence[TimedCaption], previous_summary: str | None) -> SummaryResult:
        """The running summary updated with new captions."""
        return self.generate(self.build_messages(captions, previous_summary))

    def final_summary(self, captions: Sequence[TimedCaption], previous_summary: str | None) -> SummaryResult:
        """The summary of the whole video, at the end of a file."""
        return self.generate(self.build_messages(captions, previous_summary, final=True))

    def generate(self, messages: list[dict]) -> SummaryResult:
        """Run the model on chat messages; model failures come back as success=False."""
        result = self._generate_api(messages) if self.backend == "api" else self._generate_local(messages)
        self.stats.record(result)
        return result

    def _generate_api(self, messages: list[dict]) -> SummaryResult:
        # Mistral's template rejects a system role and we cannot see the server's: fold it.
        sent = fold_system(messages)
        out = stream_chat(
            self._get_client(), model=self.model, messages=sent, max_tokens=self.max_new_tokens,
            temperature=self.temperature, timeout_s=self.timeout_s, retry=self.retry, ask_usage=self._ask_usage,
        )
        self._ask_usage = out.asked_usage
        success, error, kind = out.success, out.error, out.error_kind
        if success and not out.text:
            success, kind, error = False, "bad_response", "the model returned an empty summary"
        return SummaryResult(
            text=out.text if success else "", success=success, model=self.model,
            start_time=out.start_time, end_time=out.end_time,
            completion_start_time=out.completion_start_time,
            input_tokens=out.input_tokens, output_tokens=out.output_tokens,
            error=error, error_kind=kind,
            metadata={"backend": "api", "attempts": out.attempts, "finish_reason": out.finish_reason,
                      "system_folded": sent is not messages},
            generation_start_time=out.start_time,  # tokenization happens on the server
        )

    def _encode(self, messages: list[dict]) -> tuple[Any, bool]:
        """Token ids for the chat, folding the system message when the template rejects it."""
        tok = self._load_tokenizer()
        if self._system_ok is None:
            self._system_ok = _template_accepts_system(tok)
        folded = not self._system_ok and any(m["role"] == "system" for m in messages)
        chat = fold_system(messages) if folded else messages
        enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        return enc, folded

    def _generate_local(self, messages: list[dict]) -> SummaryResult:
        self.load()
        with self._generate_lock:
            start = time.time()
            try:
                enc, folded = self._encode(messages)
            except Exception as exc:  # noqa: BLE001 - a template error is reported, not raised
                return self._failure(start, None, "model_error", f"chat template failed: {exc}")
            n_input = int(enc["input_ids"].shape[1])
            enc = enc.to(self.hf_model.device)
            kwargs = dict(enc, max_new_tokens=self.max_new_tokens, **self._sampling())
            if self.hf_model.generation_config.pad_token_id is None:
                kwargs["pad_token_id"] = self.tokenizer.eos_token_id  # silences a warning per call
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

    def _sampling(self) -> dict:
        if self.temperature:
            return {"do_sample": True, "temperature": self.temperature}
        return {"do_sample": False}

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


def fold_system(messages: list[dict]) -> list[dict]:
    """The messages with system content moved into the first user turn (for templates without one)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return messages
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


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


def _caption_lines(captions: Sequence[TimedCaption]) -> list[str]:
    """One line a caption, '[mm:ss] text [faces: a, b]'; repeats in a row become one time range."""
    lines: list[str] = []
    prev_key = None
    first_time = last_time = 0.0
    for cap in sorted(captions, key=lambda c: c.video_time):
        text = " ".join(cap.text.split())
        if not text:
            continue
        key = (text.lower(), tuple(cap.faces))
        if key == prev_key:
            last_time = cap.video_time
            lines[-1] = _line(first_time, last_time, text, cap.faces)
            continue
        prev_key, first_time, last_time = key, cap.video_time, cap.video_time
        lines.append(_line(first_time, last_time, text, cap.faces))
    return lines


def _line(t0: float, t1: float, text: str, faces: tuple[str, ...]) -> str:
    stamp = f"[{format_video_time(t0)}]"
    if format_video_time(t1) != format_video_time(t0):
        stamp = f"[{format_video_time(t0)}-{format_video_time(t1)}]"
    names = [f for f in faces if f]
    return f"{stamp} {text}" + (f" [faces: {', '.join(names)}]" if names else "")
