"""Training windows (``TrainConfig.windows``, ``SequenceTrainingData(windows=...)``): ``last`` unchanged,
``all`` every window at a stride, sampled per epoch when bounded."""

import hashlib

import numpy as np
import pytest
import torch

from transrec.config import ConfigError
from transrec.data.prepare import PrepareConfig, prepare
from transrec.models.recommender import ModelConfig
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.config import TrainConfig
from transrec.training.validation import validate_config

from ..data.rawbuild import raw_dataset

# Integer ids, listed in order, so item "k" is index k and user "k" is index k - 1. Each sequence ends with
# its validation and test targets (28 and 29), so these lists are the training sequences.
TRAINING = {
    1: [1, 2, 3],  # n = 3 < max_len + 1
    2: [4, 5, 6, 7, 8],  # n = 5 == max_len + 1
    3: list(range(9, 21)),  # n = 12: n - 5 = 7, which the stride 3 does not divide
    4: [21, 22],  # the shortest with a window
    5: [1],  # no input/target pair: no window
    6: [23, 24, 25, 26, 27, 30],  # n = 6
}
N_ITEMS = 30


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    log = [
        (str(u), str(i), float(t)) for u, items in TRAINING.items() for t, i in enumerate([*items, 28, 29])
    ]
    raw = raw_dataset(log, {str(i): (f"item {i}", None) for i in range(1, N_ITEMS + 1)})
    ds = prepare(raw, PrepareConfig(user_k=1, item_k=1), tmp_path_factory.mktemp("w") / "p", progress=False)
    assert [ds.sequence(u)[:-2].tolist() for u in range(6)] == list(TRAINING.values())
    return ds


def data(ds, mode="s2s", **kw):
    kw = {"max_len": 4, "n_negatives": 2, "content": None, "seed": 5, **kw}
    return SequenceTrainingData(ds, mode=mode, **kw)


def all_windows(d, epoch=0):
    d.set_epoch(epoch)
    return [d[i] for i in range(len(d))]


def digest(d, epochs=(0, 1)) -> str:
    """SHA-256 of every array of every window of ``epochs``, in dataset order."""
    sha = hashlib.sha256()
    for epoch in epochs:
        for example in all_windows(d, epoch):
            for key in sorted(example):
                value = np.ascontiguousarray(np.asarray(example[key]))
                sha.update(
                    key.encode() + str(value.dtype).encode() + str(value.shape).encode() + value.tobytes()
                )
    return sha.hexdigest()


# Computed with the code of commit 58e7ae2 (before windows existed) on this dataset: `windows: last` must
# keep producing exactly these batches.
LAST_DIGESTS = {
    "s2s": "200c6dd2fe75c2f101d5cd0367ff41b9e9ed49c62af3608df4ed640199c734a6",
    "s2o": "d2784ee87563fd552d704cce52393af7b49c250cad683c3f6bbd033801a7cdcd",
    "masked": "95326115b6d49f7a92f2b4b97e1a67fd5a8ce09d02207eb58aa49f8eedb61e7e",
    "cpc": "1f35df20746a1fd0ee82a71213cea026eed9c44f68cdb7afd1c21ce682c69c66",
}


@pytest.mark.parametrize("mode", sorted(LAST_DIGESTS))
def test_last_windows_are_byte_identical_to_the_code_before_windows(dataset, mode):
    assert digest(data(dataset, mode, user_fraction=0.8)) == LAST_DIGESTS[mode]


