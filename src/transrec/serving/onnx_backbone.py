"""The text backbones of an item encoder, run by ONNX Runtime instead of torch (the encoder process's
``engine``, ``transrec serve --encoder-engine``).

Why: a new text item's vector is one forward pass of the model's text backbone over a short title, and on
a CPU that pass is almost all small matrix products (``[tokens, 384] x [384, 1536]`` for MiniLM), where
torch's eager kernels reach a third of what ONNX Runtime's prepacked ones do. Measured on the project's
2-core machine, the demo's MiniLM over a 14-token title: 16 ms of CPU in torch, 6 ms in ONNX Runtime
(benchmarks/README.md, "Serving"). The vectors are the same to float32 rounding (largest difference about
3e-6 on hidden states of magnitude 1), and every swap is checked before it is used.

    engine = accelerate_text_backbones(model, "auto", threads=1)   # "onnxruntime" or "torch", and why

What is swapped: the Hugging Face model inside each ``TextEncoder``'s ``FrozenBackbone`` (the ``text``
encoder, and the text side of ``mm`` and ``mom``), exported with ``torch.onnx.export(dynamo=True)``
(``torch.export``: data-dependent Python branches fail the export instead of being traced in silently),
batch and token axes dynamic. Pooling, the DT layer and everything else stay in torch. Before a swap is
kept, the exported backbone and the torch one are run on random token ids at several shapes, with and
without padding, and their hidden states at real tokens must agree within ``rtol = atol = 1e-4``
(``verify``); otherwise ``auto`` keeps torch and says why, and ``onnxruntime`` raises.

The exported graph can be kept (``cache_dir``; the service keeps it in the export's ``cache/``), so that a
restart of the encoder process, or of the service, loads it instead of exporting again: the encoder
process of the demo's MiniLM started in 13.4 s with an export, 5.1-6.9 s from the cache, 4.2-5.1 s on
torch. A cached graph is named by a hash of the backbone's weights, its configuration and the exporter's
versions, and is checked against torch like a fresh one: one that fails the check or does not load is
exported again and replaced, so a stale or damaged file costs time, never a wrong vector. A cache that
cannot be written is logged and skipped. Once a model's graphs are in place, the other graphs in the
cache (other weights, or other library versions: never read again by this model) and temporary files
over an hour old are deleted, so upgrades do not pile up 91 MB files.

Engines: ``torch`` (nothing swapped), ``onnxruntime`` (every text backbone swapped, or an
``EngineError`` saying what stopped it: a missing package, a device other than the CPU, a trunk cache,
an export or a check that failed), ``auto`` (``onnxruntime`` where it works, otherwise ``torch``, with the
reason). An image backbone always stays in torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import types
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transrec.errors import UserError
from transrec.utils.packages import install_command

ENGINES = ("auto", "torch", "onnxruntime")

#: Shapes ``[items, tokens]`` the exported backbone is checked at; the last row of each is cut to about
#: half its width (padding), except where a row has one token.
CHECK_SHAPES = ((1, 1), (1, 14), (3, 9), (2, 33))
RTOL = ATOL = 1e-4
#: The cached graphs' file names: this, then ``graph_key``, then ``.onnx``.
GRAPH_PREFIX = "text-backbone-"

logger = logging.getLogger(__name__)


class EngineError(UserError, RuntimeError):
    """``engine="onnxruntime"`` was asked for and cannot be used (the message says why)."""


@dataclass(frozen=True)
class EngineChoice:
    """The engine an encoder runs on, and why (e.g. why ``auto`` kept torch)."""

    engine: str
    detail: str


class OnnxTextBackbone(nn.Module):
    """A Hugging Face text model's ``forward(input_ids, attention_mask).last_hidden_state``, computed by an
    ONNX Runtime session (CPU, float32). Anything else the torch model accepted is refused, so that a
    caller that needs more of it fails loudly instead of being answered by the wrong graph."""

    def __init__(self, session: Any, config: Any) -> None:
        super().__init__()
        self.session, self.config = session, config

    def forward(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        if kwargs or input_ids is None or attention_mask is None:
            given = [
                name
                for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask))
                if value is not None
            ]
            raise TypeError(
                "the ONNX Runtime text backbone takes input_ids and attention_mask, both, and nothing else; "
                f"got {given + sorted(kwargs)}"
            )
        feed = {"input_ids": _int64(input_ids), "attention_mask": _int64(attention_mask)}
        (states,) = self.session.run(None, feed)
        return types.SimpleNamespace(last_hidden_state=torch.from_numpy(states))


def _int64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.int64).numpy()


class _LastHiddenState(nn.Module):
    """What is exported: the model's last hidden states from token ids and their mask."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def text_encoders(model: nn.Module) -> list[Any]:
    """The ``TextEncoder``s in ``model`` (any module holding item encoders)."""
    from transrec.models.item_encoders.text import TextEncoder

    return [module for module in model.modules() if isinstance(module, TextEncoder)]


