"""The item-encoder process of ``serving.encoder_process.EncoderProcess`` (run as
``python -m transrec.serving.encoder_worker`` by it, not by a person): loads the export's model, puts its
text backbones on the asked engine (``serving.onnx_backbone``), answers ``("ready", {"pid", "engine",
"detail"})`` over the connection it is given, then each request ``("encode", arrays)`` with
``("ok", vectors)`` or ``("error", traceback)``, until ``("stop",)`` or a closed connection. A load or an
engine that fails is answered ``("failed", reason)``."""

from __future__ import annotations

import argparse
import os
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from transrec.data.item_content import ItemBatch


def _worker_main(
    conn: Any,
    model_dir: str,
    device: str,
    torch_threads: int,
    engine: str = "torch",
    onnx_cache: str | None = None,
) -> None:
    """The process: load the model, put it on ``engine`` (exported graphs kept in ``onnx_cache``), answer
    ``("ready", {...})``, then one answer per request until ``("stop",)`` or a closed pipe."""
    try:
        torch.set_num_threads(torch_threads)
        from transrec.models.recommender import SequentialRecommender
        from transrec.serving.onnx_backbone import EngineError, accelerate_text_backbones

        model = SequentialRecommender.from_pretrained(Path(model_dir), map_location=torch.device(device))
        model.eval()
        try:
            choice = accelerate_text_backbones(
                model, engine, threads=torch_threads, device=device, cache_dir=onnx_cache
            )
        except EngineError as err:  # engine="onnxruntime" that cannot be used: the parent says why
            conn.send(("failed", str(err)))
            return
    except BaseException:  # whatever stops the load, the parent reports it
        conn.send(("failed", traceback.format_exc()))
        return
    conn.send(("ready", {"pid": os.getpid(), "engine": choice.engine, "detail": choice.detail}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the serving process went away
            return
        if message[0] == "stop":
            return
        arrays = message[1]
        try:
            tensors = {k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()}
            with torch.no_grad():
                vectors = model.encode_items(ItemBatch(**tensors).to(torch.device(device))).float().cpu()
            conn.send(("ok", vectors.numpy()))
        except Exception:  # a bug: the parent raises it with this traceback
            conn.send(("error", traceback.format_exc()))


def main() -> None:
    """The encoder process's entry point (started by ``EncoderProcess``, not by a person)."""
    parser = argparse.ArgumentParser(description="transrec's item-encoder process (see EncoderProcess)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--onnx-cache", default=None)
    args = parser.parse_args()
    _worker_main(
        Connection(args.fd), args.model_dir, args.device, args.torch_threads, args.engine, args.onnx_cache
    )


if __name__ == "__main__":
    main()
