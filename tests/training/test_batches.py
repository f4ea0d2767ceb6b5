import numpy as np
import pytest
import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.training.batches import (
    CollateSequences,
    SequenceTrainingData,
    make_loader,
    sample_uniform_excluding,
    training_item_counts,
)

from ..data.rawbuild import raw_dataset

N_ITEMS = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Integer ids, so user "k" is index k - 1 and item "i" is index i (natural order)."""
    sequences = {
        1: [1, 2, 3],  # one training item: no window
        2: [4, 5, 6, 7],  # training [4, 5], validation 6, test 7
        3: list(range(1, 13)),  # training 1..10: only items 11 and 12 may be negatives
        4: list(range(12, 0, -1)),
    }
    rng = np.random.default_rng(7)
    for user in range(5, 21):
        sequences[user] = (rng.permutation(N_ITEMS)[: rng.integers(3, 10)] + 1).tolist()
    log = [(str(u), str(i), float(t)) for u, items in sequences.items() for t, i in enumerate(items)]
    raw = raw_dataset(log, {str(i): (f"item number {i}", None) for i in range(1, N_ITEMS + 1)})
    ds = prepare(raw, PrepareConfig(user_k=1, item_k=1), tmp_path_factory.mktemp("p") / "p", progress=False)
    assert ds.sequence(2).tolist() == sequences[3]  # the ids map as the tests assume
    return ds


def windows(data):
    return {int(data.users[i]): data[i] for i in range(len(data))}


def training_sequence(ds, user):
    return ds.sequence(user)[:-2]


def test_s2s_windows_are_left_padded_shifts_of_the_training_items(dataset):
    data = SequenceTrainingData(dataset, max_len=4, mode="s2s", n_negatives=1, content=None, seed=0)
    by_user = windows(data)
    assert 0 not in by_user  # user "1" has a single training item
    # User "2": training [4, 5] -> input [0, 0, 0, 4], target [0, 0, 0, 5].
    assert by_user[1]["inputs"].tolist() == [0, 0, 0, 4]
    assert by_user[1]["targets"].tolist() == [0, 0, 0, 5]
    assert by_user[1]["valid"].tolist() == [False, False, False, True]
    # User "3": training 1..10, the last max_len + 1 = 5 items are 6..10.
    assert by_user[2]["inputs"].tolist() == [6, 7, 8, 9]
    assert by_user[2]["targets"].tolist() == [7, 8, 9, 10]
    for user, ex in by_user.items():
        train = training_sequence(dataset, user)
        n = min(len(train) - 1, 4)
        assert ex["inputs"][4 - n :].tolist() == train[-n - 1 : -1].tolist()
        assert ex["targets"][4 - n :].tolist() == train[-n:].tolist()
        assert not ex["inputs"][: 4 - n].any() and not ex["targets"][: 4 - n].any()
        assert ex["valid"].tolist() == (ex["inputs"] != 0).tolist()
        assert not ex["masked"].any()


def test_s2o_keeps_only_the_last_target(dataset):
    data = SequenceTrainingData(dataset, max_len=4, mode="s2o", n_negatives=2, content=None, seed=0)
    ex = windows(data)[2]
    assert ex["inputs"].tolist() == [6, 7, 8, 9]
    assert ex["targets"].tolist() == [0, 0, 0, 10]
    assert not ex["negatives"][:3].any() and ex["negatives"][3].all()  # negatives only where a target is


def test_masked_windows_hide_and_target_the_same_positions(dataset):
    rates = []
    for epoch in range(20):
        data = SequenceTrainingData(dataset, max_len=6, mode="masked", n_negatives=1, content=None, seed=3)
        data.set_epoch(epoch)
        for user, ex in windows(data).items():
            window = training_sequence(dataset, user)[-6:]
            original = np.zeros(6, dtype=np.int64)
            original[6 - len(window) :] = window
            masked = ex["masked"]
            assert masked.any() and not (masked & ~ex["valid"]).any()
            assert ex["valid"].tolist() == (original != 0).tolist()
            assert ex["targets"].tolist() == np.where(masked, original, 0).tolist()
            assert ex["inputs"].tolist() == np.where(masked, 0, original).tolist()  # the answer is hidden
            rates.append(masked.sum() / ex["valid"].sum())
    # mask_prob 0.2 plus the one forced mask of windows that drew none: a little above 0.2.
    assert 0.2 < np.mean(rates) < 0.4


def test_validation_and_test_items_never_reach_training(dataset):
    split = dataset.split
    for mode in ("s2s", "s2o", "masked"):
        data = SequenceTrainingData(dataset, max_len=20, mode=mode, n_negatives=0, content=None, seed=1)
        for user, ex in windows(data).items():
            shown = set(ex["inputs"].tolist()) | set(ex["targets"].tolist())
            shown.discard(0)
            assert shown <= set(training_sequence(dataset, user).tolist())
            assert split.valid_targets[user] not in shown and split.test_targets[user] not in shown


def test_uniform_sampler_excludes_and_is_uniform():
    rng = np.random.default_rng(0)
    draws = sample_uniform_excluding(rng, 5, np.array([2, 4]), (30000,))
    counts = np.bincount(draws, minlength=6)
    assert counts[[0, 2, 4]].sum() == 0
    assert np.allclose(counts[[1, 3, 5]] / 30000, 1 / 3, atol=0.02)
    assert sample_uniform_excluding(rng, 5, np.array([2, 4]), (0, 1)).shape == (0, 1)
    with pytest.raises(ValueError, match="no item left"):
        sample_uniform_excluding(rng, 3, np.array([1, 2, 3]), (1,))


def test_negatives_never_come_from_the_users_training_sequence(dataset):
    seen = []
    for epoch in range(30):
        data = SequenceTrainingData(dataset, max_len=5, mode="s2s", n_negatives=3, content=None, seed=5)
        data.set_epoch(epoch)
        for user, ex in windows(data).items():
            negatives, has_target = ex["negatives"], ex["targets"] != 0
            assert (negatives[has_target] >= 1).all() and (negatives[has_target] <= N_ITEMS).all()
            assert not negatives[~has_target].any()
            assert not np.isin(negatives, training_sequence(dataset, user)).any()
            if user == 2:  # trained on 1..10 of a 12-item catalogue
                seen.extend(negatives[has_target].ravel().tolist())
    counts = np.bincount(seen, minlength=N_ITEMS + 1)
    assert set(np.flatnonzero(counts)) == {11, 12}
    assert abs(counts[11] - counts[12]) < 0.2 * len(seen)


def test_draws_are_a_function_of_seed_and_epoch(dataset):
    def draw(seed, epoch, mode):
        data = SequenceTrainingData(dataset, max_len=5, mode=mode, n_negatives=2, content=None, seed=seed)
        data.set_epoch(epoch)
        return [(ex["inputs"].tolist(), ex["negatives"].tolist()) for ex in windows(data).values()]

    for mode in ("s2s", "masked"):
        assert draw(0, 4, mode) == draw(0, 4, mode)
        assert draw(0, 4, mode) != draw(0, 5, mode)
        assert draw(0, 4, mode) != draw(1, 4, mode)
    data = SequenceTrainingData(dataset, max_len=5, mode="masked", n_negatives=2, content=None, seed=0)
    first = data[3]["masked"].tolist()
    data.set_epoch(9)
    data.set_epoch(0)
    assert data[3]["masked"].tolist() == first  # resuming at an epoch redraws that epoch exactly


def test_collate_lists_each_item_once_and_inverse_maps_rebuild_the_batch(dataset):
    data = SequenceTrainingData(dataset, max_len=5, mode="s2s", n_negatives=2, content=None, seed=0)
    examples = [data[i] for i in range(len(data))]
    batch = CollateSequences()(examples)
    unique = batch["unique_items"]
    everything = torch.cat([batch[k].flatten() for k in ("inputs", "targets", "negatives")])
    assert unique.tolist() == sorted(set(everything.tolist()) - {0})
    padded = torch.cat([torch.zeros(1, dtype=torch.long), unique])
    for key in ("inputs", "targets", "negatives"):
        inverse = batch[f"{key}_inv"]
        assert inverse.shape == batch[key].shape
        assert torch.equal(padded[inverse + 1], batch[key])
        assert torch.equal(inverse == -1, batch[key] == 0)
    assert batch["negatives"].shape == (len(data), 5, 2)
    assert torch.equal(batch["user_ids"], torch.from_numpy(data.users))
    assert batch["items"] is None
    for row, user in enumerate(batch["user_ids"].tolist()):
        expected = np.isin(unique.numpy(), training_sequence(dataset, user))
        assert batch["in_history"][row].tolist() == expected.tolist()
    # Every target is in its user's history, which is why in-batch softmax must never mask the target.
    rows, cols = (batch["targets"] != 0).nonzero(as_tuple=True)
    assert batch["in_history"][rows, batch["targets_inv"][rows, cols]].all()


def test_collate_gathers_content_of_the_unique_items(dataset):
    content = ItemContent(dataset, text=True, image=False)
    data = SequenceTrainingData(dataset, max_len=5, mode="s2o", n_negatives=1, content=content, seed=0)
    batch = next(iter(make_loader(data, batch_size=4, shuffle=False, num_workers=0, epoch=0)))
    assert torch.equal(batch["items"].item_ids, batch["unique_items"])
    assert batch["items"].input_ids.shape[0] == len(batch["unique_items"])


def test_workers_give_the_same_batches_and_epochs_reshuffle(dataset):
    data = SequenceTrainingData(dataset, max_len=5, mode="masked", n_negatives=1, content=None, seed=2)

    def run(workers, epoch):
        loader = make_loader(data, batch_size=3, shuffle=True, num_workers=workers, epoch=epoch)
        return [{k: v for k, v in b.items() if k != "items"} for b in loader]

    single, parallel = run(0, 1), run(2, 1)
    assert len(single) == len(parallel) == -(-len(data) // 3)
    for a, b in zip(single, parallel, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    order = lambda batches: torch.cat([b["user_ids"] for b in batches]).tolist()  # noqa: E731
    assert order(run(0, 1)) == order(single)
    assert order(run(0, 2)) != order(single)
    assert sorted(order(single)) == data.users.tolist()


def test_user_fraction_is_a_seeded_nested_subset(dataset):
    def users(fraction, seed=0):
        data = SequenceTrainingData(
            dataset, max_len=5, mode="s2s", n_negatives=1, content=None, seed=seed, user_fraction=fraction
        )
        return data.users.tolist()

    everyone = users(1.0)
    assert len(everyone) == dataset.n_users - 1  # all but user "1"
    half, quarter = users(0.5), users(0.25)
    assert half == users(0.5) and len(half) == round(0.5 * len(everyone))
    assert set(quarter) < set(half) < set(everyone)
    assert users(0.5, seed=1) != half


def test_training_item_counts_cover_only_training_interactions(dataset):
    counts = training_item_counts(dataset)
    expected = np.zeros(N_ITEMS + 1, dtype=np.int64)
    for user in range(dataset.n_users):
        np.add.at(expected, training_sequence(dataset, user), 1)
    assert counts.tolist() == expected.tolist() and counts[0] == 0


def test_cpc_windows_split_each_training_sequence_into_inputs_and_its_last_l_positives(dataset):
    def cpc(epoch=0):
        data = SequenceTrainingData(dataset, max_len=4, mode="cpc", n_negatives=3, content=None, seed=0,
                                    positives=5)  # fmt: skip
        data.set_epoch(epoch)
        return data

    data = cpc()
    by_user = windows(data)
    # User "3": training 1..10 -> positives 6..10 (TransRec: the latest five), inputs the 4 before them.
    assert by_user[2]["positives"].tolist() == [6, 7, 8, 9, 10]
    assert by_user[2]["inputs"].tolist() == [2, 3, 4, 5]
    # User "2": training [4, 5] -> one input is kept, so only one positive.
    assert by_user[1]["inputs"].tolist() == [0, 0, 0, 4]
    assert by_user[1]["positives"].tolist() == [5, 0, 0, 0, 0]
    for user, ex in by_user.items():
        train = training_sequence(dataset, user)
        count = min(5, len(train) - 1)
        assert ex["positives"][:count].tolist() == train[-count:].tolist()
        assert not ex["positives"][count:].any()
        n = min(len(train) - count, 4)
        assert ex["inputs"][4 - n :].tolist() == train[-count - n : -count].tolist()
        assert not ex["inputs"][: 4 - n].any() and ex["valid"].tolist() == (ex["inputs"] != 0).tolist()
        assert ex["negatives"].shape == (3,) and not np.isin(ex["negatives"], train).any()
    # Draws are a function of (seed, epoch, user).
    slots = ("inputs", "positives", "negatives")
    for user, ex in windows(cpc()).items():
        assert all(np.array_equal(ex[key], by_user[user][key]) for key in slots)
    later = windows(cpc(epoch=1))
    assert any(not np.array_equal(later[u]["negatives"], by_user[u]["negatives"]) for u in by_user)
    # The batch lists every distinct item of inputs, positives and negatives once.
    batch = CollateSequences()([data[i] for i in range(len(data))])
    unique = batch["unique_items"]
    every = np.concatenate([np.stack([ex[key] for ex in by_user.values()]).ravel() for key in slots])
    assert unique.tolist() == sorted(set(every.tolist()) - {0})
    for key in slots:
        inverse = batch[f"{key}_inv"]
        assert torch.equal(torch.where(inverse >= 0, unique[inverse.clamp(min=0)], 0), batch[key])
    assert "targets" not in batch
