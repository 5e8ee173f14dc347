"""Watching a run: Prometheus metrics, the /healthz verdict and the token-guarded watch page."""
