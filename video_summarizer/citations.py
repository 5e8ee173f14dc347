"""Summaries that cite their moments: check the ``[mm:ss]`` times a summary gives per sentence.

The summarizer is asked to end each sentence with the video times of the captions it rests
on, copied from the caption lines it was given (``[01:23]``, or a range ``[01:20-01:35]``
for a repeated caption). ``ground_summary`` splits the reply into sentences, resolves each
time to the captions shown at that time, drops the times that match no caption, and returns
the cleaned text, the captions each sentence cites, and the share of sentences with at least
one valid citation: the ``llm_grounding`` score.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

# One bracket of citations: "[01:23]", "[01:20-01:35]", "[01:23, 02:05]" (minutes may pass 59).
_TIME = r"\d{1,4}:[0-5]\d"
_ITEM = rf"{_TIME}(?:\s*[-–]\s*{_TIME})?"
CITATION = re.compile(rf"\[\s*({_ITEM}(?:\s*[,;]\s*{_ITEM})*)\s*\]")
_ITEM_RE = re.compile(rf"({_TIME})(?:\s*[-–]\s*({_TIME}))?")
# A sentence ends at . ! or ? followed by whitespace or the end, plus any citations right after it.
_SENTENCE = re.compile(
    rf"\S.*?(?:[.!?]+(?=[\s\[]|$)(?:\s*\[\s*{_ITEM}(?:\s*[,;]\s*{_ITEM})*\s*\])*|$)", re.S)


@dataclass(frozen=True)
class CitableCaption:
    """A caption the summary may cite: its time as the model saw it, and what to report."""

    seconds: float  # the time shown to the model as [mm:ss]
    ref: dict  # what the JSON lists for a citation: frame, video_time, trace_id, ...


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


def parse_time(stamp: str) -> int:
    """'mm:ss' to seconds."""
    minutes, seconds = stamp.split(":")
    return int(minutes) * 60 + int(seconds)


def split_sentences(text: str) -> list[str]:
    """Sentences of a summary, each with the citations that follow its final punctuation."""
    return [m.group(0).strip() for m in _SENTENCE.finditer(" ".join(text.split())) if m.group(0).strip()]


def ground_summary(text: str, captions: Sequence[CitableCaption]) -> GroundedSummary:
    """Resolve every citation of text against captions; drop and count those that match none."""
    by_second: dict[int, list[CitableCaption]] = {}
    for cap in captions:
        by_second.setdefault(int(max(0.0, cap.seconds)), []).append(cap)
    sentences: list[CitedSentence] = []
    dropped = 0
    for raw in split_sentences(text):
        sentence = CitedSentence(text="")

        def resolve(match: re.Match) -> str:
            nonlocal dropped
            kept = []
            for item in _ITEM_RE.finditer(match.group(1)):
                start = parse_time(item.group(1))
                end = parse_time(item.group(2)) if item.group(2) else start
                hits = [c for s in range(start, max(start, end) + 1) for c in by_second.get(s, ())]
                if hits:
                    kept.append(item.group(0))
                    sentence.cites.extend(c.ref for c in hits if c.ref not in sentence.cites)
                else:
                    sentence.dropped.append(item.group(0))
                    dropped += 1
            return f"[{', '.join(kept)}]" if kept else ""

        cleaned = CITATION.sub(resolve, raw)
        # Removing a citation can leave "waves ." or a double space: tidy what we touched only.
        sentence.text = re.sub(r"\s+([.!?,;])", r"\1", re.sub(r"\s{2,}", " ", cleaned)).strip()
        if sentence.text:
            sentences.append(sentence)
    return GroundedSummary(" ".join(s.text for s in sentences), sentences, dropped)
