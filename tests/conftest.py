"""Shared fixtures: where the shared test data lives, offline model hub settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
