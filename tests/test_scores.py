"""The guide's score formulas (scores.py) on hand-computed values."""
from __future__ import annotations

import pytest

from video_summarizer.results import GenerationResult
from video_summarizer.scores import (
    ALL_SCORE_NAMES,
    caption_quality,
    latency_score,
    llm_scores,
    overall_from,
    overall_quality,
    summary_quality,
    vlm_scores,
)


def result(text: str, ok: bool = True, seconds: float = 1.25) -> GenerationResult:
    return GenerationResult(text=text, success=ok, model="qwen3", start_time=100.0,
                            end_time=100.0 + seconds, completion_start_time=100.2 if ok else None,
                            error=None if ok else "timeout", error_kind=None if ok else "timeout")


def test_score_names_are_the_dashboards_contract():
    assert ALL_SCORE_NAMES == ("vlm_success", "vlm_latency_score", "vlm_quality", "llm_success",
                               "llm_processing_score", "llm_quality", "overall_quality")


@pytest.mark.parametrize("ms, expected", [(0, 1.0), (1250, 0.75), (2500, 0.5), (5000, 0.0),
                                          (9000, 0.0), (-10, 1.0), (None, 0.0),
                                          (float("nan"), 0.0)])
def test_latency_score_guide_formula(ms, expected):
    assert latency_score(ms) == pytest.approx(expected)


def test_latency_worst_is_configurable():
    assert latency_score(1000, worst_ms=2000) == pytest.approx(0.5)
    assert latency_score(1000, worst_ms=20000) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        latency_score(10, worst_ms=0)


def test_caption_quality_is_length_over_100_capped():
    assert caption_quality("") == 0.0 and caption_quality(None) == 0.0
    assert caption_quality("x" * 50) == pytest.approx(0.5)
    assert caption_quality("  " + "x" * 25 + "  ") == pytest.approx(0.25)
    assert caption_quality("x" * 150) == 1.0


def test_summary_quality_rewards_length_and_variety():
    assert summary_quality("") == 0.0 and summary_quality("   ") == 0.0
    varied = ("A man in a grey suit speaks at a podium while two people behind him take notes; "
              "later the camera cuts to a crowd holding signs outside a brick building at dusk.")
    # 160 characters, 32 words of which 27 distinct ("a", "at", "the" repeat).
    assert summary_quality(varied) == pytest.approx(0.5 * 160 / 200 + 0.5 * 27 / 32)
    looping = "the man the man " * 13  # 208 chars, 2 distinct words out of 52
    assert summary_quality(looping) == pytest.approx(0.5 + 0.5 * 2 / 52)
    assert summary_quality("ok") == pytest.approx(0.5 * 2 / 200 + 0.5)
    assert summary_quality(varied) > summary_quality(looping)


def test_overall_is_the_mean():
    assert overall_quality(1.0, 0.75, 0.5) == pytest.approx(0.75)
    assert overall_quality(0, 0, 0) == 0.0


def test_vlm_scores_from_a_result():
    scores = vlm_scores(result("x" * 40, seconds=1.25))
    assert scores == pytest.approx({"vlm_success": 1.0, "vlm_latency_score": 0.75,
                                    "vlm_quality": 0.4})
    assert overall_from(scores) == pytest.approx((1 + 0.75 + 0.4) / 3)
    assert vlm_scores(result("x", seconds=1.0), worst_ms=2000)["vlm_latency_score"] == 0.5


def test_failures_score_zero_success_and_quality():
    failed = vlm_scores(result("partial caption text", ok=False, seconds=4.0))
    assert failed == pytest.approx({"vlm_success": 0.0, "vlm_latency_score": 0.2,
                                    "vlm_quality": 0.0})
    llm = llm_scores(result("some summary", ok=False, seconds=0.5))
    assert llm == pytest.approx({"llm_success": 0.0, "llm_processing_score": 0.9,
                                 "llm_quality": 0.0})


def test_llm_scores_from_a_result():
    scores = llm_scores(result("two words", seconds=2.5), worst_ms=10000)
    assert scores == pytest.approx({"llm_success": 1.0, "llm_processing_score": 0.75,
                                    "llm_quality": 0.5 * 9 / 200 + 0.5})
    assert overall_from(scores) == pytest.approx((1 + 0.75 + scores["llm_quality"]) / 3)
    with pytest.raises(KeyError):
        overall_from({"vlm_success": 1.0})
