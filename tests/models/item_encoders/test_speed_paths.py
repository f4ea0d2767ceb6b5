"""What makes a cached text step fast without changing what it computes: length buckets cut where the
fewest tokens are padded, and a cached trunk handed to the trainable top in the autocast dtype."""

import itertools

import pytest
import torch

from tests.models.item_encoders.builders import D, text_config, tiny_source
from transrec.data.item_content import ItemContent
from transrec.models.item_encoders import build_item_encoder
from transrec.models.item_encoders.freezing import find_blocks
from transrec.models.item_encoders.text import length_buckets


def padded(lengths: torch.Tensor, buckets: list[torch.Tensor]) -> int:
    return sum(len(b) * int(lengths[b].max()) for b in buckets)


def fewest_padded(lengths: list[int], most: int, min_items: int) -> int:
    """Brute force over every cut of the sorted lengths between two different values."""
    ordered = sorted(lengths)
    best = len(ordered) * ordered[-1]
    places = [i for i in range(1, len(ordered)) if ordered[i] != ordered[i - 1]]
    for count in range(2, min(most, len(ordered) // min_items) + 1):
        for cuts in itertools.combinations(places, count - 1):
            bounds = [0, *cuts, len(ordered)]
            parts = [ordered[a:b] for a, b in itertools.pairwise(bounds)]
            if min(len(p) for p in parts) >= min_items:
                best = min(best, sum(len(p) * p[-1] for p in parts))
    return best


def test_length_buckets_cut_where_the_fewest_tokens_are_padded():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 14, (1,), generator=generator))
        most = int(torch.randint(1, 5, (1,), generator=generator))
        min_items = int(torch.randint(1, 4, (1,), generator=generator))
        lengths = torch.randint(1, 9, (n,), generator=generator)
        buckets = length_buckets(lengths, most, min_items)
        assert torch.equal(torch.cat(buckets).sort().values, torch.arange(n))
        assert len(buckets) == 1 or (len(buckets) <= most and min(len(b) for b in buckets) >= min_items)
        assert padded(lengths, buckets) == fewest_padded(lengths.tolist(), most, min_items), lengths


def test_length_buckets_pad_less_than_equal_counts_on_skewed_lengths():
    lengths = torch.tensor([5] * 60 + [30] * 20)
    buckets = length_buckets(lengths, 2, min_items=8)
    # Equal counts (40 + 40) would pad 40 * 5 + 40 * 30 = 1400 tokens; the cut between 5 and 30, 900.
    assert [len(b) for b in buckets] == [60, 20]
    assert padded(lengths, buckets) == 900


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_source(tmp_path_factory.mktemp("speed") / "ds")


def test_a_cached_trunk_enters_the_trainable_top_in_the_autocast_dtype(dataset):
    torch.manual_seed(0)
    encoder = build_item_encoder("text", D, dataset.n_items, text_config(freeze="top_k", trainable_blocks=1))
    encoder.eval()  # no dropout: the cached and uncached runs compute the same function
    content = ItemContent(dataset, text=True, image=False)
    batch = content.batch((torch.nonzero((content.modality[1:] & 1) > 0).squeeze(1) + 1)[:12])
    model = encoder.backbone.model
    seen = []
    # The top block's first matrix product sees what the block received (after the cache's own hook).
    top = model.get_submodule(find_blocks(model)[-1])
    first = next(m for m in top.modules() if isinstance(m, torch.nn.Linear))
    handle = first.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            uncached = encoder(batch).float()
        encoder.build_trunk_cache(content)
        seen.append("built")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cached = encoder(batch).float()
        plain = encoder(batch)
    finally:
        handle.remove()
    # Uncached, the top block receives the float32 output of the frozen blocks; cached under autocast, the
    # trunk in bfloat16 (no cast before each matrix product); without autocast, float32 as stored.
    assert seen == [torch.float32, "built", torch.bfloat16, torch.float32]
    assert plain.dtype == torch.float32
    # The same model to bfloat16 rounding.
    assert (cached - uncached).norm() <= 0.02 * uncached.norm()
    assert (cached - plain).norm() <= 0.02 * plain.norm()
