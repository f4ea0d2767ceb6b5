"""How preparation, one training epoch, full-ranking evaluation and peak memory grow with users and items.

Run:
    python benchmarks/bench_scaling.py                                   # both axes, 10^3..10^6, 600 s cap
    python benchmarks/bench_scaling.py --axes users --sizes 1000,10000 --max-seconds 60
    python benchmarks/bench_scaling.py --workers minilm --fixed-items 1000 --minilm-max 10000 \
        --axes users --sizes 1e3,1e4 --out runs/bench_scaling_minilm      # the real MiniLM where it fits
    python benchmarks/bench_scaling.py --report-only                     # table, plot and slopes again

Two axes, on generated logs (``scaling_workload.generate_log``: seeded Zipf-like popularity, mean
sequence length 20, every item occurring at least once): **users** from 10^3 to 10^6 at
``--fixed-items`` (10^4) items, and **items** from 10^3 to 10^6 at ``--fixed-users`` (60,000) users
(a fixed 1.2 x 10^6 interactions, enough for every item to occur). At each point, each in a fresh
process (so that one point's memory high-water mark does not hide in another's):

    prepare        ``transrec.data.prepare`` of the raw log (hash tokenizer, 5-core on users)
    idrec-epoch    one epoch of IDRec-SASRec (d 64, 2 blocks, length 20, BCE with one negative,
                   ``windows: last``: one sequence per user, batch 256), collation included
    morec-cache    the frozen-trunk cache of MoRec text (a randomly initialised 2-layer BERT, hidden
                   32, the bottom layer cached: the real MiniLM costs about 1.5 ms of CPU per item for
                   its cache and 3 s per step of 256 sequences, some 3 CPU-hours per epoch at 10^6 users)
    morec-epoch    one epoch of that MoRec text model with the cache (its top layer trained)
    minilm-cache,  the same with the real all-MiniLM-L6-v2 (top 2 layers trained), at the points where
    minilm-epoch   users and items are both at most ``--minilm-max`` (default 10^4)
    evaluate       full-ranking evaluation of every user's test target, history excluded (IDRec-SASRec)

and the peak resident memory (``ru_maxrss``) of each process. Each time is the wall time and the
process's CPU time (one torch thread: its own work, whatever else the machine runs). An epoch of more
than ``--max-steps`` (100) steps is timed over its first 100 steps and extrapolated (``~`` in the
table): every size still pays its own per-step cost, and the loader's start is counted once. A process
is stopped at ``--max-seconds`` of wall time: its stage is reported as over the cap (with any figure
it finished before), and the larger sizes of that stage on that axis are not run. Points at
``--nice-from`` or more run under ``nice``. Results go to ``--out`` (``points.json``, ``scaling.md``,
``scaling.png``); finished points are kept, so an interrupted sweep continues where it stopped
(``--rerun`` measures them again).

The report fits the slope of log(time) against log(size) per stage and axis and flags any stage whose
CPU-time slope exceeds the slope of the work it does (``scaling_report.EXPECTED_SLOPE``) by more than
``TOLERANCE``, and any process whose added memory grows faster than linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import scaling_report

#: worker -> the stages it measures, in the order it emits them.
WORKERS = {
    "prepare": ("prepare",),
    "idrec": ("idrec-epoch",),
    "morec": ("morec-cache", "morec-epoch"),
    "minilm": ("minilm-cache", "minilm-epoch"),
    "evaluate": ("evaluate",),
}
AXES = ("users", "items")


def point_shape(axis: str, size: int, fixed_users: int, fixed_items: int) -> tuple[int, int]:
    """``(n_users, n_items)`` of the point ``size`` on ``axis``."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    return (size, fixed_items) if axis == "users" else (fixed_users, size)


