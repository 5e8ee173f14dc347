"""Summaries that cite their moments: check the ``[mm:ss]`` times a summary gives per sentence.

The summarizer is asked to end each sentence with the video times of the captions it rests
on, copied from the caption lines it was given (``[01:23]``, or a range ``[01:20-01:35]``
for a repeated caption or a caption of a clip). A caption of a clip covers its span: a time
inside it, or a range overlapping it, cites it. ``ground_summary`` splits the reply into sentences, resolves each
time to the captions it was given at that time, drops the times that match none, and returns
the cleaned text, the captions each sentence cites, and the share of sentences with at least
one valid citation: the ``llm_grounding`` score.

Times are read in the one format of ``timecodes.format_video_time`` (mm:ss, minutes past 59,
and ``mm:ss.f`` where captions less than a second apart need it): a stamp stands for the
span it names (``[00:05]`` the whole fifth second, ``[00:05.5]`` its tenth from 5.5 s).
A dropped citation inside a sentence goes with the words that led into it ("happens at
[99:99]." becomes "happens."; "(see [09:59])" goes whole; "from [00:05] to [09:59]" keeps
"from [00:05]"), so that the sentence still reads.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Sequence

from video_summarizer.timecodes import stamp_span_ms, time_ms

# One bracket of citations: "[01:23]", "[01:20-01:35]", "[01:23, 02:05]" (minutes may pass 59).
# The pattern is looser than the format (parse_video_time decides): a malformed time such as
# "[99:99]" or "[1:02:03]" is still a citation, dropped and counted, never left in the text.
_TIME = r"\d{1,6}(?::\d{1,2}){1,2}(?:\.\d+)?"
_ITEM = rf"{_TIME}(?:\s*[-–]\s*{_TIME})?"
CITATION = re.compile(rf"\[\s*({_ITEM}(?:\s*[,;]\s*{_ITEM})*)\s*\]")
_ITEM_RE = re.compile(rf"({_TIME})(?:\s*[-–]\s*({_TIME}))?")
# A sentence ends at . ! or ? followed by whitespace or the end, plus any citations right after it.
_SENTENCE = re.compile(
    rf"\S.*?(?:[.!?]+(?=[\s\[]|$)(?:\s*\[\s*{_ITEM}(?:\s*[,;]\s*{_ITEM})*\s*\])*|$)", re.S)

@dataclass(frozen=True)
class CitableCaption:
    """A caption the summary may cite: its time as the model saw it, and what to report."""

    seconds: float  # the time shown to the model as [mm:ss] (or [mm:ss.f])
    ref: dict  # what the JSON lists for a citation: frame, video_time, trace_id, ...
    start: float | None = None  # a clip's caption covers [start, seconds]; None: the one moment

    @property
    def first(self) -> float:
        """Where the caption's span starts (its own time for a still)."""
        return self.seconds if self.start is None else min(self.start, self.seconds)


