"""``transrec export``: a trained model as a self-contained directory to serve from, and its check.

transrec export --checkpoint runs/hm/best --dataset hm --out exports/hm     # add --force to replace
transrec export --check exports/hm --sample 64                            # exit 0 sound, 2 not
"""

from __future__ import annotations

import argparse
import sys

from transrec.errors import UsageError


def add_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export a trained model with its catalogue for serving (or --check an export)",
        description="Write a self-contained, versioned directory (model, tokenizer and image settings, item "
        "ids, item vectors, content, training popularity, a manifest of SHA-256 sums) that `transrec serve` "
        "and transrec.serving.Recommender load without the dataset or the run directory. With --check DIR, "
        "verify an export's checksums and re-encode a sample of its items.",
    )
    export.add_argument(
        "--checkpoint", help="model directory, e.g. RUN/best (config.json + model.safetensors)"
    )
    export.add_argument("--dataset", help="the prepared dataset whose items form the catalogue")
    export.add_argument("--out", help="export directory to write (refused if it exists, unless --force)")
    export.add_argument("--force", action="store_true", help="replace --out, and the items added to it")
    export.add_argument("--device", default="cpu", help="device that encodes the catalogue (default cpu)")
    export.add_argument("--batch-size", type=int, default=512, help="items encoded at a time (default 512)")
    export.add_argument("--check", metavar="DIR", help="verify the export in DIR instead of writing one")
    export.add_argument("--sample", type=int, default=64, help="items re-encoded by --check (default 64)")
    export.add_argument("--seed", type=int, default=0, help="seed of --check's sample (default 0)")
    export.add_argument("--quiet", action="store_true", help="only warnings on stderr")
    export.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from transrec.serving.export import ATOL, RTOL, check_export, export_model

    if args.check:
        given = [f"--{name}" for name in ("checkpoint", "dataset", "out") if getattr(args, name)]
        if given or args.force:
            raise UsageError(
                f"--check verifies an existing export; it takes no {', '.join(given) or '--force'}"
            )
        if args.sample < 1:
            raise UsageError(f"--sample must be at least 1, got {args.sample}")
        report = check_export(args.check, sample=args.sample, seed=args.seed)
        print(f"{report.directory}: {report.files_checked} files checked against their SHA-256")
        if report.items_sampled:
            print(
                f"{len(report.items_sampled)} items re-encoded (seed {args.seed}): largest |stored - fresh| "
                f"{report.max_abs_diff:.3g} (tolerance {ATOL:g} + {RTOL:g} x |fresh|)"
            )
        for problem in report.problems:
            print(f"transrec: error: {problem}", file=sys.stderr)
        print("ok" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
        return 0 if report.ok else 2
    missing = [f"--{name}" for name in ("checkpoint", "dataset", "out") if not getattr(args, name)]
    if missing:
        raise UsageError(f"transrec export needs {', '.join(missing)} (or --check DIR)")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = export_model(
        args.checkpoint,
        args.dataset,
        args.out,
        force=args.force,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(out)
    return 0