def test_all_windows_at_a_stride_exactly(dataset):
    d = data(dataset, windows="all", window_stride=3)
    got = [(int(w["user_id"]), w["inputs"].tolist(), w["targets"].tolist()) for w in all_windows(d)]
    assert got == [
        (0, [0, 0, 1, 2], [0, 0, 2, 3]),  # shorter than a window: the one padded window of "last"
        (1, [4, 5, 6, 7], [5, 6, 7, 8]),  # exactly one window
        (2, [16, 17, 18, 19], [17, 18, 19, 20]),  # ends at the last training item
        (2, [13, 14, 15, 16], [14, 15, 16, 17]),  # 3 items earlier
        (2, [10, 11, 12, 13], [11, 12, 13, 14]),
        (2, [0, 0, 9, 10], [0, 0, 10, 11]),  # 3 does not divide 12 - 5: a shorter first window
        (3, [0, 0, 0, 21], [0, 0, 0, 22]),
        (5, [24, 25, 26, 27], [25, 26, 27, 30]),
        (5, [0, 0, 23, 24], [0, 0, 24, 25]),
    ]
    assert len(d) == 9 and d.users.tolist() == [0, 1, 2, 3, 5]
    defaults = {mode: data(dataset, mode, windows="all").window_stride for mode in ("s2s", "s2o", "masked")}
    assert defaults == {"s2s": 2, "s2o": 1, "masked": 2}  # max_len // 2; s2o: every prefix
    # s2o trains a window's last item only: its windows go down to the first target.
    s2o = all_windows(data(dataset, "s2o", windows="all", window_stride=3))
    assert [
        (int(w["user_id"]), w["inputs"].tolist(), w["targets"].tolist()) for w in s2o if w["user_id"] != 2
    ] == [
        (0, [0, 0, 1, 2], [0, 0, 0, 3]),
        (1, [4, 5, 6, 7], [0, 0, 0, 8]),
        (1, [0, 0, 0, 4], [0, 0, 0, 5]),  # ends at 5 - 3 = 2: one input, the first target
        (3, [0, 0, 0, 21], [0, 0, 0, 22]),
        (5, [24, 25, 26, 27], [0, 0, 0, 30]),
        (5, [0, 0, 23, 24], [0, 0, 0, 25]),
    ]
    assert [w["targets"][-1] for w in s2o if w["user_id"] == 2] == [20, 17, 14, 11]
    masked = all_windows(data(dataset, "masked", windows="all", window_stride=3))
    windows_of_user_2 = [
        np.where(w["masked"], w["targets"], w["inputs"]).tolist() for w in masked if w["user_id"] == 2
    ]
    assert windows_of_user_2 == [[17, 18, 19, 20], [14, 15, 16, 17], [11, 12, 13, 14], [0, 9, 10, 11]]


@pytest.mark.parametrize("mode", ["s2s", "s2o", "masked"])
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_every_training_target_is_in_a_window(dataset, mode, stride):
    d = data(dataset, mode, windows="all", window_stride=stride)
    width = 4 if mode == "masked" else 5
    covered = {}
    for w in all_windows(d):
        items = np.where(w["masked"], w["targets"], w["inputs"]) if mode == "masked" else w["targets"]
        covered.setdefault(int(w["user_id"]), []).append(items[items != 0].tolist())
    for user, windows in covered.items():
        train = TRAINING[user + 1]
        n = len(train)
        count = 1 + (n - 2) // stride if mode == "s2o" else 1 + -(-max(0, n - width) // stride)
        assert len(windows) == count
        assert windows[0][-1] == train[-1]  # the first window ends at the user's last training item
        trained = sorted({item for window in windows for item in window})
        if mode == "s2o":  # every stride-th target, counted back from the last one
            assert trained == sorted(train[end - 1] for end in range(n, 1, -stride))
        else:
            assert trained == sorted(train[1:] if mode == "s2s" else train)
    if mode == "s2o" and stride == 1:  # RecBole's scheme: every prefix, one target each
        assert len(d) == sum(len(t) - 1 for t in TRAINING.values())


def test_sampled_windows_are_bounded_seeded_and_keep_the_most_recent(dataset):
    d = data(dataset, windows="all", window_stride=1, windows_per_user=2)
    counts = {0: 1, 1: 1, 2: 2, 3: 1, 5: 2}  # user 2 has 8 windows and user 5 two at stride 1
    assert len(d) == sum(counts.values()) == 7
    drawn = []
    for epoch in range(8):
        d.set_epoch(epoch)
        ends = [d.window_ends(i) for i in range(len(d))]
        assert [u for u, _ in ends] == [0, 1, 2, 2, 3, 5, 5]
        assert ends[2] == (2, 12) and ends[5:] == [(5, 6), (5, 5)]  # the most recent window is always in
        assert 5 <= ends[3][1] <= 11  # one of user 2's 7 other windows (ends 11 down to 5)
        drawn.append(ends[3][1])
    assert len(set(drawn)) > 2  # other epochs, other windows
    again = data(dataset, windows="all", window_stride=1, windows_per_user=2)
    for which in (again, d):
        which.set_epoch(3)
    assert [again.window_ends(i) for i in range(7)] == [d.window_ends(i) for i in range(7)]
    assert digest(again, epochs=(3,)) == digest(d, epochs=(3,))  # seeded: the same epoch, the same windows
    one = data(dataset, windows="all", window_stride=1, windows_per_user=1, user_fraction=0.8)
    assert digest(one) == LAST_DIGESTS["s2s"]  # one window per user: exactly the windows of "last"


