"""benchmarks/bench_serving.py end to end, on a tiny export: it starts the service, loads it with both
phases and writes its figures (slow: a uvicorn process and a few seconds of load)."""

from __future__ import annotations

import json
import subprocess
import sys
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
