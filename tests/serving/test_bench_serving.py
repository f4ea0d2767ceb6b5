"""benchmarks/bench_serving.py: end to end on a tiny export (it starts the service, loads it with both
phases and writes its figures; slow: a uvicorn process and a few seconds of load), and its open-loop
``--rate`` pacing against a stand-in service."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serving.exports import build_export

pytest.importorskip("aiohttp")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_serving.py"


@pytest.mark.slow
def test_bench_serving_reports_both_phases_without_errors(tmp_path):
    export = build_export(tmp_path, "text")
    out = tmp_path / "serving.json"
    command = [sys.executable, str(BENCH), str(export.directory), "--clients", "4", "--duration", "2"]
    command += ["--warmup", "0.5", "--add-share", "0.2", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    alone, mix = results["recommend"], results["mix"]
    assert alone["recommend"]["requests"] > 0 and alone["recommend"]["errors"] == 0
    assert alone["items"]["requests"] == 0
    assert mix["items"]["requests"] > 0 and mix["items"]["errors"] == 0 and mix["recommend"]["errors"] == 0
    # every add that succeeded was followed by its recommendation, which showed it (ties with earlier
    # copies of its text counted: the recommendation asks for one more item per other copy)
    assert mix["add_visible"]["requests"] == mix["items"]["requests"]
    assert mix["not_visible"] == 0
    assert 1 <= mix["added_item_rank"]["median"] <= mix["added_item_rank"]["max"]
    assert 0 <= mix["visible_behind_copies"] <= mix["items"]["requests"]
    assert 0 < alone["recommend"]["p50_ms"] <= alone["recommend"]["p99_ms"]
    assert "add_visible" in done.stdout.replace(" -> ", "_")
    # the export itself is left untouched: the service ran on a copy
    assert not (export.directory / "added").exists()


def load_bench():
    """benchmarks/bench_serving.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_clients(bench, clients: int, seconds: float, rate: float | None, service_s: float):
    """``clients`` of the bench's load against a stand-in service answering every request in
    ``service_s``; returns the phase."""
    test = bench.LoadTest.__new__(bench.LoadTest)

    async def recommend(phase, body):
        await asyncio.sleep(service_s)

    test.recommend = recommend
    phase = bench.Phase("recommend")

    async def main():
        until = time.perf_counter() + seconds
        per_client = rate / clients if rate else None
        await asyncio.gather(*(test.client(phase, [{}], c, 0.0, until, per_client) for c in range(clients)))

    asyncio.run(main())
    phase.seconds = seconds
    return phase


def test_rate_offers_poisson_starts_whatever_the_latency_and_reports_the_lag():
    bench = load_bench()
    # an open loop at 200 starts/s over 1 s from 4 clients: about 200 starts (Poisson: sd 14), each with a
    # lag, and lags short next to the 2 ms answers
    phase = run_clients(bench, 4, 1.0, 200.0, 0.002)
    assert 140 <= phase.starts <= 260 and len(phase.lags) == phase.starts
    assert bench.percentiles(phase.lags)["p50_ms"] < 2.0
    # a closed loop answers as fast as the service does: far more starts at 2 ms a request
    closed = run_clients(bench, 4, 1.0, None, 0.002)
    assert closed.starts > 1000 and not closed.lags
    # a service slower than the offered rate: the starts fall behind their times, and the lag says so
    slow = run_clients(bench, 2, 1.0, 200.0, 0.05)
    assert slow.starts <= 2 * 1.0 / 0.05 + 2
    assert bench.percentiles(slow.lags)["p99_ms"] > 300
