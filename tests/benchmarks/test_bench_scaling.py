"""benchmarks/bench_scaling.py: the log generator, the slope fits and flags, the sweep's cap handling and
one tiny end-to-end run (two preparation processes, then one stopped at its time cap)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_scaling  # noqa: E402
import scaling_report  # noqa: E402
import scaling_workload  # noqa: E402


def test_generated_log_covers_every_item_with_zipf_popularity_and_the_mean_length():
    # 80,000 interactions over 20,000 items: Zipf alone would leave thousands of tail items unseen
    spec = scaling_workload.LogSpec(n_users=4000, n_items=20_000, seed=3)
    users, items, stamps = scaling_workload.generate_log(spec)
    lengths = np.bincount(users, minlength=spec.n_users)
    assert lengths.min() >= spec.min_length
    assert abs(lengths.mean() - spec.mean_length) < 0.5
    counts = np.bincount(items, minlength=spec.n_items)
    assert counts.min() >= 1  # every item occurs: the prepared catalogue has the requested size
    ranked = np.sort(counts)[::-1]
    # Zipf with exponent 1: the most popular item about 10 times the 10th (sampling noise allowed)
    assert 6 < ranked[0] / ranked[9] < 15
    # chronological within each user, users in file order
    same_user = users[1:] == users[:-1]
    assert (np.diff(stamps)[same_user] > 0).all()
    again = scaling_workload.generate_log(spec)
    assert all(np.array_equal(a, b) for a, b in zip((users, items, stamps), again))


def test_generator_refuses_a_log_too_small_to_cover_the_catalogue():
    with pytest.raises(ValueError, match="fewer than the 1000 items"):
        scaling_workload.generate_log(scaling_workload.LogSpec(n_users=10, n_items=1000))


def test_fit_slope_recovers_a_power_law():
    sizes = [1e3, 1e4, 1e5]
    assert scaling_report.fit_slope(sizes, [3 * s**1.5 for s in sizes]) == pytest.approx(1.5)
    assert scaling_report.fit_slope([1e3], [1.0]) is None


def _points(stage, axis, exponent, **extra):
    return [{"axis": axis, "size": s, "n_users": s, "n_items": 10_000, "stage": stage, "status": "ok",
             "seconds": 2 * 0.1 * s**exponent, "cpu_seconds": 0.1 * s**exponent, "cap": 600, **extra}
            for s in (1e3, 1e4, 1e5)]  # fmt: skip


def test_a_stage_growing_faster_than_its_work_is_flagged_and_a_linear_one_is_not():
    rows = scaling_report.slopes(_points("evaluate", "users", 2.0) + _points("prepare", "users", 1.0))
    by_stage = {(r["measure"], r["stage"]): r for r in rows}
    assert by_stage[("cpu seconds", "evaluate")]["fitted"] == pytest.approx(2.0)
    assert "fitted slope 2.00 > 1.00" in by_stage[("cpu seconds", "evaluate")]["flag"]
    assert by_stage[("cpu seconds", "prepare")]["flag"] == ""
    # wall time counts the other processes of a shared machine: shown, never flagged
    assert by_stage[("wall seconds", "evaluate")]["fitted"] == pytest.approx(2.0)
    assert by_stage[("wall seconds", "evaluate")]["flag"] == ""


def test_times_too_short_to_measure_are_left_out_of_the_fit():
    points = _points("prepare", "users", 1.0)
    points[0]["cpu_seconds"] = 0.01  # a start-up-sized time, 100 times below the line
    (row,) = [r for r in scaling_report.slopes(points) if r["measure"] == "cpu seconds"]
    assert row["sizes"] == [1e4, 1e5]
    assert row["fitted"] == pytest.approx(1.0)


def test_memory_slope_fits_what_the_stage_added_and_flags_quadratic_growth():
    points = _points("evaluate", "items", 1.0)
    for point in points:  # 300 MiB of imports, then a float64 per user x item: quadratic in the axis
        added = 8 * point["size"] ** 2 / 2**20
        point.update(peak_mb=300 + added, added_mb=added)
    memory = [r for r in scaling_report.slopes(points) if r["measure"] == "peak memory"]
    assert memory[0]["fitted"] == pytest.approx(2.0, abs=0.01)
    assert memory[0]["flag"]


def test_epoch_on_the_items_axis_is_held_to_its_measured_distinct_items():
    points = _points("morec-epoch", "items", 0.5, steps=10)
    for point, distinct in zip(points, (100, 1000, 10_000)):
        point["distinct_items_per_step"] = distinct  # work grows with slope 1: a slope of 0.5 is fine
    (row,) = [r for r in scaling_report.slopes(points) if r["measure"] == "cpu seconds"]
    assert row["expected"] == pytest.approx(1.0)
    assert row["flag"] == ""


def _args(tmp_path, **overrides):
    values = {"axes": ["users"], "sizes": [1000, 10_000, 100_000], "fixed_users": 100, "fixed_items": 100,
              "workers": ["prepare", "evaluate"], "minilm_max": 0, "max_seconds": 5.0, "batch_size": 8,
              "max_steps": 0, "threads": 1, "nice": 0, "nice_from": 10**9, "out": tmp_path}  # fmt: skip
    return argparse.Namespace(**{**values, **overrides})


def test_sweep_reports_a_point_over_the_cap_and_skips_the_larger_sizes(tmp_path, monkeypatch):
    calls = []

    def fake_worker(args, worker, users, items, niceness):
        calls.append((worker, users))
        if worker == "evaluate" and users >= 10_000:
            return {"status": "over-cap", "records": [], "wall": 5.0, "stderr": ""}
        record = {"stage": bench_scaling.WORKERS[worker][0], "seconds": 0.1, "peak_mb": 300.0}
        return {"status": "ok", "records": [record], "wall": 1.0, "stderr": ""}

    monkeypatch.setattr(bench_scaling, "run_worker", fake_worker)
    points: list[dict] = []
    bench_scaling.sweep(_args(tmp_path), points)
    status = {(p["stage"], p["size"]): p["status"] for p in points}
    assert status[("evaluate", 10_000)] == "over-cap"
    assert status[("evaluate", 100_000)] == "skipped"  # not run: a smaller size was over the cap
    assert status[("prepare", 100_000)] == "ok"
    assert ("evaluate", 100_000) not in calls
    table = scaling_report.markdown(points)
    assert "> 5 (cap)" in table and "skipped" in table
    # a second sweep keeps every stored point and runs nothing again
    calls.clear()
    bench_scaling.sweep(_args(tmp_path), points)
    assert calls == []


def _command(tmp_path, name, *extra):
    return [sys.executable, str(BENCHMARKS / "bench_scaling.py"), "--axes", "users", "--sizes",
            "300,600", "--fixed-items", "200", "--workers", "prepare", "--out", str(tmp_path / name),
            *extra]  # fmt: skip


def test_a_process_over_the_cap_is_stopped_reported_and_the_larger_size_skipped(tmp_path):
    pytest.importorskip("matplotlib")
    command = _command(tmp_path, "capped", "--max-seconds", "0.5")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = json.loads((tmp_path / "capped" / "points.json").read_text())["points"]
    assert [(p["size"], p["status"]) for p in stored] == [(300, "over-cap"), (600, "skipped")]
    assert "> 0 (cap)" in (tmp_path / "capped" / "scaling.md").read_text()


def test_stages_of_a_size_whose_preparation_was_over_the_cap_are_skipped(tmp_path, monkeypatch):
    def fake_worker(args, worker, users, items, niceness):
        if worker == "prepare" and users >= 10_000:
            return {"status": "over-cap", "records": [], "wall": 5.0, "stderr": ""}
        record = {"stage": bench_scaling.WORKERS[worker][0], "seconds": 0.1, "peak_mb": 300.0}
        return {"status": "ok", "records": [record], "wall": 1.0, "stderr": ""}

    monkeypatch.setattr(bench_scaling, "run_worker", fake_worker)
    points: list[dict] = []
    bench_scaling.sweep(_args(tmp_path), points)
    status = {(p["stage"], p["size"]): p["status"] for p in points}
    assert status[("evaluate", 1000)] == "ok" and status[("prepare", 10_000)] == "over-cap"
    assert status[("evaluate", 10_000)] == "skipped" and status[("evaluate", 100_000)] == "skipped"


def test_a_failed_process_keeps_its_error_and_stops_the_larger_sizes(tmp_path, monkeypatch):
    def fake_worker(args, worker, users, items, niceness):
        if worker == "evaluate" and users >= 10_000:
            return {"status": "failed", "records": [], "wall": 1.0, "stderr": "Traceback...\nMemoryError"}
        record = {"stage": bench_scaling.WORKERS[worker][0], "seconds": 0.1, "peak_mb": 300.0}
        return {"status": "ok", "records": [record], "wall": 1.0, "stderr": ""}

    monkeypatch.setattr(bench_scaling, "run_worker", fake_worker)
    points: list[dict] = []
    bench_scaling.sweep(_args(tmp_path), points)
    failed = next(p for p in points if (p["stage"], p["size"]) == ("evaluate", 10_000))
    assert failed["status"] == "failed" and failed["error"].endswith("MemoryError")
    stored = json.loads((tmp_path / "points.json").read_text())["points"]
    assert {(p["stage"], p["size"]): p["status"] for p in stored}[("evaluate", 100_000)] == "skipped"


def test_a_process_that_exits_cleanly_without_a_figure_has_failed(tmp_path, monkeypatch):
    def silent(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="a log line\n", stderr="")

    monkeypatch.setattr(bench_scaling.subprocess, "run", silent)
    result = bench_scaling.run_worker(_args(tmp_path), "prepare", 100, 100, niceness=0)
    assert result["status"] == "failed" and result["records"] == []


def test_a_stage_run_alone_prepares_its_data_before_the_clock(tmp_path, capsys):
    spec = scaling_workload.LogSpec(n_users=300, n_items=100)
    scaling_workload.run_evaluate(tmp_path, spec)  # no prepare process ran
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("RESULT ")]
    record = json.loads(line[len("RESULT ") :])
    assert record["stage"] == "evaluate" and record["items"] == 100 and record["users"] > 250
    assert scaling_workload.prepared_path(tmp_path, spec).exists()


@pytest.mark.slow  # two preparation processes: over a minute on the shared 2-core machine
def test_bench_scaling_end_to_end_writes_points_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    done = subprocess.run(_command(tmp_path, "ok"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = json.loads((tmp_path / "ok" / "points.json").read_text())["points"]
    assert [(p["size"], p["status"]) for p in stored] == [(300, "ok"), (600, "ok")]
    assert stored[1]["interactions"] > stored[0]["interactions"] > 0
    assert (tmp_path / "ok" / "scaling.png").stat().st_size > 0
    assert "| users | 10^2.78 | 600 | 200 |" in (tmp_path / "ok" / "scaling.md").read_text()


def test_an_epoch_longer_than_max_steps_is_timed_over_its_first_steps_and_extrapolated(tmp_path, capsys):
    spec = scaling_workload.LogSpec(n_users=600, n_items=200)
    scaling_workload.run_prepare(tmp_path, spec)
    scaling_workload.run_epoch(tmp_path, spec, "idrec", batch_size=64, max_steps=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT ")]
    record = json.loads(lines[-1][len("RESULT ") :])
    assert record["stage"] == "idrec-epoch" and record["extrapolated"]
    assert record["timed_steps"] == 2 and record["steps"] == -(-record["sequences"] // 64)
    assert record["seconds"] == pytest.approx(record["timed_seconds"] * record["steps"] / 2)
    assert record["cpu_seconds"] == pytest.approx(record["timed_cpu_seconds"] * record["steps"] / 2)
