"""The YAML configs under configs/: each is a valid TrainConfig that opens with the command running it,
and the synthetic source/target pair runs end to end through the command line."""

import json
from pathlib import Path

import pytest

from transrec.cli.main import main
from transrec.config import load_config
from transrec.training.config import TrainConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_the_promised_configs_exist():
    names = {path.stem for path in CONFIGS}
    assert {"ml100k_idrec_sasrec", "ml100k_morec_text_minilm", "ml100k_morec_image_efficientnet",
            "ml100k_morec_mom", "synthetic_source", "synthetic_target_haspt"} <= names  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_config_is_valid_and_opens_with_its_command(path):
    config = load_config(TrainConfig, str(path), [])
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert f"transrec train --config configs/{path.name}" in "\n".join(header)
    assert path.read_text().startswith("# ")
    assert config.output_dir == f"runs/{path.stem}"


def test_the_synthetic_pair_runs_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[1])
    world = tmp_path / "world"
    assert main(["data", "synth", "--tiny", "--output", str(world), "--user-k", "3"]) == 0
    src, dst = tmp_path / "src", tmp_path / "dst"
    common = ["epochs=2", "device=cpu"]
    capsys.readouterr()
    assert main(["train", "--config", "configs/synthetic_source.yaml", f"dataset={world / 'source'}",
                 f"output_dir={src}", *common, "--quiet"]) == 0  # fmt: skip
    quiet = capsys.readouterr()
    assert "epoch 1: loss" not in quiet.err + quiet.out and "best epoch" in quiet.out  # warnings only
    assert main(["train", "--config", "configs/synthetic_target_haspt.yaml", f"dataset={world / 'target'}",
                 f"output_dir={dst}", f"init_checkpoint={src / 'best'}", *common]) == 0  # fmt: skip
    loud = capsys.readouterr()  # progress lines on stderr, the result on stdout
    assert "loaded item_encoder (" in loud.err and "epoch 2: loss" in loud.err
    assert "loaded item_encoder" not in loud.out and "epoch 2: loss" not in loud.out and "test: " in loud.out
    assert json.loads((dst / "result.json").read_text())["status"] == "finished"
    out = tmp_path / "zero_shot.json"
    assert main(["evaluate", "--checkpoint", str(src / "best"), "--dataset", str(world / "target"),
                 "--output", str(out), "--device", "cpu"]) == 0  # fmt: skip
    assert "test on" in capsys.readouterr().out
    assert set(json.loads(out.read_text())) >= {"HR@10", "NDCG@10", "MRR"}
