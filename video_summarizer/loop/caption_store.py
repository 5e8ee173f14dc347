"""One source's captions and summaries, bounded: a live run lasts for weeks."""
from __future__ import annotations

import threading
from typing import Sequence

from video_summarizer.citations import CitableCaption, GroundedSummary, ground_summary
from video_summarizer.results import TimedCaption

# Keep the newest captions and summaries for the final document only.
MAX_KEPT_CAPTIONS = 5000
MAX_KEPT_SUMMARIES = 500


class CaptionStore:
    """One source's captions: the window not yet summarized, what a summary may cite, the events for the document."""

    def __init__(self, *, max_kept: int = MAX_KEPT_CAPTIONS) -> None:
        self.max_kept = max_kept
        self._lock = threading.Lock()
        self._window: dict[int, TimedCaption] = {}
        self._citable: dict[int, CitableCaption] = {}  # the window's captions, as citations name them
        self._events: dict[int, dict] = {}
        self._last_summarized_seq = -1

    def add(self, seq: int, caption: TimedCaption, event: dict, citable: CitableCaption) -> None:
        """Keep a frame's caption for the next summary window and its event for the document."""
        with self._lock:
            self._window[seq] = caption
            self._citable[seq] = citable
            self._events[seq] = event
            if len(self._events) > self.max_kept:  # a month on a camera stays bounded
                del self._events[min(self._events)]

    def take_window(self, upto_seq: int | None) -> tuple[list[TimedCaption], list[CitableCaption]]:
        """The captions of the next window (up to that frame, or all), and each as a citation names it."""
        with self._lock:
            seqs = sorted(s for s in self._window
                          if s > self._last_summarized_seq and (upto_seq is None or s <= upto_seq))
            if seqs:
                self._last_summarized_seq = seqs[-1] if upto_seq is None else upto_seq
            return [self._window.pop(s) for s in seqs], [self._citable.pop(s) for s in seqs]

    def events(self) -> list[dict]:
        """The kept caption events, in frame order."""
        with self._lock:
            return [self._events[s] for s in sorted(self._events)]


class SummaryLog:
    """The rolling summary, its sentences, what it cites, and the newest summary records."""

    def __init__(self, *, max_kept: int = MAX_KEPT_SUMMARIES) -> None:
        self.max_kept = max_kept
        self.rolling: str | None = None  # the newest summary, its invalid citations dropped
        self.sentences: list[dict] | None = None  # those of `rolling`
        self.records: list[dict] = []
        self._cites: list[CitableCaption] = []  # what `rolling` cites: its next prompt shows them

    def ground(self, text: str, window: Sequence[CitableCaption]) -> GroundedSummary:
        """The summary's citations checked against what the model was given: the captions of its
        window and those the summary so far cites; what it cites is carried to the next one."""
        pool = self._cites + list(window)
        grounded = ground_summary(text, pool)
        cited = [ref for sentence in grounded.sentences for ref in sentence.cites]
        self._cites = [c for c in pool if c.ref in cited]
        return grounded

    def add(self, record: dict, text: str, sentences: list[dict]) -> None:
        """A summary that worked: the next prompt's rolling summary, and its record for the document."""
        self.rolling, self.sentences = text, sentences
        self.records.append(record)
        del self.records[:-self.max_kept]
