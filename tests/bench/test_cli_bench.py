"""``transrec bench``: runs a grid file, ``--dry-run`` lists each cell's state and runs nothing, the exit
status says whether every cell is done (0), some are not (1) or the command was wrong (2), the shard
comes from --shard or the scheduler's environment, and ``--report`` hands over to the report."""

import copy
import json
import shutil

import pytest
import yaml

from tests.bench.tiny_grids import GRID
from transrec.cli.main import main

KEYS = ["pretrain/seed=0", "pretrain/seed=1", "zeroshot/seed=0", "zeroshot/seed=1", "popularity/default"]


def write_grid(folder, out, epochs=1):
    """A grid file of the tiny grid's pretrain (``epochs``), zeroshot and popularity stages into ``out``."""
    data = copy.deepcopy(GRID)
    data["stages"] = [data["stages"][i] for i in (0, 2, 3)]
    data["stages"][0]["set"]["epochs"] = epochs
    data["output_dir"] = str(out)
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The grid file's cells, run once by the command: its folder."""
    folder = tmp_path_factory.mktemp("cli")
    assert main(["bench", str(write_grid(folder, folder / "runs")), "--quiet"]) == 0
    return folder


@pytest.fixture
def copy_of(finished, tmp_path):
    shutil.copytree(finished / "runs", tmp_path / "runs")
    return write_grid(tmp_path, tmp_path / "runs")


def states(text):
    return {
        line.split()[0]: line.split()[-1] for line in text.splitlines() if line.split()[:1] and "=" in line
    }


def test_dry_run_lists_every_cell_pending_and_runs_nothing(tmp_path, capsys):
    path = write_grid(tmp_path, tmp_path / "runs")
    assert main(["bench", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert states(out) == dict.fromkeys(KEYS[:4], "pending") and "popularity/default" in out
    assert "5 cells: 5 pending" in out
    assert not (tmp_path / "runs").exists()  # no cell run, no dataset prepared


def test_dry_run_reads_each_state_from_the_files(copy_of, capsys):
    runs = copy_of.parent / "runs"
    cell = runs / "pretrain/seed=1/cell.json"
    cell.write_text(json.dumps({**json.loads(cell.read_text()), "status": "failed", "error": "boom"}))
    (runs / "pretrain/seed=0/cell.json").unlink()  # killed before its record: last/ is there
    for seed in (0, 1):  # not run yet: they wait for their pre-training, or cannot run
        shutil.rmtree(runs / f"zeroshot/seed={seed}")
    assert main(["bench", str(copy_of), "--dry-run"]) == 0
    listed = states(capsys.readouterr().out)
    assert listed == {"pretrain/seed=0": "resumable", "pretrain/seed=1": "failed",
                      "zeroshot/seed=0": "pending", "zeroshot/seed=1": "blocked"}  # fmt: skip
    # The shard from the scheduler's environment: Slurm task 1 of 2.
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["bench", str(copy_of), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert list(states(out)) == ["pretrain/seed=1", "zeroshot/seed=1"] and "shard 1/2" in out


def test_exit_status_zero_when_all_done_one_when_not_two_for_a_wrong_command(copy_of, capsys):
    assert main(["bench", str(copy_of)]) == 0
    assert "5 skipped" in capsys.readouterr().out
    runs = copy_of.parent / "runs"
    cell = runs / "pretrain/seed=1/cell.json"
    cell.write_text(json.dumps({**json.loads(cell.read_text()), "status": "failed", "error": "boom"}))
    shutil.rmtree(runs / "zeroshot/seed=1")
    assert main(["bench", str(copy_of), "--wait", "0"]) == 1
    out = capsys.readouterr().out
    assert "3 skipped, 1 failed, 1 blocked" in out
    assert "failed    pretrain/seed=1: boom" in out and "blocked   zeroshot/seed=1" in out
    write_grid(copy_of.parent, runs, epochs=2)  # every pretrain and zeroshot cell changes
    assert main(["bench", str(copy_of)]) == 2
    assert "--rerun changed" in capsys.readouterr().err
    for wrong in (["--shard", "2/2"], ["--report", "--dry-run"], ["--wait", "-1"]):
        assert main(["bench", str(copy_of), *wrong]) == 2
    assert main(["bench", str(copy_of.parent / "missing.yaml")]) == 2


def test_report_hands_the_grid_to_the_report_and_prints_its_files(copy_of, capsys, monkeypatch):
    from transrec.bench import report

    seen = []
    monkeypatch.setattr(
        report, "write_report", lambda grid: seen.append(grid.name) or [copy_of.parent / "t.md"]
    )
    assert main(["bench", str(copy_of), "--report"]) == 0
    assert seen == ["tiny"] and capsys.readouterr().out.strip() == str(copy_of.parent / "t.md")
