"""``transrec demo``'s command line: what reaches the grid's dataset builder."""

import os

from transrec.cli.demo import _data_root
from transrec.data.paths import data_root


def test_root_is_the_data_root_while_the_platforms_are_prepared_and_only_then(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSREC_HOME", str(tmp_path / "home"))
    with _data_root(tmp_path / "given"):
        assert data_root() == tmp_path / "given"  # what bench.datasets' ml100k-platforms builder reads
    assert data_root() == tmp_path / "home"
    monkeypatch.delenv("TRANSREC_HOME")
    with _data_root(tmp_path / "given"):
        assert data_root() == tmp_path / "given"
    assert "TRANSREC_HOME" not in os.environ
