"""The OPD benchmark runs end to end at smoke size (its figures are reported, never asserted, in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_quick_benchmark(out: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """``benchmarks/opd.py --quick --out OUT`` as a user runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "opd.py"), "--quick", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=out,
    )


def test_opd_benchmark_runs_its_pipeline_at_smoke_size(tmp_path: Path) -> None:
    """Expert data, a teacher and a student of a few SFT steps, one OPD step and its time-matched SFT run, the
    held-out evaluations, the table and the JSON (the figures mean nothing here)."""
    result = run_quick_benchmark(tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in ("success vs student (paired, ± s.e.)", "reverse KL", "continued SFT", "tasks OPD better / worse"):
        assert text in result.stdout
    report = json.loads((tmp_path / "opd_benchmark.json").read_text(encoding="utf-8"))
    assert [(entry["arm"], entry["seed"]) for entry in report["arms"]] == [
        ("student (start)", None),
        ("teacher", None),
        ("OPD", 0),
        ("continued SFT", 0),
    ]
    assert report["means"][0]["arm"] == "OPD" and report["arms"][2]["reverse_kl"]
    assert (tmp_path / "opd-seed0" / "opd_result.json").is_file()


def test_opd_benchmark_refuses_a_directory_of_other_sizes(tmp_path: Path) -> None:
    """A working directory is reused stage by stage, so one run's teacher must never stand in for another's."""
    (tmp_path / "opd_benchmark_sizes.json").write_text('{"sizes": {}}\n', encoding="utf-8")
    result = run_quick_benchmark(tmp_path, timeout=300)
    assert result.returncode == 1
    assert "holds a benchmark run of other sizes" in result.stderr
