"""Shared fixtures: where the shared test data lives, offline model hub settings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.clips import ClipSet

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SUMMARIZER_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder ($SUMMARIZER_TEST_DATA, default ../shared/data); skip if absent."""
    if not (DATA_DIR / "README.md").is_file():
        pytest.skip(f"test data folder not found at {DATA_DIR} (set SUMMARIZER_TEST_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> ClipSet:
    """Generated test clips (tests/clips.py), each written once per test session into a temporary folder."""
    from tests.clips import ClipSet

    return ClipSet(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Mistral folder (tests/tiny_models.py), built once per test session; read only."""
    from tests.tiny_models import build_tiny_mistral

    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random sentence-transformers BERT (tests/tiny_models.py), built once per test session; read only."""
    from tests.tiny_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


SCENE = "A small scene with a figure walking across it."


@pytest.fixture(scope="session")
def scene_vlm():
    """One fake OpenAI server for the session that captions every frame SCENE (tests that count its
    requests use a server of their own)."""
    from tests.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(reply_fn=lambda body: SCENE) as srv:
        yield srv
