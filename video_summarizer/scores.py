"""The integration guide's quality scores as plain functions (no Langfuse here).

Score names are the dashboards' contract: ``vlm_success``, ``vlm_latency_score``,
``vlm_quality``, ``llm_success``, ``llm_processing_score``, ``llm_quality``,
``overall_quality``; and ``llm_grounding`` (the share of summary sentences that cite a
caption, from citations.py) beside the LLM scores. Every score is a float in 0..1, higher is
better.

- latency: ``max(0, min(1, 1 - ms / worst_ms))`` with ``worst_ms`` 5000 by default;
- caption quality: ``min(1, len(text) / 100)`` (100 characters = perfect);
- summary quality (our definition, the guide leaves it open): a summary should say
  something (at least 200 characters earns the length half) in several distinct words
  (lexical variety, unique/total words, earns the other half), because a summarizer that
  loops on one phrase produces long but useless text:
  ``0.5 * min(1, len / 200) + 0.5 * min(1, unique_words / max(1, words))``, 0 when empty;
- overall: the mean of success, latency and quality.

A failed call scores success 0 and quality 0 whatever text it returned.
"""
from __future__ import annotations

import math
import re

from video_summarizer import defaults as D

VLM_SCORE_NAMES = ("vlm_success", "vlm_latency_score", "vlm_quality")
LLM_SCORE_NAMES = ("llm_success", "llm_processing_score", "llm_quality")
OVERALL_SCORE_NAME = "overall_quality"
# Logged beside the LLM scores on summary generations: the share of sentences citing a caption.
GROUNDING_SCORE_NAME = "llm_grounding"
ALL_SCORE_NAMES = VLM_SCORE_NAMES + LLM_SCORE_NAMES + (OVERALL_SCORE_NAME,)

DEFAULT_WORST_MS = D.VLM_WORST_MS
_WORD = re.compile(r"\w+")


def _clamp01(value: float) -> float:
    return max(0.0, min(1.0, value))


def latency_score(ms: float | None, worst_ms: float = DEFAULT_WORST_MS) -> float:
    """1 for instant, 0 at or beyond worst_ms (linear between); 0 when unknown."""
    if worst_ms <= 0:
        raise ValueError(f"worst_ms must be positive, got {worst_ms}")
    if ms is None or not math.isfinite(ms):
        return 0.0
    return _clamp01(1.0 - ms / worst_ms)


def caption_quality(text: str | None) -> float:
    """Caption length over 100 characters, capped at 1 (surrounding blanks ignored)."""
    if not text:
        return 0.0
    return min(1.0, len(text.strip()) / 100.0)


def summary_quality(text: str | None) -> float:
    """Half for length (200 chars = full), half for lexical variety (unique/total words)."""
    if not text or not text.strip():
        return 0.0
    words = [w.lower() for w in _WORD.findall(text)]
    variety = len(set(words)) / len(words) if words else 0.0
    return _clamp01(0.5 * min(1.0, len(text.strip()) / 200.0) + 0.5 * variety)


def overall_quality(success: float, latency: float, quality: float) -> float:
    """The mean of the three scores."""
    return (float(success) + float(latency) + float(quality)) / 3.0


def _stage_scores(result, worst_ms: float, names: tuple[str, str, str], quality) -> dict[str, float]:
    """success / latency / quality of one model call; a failed call scores 0 for quality."""
    ok = bool(getattr(result, "success", False))
    success, latency, quality_name = names
    return {
        success: 1.0 if ok else 0.0,
        latency: latency_score(getattr(result, "latency_ms", None), worst_ms),
        quality_name: quality(getattr(result, "text", None)) if ok else 0.0,
    }


def vlm_scores(result, worst_ms: float = DEFAULT_WORST_MS) -> dict[str, float]:
    """vlm_success / vlm_latency_score / vlm_quality for a GenerationResult-like object."""
    return _stage_scores(result, worst_ms, ("vlm_success", "vlm_latency_score", "vlm_quality"), caption_quality)


def llm_scores(result, worst_ms: float = DEFAULT_WORST_MS) -> dict[str, float]:
    """llm_success / llm_processing_score / llm_quality for a GenerationResult-like object."""
    return _stage_scores(result, worst_ms, ("llm_success", "llm_processing_score", "llm_quality"), summary_quality)


def overall_from(scores: dict[str, float]) -> float:
    """overall_quality from a vlm_scores() or llm_scores() dict (success, latency, quality)."""
    for names in (VLM_SCORE_NAMES, LLM_SCORE_NAMES):
        if all(n in scores for n in names):
            return overall_quality(*(scores[n] for n in names))
    raise KeyError(f"need the three scores of {VLM_SCORE_NAMES} or {LLM_SCORE_NAMES}")
