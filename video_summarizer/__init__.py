"""The parts behind the real-time video summarizer's named modules.

``real_time_summarizer.py`` (the CLI), ``langfuse_tracker.py``, ``vlm_client_module.py``,
``llm_summarizer.py`` and ``trace_report.py`` import from here; nothing here imports them.
"""

__version__ = "0.4.0"