@dataclass
class CitedSentence:
    """One summary sentence, its valid citations removed of invalid ones."""

    text: str
    cites: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The per-sentence shape of the summary JSON."""
        return {"text": self.text, "cites": self.cites, "dropped_citations": self.dropped}


@dataclass
class GroundedSummary:
    """A summary checked against its captions."""

    text: str  # the summary with invalid citations removed
    sentences: list[CitedSentence]
    dropped: int  # citations that matched no caption

    @property
    def grounded(self) -> int:
        """Sentences with at least one valid citation."""
        return sum(1 for s in self.sentences if s.cites)

    @property
    def grounding(self) -> float | None:
        """Share of sentences with a valid citation (None for an empty summary)."""
        return self.grounded / len(self.sentences) if self.sentences else None


def split_sentences(text: str) -> list[str]:
    """Sentences of a summary, each with the citations that follow its final punctuation."""
    return [m.group(0).strip() for m in _SENTENCE.finditer(" ".join(text.split())) if m.group(0).strip()]


def ground_summary(text: str, captions: Sequence[CitableCaption]) -> GroundedSummary:
    """Resolve every citation of text against captions; drop and count those that match none."""
    timed = sorted(((time_ms(c.seconds), n, c) for n, c in enumerate(captions)), key=lambda t: t[:2])
    times = [t for t, _, _ in timed]
    spans = [c for c in captions if c.start is not None and time_ms(c.first) < time_ms(c.seconds)]
    sentences: list[CitedSentence] = []
    dropped = 0
    for raw in split_sentences(text):
        sentence = CitedSentence(text="")

        def resolve(match: re.Match) -> str:
            nonlocal dropped
            kept = []
            for item in _ITEM_RE.finditer(match.group(1)):
                hits = _captions_at(item, timed, times, spans)
                if hits:
                    kept.append(item.group(0))
                    sentence.cites.extend(c.ref for c in hits if c.ref not in sentence.cites)
                else:
                    sentence.dropped.append(item.group(0))
                    dropped += 1
            return f"[{', '.join(kept)}]" if kept else _GONE

        cleaned = CITATION.sub(resolve, raw)
        sentence.text = mend_sentence(cleaned, raw) if _GONE in cleaned else cleaned.strip()
        if any(ch.isalnum() for ch in sentence.text):
            sentences.append(sentence)
    return GroundedSummary(" ".join(s.text for s in sentences), sentences, dropped)


def _captions_at(item: re.Match, timed: list[tuple[int, int, CitableCaption]],
                 times: list[int], spans: Sequence[CitableCaption] = ()) -> list[CitableCaption]:
    """The captions a time (or range) cites: those stamped in it, and the clips whose span it overlaps."""
    # A time that is not what format_video_time writes matches nothing, so it is dropped.
    try:
        start, first_end = stamp_span_ms(item.group(1))
        end = max(first_end, stamp_span_ms(item.group(2))[1] if item.group(2) else first_end)
    except ValueError:
        return []
    lo, hi = bisect_left(times, start), bisect_right(times, end)
    hits = [c for _, _, c in timed[lo:hi]]
    # A stamp names its first to last millisecond ("[00:05]": 5000-5999); a clip covers [first, seconds].
    hits += [c for c in spans if time_ms(c.first) <= end and start <= time_ms(c.seconds) and c not in hits]
    return sorted(hits, key=lambda c: c.seconds)


# Where a dropped citation was, while the sentence is mended; no summary contains it.
_GONE = "\x00"
_K = r"\[[^\[\]]*\]"  # a citation that stays
_TO = r"(?:to|until|till|through|[-–])"  # the far end of a range in words
# Words that only lead into a time: "at [..]", "at around [..]", "starting at [..]".
_INTO = (r"(?:\b(?:starting|beginning|ending|again)\s+)?"
         r"(?:\b(?:at|around|near|by|from|until|till|after|before|in|on|during|since|about|"
         r"circa|approximately|roughly)\s+){1,2}")
# (pattern, replacement), in order: ranges before lists ("between A and B"), lists and lead-in
# words before the bare citation goes.
_AND = r"(?:\b(?:and|or|but|then|and\s+then)\b|&)"  # what joins a citation to the one before it
_MEND = [(re.compile(p, re.I), r) for p, r in (
    # a list of dropped ones is one: "[A] and at [B]", "[A], [B] and [C]"
    (rf"{_GONE}(?:\s*[,;]?\s*(?:{_AND}\s+)?(?:{_INTO})?{_GONE})+", _GONE),
    (rf"(?<=\])\s*{_GONE}|{_GONE}\s*(?=\[)", ""),
    (rf"\bfrom\s+({_K})\s*{_TO}\s*{_GONE}", r"from \1"),
    (rf"\bfrom\s+{_GONE}\s*{_TO}\s*({_K})", r"until \1"),
    (rf"\bbetween\s+({_K})\s+and\s+{_GONE}|\bbetween\s+{_GONE}\s+and\s+({_K})", r"at \1\2"),
    (rf"\bfrom\s+{_GONE}\s*{_TO}\s*{_GONE}|\bbetween\s+{_GONE}\s+and\s+{_GONE}", _GONE),
    (rf"({_K})\s*{_TO}\s*{_GONE}|{_GONE}\s*{_TO}\s*({_K})", r"\1\2"),
    (rf"({_K})\s*(?:,\s*)?(?:(?:and|or|&)\s+)?(?:{_INTO})?{_GONE}", r"\1"),
    (rf"(?:{_INTO})?{_GONE}\s*(?:,\s*)?(?:(?:and|or|&)\s+)?(?=(?:{_INTO})?{_K})", ""),
    (rf"[,;]?\s*\b(?:see(?:\s+also)?|cf\.?|e\.g\.,?)\s+{_GONE}", _GONE),
    # "walked and [..]." cited as if the time were a thing: the "and" goes with it
    (rf"[,;]?\s*{_AND}\s+(?:{_INTO})?{_GONE}(?=\s*(?:[.!?]|$))", _GONE),
    (rf"{_INTO}{_GONE}", _GONE),
    (rf"\(\s*{_GONE}\s*\)", ""),
    (rf"\s*{_GONE}", ""),
    (r"\(\s*\)", ""),
    (r"\(\s*[,;]\s*", "("),
    (r"\s*[,;]\s*\)", ")"),
    (r"\s{2,}", " "),
    (r"\s+([.!?,;:)])", r"\1"),
    (rf"[,;]?\s+{_AND}(?=[.!?]+$)", ""),  # "walked [..], and." left a conjunction at the end
    (r"\(\s+", "("),
    (r"[,;:]+(?=[.!?])", ""),
    (r"([,;])[,;]+", r"\1"),
    (r"^[\s,;:.]+", ""),
)]


def mend_sentence(cleaned: str, raw: str) -> str:
    """A sentence whose dropped citations (marked) are removed with the words that led into
    them ("at", "see", "and" of a list, one end of a range), so that it still reads."""
    for pattern, replacement in _MEND:
        cleaned = pattern.sub(replacement, cleaned)
    cleaned = cleaned.strip()
    # "At [..] he waves." loses its first word: the sentence still starts with a capital.
    if cleaned and raw.lstrip()[:1].isupper() and cleaned[0].islower():
        cleaned = cleaned[0].upper() + cleaned[1:]
    return cleaned
