"""Plain-words rules judged by the caption model itself, in the same call: no extra model call.

``JudgedCaptionModel`` wraps the run's caption model (any CaptionModel: a server, the model in
this process). It appends the numbered statements of the plain-words rules to the caption
prompt, asking for one last line ``ALERTS: 1=yes 0.90; 2=no 0.80``; it takes that line off the
caption (the events, the summary and the index never see it) and keeps the answers for the
alert listener, which reads them by the caption's text when the caption event comes.

Why here and not the summary model on the caption text: the caption model sees the frame (or
the clip's frames), so it answers about what is in the picture, not about what the caption
happened to mention; and it costs no call. The question says "what you see at this moment",
not "this frame": a caption may cover several frames of a clip. The cost is in tokens: the
question (about 42 words plus the statements) on every caption prompt, and the answer line (2
words plus 2 per rule). A reply cut short by --vlm-max-tokens before the line leaves the rules
unanswered (counted as ``unanswered``).
"""
from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from typing import Any, Sequence

from video_summarizer.backends import CaptionModel
from video_summarizer.results import CaptionResult

ANSWER_LINE = re.compile(r"^[\s*_`#>-]*ALERTS?\s*[:=]\s*(.*)$", re.IGNORECASE)
ANSWER = re.compile(r"(\d+)\s*[=:.)]\s*(yes|no|true|false)\b[\s(]*(1(?:\.0+)?|0?\.\d+|0)?", re.IGNORECASE)
KEPT_ANSWERS = 256  # captions whose answers wait for their event; more means no listener reads them


def question(statements: Sequence[str]) -> str:
    """The text appended to the caption prompt for these statements (numbered from 1)."""
    numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(statements, 1))
    return ("\n\nAfter the description, add one last line that answers, for each numbered statement, "
            "whether it holds for what you see at this moment: yes or no, with your confidence from 0 to 1, "
            f"exactly in this form: ALERTS: 1=yes 0.90; 2=no 0.75\n{numbered}")


def parse(text: str, count: int) -> tuple[str, dict[int, tuple[bool, float | None]] | None]:
    """(the caption without the answer line, {statement number: (yes, confidence)}) or None: no line."""
    lines = text.rstrip().split("\n")
    for i in range(len(lines) - 1, -1, -1):
        m = ANSWER_LINE.match(lines[i].strip())
        if not m:
            continue
        answers: dict[int, tuple[bool, float | None]] = {}
        for num, word, conf in ANSWER.findall(m.group(1)):
            if 1 <= int(num) <= count:
                answers[int(num)] = (word.lower() in ("yes", "true"), float(conf) if conf else None)
        return "\n".join(lines[:i]).rstrip(), answers
    return text, None


class Judge:
    """The plain-words rules asked in the caption prompt, and the answers waiting for their events."""

    def __init__(self, rules: Sequence[Any]) -> None:
        self.rules = [r for r in rules if r.kind == "words"]
        self.suffix = question([r.pattern for r in self.rules]) if self.rules else ""
        self._waiting: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.asked = self.answered = self.unanswered = 0

    def ask(self, prompt: str) -> str:
        """The caption prompt with the question appended."""
        return prompt + self.suffix

    def answer(self, result: CaptionResult) -> CaptionResult:
        """The result with the answer line taken off its text and the answers kept for the listener."""
        with self._lock:
            self.asked += 1
        if not result.success:
            return result
        caption, answers = parse(result.text, len(self.rules))
        by_rule = {r.name: answers[i] for i, r in enumerate(self.rules, 1) if answers and i in answers}
        with self._lock:
            if answers is None:
                self.unanswered += 1
            else:
                self.answered += 1
            self._waiting[caption] = by_rule if answers is not None else {}
            while len(self._waiting) > KEPT_ANSWERS:
                self._waiting.popitem(last=False)
        meta = {**result.metadata, "alert_judge": {k: {"yes": y, "confidence": c} for k, (y, c) in by_rule.items()}}
        return dataclasses.replace(result, text=caption, metadata=meta)

    def take(self, caption: str) -> dict[str, tuple[bool, float | None]] | None:
        """The answers given with this caption (None: none kept), once."""
        with self._lock:
            return self._waiting.pop(caption, None)


class JudgedCaptionModel(CaptionModel):
    """The run's caption model with the plain-words rules asked in the same call."""

    def __init__(self, inner: CaptionModel, judge: Judge) -> None:
        self.inner, self.judge = inner, judge

    def generate_caption(self, frame: Any, prompt: str) -> CaptionResult:
        """The inner model's caption for the prompt plus the question, the answer line taken off."""
        return self.judge.answer(self.inner.generate_caption(frame, self.judge.ask(prompt)))

    def generate_clip(self, clip: Any, prompt: str) -> CaptionResult:
        """A clip caption (where the inner model takes clips), judged the same way."""
        return self.judge.answer(self.inner.generate_clip(clip, self.judge.ask(prompt)))  # type: ignore[attr-defined]

    def build_prompt(self, face_names: Sequence[str] = ()) -> str:
        """The inner model's prompt (the question is added per call)."""
        return self.inner.build_prompt(face_names)

    @property
    def model(self) -> str:  # type: ignore[override]
        """The inner model's name: traces and metrics see the same model."""
        return self.inner.model

    @property
    def stats(self) -> Any:  # type: ignore[override]
        """The inner model's call statistics."""
        return self.inner.stats

    @property
    def prompt_template(self) -> str:  # type: ignore[override]
        """The inner model's prompt template."""
        return self.inner.prompt_template

    def check(self) -> None:
        """The inner model's reachability check."""
        self.inner.check()

    def load(self) -> None:
        """Load the inner model."""
        self.inner.load()

    def close(self) -> None:
        """Close the inner model."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # device, base_url and what else the assembly or a test reads of the real model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
