from transrec.data.paths import data_root, resolve_dataset


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSREC_HOME", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"


def test_a_relative_name_falls_back_to_the_prepared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSREC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home" / "prepared" / "synthetic" / "target").mkdir(parents=True)
    assert resolve_dataset("synthetic/target") == tmp_path / "home" / "prepared" / "synthetic" / "target"
    (tmp_path / "synthetic" / "target").mkdir(parents=True)  # a local folder wins
    assert resolve_dataset("synthetic/target").resolve() == (tmp_path / "synthetic" / "target").resolve()
    assert str(resolve_dataset("nowhere")) == "nowhere"  # errors then name what the user wrote
    assert resolve_dataset(tmp_path / "abs") == tmp_path / "abs"
