"""Library code reports through the ``transrec`` logger and never prints, so an application that embeds
transrec can route or silence it; the command line shows those lines on stderr through tqdm's bridge."""

import ast
import logging
from pathlib import Path

import pytest

from transrec.cli import main as cli_main
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.recommender import ModelConfig
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import train

PACKAGE = Path(__file__).parents[1] / "src" / "transrec"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw", max_text_tokens=12)
    return prepare(world.source, config, tmp_path_factory.mktemp("world") / "source", progress=False)


def tiny_run(dataset, out: Path) -> TrainConfig:
    model = ModelConfig(d_model=8, max_len=6, item_encoder="id", user_encoder="sasrec",
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    return TrainConfig(dataset=str(dataset.path), output_dir=str(out), model=model, epochs=1, batch_size=64,
                       device="cpu", optim=OptimConfig(lr=1e-3))  # fmt: skip


def transrec_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "transrec" or r.name.startswith("transrec.")]


def test_training_logs_through_the_transrec_logger_that_an_application_can_silence(dataset, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train(tiny_run(dataset, tmp_path / "loud"), progress=False)  # no bars; the log lines are not bars
    epochs = [r for r in transrec_records(caplog) if r.getMessage().startswith("epoch 1: loss")]
    assert [r.name for r in epochs] == ["transrec.training.trainer"] and epochs[0].levelno == logging.INFO

    caplog.clear()
    application = logging.getLogger("transrec")
    level = application.level
    application.setLevel(logging.WARNING)  # what an application does to silence transrec
    try:
        train(tiny_run(dataset, tmp_path / "silenced"), progress=False)
    finally:
        application.setLevel(level)
    assert transrec_records(caplog) == []


def test_a_training_run_prints_nothing_on_stdout(dataset, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    train(tiny_run(dataset, tmp_path / "run"), progress=True)
    assert capsys.readouterr().out == ""
    assert any(r.getMessage().startswith("epoch 1: loss") for r in transrec_records(caplog))


def test_library_code_never_prints_nor_configures_logging():
    """``print``, ``tqdm.write`` and ``logging.basicConfig`` belong to the command line (``cli/``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name == "print" or name.endswith(("tqdm.write", "basicConfig")):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert found == []


@pytest.mark.parametrize("quiet", [False, True])
def test_the_command_line_routes_log_lines_through_tqdm_to_stderr(monkeypatch, quiet, capsys):
    logger = logging.getLogger("transrec")
    before = list(logger.handlers), logger.level
    seen = {}

    def command(args):
        seen["handlers"] = [type(h).__name__ for h in logger.handlers]
        seen["level"] = logger.getEffectiveLevel()
        logging.getLogger("transrec.training.trainer").info("a progress line")
        logging.getLogger("transrec.training.trainer").warning("a warning")
        return 0

    monkeypatch.setattr("transrec.cli.train.run_train", command)
    assert cli_main.main(["train", *(["--quiet"] if quiet else [])]) == 0
    out, err = capsys.readouterr()
    assert seen["handlers"] == ["_TqdmLoggingHandler"]  # tqdm's bridge: a log line never breaks a bar
    assert seen["level"] == (logging.WARNING if quiet else logging.INFO)
    assert out == "" and "transrec: warning: a warning" in err
    assert ("a progress line" in err) is not quiet
    assert (list(logger.handlers), logger.level) == before  # main leaves the application's logging as it was
