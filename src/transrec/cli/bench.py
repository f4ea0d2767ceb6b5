"""``transrec bench GRID.yaml``: run a grid of experiments (resumable, sharded), list it, or report it.

    transrec bench configs/bench/demo.yaml --dry-run          # every cell and its state; runs nothing
    transrec bench configs/bench/demo.yaml                    # runs what is not done; again to resume
    transrec bench configs/bench/demo.yaml --shard 0/4        # a quarter of every stage's cells
    transrec bench configs/bench/demo.yaml --report           # tables and plots of the finished cells

On a cluster, start the same command as a job array: without ``--shard``, the array index comes from the
scheduler's environment (Slurm, SGE/UGE, LSF, PBS, Kubernetes indexed Jobs; ``bench.shard`` lists the
variables). Every task may start at once: a cell waits (``--wait``) for a dependency another task runs.
A cell may itself use several GPUs: ``torchrun --nproc_per_node N $(which transrec) bench GRID.yaml``
runs each train cell with DDP (or FSDP, ``parallel: fsdp``), rank 0 taking the locks and writing files.

``--rerun all`` runs this invocation's cells again from scratch. In a job array a dependent cell of
another shard may have started from its dependency before that was rerun; it then shows as ``changed``
(its dependency was rerun since it ran), and ``--rerun changed`` runs it again.

Exit status: 0 every cell of the shard done; 1 some failed, collapsed, blocked or locked (the summary
names them); 2 a usage error (a bad grid, a changed cell without ``--rerun``, a bad argument).
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="run a grid of experiments (resumable, sharded), list its cells, or render its tables",
        description="Run every cell of a grid file that is not done yet (see configs/bench/). A killed run "
        "resumes where it stopped; a cell whose config changed is refused unless --rerun changed.",
    )
    bench.add_argument("grid", help="grid YAML file (configs/bench/*.yaml)")
    bench.add_argument("--dry-run", action="store_true", help="list every cell and its state; run nothing")
    bench.add_argument("--shard", metavar="I/N", help="run shard I of N (0-based); default: the scheduler's "
                       "array index from the environment (SLURM_ARRAY_TASK_ID, SGE_TASK_ID, LSB_JOBINDEX, "
                       "PBS_ARRAY_INDEX...), else all cells")  # fmt: skip
    bench.add_argument("--stage", action="append", metavar="NAME", help="only the cells of this stage "
                       "(repeatable)")  # fmt: skip
    rerun_help = "run again: cells whose config changed (from scratch), failed cells (resuming), or all"
    bench.add_argument("--rerun", choices=["changed", "failed", "all"], help=rerun_help)
    bench.add_argument("--wait", type=float, default=24 * 3600.0, metavar="SECONDS", help="how long a cell "
                       "waits for a dependency another process runs (default 86400)")  # fmt: skip
    bench.add_argument("--report", action="store_true", help="write the tables and plots of the finished "
                       "cells (under <output_dir>/report) and print their paths; run nothing")  # fmt: skip
    bench.add_argument("--quiet", action="store_true", help="no progress bars or lines, only warnings")
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from transrec.bench.grid import load_grid
    from transrec.bench.listing import format_cells
    from transrec.bench.runner import cell_states, run_grid, select_cells
    from transrec.bench.shard import parse_shard, shard_from_env
    from transrec.errors import UsageError

    if args.report and args.dry_run:
        raise UsageError("--report and --dry-run do not go together: each runs nothing and prints one thing")
    if args.wait < 0:
        raise UsageError(f"--wait must be at least 0 seconds, got {args.wait}")
    grid = load_grid(args.grid)
    if args.report:
        from transrec.bench.report import write_report

        for path in write_report(grid):
            print(path)
        return 0
    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    cells = select_cells(grid, shard, args.stage)
    if args.dry_run:
        share = f", shard {shard}" if shard else ""
        print(f"{grid.name}: {len(cells)} of {len(grid.cells())} cells{share}, in {Path(grid.output_dir)}")
        print(format_cells(cells, cell_states(grid, cells)))
        return 0
    summary = run_grid(grid, shard=shard, stages=args.stage, rerun=args.rerun, wait=args.wait,
                       progress=not args.quiet)  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every process has the same summary
        print(summary.format())
    return 0 if summary.ok else 1
