"""Assembly of a run: the stages built from a command's options, with the named classes the CLI hands in.

Imports flow one way: the CLI imports the named modules (langfuse_tracker, vlm_client_module,
llm_summarizer, langfuse_datasets) and hands their classes in a ``Backends``; nothing in the
package imports those modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Backends:
    """The named classes the CLI hands the package (imports flow CLI -> named modules -> package)."""

    tracker: Callable[..., Any]  # langfuse_tracker.LangfuseTracker
    caption: Callable[..., Any]  # vlm_client_module.VLMClient (LocalVLM is in the package)
    summary: Callable[..., Any]  # llm_summarizer.LLMSummarizer
    dataset: Callable[..., Any] | None = None  # langfuse_datasets.LangfuseDataset
