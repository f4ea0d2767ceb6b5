"""Collecting finished cells into rows, and cells.csv / cells.parquet that read back as written
(bench.collect)."""

from __future__ import annotations

import json

import pytest

from transrec.bench.collect import cell_rows, collect, read_csv, write_csv, write_parquet
from transrec.config import ConfigError
from transrec.errors import UserError

from .report_cells import write_cell


def test_only_ended_cells_of_the_current_config_are_collected_with_their_numbers(tmp_path):
    planned = [
        write_cell(tmp_path, "ft", {"item": "IDRec", "seed": "0"}, {"HR@10": 0.25, "NDCG@10": 0.125},
                   curve=[0.1, 0.3, 0.2], seconds=2.5),
        write_cell(tmp_path, "ft", {"item": "Text", "seed": "0"}, status="collapsed"),
        write_cell(tmp_path, "ft", {"item": "Text", "seed": "1"}, status="running"),
        write_cell(tmp_path, "ft", {"item": "IDRec", "seed": "1"}, {"HR@10": 1.0}, config_hash="old"),
        write_cell(tmp_path, "pt", {"seed": "0"}, {"HR@10": 0.5, "new/HR@10": 0.75, "new/users": 12}),
    ]  # fmt: skip
    records = collect(tmp_path, planned)
    assert [r.key for r in records] == ["ft/item=IDRec,seed=0", "ft/item=Text,seed=0", "pt/seed=0"]
    rows = cell_rows(records, "g", ["item", "seed"])
    assert rows[0] == {"grid": "g", "stage": "ft", "key": "ft/item=IDRec,seed=0", "item": "IDRec",
                       "seed": "0", "status": "done", "seconds": 2.5, "epochs_run": 3, "best_epoch": 2,
                       "HR@10": 0.25, "NDCG@10": 0.125, "new/HR@10": None, "new/users": None}  # fmt: skip
    assert rows[1]["status"] == "collapsed" and rows[1]["HR@10"] is None
    assert rows[2]["item"] is None and rows[2]["new/users"] == 12
    assert records[0].curve("valid_NDCG@10") == [0.1, 0.3, 0.2]


def test_a_resumed_run_counts_each_epoch_once_with_its_last_value(tmp_path):
    cell = write_cell(tmp_path, "ft", {"seed": "0"}, {"HR@10": 0.5})
    lines = [
        {"epoch": 1, "valid_HR@10": 0.1},
        {"epoch": 2, "valid_HR@10": 0.2},
        {"epoch": 2, "valid_HR@10": 0.3},
    ]
    (tmp_path / cell.key / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert collect(tmp_path, [cell])[0].curve("valid_HR@10") == [0.1, 0.3]


def test_a_corrupt_cell_json_is_a_user_error_naming_the_file(tmp_path):
    cell = write_cell(tmp_path, "ft", {"seed": "0"}, {"HR@10": 0.5})
    (tmp_path / cell.key / "cell.json").write_text("{not json")
    with pytest.raises(UserError, match=r"ft/seed=0/cell.json is not valid JSON"):
        collect(tmp_path, [cell])


ROWS = [
    {"grid": "g", "stage": "ft", "key": "ft/a", "user_fraction": "1.0", "seed": "0", "status": "done",
     "seconds": 2.5, "epochs_run": 3, "best_epoch": 2, "NDCG@10": 0.1234567890123, "new/users": 12},
    {"grid": "g", "stage": "ft", "key": "ft/b", "user_fraction": "0.1", "seed": None, "status": "failed",
     "seconds": None, "epochs_run": None, "best_epoch": None, "NDCG@10": None, "new/users": None},
]  # fmt: skip


def test_csv_round_trip_keeps_labels_as_text_and_numbers_exact(tmp_path):
    path = write_csv(ROWS, tmp_path / "cells.csv")
    assert path.read_text().splitlines()[0] == (
        "grid,stage,key,user_fraction,seed,status,seconds,epochs_run,best_epoch,NDCG@10,new/users"
    )
    read = read_csv(path)
    assert read == ROWS  # "1.0" stays the label "1.0"; 0.1234567890123 survives exactly
    assert [type(read[0][c]) for c in ("seconds", "epochs_run", "new/users")] == [float, int, int]


def test_parquet_round_trip_with_types(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(write_parquet(ROWS, tmp_path / "cells.parquet"))
    assert table.to_pylist() == ROWS
    types = {field.name: str(field.type) for field in table.schema}
    assert types["user_fraction"] == "string" and types["seed"] == "string"
    assert types["epochs_run"] == "int64" and types["new/users"] == "int64" and types["NDCG@10"] == "double"


def test_a_csv_without_status_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="has no `status` column"):
        read_csv(tmp_path / "x.csv")


def test_an_axis_named_like_a_column_is_refused(tmp_path):
    cell = write_cell(tmp_path, "ft", {"status": "x"}, {"HR@10": 0.5})
    with pytest.raises(ConfigError, match=r"the grid's axis 'status' has the name of a column of cells\.csv"):
        cell_rows(collect(tmp_path, [cell]), "g", ["status"])
