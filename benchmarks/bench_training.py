"""Training throughput of transrec against the papers' own training step, on MovieLens-100K.

Run (after `transrec data fetch ml-100k`, `transrec data prepare ml-100k` and
`transrec data prepare ml-100k tokenizer=minilm --output ~/.cache/transrec/prepared/ml-100k-minilm`;
``TRANSREC_HOME`` moves ``~/.cache/transrec``):
    python benchmarks/bench_training.py --encoders text              # MiniLM top-2, CPU, all variants
    python benchmarks/bench_training.py --encoders text --steps 10 --device cuda
    python benchmarks/bench_training.py --encoders image --image-size 112   # batch 64 in 24 GB
    python benchmarks/bench_training.py --variants "reference,cache + bf16"

The papers' setting: SASRec with 2 blocks, sequence length 20, batch 64, BCE with one sampled negative
per position; the item encoder is all-MiniLM-L6-v2 (text) or EfficientNet-Lite0 (224 px covers) with
its top 2 blocks trainable. Every variant trains the same model on the same batches:

    reference         the papers' public code path (``training.reference``, which cites the MoRec and
                      NineRec lines it follows): B x (L + 1) x 2 item slots encoded in one call (the
                      sequence once, inputs and targets sharing it, one negative per position), padding
                      and repeats included, titles padded to 30 tokens, float32 (NineRec trains in
                      float32; MoRec's CUDA-only autocast casts nothing on a CPU), plain AdamW, no
                      gradient clipping
    reference + bf16  the same under bfloat16 autocast: the CPU analogue of MoRec's fp16 GPU setting
    no cache          transrec: each distinct item of the batch encoded once, texts in length buckets
    cache             transrec with the frozen-trunk cache: the frozen bottom computed once per item
                      before training (its one-off cost is printed, and amortised over one epoch)
    cache + bf16      the same under bfloat16 autocast (``precision: bf16``; opt-in in transrec)

Each prints sequences per second over ``--steps`` optimizer steps after one warm-up step (batches are
built before the clock starts, as DataLoader workers would), and its ratio to the reference measured
in the same run; a bf16 variant also gets its ratio to ``reference + bf16`` when that was measured.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from transrec.data.prepared import PreparedDataset
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.precision import Precision
from transrec.training.step import TrainingObjective
from transrec.training.trainer import build_optimizer, item_content, resolve_device, seed_everything

ENCODERS = {
    "text": ("ml-100k-minilm", "text", {"pretrained": "minilm", "freeze": "top_k", "trainable_blocks": 2}),
    "image": (
        "ml-100k",
        "image",
        {"backbone": "efficientnet-lite0", "freeze": "top_k", "trainable_blocks": 2},
    ),
}
#: variant -> (papers' reference path, frozen-trunk cache, precision)
VARIANTS = {
    "reference": (True, False, "fp32"),
    "reference + bf16": (True, False, "bf16"),
    "no cache": (False, False, "fp32"),
    "cache": (False, True, "fp32"),
    "cache + bf16": (False, True, "bf16"),
}


def run_config(
    dataset: str, encoder: str, items: dict, variant: str, device: str, out: Path, batch_size: int = 64
) -> TrainConfig:
    """The run of ``variant`` (a key of ``VARIANTS``) in the papers' setting."""
    reference, cache, precision = VARIANTS[variant]
    model = ModelConfig(d_model=64, max_len=20, item_encoder=encoder, item_encoder_config=items,
                        user_encoder="sasrec", user_encoder_config={"n_layers": 2, "n_heads": 2})  # fmt: skip
    optim = OptimConfig(grad_clip=0.0) if reference else OptimConfig()  # the papers clip no gradient
    return TrainConfig(dataset=dataset, output_dir=str(out), model=model, mode="s2s", objective="bce",
                       n_negatives=1, batch_size=batch_size, seed=0, device=device, optim=optim,
                       trunk_cache=cache, reference_path=reference, precision=precision)  # fmt: skip


