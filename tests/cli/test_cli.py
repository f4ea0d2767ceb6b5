import json
import shutil
from pathlib import Path

from transrec.cli.main import main

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_prepare_a_recbole_folder_and_show_info(tmp_path, capsys):
    source = tmp_path / "mini"
    shutil.copytree(FIXTURES / "recbole" / "mini", source)
    out = tmp_path / "prepared"
    argv = ["data", "prepare", str(source), "--format", "recbole", "--output", str(out), "--quiet",
            "--option", "on_bad_row=skip", "user_k=1", "item_k=1", "tokenizer=hash"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["user_k"] == 1 and meta["source"]["options"] == {"on_bad_row": "skip"}
    assert f"{meta['counts']['users']} users" in printed and "preparation report" in printed
    assert main(["data", "info", str(out)]) == 0
    assert "user_k" in capsys.readouterr().out


def test_user_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["data", "prepare", "ml-100k", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run `transrec data fetch ml-100k` first" in err and "Traceback" not in err
    source = tmp_path / "mini"
    shutil.copytree(FIXTURES / "recbole" / "mini", source)
    assert main(["data", "prepare", str(source), "--format", "recbole", "user_kk=3"]) == 2
    assert "unknown config key(s) user_kk" in capsys.readouterr().err
    assert main(["data", "prepare", str(source), "--format", "nosuch"]) == 2
    assert "unknown data format 'nosuch'" in capsys.readouterr().err


def test_prepare_refuses_a_malformed_row_naming_file_and_line(tmp_path, capsys):
    source = tmp_path / "mini"
    shutil.copytree(FIXTURES / "recbole" / "mini", source)
    assert main(["data", "prepare", str(source), "--format", "recbole", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mini.inter, line" in err and not (tmp_path / "o").exists()


def test_synth_prepares_a_source_and_a_target(tmp_path, capsys):
    assert main(["data", "synth", "--tiny", "--output", str(tmp_path), "seed=4", "--user-k", "3"]) == 0
    source = json.loads((tmp_path / "source" / "meta.json").read_text())
    target = json.loads((tmp_path / "target" / "meta.json").read_text())
    assert source["source"]["world"]["seed"] == 4 and source["images"]["format"] == "raw"
    assert source["counts"]["items_text_only"] > 0 and source["counts"]["items_image_only"] > 0
    assert target["counts"]["users"] > 0
    assert "synthetic_source" in capsys.readouterr().out


def test_metrics_print_rates_to_four_decimals_and_user_counts_as_integers():
    from transrec.cli.train import format_metrics

    assert format_metrics({"HR@10": 0.5, "cold/users": 11, "cold/HR@10": 0.25}) == (
        "HR@10 0.5000  cold/users 11  cold/HR@10 0.2500"
    )