def parse_sizes(text: str) -> list[int]:
    """``"1e3,10000"`` -> ``[1000, 10000]`` (sorted, distinct)."""
    try:
        sizes = sorted({int(float(part)) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"--sizes: comma-separated numbers expected, got {text!r}") from None
    if not sizes or sizes[0] < 2:
        raise SystemExit(f"--sizes: sizes of at least 2 expected, got {text!r}")
    return sizes


def run_worker(
    args: argparse.Namespace, worker: str, users: int, items: int, niceness: int
) -> dict[str, Any]:
    """Run one measurement process; returns ``{"status", "records", "wall", "stderr"}``.

    ``status`` is ``ok``, ``over-cap`` (stopped at ``--max-seconds``) or ``failed``; ``records`` holds the
    figures it emitted before it ended.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--users", str(users),
               "--items", str(items), "--out", str(args.out), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--max-steps", str(args.max_steps)]  # fmt: skip

    def lower_priority() -> None:
        os.nice(niceness)

    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.max_seconds,
                              preexec_fn=lower_priority if niceness else None)  # fmt: skip
        status = "ok" if done.returncode == 0 else "failed"
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as stopped:
        status = "over-cap"
        stdout = _text(stopped.stdout)
        stderr = _text(stopped.stderr)
    records = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    if status == "ok" and not records:  # exited cleanly without a figure: nothing was measured
        status = "failed"
    return {"status": status, "records": records, "wall": time.perf_counter() - started, "stderr": stderr}


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def sweep(args: argparse.Namespace, points: list[dict[str, Any]]) -> None:
    """Measure every (axis, size, worker) not yet in ``points`` (appended, and saved after each)."""
    done = {(p["axis"], p["size"], p["stage"]) for p in points if p["status"] != "skipped"}
    # workers over the cap (or failed) at a smaller size of each axis
    stopped_on: dict[str, set[str]] = {axis: set() for axis in args.axes}
    for size in args.sizes:  # both axes size by size: an interrupted sweep has both at its smaller sizes
        for axis in args.axes:
            stopped = stopped_on[axis]
            users, items = point_shape(axis, size, args.fixed_users, args.fixed_items)
            for worker in args.workers:
                stages = WORKERS[worker]
                if worker == "minilm" and max(users, items) > args.minilm_max:
                    continue
                if all((axis, size, stage) in done for stage in stages):
                    previous = [
                        p for p in points if (p["axis"], p["size"], p["stage"]) == (axis, size, stages[-1])
                    ]
                    if previous and previous[0]["status"] != "ok":
                        stopped.add(worker)
                    continue
                base = {"axis": axis, "size": size, "n_users": users, "n_items": items}
                points[:] = [p for p in points if (p["axis"], p["size"], p["stage"]) not in
                             {(axis, size, s) for s in stages}]  # fmt: skip
                if worker in stopped or (worker != "prepare" and "prepare" in stopped):
                    points.extend({**base, "stage": s, "status": "skipped"} for s in stages)
                    save_points(args.out, args, points)
                    continue
                niceness = args.nice if size >= args.nice_from else 0
                load = os.getloadavg()[0]
                result = run_worker(args, worker, users, items, niceness)
                by_stage = {r["stage"]: r for r in result["records"]}
                for stage in stages:  # a figure emitted before the process stopped or failed is kept
                    record = by_stage.get(stage)
                    point = {**base, "stage": stage, "status": "ok" if record else result["status"],
                             "load": round(load, 2), "nice": niceness, "cap": args.max_seconds,
                             **(record or {})}  # fmt: skip
                    if not record:
                        stopped.add(worker)
                        if result["status"] == "failed":
                            point["error"] = result["stderr"][-1000:]
                    points.append(point)
                figure = ", ".join(f"{r['stage']} {r['seconds']:.2f} s" for r in result["records"])
                print(f"{axis} {size:>8d} ({users} users, {items} items) {worker:8s} {result['status']:8s} "
                      f"{figure} (load {load:.1f}, wall {result['wall']:.1f} s)", flush=True)  # fmt: skip
                if result["status"] == "failed":
                    print(result["stderr"][-3000:], file=sys.stderr, flush=True)
                save_points(args.out, args, points)


def load_points(out: Path) -> list[dict[str, Any]]:
    path = out / "points.json"
    return json.loads(path.read_text())["points"] if path.exists() else []


def save_points(out: Path, args: argparse.Namespace, points: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    setting = {"fixed_users": args.fixed_users, "fixed_items": args.fixed_items,
               "max_steps": args.max_steps, "batch_size": args.batch_size, "threads": args.threads,
               "max_seconds": args.max_seconds, "cpus": os.cpu_count()}  # fmt: skip
    tmp = out / "points.json.tmp"
    tmp.write_text(json.dumps({"setting": setting, "points": points}, indent=1) + "\n")
    tmp.replace(out / "points.json")


def worker_main(args: argparse.Namespace) -> None:
    """One measurement, in this (fresh) process; figures go to stdout as ``RESULT {json}`` lines."""
    import torch

    import scaling_workload

    torch.set_num_threads(args.threads)
    spec = scaling_workload.LogSpec(args.users, args.items)
    workdir = args.out / "work"
    if args.worker == "prepare":
        scaling_workload.run_prepare(workdir, spec)
    elif args.worker == "evaluate":
        scaling_workload.run_evaluate(workdir, spec)
    else:
        scaling_workload.run_epoch(workdir, spec, args.worker, args.batch_size, args.max_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axes", default="users,items", help="comma-separated: users, items")
    parser.add_argument("--sizes", default="1e3,1e4,1e5,1e6", help="the sizes of each axis")
    parser.add_argument("--fixed-items", type=int, default=10_000, help="items on the users axis")
    parser.add_argument("--fixed-users", type=int, default=60_000, help="users on the items axis")
    parser.add_argument("--workers", default=",".join(WORKERS), help=f"of: {', '.join(WORKERS)}")
    parser.add_argument("--minilm-max", type=int, default=10_000,
                        help="the real MiniLM runs where users and items are both at most this")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=600.0, help="wall-time cap of each process")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    parser.add_argument("--max-steps", type=int, default=100,
                        help="time an epoch over at most this many steps, extrapolated (0: all)")  # fmt: skip
    parser.add_argument("--nice", type=int, default=10, help="niceness of the points at --nice-from or more")
    parser.add_argument("--nice-from", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_scaling"))
    parser.add_argument("--rerun", action="store_true", help="measure finished points again")
    parser.add_argument("--report-only", action="store_true", help="only render the stored points")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    args.axes = [a.strip() for a in args.axes.split(",")]
    args.workers = [w.strip() for w in args.workers.split(",")]
    unknown = [a for a in args.axes if a not in AXES] + [w for w in args.workers if w not in WORKERS]
    if unknown:
        parser.error(f"unknown axes or workers: {', '.join(unknown)}")
    args.sizes = parse_sizes(args.sizes)
    points = [] if args.rerun else load_points(args.out)
    if not args.report_only:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{os.cpu_count()} CPUs, load average {load}, {args.threads} torch thread(s) per process, "
              f"cap {args.max_seconds:.0f} s per process", flush=True)  # fmt: skip
        sweep(args, points)
    if not points:
        raise SystemExit(f"no points in {args.out / 'points.json'}")
    text = scaling_report.render(points, args.out / "scaling.png")
    (args.out / "scaling.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'scaling.md'} and {args.out / 'scaling.png'}"
          + ("" if args.report_only else f"; the points are in {args.out / 'points.json'}"))  # fmt: skip


if __name__ == "__main__":
    main()
