"""The benchmark scripts run end to end (their figures are reported, never asserted, in tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sandbox_benchmark_runs_and_prints_its_table() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "sandbox.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for row in ("trivial cell, warm: median", "fresh episode", "CPU-heavy cell", "python -c"):
        assert row in result.stdout


def test_retrieval_benchmark_runs_and_prints_its_table() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "retrieval.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    for row in ("dense: search(32 queries, 3)", "32 envs, shared BatchingRetriever", "32 envs, HTTP server", "cache hit"):
        assert row in result.stdout
