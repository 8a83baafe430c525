"""Settings shared by every HTTP client that retries (the retrieval client, the OpenAI-compatible policy)."""

from __future__ import annotations


def check_retry_settings(*, timeout_s: float, retries: int, backoff_s: float, max_backoff_s: float) -> None:
    """Refuse retry settings that cannot work, naming the bad value."""
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, got {retries!r}")
    if not (isinstance(backoff_s, (int, float)) and backoff_s >= 0):
        raise ValueError(f"backoff_s must be a non-negative number of seconds, got {backoff_s!r}")
    if not (isinstance(max_backoff_s, (int, float)) and max_backoff_s >= backoff_s):
        raise ValueError(f"max_backoff_s must be a number >= backoff_s ({backoff_s}), got {max_backoff_s!r}")
