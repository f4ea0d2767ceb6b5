"""How close a training step comes to the machine's limit: achieved GFLOP/s against a large matrix product.

Run (data as for bench_training.py):
    python benchmarks/bench_flops.py                         # MiniLM top-2, transrec path with the cache
    python benchmarks/bench_flops.py --variant "no cache" --steps 5
    python benchmarks/bench_flops.py --device cuda --precision bf16 --bert-base --peak-tflops 989

The floating-point operations of one training step are counted by ``torch.utils.flop_counter`` (matrix
products and attention, forward and backward; element-wise work is not counted, so the achieved figure
is a lower bound). The same run times a square matrix product of side ``--matmul`` in the training precision
(best of three timings) and prints the ratio, the peak memory (process resident set on a CPU, allocated
memory on CUDA) and, with ``--peak-tflops``, the model FLOP utilisation (MFU). ``--bert-base`` swaps
MiniLM for a randomly initialised BERT-base-sized text encoder (12 layers, width 768): speed only.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_training import ENCODERS, run_config
from transrec.data.prepared import PreparedDataset
from transrec.models.recommender import SequentialRecommender
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.precision import Precision
from transrec.training.step import TrainingObjective
from transrec.training.trainer import build_optimizer, item_content, resolve_device, seed_everything

BERT_BASE = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072}  # fmt: skip


def matmul_gflops(
    size: int, device: torch.device, dtype: torch.dtype, repeats: int = 5, trials: int = 3
) -> float:
    """The best of ``trials`` timings of ``repeats`` square matrix products: the machine's practical limit."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(trials):
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="cache", choices=["reference", "no cache", "cache"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--matmul", type=int, default=2048, help="side of the reference matrix product")
    parser.add_argument("--bert-base", action="store_true", help="a random BERT-base-sized text encoder")
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's peak, for MFU (e.g. 989 for H100 bf16)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    dataset_name, encoder, items = ENCODERS["text"]
    if args.bert_base:
        items = {"pretrained": None, "hf_config": BERT_BASE, "freeze": "top_k", "trainable_blocks": 2}
    with tempfile.TemporaryDirectory() as tmp:
        config = run_config(dataset_name, encoder, items, args.variant, args.device, Path(tmp))
        config = replace(config, precision=args.precision)
        dataset = PreparedDataset(config.dataset)
        seed_everything(0)
        model = SequentialRecommender(replace(config.model, n_items=dataset.n_items, n_users=dataset.n_users))
        model = model.to(device).train()
        content = item_content(model, dataset, config, device, Path(tmp), progress=False)
        data = SequenceTrainingData(dataset, max_len=20, mode="s2s", n_negatives=1, content=content, seed=0)
        batches = iter(make_loader(data, config.batch_size, shuffle=True, num_workers=0, epoch=0,
                                   reference=config.reference_path))  # fmt: skip
        objective = TrainingObjective(config, dataset, content, device)
        optimizer = build_optimizer(model, config.optim)
        precision = Precision(args.precision, device)

        def step(batch) -> None:
            with precision.autocast():
                loss = objective.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            precision.backward_and_step(loss, optimizer, model.parameters(), config.optim.grad_clip)

        step(next(batches))  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        counted = next(batches)
        with FlopCounterMode(display=False) as counter:
            step(counted)
        flops = counter.get_total_flops()
        _sync(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            step(next(batches))
        _sync(device)
        seconds = (time.perf_counter() - started) / args.steps
    matmul_dtype = precision.dtype or torch.float32
    peak = matmul_gflops(args.matmul, device, matmul_dtype)
    achieved = flops / seconds / 1e9
    name = "BERT-base-sized (random)" if args.bert_base else "all-MiniLM-L6-v2"
    print(f"device {device}, {torch.get_num_threads()} threads, {args.precision}, {name} top 2 blocks, "
          f"{args.variant}")  # fmt: skip
    print(f"training step: {flops / 1e9:.1f} GFLOP counted, {seconds:.3f} s per step")
    print(f"achieved: {achieved:.1f} GFLOP/s")
    print(f"matrix product {args.matmul}x{args.matmul} ({str(matmul_dtype).removeprefix('torch.')}): "
          f"{peak:.1f} GFLOP/s")  # fmt: skip
    print(f"achieved / matrix product: {achieved / peak:.1%}")
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated on the GPU")
    else:
        print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident")
    if args.peak_tflops:
        print(f"MFU: {achieved / (args.peak_tflops * 1e3):.1%} of {args.peak_tflops} TFLOP/s")


if __name__ == "__main__":
    main()
