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


def test_run_all_starts_and_prints_one_table() -> None:
    """Only run_all's own measurement (a rollout's peak memory), at smoke size: the benchmarks it combines are
    checked above or are too slow for CI; this checks that it starts and prints the combined table."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--only", "memory"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    for text in ("benchmark  measurement", "4-env rollout: peak RSS", "4-env rollout: peak PSS", "1-env rollout"):
        assert text in result.stdout


def test_soak_starts_and_finds_nothing_left_after_close() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # exits 1 when a process or temp dir leaked
    for text in ("RSS start", "PSS start", "sandbox processes", "steps/s", "0 live child processes, 0 zombies"):
        assert text in result.stdout


def test_rl_benchmark_runs_its_pipeline_at_smoke_size(tmp_path: Path) -> None:
    """Teacher data, a 2-step SFT, a 1-step GRPO run and the before/after table (the figures mean nothing here)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rl.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gain (paired, ± s.e.)" in result.stdout and "success before" in result.stdout
    assert (tmp_path / "rl-seed0" / "rl_result.json").is_file()


def test_envs_benchmark_compares_shared_and_own_zygotes() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "envs.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for row in ("shared ", "own ", "per extra env", "memory per extra env:"):
        assert row in result.stdout