def accelerate_text_backbones(
    model: nn.Module,
    engine: str = "auto",
    threads: int = 1,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> EngineChoice:
    """Run the text backbones of ``model`` (in eval mode, on ``device``) with ``engine`` (see the module):
    swaps them in place and returns what it chose. ``cache_dir``: where exported graphs are kept and
    looked for (None: nowhere). Raises EngineError only for ``engine="onnxruntime"``."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "torch":
        return EngineChoice("torch", "asked for")
    try:
        count, version, cached = _swap_all(
            model, threads, device, None if cache_dir is None else Path(cache_dir)
        )
    except EngineError as err:
        if engine == "onnxruntime":
            raise
        return EngineChoice("torch", f"ONNX Runtime not used: {err}")
    source = f"{cached} of {count} graph(s) from the cache" if cache_dir is not None else "no cache"
    return EngineChoice(
        "onnxruntime", f"{count} text backbone(s) on ONNX Runtime {version}, {threads} thread(s), {source}"
    )


def _swap_all(model: nn.Module, threads: int, device: str, cache_dir: Path | None) -> tuple[int, str, int]:
    """Swap every text backbone of ``model``; returns how many, ONNX Runtime's version, and how many
    graphs came from ``cache_dir``."""
    encoders = text_encoders(model)
    if not encoders:
        raise EngineError("the model has no text backbone to run (image backbones stay in torch)")
    if torch.device(device).type != "cpu":
        raise EngineError(f"the encoder runs on {device}; ONNX Runtime is used on the CPU only")
    if any(encoder.trunk_store is not None for encoder in encoders):
        raise EngineError("a text encoder replays a trunk cache, which feeds the torch backbone's blocks")
    ort = _import("onnxruntime")
    _import("onnx")
    _import("onnxscript")
    # Every backbone is exported and checked before any is swapped: a failure leaves the model as it was.
    paths = [
        None if cache_dir is None else cache_dir / f"{GRAPH_PREFIX}{graph_key(encoder.backbone.model)}.onnx"
        for encoder in encoders
    ]
    built = [
        _session_of(encoder.backbone.model, ort, threads, path) for encoder, path in zip(encoders, paths)
    ]
    for encoder, (session, _) in zip(encoders, built):
        encoder.backbone.swap_model(OnnxTextBackbone(session, encoder.backbone.model.config))
    if cache_dir is not None:
        _prune(cache_dir, keep={path.name for path in paths if path is not None})
    return len(encoders), ort.__version__, sum(cached for _, cached in built)


def _prune(cache_dir: Path, keep: set[str]) -> None:
    """Delete the graphs in ``cache_dir`` other than ``keep`` (those of other weights or library versions:
    91 MB each for MiniLM, never read again by this model) and temporary files older than an hour (left
    by a process killed while writing; a younger one may be another process's write in progress)."""
    stale = [p for p in cache_dir.glob(f"{GRAPH_PREFIX}*.onnx") if p.name not in keep]
    cutoff = time.time() - 3600
    for path in cache_dir.glob(f".{GRAPH_PREFIX}*.part"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                stale.append(path)
    for path in stale:
        try:
            path.unlink()
            logger.info("removed %s from the ONNX cache (not this model's graph)", path.name)
        except OSError as err:
            logger.warning("could not remove %s from the ONNX cache (%s)", path, err)


def _import(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise EngineError(f"the package {module!r} is not installed ({install_command(module)})") from err


def _session_of(hf_model: nn.Module, ort: Any, threads: int, path: Path | None) -> tuple[Any, bool]:
    """An ONNX Runtime session of ``hf_model``'s last hidden states, checked against it, and whether its
    graph came from the cache file ``path`` (else it was exported, and written there)."""
    wrapped = _LastHiddenState(hf_model).eval()
    vocab = int(getattr(hf_model.config, "vocab_size", 1000))
    if path is not None and path.is_file():
        try:
            session = _session(path.read_bytes(), ort, threads)
            worst = verify(wrapped, OnnxTextBackbone(session, hf_model.config), vocab)
        except Exception as err:  # a damaged file: export again
            logger.warning("the cached ONNX graph %s did not load (%s); exporting again", path, err)
        else:
            if worst <= 1.0:
                return session, True
            logger.warning("the cached ONNX graph %s fails the check against torch; exporting again", path)
    try:
        data = _export(wrapped, vocab)
        session = _session(data, ort, threads)
    except Exception as err:  # the exporter and the runtime raise many types
        raise EngineError(
            f"exporting the text backbone to ONNX failed ({type(err).__name__}: {err})"
        ) from err
    worst = verify(wrapped, OnnxTextBackbone(session, hf_model.config), vocab)
    if worst > 1.0:
        raise EngineError(
            f"the ONNX text backbone differs from the torch one by {worst:.3g} x the tolerance "
            f"(rtol = atol = {RTOL}) on random tokens"
        )
    if path is not None:
        _write_atomically(path, data)
    return session, False


def _export(wrapped: nn.Module, vocab: int) -> bytes:
    """The serialized ONNX graph of ``wrapped`` (``_LastHiddenState``), batch and token axes dynamic."""
    example = _tokens(torch.Generator().manual_seed(0), 2, 9, vocab)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            example,
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_shapes=({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO},) * 2,
            optimize=True,
            verbose=False,
        )
        return program.model_proto.SerializeToString()


def _session(data: bytes, ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def graph_key(hf_model: nn.Module) -> str:
    """What names an exported graph of ``hf_model`` in the cache: a SHA-256 (24 hex digits) of its
    weights and buffers (names, dtypes, shapes, bytes), its configuration, and the versions of torch,
    onnxscript and transformers that export it."""
    digest = hashlib.sha256()
    versions = {name: _version(name) for name in ("torch", "onnxscript", "transformers")}
    config = hf_model.config.to_json_string() if hasattr(hf_model.config, "to_json_string") else ""
    digest.update(json.dumps({"class": type(hf_model).__name__, "versions": versions}).encode())
    digest.update(config.encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:24]


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "absent"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in its folder (a reader sees the whole file or
    none; the file's mode follows the umask, as the export's own files do); a failure is logged, not
    raised: the cache only saves time."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temporary, "xb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as err:
        logger.warning("could not keep the ONNX graph in %s (%s); it is exported again next start", path, err)


def verify(reference: nn.Module, candidate: OnnxTextBackbone, vocab: int, seed: int = 0) -> float:
    """The largest ``|candidate - reference| / (atol + rtol |reference|)`` over the hidden states of real
    tokens, at every shape of ``CHECK_SHAPES`` (at most 1: they agree)."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for items, width in CHECK_SHAPES:
            ids, mask = _tokens(generator, items, width, vocab)
            expected = reference(ids, mask)
            got = candidate(input_ids=ids, attention_mask=mask).last_hidden_state
            if got.shape != expected.shape:
                return float("inf")
            real = mask.bool()
            ratio = (got - expected).abs()[real] / (ATOL + RTOL * expected.abs()[real])
            worst = max(worst, float(ratio.max()))
    return worst


def _tokens(generator: torch.Generator, items: int, width: int, vocab: int) -> tuple[torch.Tensor, ...]:
    """Random ids ``[items, width]`` and a mask whose last row (when there are two or more tokens) is cut
    to about half the width, as a padded batch is."""
    ids = torch.randint(1, max(vocab, 2), (items, width), generator=generator)
    mask = torch.ones(items, width, dtype=torch.long)
    if width > 1:
        mask[-1, width // 2 + 1 :] = 0
        ids[-1, width // 2 + 1 :] = 0
    return ids, mask


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings and progress lines are not the service's business."""
    exporter_logs = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export")]
    levels = [log.level for log in exporter_logs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for log in exporter_logs:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for log, level in zip(exporter_logs, levels):
                log.setLevel(level)