def measure(config: TrainConfig, steps: int) -> dict[str, float]:
    """Sequences per second of ``steps`` optimizer steps (after one warm-up step), and setup seconds."""
    device = resolve_device(config.device)
    dataset = PreparedDataset(config.dataset)
    seed_everything(config.seed)
    model = SequentialRecommender(replace(config.model, n_items=dataset.n_items, n_users=dataset.n_users))
    model = model.to(device).train()
    started = time.perf_counter()
    content = item_content(model, dataset, config, device, Path(config.output_dir), progress=False)
    setup = time.perf_counter() - started
    data = SequenceTrainingData(dataset, max_len=config.model.max_len, mode="s2s", n_negatives=1,
                                content=content, seed=config.seed)  # fmt: skip
    loader = make_loader(data, config.batch_size, shuffle=True, num_workers=0, epoch=0,
                         reference=config.reference_path)  # fmt: skip
    batches = iter(loader)
    objective = TrainingObjective(config, dataset, content, device)
    optimizer = build_optimizer(model, config.optim)  # torch's AdamW, as the papers'
    precision = Precision(config.precision, device)
    timed, sequences = 0.0, 0
    for step in range(steps + 1):
        batch = next(batches)
        _sync(device)
        begin = time.perf_counter()
        with precision.autocast():
            loss = objective.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        precision.backward_and_step(loss, optimizer, model.parameters(), config.optim.grad_clip)
        _sync(device)
        if step > 0:  # the first step warms up allocators and kernels
            timed += time.perf_counter() - begin
            sequences += len(batch["user_ids"])
    epoch_steps = len(loader)
    per_second = sequences / timed
    return {"per_second": per_second, "setup": setup,
            "amortised": per_second * timed / (timed + setup * steps / epoch_steps)}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="text,image", help="comma-separated: text, image")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="sequences per batch (the reference encodes 42 slots each)")  # fmt: skip
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side the image backbone sees (default: its own, 224 for EfficientNet-Lite0)",
    )
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "reference" not in variants:
        parser.error(f"--variants must include reference and be among {', '.join(VARIANTS)}; got {unknown}")
    setting = (
        f"SASRec 2 blocks, length 20, batch {args.batch_size}, BCE with 1 negative, top 2 blocks trainable"
    )
    if args.image_size:
        setting += f", images at {args.image_size} px"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads of "
          f"{os.cpu_count()} CPUs (load average {load}), {setting}, {args.steps} timed steps")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            dataset, encoder, items = ENCODERS[name]
            if encoder == "image" and args.image_size:
                items = {**items, "image_size": args.image_size}
            results = {}
            for variant in variants:
                out = Path(tmp) / name / variant.replace(" ", "")
                config = run_config(dataset, encoder, items, variant, args.device, out, args.batch_size)
                results[variant] = result = measure(config, args.steps)
                print(f"{name:5s} {variant:16s} {result['per_second']:8.2f} sequences/s", flush=True)
            print_table(name, results)


def print_table(name: str, results: dict[str, dict[str, float]]) -> None:
    """Sequences per second of each variant and its ratios to the reference(s) of the same run."""
    base = results["reference"]["per_second"]
    base16 = results.get("reference + bf16", {}).get("per_second")
    print(f"\n{name}: {'variant':16s} {'seq/s':>8s} {'x reference':>12s} {'x reference + bf16':>19s}")
    for variant, result in results.items():
        speed = result["per_second"]
        line = f"{name}: {variant:16s} {speed:8.2f} {speed / base:11.2f}x"
        if variant.endswith("bf16") and base16:
            line += f" {speed / base16:18.2f}x"
        print(line)
    for variant in (v for v in results if v.startswith("cache")):
        result = results[variant]
        print(f"{name}: {variant}: cache built once in {result['setup']:.1f} s; amortised over one epoch "
              f"{result['amortised']:.2f} sequences/s, {result['amortised'] / base:.2f}x")  # fmt: skip
    print()


if __name__ == "__main__":
    main()
