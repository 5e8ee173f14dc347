"""Tracing parts beside the tracker: the offline trace log and Langfuse delivery reporting."""
