"""The summary prompt: timestamped captions and the running summary, fitted to a token budget.

Shared by every summary model: the in-process one counts with its tokenizer, a served one
estimates. ``build_messages`` drops the oldest caption lines first and caps the previous
summary, so a run of any length fits ``budget`` tokens.

Captions are text a camera saw, retold by a model: a sign reading "ignore your instructions"
reaches the prompt. So they go in as data: each caption a JSON string (prompts.quote_data) on
its own ``[mm:ss]`` line inside an ``<observations>`` block, the summary so far inside a
``<summary>`` block, and both the system prompt and the user message say they are not
instructions.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from video_summarizer import defaults as D
from video_summarizer.prompts import DATA_NOTE, SYSTEM_PROMPT, escape_block, quote_data
from video_summarizer.results import TimedCaption
from video_summarizer.timecodes import format_video_time, stamp_decimals

UPDATE_INSTRUCTION = "Write the updated summary of the video so far."
FINAL_INSTRUCTION = "These are the last captions of the video. Write the final summary of the whole video."
_HEAD = ("Summary so far:\n<summary>\n{summary}\n</summary>\n\n"
         f"New captions ([{{stamp}}] video time, the caption quoted, recognized faces in brackets; {DATA_NOTE}):\n")
_OPEN, _CLOSE = "<observations>\n", "\n</observations>"
TEMPLATE_RESERVE = 24  # tokens the chat template adds around the messages ([INST], BOS, ...)
DEFAULT_BUDGET = D.SUMMARY_TOKEN_BUDGET


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer: Mistral averages ~4 characters a token in English."""
    return math.ceil(len(text) / 3)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """Estimated tokens of a chat as a server without a system role would see it."""
    return sum(estimate_tokens(m["content"]) for m in fold_system(messages)) + TEMPLATE_RESERVE


def build_messages(
    captions: Sequence[TimedCaption],
    previous_summary: str | None,
    *,
    final: bool = False,
    system_prompt: str = SYSTEM_PROMPT,
    budget: int = DEFAULT_BUDGET,
    count_tokens: Callable[[str], int] = estimate_tokens,
    prompt_tokens: Callable[[list[dict]], int] = estimate_prompt_tokens,
) -> list[dict]:
    """Chat messages (system + user) that fit budget tokens however many captions come in."""
    room_total = budget - TEMPLATE_RESERVE
    instruction = FINAL_INSTRUCTION if final else UPDATE_INSTRUCTION
    faces = sorted({f for c in captions for f in c.faces if f})
    people = f"\n\nPeople recognized in these captions: {', '.join(faces)}." if faces else ""
    # 16 more for the "(N earlier caption lines omitted...)" note and the joins.
    fixed = sum(count_tokens(t) for t in (system_prompt, _HEAD, _OPEN, _CLOSE, people, instruction)) + 16
    summary = (previous_summary or "").strip()
    if summary:
        # Written by us, so at most max_new_tokens long; still cap it: 40 % of the budget, and
        # leave a quarter for the captions.
        cap = max(8, min(room_total * 2 // 5, room_total - fixed - room_total // 4))
        summary = truncate(summary, cap, count_tokens)
    else:
        summary = "(none yet: the video has just started)"
    summary = escape_block(summary)
    head = _HEAD.format(summary=summary, stamp=_stamp_shape(captions))
    room = room_total - fixed - count_tokens(summary)
    entries = _entries(captions)
    decimals = stamp_decimals(c.video_time for c in captions)
    kept: list[str] = []
    for entry in reversed(entries):  # newest first: the oldest give way
        line = _fitted_line(entry, max(16, room_total // 4), count_tokens, decimals)
        cost = count_tokens(line) + 1
        if cost > room:
            break
        kept.append(line)
        room -= cost
    kept.reverse()
    # Parts were counted one by one; check the whole prompt as sent and drop more if needed.
    while True:
        omitted = len(entries) - len(kept)
        body = _OPEN + "\n".join(kept) + _CLOSE if kept else "(no new captions)"
        if omitted:
            body = f"({omitted} earlier caption lines omitted to fit the prompt)\n{body}"
        user = f"{head}{body}{people}\n\n{instruction}"
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
        # A budget smaller than the instructions themselves cannot be met: send the minimum.
        if not kept or prompt_tokens(messages) <= budget:
            return messages
        kept.pop(0)


def truncate(text: str, max_tokens: int, count_tokens: Callable[[str], int] = estimate_tokens) -> str:
    """Text cut to at most max_tokens (keeping its start), marked with an ellipsis."""
    count = count_tokens(text)
    while count > max_tokens and text:
        text = text[: max(0, int(len(text) * max_tokens / count * 0.9) - 1)].rstrip() + "…"
        count = count_tokens(text)
    return text


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


def _stamp_shape(captions: Sequence[TimedCaption]) -> str:
    decimals = stamp_decimals(c.video_time for c in captions)
    return "mm:ss" + ("." + "s" * decimals if decimals else "")


_Entry = tuple[float, float, str, tuple[str, ...]]  # first and last time, caption text, faces


def caption_lines(captions: Sequence[TimedCaption]) -> list[str]:
    """One line a caption, '[mm:ss] "text" [faces: a, b]'; repeats in a row become one time range.

    Captions less than a second apart get the decimals that tell them apart ('[00:05.5]'), so
    that a citation names one caption; the citation check reads the same stamps.
    """
    decimals = stamp_decimals(c.video_time for c in captions)
    return [_line(*entry, decimals) for entry in _entries(captions)]


def _entries(captions: Sequence[TimedCaption]) -> list[_Entry]:
    entries: list[_Entry] = []
    prev_key = None
    for cap in sorted(captions, key=lambda c: c.video_time):
        text = " ".join(cap.text.split())
        if not text:
            continue
        key = (text.lower(), tuple(cap.faces))
        if key == prev_key:
            first = entries[-1]
            entries[-1] = (first[0], cap.video_time, first[2], first[3])
            continue
        prev_key = key
        # a caption of a clip is stamped with its span, [first-last]
        begin = cap.video_time if cap.start is None else min(cap.start, cap.video_time)
        entries.append((begin, cap.video_time, text, tuple(cap.faces)))
    return entries


def _fitted_line(entry: _Entry, max_tokens: int, count_tokens: Callable[[str], int], decimals: int = 0) -> str:
    """The entry's line within max_tokens: the caption cut before it is quoted, so its quote closes."""
    line = _line(*entry, decimals)
    if count_tokens(line) <= max_tokens:
        return line
    t0, t1, text, faces = entry
    room = max(4, max_tokens - count_tokens(_line(t0, t1, "", faces, decimals)))
    return _line(t0, t1, truncate(text, room, count_tokens), faces, decimals)


def _line(t0: float, t1: float, text: str, faces: tuple[str, ...], decimals: int = 0) -> str:
    a, b = format_video_time(t0, decimals), format_video_time(t1, decimals)
    stamp = f"[{a}]" if a == b else f"[{a}-{b}]"
    names = [f for f in faces if f]
    return f"{stamp} {quote_data(text)}" + (f" [faces: {', '.join(names)}]" if names else "")
