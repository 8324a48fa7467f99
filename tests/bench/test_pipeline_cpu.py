"""The socket-free pipeline benchmark runs, and every query reaches both peers."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures import ROOT


def test_pipeline_benchmark_delivers_every_query_and_reports_each_stage() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/pipeline_cpu.py", "--queries", "3000", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # The script itself exits non-zero when fewer bytes arrive than were routed.
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["queries"] == 3000
    busy = result["stage_busy_us_per_query"]
    assert set(busy) == {"reader", "parser", "router", "connection", "catcher", "udp"}
    assert busy["router"] > 0 and busy["parser"] > 0
    assert result["cpu_us_per_query"] > 0


def test_pipeline_benchmark_rejects_a_bad_count() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/pipeline_cpu.py", "--queries", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--queries must be within" in done.stderr
