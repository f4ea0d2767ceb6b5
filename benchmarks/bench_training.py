"""Training throughput of transrec against the papers' reference path, on MovieLens-100K.

Run (after `transrec data fetch ml-100k`, `transrec data prepare ml-100k` and
`transrec data prepare ml-100k tokenizer=minilm --output ~/.cache/transrec/prepared/ml-100k-minilm`):
    python benchmarks/bench_training.py                       # MiniLM and EfficientNet-Lite0, CPU
    python benchmarks/bench_training.py --encoders text --steps 10 --device cuda
    python benchmarks/bench_training.py --encoders image --batch-size 16   # fits 24 GB of CPU memory
    python benchmarks/bench_training.py --encoders image --image-size 112  # batch 64 in 24 GB

The papers' settings: SASRec with 2 blocks, sequence length 20, batch 64, BCE with one sampled negative
per position; the item encoder is all-MiniLM-L6-v2 (text) or EfficientNet-Lite0 (224 px covers) with
its top 2 blocks trainable. Three variants train the same model on the same batches:

    reference   what the papers' code does: every input, target and negative slot of the batch encoded
                on its own, padding and repeats included, texts padded to the batch's longest
                (``TrainConfig.reference_path``)
    no cache    transrec: each distinct item of the batch encoded once, texts in length buckets
    cache       transrec with the frozen-trunk cache: the frozen bottom computed once per item before
                training (its one-off cost is printed, and amortised over one epoch in a second line)

Each prints sequences per second over ``--steps`` steps after one warm-up step, and the ratios to the
reference measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from transrec.data.prepared import PreparedDataset
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.config import OptimConfig, TrainConfig
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


def run_config(
    dataset: str, encoder: str, items: dict, variant: str, device: str, out: Path, batch_size: int = 64
) -> TrainConfig:
    if variant == "reference" and encoder == "text":
        items = {**items, "length_buckets": 1}  # the papers pad every text of a batch to one length
    model = ModelConfig(d_model=64, max_len=20, item_encoder=encoder, item_encoder_config=items,
                        user_encoder="sasrec", user_encoder_config={"n_layers": 2, "n_heads": 2})  # fmt: skip
    return TrainConfig(dataset=dataset, output_dir=str(out), model=model, mode="s2s", objective="bce",
                       n_negatives=1, batch_size=batch_size, seed=0, device=device, optim=OptimConfig(),
                       trunk_cache=variant == "cache", reference_path=variant == "reference")  # fmt: skip


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
    loader = iter(make_loader(data, config.batch_size, shuffle=True, num_workers=0, epoch=0))
    objective = TrainingObjective(config, dataset, content, device)
    optimizer = build_optimizer(model, config.optim)
    timed, sequences = 0.0, 0
    for step in range(steps + 1):
        batch = next(loader)
        _sync(device)
        begin = time.perf_counter()
        loss = objective.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step > 0:  # the first step warms up allocators and kernels
            timed += time.perf_counter() - begin
            sequences += len(batch["user_ids"])
    epoch_steps = -(-dataset.n_users // config.batch_size)
    per_second = sequences / timed
    return {"per_second": per_second, "setup": setup,
            "amortised": per_second * timed / (timed + setup * steps / epoch_steps)}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="text,image", help="comma-separated: text, image")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="sequences per batch (the reference path encodes 3 x batch x 20 images at once: "
                        "use 16 for images on a 24 GB CPU machine)")  # fmt: skip
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side the image backbone sees (default: its own, 224 for EfficientNet-Lite0)",
    )
    args = parser.parse_args()
    setting = (
        f"SASRec 2 blocks, length 20, batch {args.batch_size}, BCE with 1 negative, top 2 blocks trainable"
    )
    if args.image_size:
        setting += f", images at {args.image_size} px"
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {setting}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            dataset, encoder, items = ENCODERS[name]
            if encoder == "image" and args.image_size:
                items = {**items, "image_size": args.image_size}
            results = {}
            for variant in ("reference", "no cache", "cache"):
                out = Path(tmp) / variant
                config = run_config(dataset, encoder, items, variant, args.device, out, args.batch_size)
                results[variant] = measure(config, args.steps)
                line = f"{name:5s} {variant:9s}: {results[variant]['per_second']:8.2f} sequences/s"
                if variant == "cache":
                    line += f" (cache built once in {results[variant]['setup']:.1f} s)"
                print(line, flush=True)
            base = results["reference"]["per_second"]
            for variant in ("no cache", "cache"):
                print(f"{name:5s} {variant:9s} / reference: {results[variant]['per_second'] / base:6.2f}x")
            print(f"{name:5s} cache, build amortised over one epoch / reference: "
                  f"{results['cache']['amortised'] / base:6.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