def test_user_fraction_picks_users_then_their_windows(dataset):
    last = data(dataset, user_fraction=0.6)
    every = data(dataset, windows="all", window_stride=3, user_fraction=0.6)
    assert every.users.tolist() == last.users.tolist() and len(last.users) == 3
    per_user = {0: 1, 1: 1, 2: 4, 3: 1, 5: 2}
    assert len(every) == sum(per_user[u] for u in every.users.tolist())
    assert {int(w["user_id"]) for w in all_windows(every)} == set(last.users.tolist())


def test_negatives_avoid_the_whole_training_sequence(dataset):
    for w in all_windows(data(dataset, windows="all", window_stride=2, n_negatives=4), epoch=2):
        train = TRAINING[int(w["user_id"]) + 1]
        rows = w["targets"] != 0
        assert w["negatives"][rows].all() and not w["negatives"][~rows].any()
        assert not np.isin(w["negatives"][rows], train).any()


def test_ddp_ranks_share_the_windows(dataset):
    d = data(dataset, windows="all", window_stride=3)
    seen = []
    for rank in (0, 1):
        batches = list(
            make_loader(d, batch_size=2, shuffle=True, num_workers=0, epoch=1, rank=rank, world_size=2)
        )
        targets = torch.cat([b["targets"] for b in batches])
        assert len(targets) == 5  # ceil(9 windows / 2 processes)
        seen += [tuple(row) for row in targets.tolist()]
    assert set(seen) == {tuple(w["targets"].tolist()) for w in all_windows(d)}


def train_config(ds, tmp_path, **kw):
    model = ModelConfig(d_model=8, max_len=4, item_encoder="id", user_encoder="sasrec",
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    return TrainConfig(dataset=str(ds.path), output_dir=str(tmp_path), model=model, **kw)


def test_config_and_validation_refuse_what_cannot_use_windows(dataset, tmp_path):
    with pytest.raises(ConfigError, match='windows="all" is ignored by objective cpc'):
        validate_config(train_config(dataset, tmp_path, objective="cpc", mode="s2o", windows="all"))
    with pytest.raises(ConfigError, match='windows="all" is ignored by reference_path=true'):
        validate_config(train_config(dataset, tmp_path, reference_path=True, windows="all"))
    with pytest.raises(ConfigError, match="window_stride=3 is ignored by windows=last"):
        validate_config(train_config(dataset, tmp_path, window_stride=3))
    validate_config(train_config(dataset, tmp_path, windows="all", window_stride=3, windows_per_user=2))
    for bad, says in (({"window_stride": 5}, "window_stride must be within 1..model.max_len=4"),
                      ({"window_stride": 0}, "window_stride"), ({"windows_per_user": 0}, "windows_per_user"),
                      ({"windows": "every"}, "windows must be last or all")):  # fmt: skip
        with pytest.raises(ConfigError, match=says):
            train_config(dataset, tmp_path, **{"windows": "all", **bad})
    with pytest.raises(ValueError, match="cpc mode reads one window per user"):
        data(dataset, "cpc", windows="all")


@pytest.mark.parametrize("windows, steps", [("last", 3), ("all", 5)])
def test_the_trainer_trains_every_window(dataset, tmp_path, windows, steps):
    from transrec.training.trainer import train

    seen = []
    config = train_config(dataset, tmp_path, windows=windows, window_stride=3 if windows == "all" else None,
                          epochs=1, batch_size=2, device="cpu", collapse_factor=0.0)  # fmt: skip
    train(config, progress=False, hook=lambda event, info: seen.append(event))
    assert seen.count("step") == steps  # ceil(5 users / 2) or ceil(9 windows / 2)


def test_windows_compose_with_the_frozen_trunk_cache(dataset, tmp_path):
    from transrec.training.trainer import train

    bert = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16}  # fmt: skip
    text = {"pretrained": None, "hf_config": bert, "freeze": "top_k", "trainable_blocks": 1}
    model = ModelConfig(d_model=8, max_len=4, item_encoder="text", item_encoder_config=text)
    results = []
    for cache in (True, False):
        config = TrainConfig(dataset=str(dataset.path), output_dir=str(tmp_path / str(cache)), model=model,
                             windows="all", window_stride=2, epochs=2, batch_size=4, device="cpu",
                             collapse_factor=0.0, trunk_cache=cache)  # fmt: skip
        results.append(train(config, progress=False))
    assert results[0].best_epoch == results[1].best_epoch
    for key, value in results[1].test.items():
        assert results[0].test[key] == pytest.approx(value, abs=1e-6), key
