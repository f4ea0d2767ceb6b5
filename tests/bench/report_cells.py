"""Finished cell directories written by hand (design13 section 3), so that every number a report prints
can be checked against values the test chose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from transrec.bench.collect import PlannedCell

HASH = "h" * 64


def cell_key(stage: str, labels: dict[str, str]) -> str:
    return f"{stage}/" + ",".join(f"{axis}={label}" for axis, label in labels.items())


def write_cell(
    output_dir: Path,
    stage: str,
    labels: dict[str, str],
    metrics: dict[str, float] | None = None,
    *,
    status: str = "done",
    config_hash: str = HASH,
    ranks: np.ndarray | None = None,
    users: np.ndarray | None = None,
    subsets: dict[str, np.ndarray] | None = None,
    curve: list[float] | None = None,
    metric: str = "NDCG@10",
    seconds: float = 1.5,
) -> PlannedCell:
    """One cell directory: ``cell.json``, and for ``done`` cells ``test_metrics.json``, ``result.json``,
    ``metrics.jsonl`` (``curve`` as ``valid_<metric>`` per epoch) and ``test_ranks.npz`` (``ranks``, with
    ``users`` 0..n-1 unless given). Returns the cell as the grid plans it."""
    key = cell_key(stage, labels)
    directory = Path(output_dir) / key
    directory.mkdir(parents=True, exist_ok=True)
    state = {"grid": "g", "stage": stage, "kind": "train", "labels": labels, "key": key, "dataset": "target",
             "depends_on": None, "config_hash": config_hash, "status": status,
             "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:00:02", "seconds": seconds,
             "error": None, "transrec_version": "0.1.0"}  # fmt: skip
    (directory / "cell.json").write_text(json.dumps(state))
    if status == "done":
        (directory / "test_metrics.json").write_text(json.dumps(metrics or {}))
        curve = curve or []
        best = int(np.argmax(curve)) + 1 if curve else 0
        result = {"status": "finished", "best_epoch": best, "epochs_run": len(curve), "seconds": seconds}
        (directory / "result.json").write_text(json.dumps(result))
        lines = [json.dumps({"epoch": e + 1, "loss": 1.0, f"valid_{metric}": v}) for e, v in enumerate(curve)]
        (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        if ranks is not None:
            users = np.arange(len(ranks)) if users is None else users
            extra = {f"subset_{name}": mask for name, mask in (subsets or {}).items()}
            np.savez(directory / "test_ranks.npz", users=users, targets=np.ones(len(ranks), dtype=np.int64),
                     ranks=ranks, **extra)  # fmt: skip
    return PlannedCell(key, stage, dict(labels), HASH)
