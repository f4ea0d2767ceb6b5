"""The training loop: reproducibility, resume, collapse, checkpoints and transfer loading."""

import json
from collections.abc import Callable

import pytest
import torch

from tests.frozen_blocks import FrozenBlockCounter
from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.evaluation.model_eval import item_table, user_vectors
from transrec.evaluation.protocol import stage_histories
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.checkpoint import TransferError, load_components
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import TrainingCollapsed, train


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw", max_text_tokens=12)
    source = prepare(world.source, config, root / "source", progress=False)
    target = prepare(world.target, config, root / "target", progress=False)
    return source, target


def run_config(dataset, out, **overrides):
    model = ModelConfig(d_model=16, max_len=8, item_encoder="id", user_encoder="sasrec",
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    base = {"dataset": str(dataset.path), "output_dir": str(out), "model": model, "epochs": 3,
            "batch_size": 16, "patience": 10, "seed": 1, "device": "cpu", "collapse_factor": 0.0,
            "optim": OptimConfig(lr=3e-3)}  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def test_seeded_runs_reproduce_exactly_and_write_the_run_directory(world, tmp_path):
    source, _ = world
    a = train(run_config(source, tmp_path / "a"), progress=False)
    b = train(run_config(source, tmp_path / "b"), progress=False)
    assert a.test == b.test and a.best_valid == b.best_valid
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    for name in ("config.yaml", "metrics.jsonl", "test_metrics.json", "result.json", "best/config.json",
                 "best/model.safetensors", "last/optimizer.safetensors"):  # fmt: skip
        assert (tmp_path / "a" / name).is_file(), name
    assert json.loads((tmp_path / "a" / "result.json").read_text())["status"] == "finished"
    assert len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) == 3
    c = train(run_config(source, tmp_path / "c", seed=2), progress=False)
    assert c.best_valid != a.best_valid


def step_recorder() -> tuple[list[tuple[int, int, float]], Callable]:
    """A ``train`` hook recording (epoch, step, loss) of every training step."""
    steps: list[tuple[int, int, float]] = []

    def hook(event, info):
        if event == "step":
            steps.append((info["epoch"], info["step"], info["loss"]))

    return steps, hook


def test_a_killed_run_resumes_and_ends_with_the_same_metrics(world, tmp_path):
    source, _ = world
    reference_steps, record = step_recorder()
    reference = train(run_config(source, tmp_path / "ref"), progress=False, hook=record)
    per_epoch = sum(1 for epoch, _, _ in reference_steps if epoch == 0)
    assert len(reference_steps) == 3 * per_epoch and per_epoch >= 2  # killed inside an epoch

    def kill_in_epoch_two(event, info):
        if event == "step" and info["epoch"] == 1 and info["step"] >= per_epoch + 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train(run_config(source, tmp_path / "run"), progress=False, hook=kill_in_epoch_two)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    resumed_steps, record = step_recorder()
    resumed = train(run_config(source, tmp_path / "run"), progress=False, hook=record)
    # Only what epoch 1's checkpoint had not done: epochs 2 and 3, counting steps on from epoch 1's, with
    # the uninterrupted run's losses (the restored weights and AdamW moments take the same steps).
    assert resumed_steps == reference_steps[per_epoch:]
    assert resumed.test == reference.test
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (
        tmp_path / "ref" / "metrics.jsonl"
    ).read_text()


def test_a_broken_run_is_reported_as_collapsed_with_its_learning_rates(world, tmp_path):
    source, _ = world
    # A learning rate of 1e9 without clipping blows the weights up: the loss stops being finite or the
    # validation ranking falls to the random level; either way the run must stop as collapsed.
    broken = run_config(source, tmp_path / "x", collapse_factor=1.5, collapse_patience=2,
                        optim=OptimConfig(lr=1e9, grad_clip=0.0))  # fmt: skip
    with pytest.raises(TrainingCollapsed, match=r"lr=1000000000\.0, encoder_lr="):
        train(broken, progress=False)
    result = json.loads((tmp_path / "x" / "result.json").read_text())
    assert result["status"] == "collapsed" and "lr=1000000000.0" in result["reason"]
    assert not (tmp_path / "x" / "test_metrics.json").exists()


def test_checkpoint_round_trip_gives_identical_scores(world, tmp_path):
    source, _ = world
    config = ModelConfig(
        d_model=16,
        max_len=8,
        item_encoder="id",
        user_encoder="sasrec",
        n_items=source.n_items,
        n_users=source.n_users,
    )
    model = SequentialRecommender(config).eval()
    content = ItemContent(source, text=False, image=False)
    histories, _ = stage_histories(source, "test")
    users = torch.arange(5).numpy()

    def scores(m):
        table = item_table(m, content)
        return user_vectors(m, table, histories[:5], users) @ table.T

    model.save_pretrained(tmp_path / "ckpt")
    loaded = SequentialRecommender.from_pretrained(tmp_path / "ckpt").eval()
    assert torch.equal(scores(model), scores(loaded))


def test_transfer_loading_is_by_component_and_loud(world, tmp_path):
    source, target = world
    text = {"pretrained": None, "hf_config": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}  # fmt: skip

    def model(ds, **kw):
        cfg = {"d_model": 16, "max_len": 8, "item_encoder": "text", "item_encoder_config": text,
               "user_encoder": "sasrec", "n_items": ds.n_items, "n_users": ds.n_users, **kw}  # fmt: skip
        return SequentialRecommender(ModelConfig(**cfg))

    src = model(source)
    src.save_pretrained(tmp_path / "src")
    dst = model(target)
    loaded = load_components(dst, tmp_path / "src")
    assert set(loaded) == {"item_encoder", "user_encoder"}
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key]), key
    with pytest.raises(TransferError, match="d_model differs"):
        load_components(model(target, d_model=32), tmp_path / "src")
    with pytest.raises(TransferError, match=r"user_encoder .*unexpected: user_encoder\.stack\.blocks\.1"):
        load_components(
            model(target, user_encoder_config={"n_layers": 1}), tmp_path / "src", ["user_encoder"]
        )
    ids = SequentialRecommender(ModelConfig(d_model=16, max_len=8, item_encoder="id", n_items=target.n_items))
    ids.save_pretrained(tmp_path / "ids")
    with pytest.raises(TransferError, match="tied to its catalogue"):
        load_components(ids, tmp_path / "ids")
    with pytest.raises(TransferError, match="not a model checkpoint"):
        load_components(dst, tmp_path / "nothing")


ENCODER_MODES = [("sasrec", "s2s"), ("sasrec", "s2o"), ("bert4rec", "masked"), ("gru4rec", "s2s"),
                 ("nextitnet", "s2s"), ("mean_pool", "s2s"), ("dssm", "s2o")]  # fmt: skip


@pytest.mark.parametrize("objective", ["bce", "inbatch", "full_softmax"])
@pytest.mark.parametrize(("encoder", "mode"), ENCODER_MODES)
def test_every_user_encoder_trains_with_every_objective(world, tmp_path, encoder, mode, objective):
    source, _ = world
    model = ModelConfig(d_model=16, max_len=8, item_encoder="id", user_encoder=encoder)
    logq = objective == "inbatch"  # the one objective here that reads it
    config = run_config(source, tmp_path, model=model, mode=mode, objective=objective, epochs=4, logq=logq)
    result = train(config, progress=False)
    assert result.epochs_run == 4
    frozen = OptimConfig(lr=0.0)  # AdamW at lr 0 never moves a weight (id items: no encoder group)
    train(run_config(source, tmp_path / "still", model=model, mode=mode, objective=objective, epochs=4,
                     logq=objective == "inbatch", optim=frozen), progress=False)  # fmt: skip

    def last_epoch_loss(run_dir):
        return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["loss"]

    # It learns: on the same batches and dropout masks (seeded per epoch) the last epoch's loss is below
    # that of the run that cannot learn. (The first epoch's loss is no reference: without any optimizer
    # step the last epoch's loss fell below it in 13 of these 21 runs, the batches alone differing.)
    assert last_epoch_loss(tmp_path) < last_epoch_loss(tmp_path / "still")


REFUSED = [("bert4rec", "s2s", "use mode=masked"), ("sasrec", "masked", "needs a masked-item user encoder")]


@pytest.mark.parametrize(("encoder", "mode", "message"), REFUSED)
def test_modes_that_leak_or_cannot_be_evaluated_are_refused(world, tmp_path, encoder, mode, message):
    source, _ = world
    model = ModelConfig(d_model=16, max_len=8, item_encoder="id", user_encoder=encoder)
    with pytest.raises(ValueError, match=message):
        train(run_config(source, tmp_path, model=model, mode=mode), progress=False)


def counted_run(config: TrainConfig, monkeypatch) -> tuple:
    """Train ``config`` counting the frozen blocks' rows (``tests.frozen_blocks``), also at each step and
    epoch hook; returns the result, the counter and its snapshots."""
    counter = FrozenBlockCounter()
    with monkeypatch.context() as patch:
        counter.watch_new_backbones(patch)
        result = train(config, progress=False, hook=counter.hook)
    return result, counter, counter.snapshots


def test_the_frozen_trunk_cache_trains_the_same_model(world, tmp_path, monkeypatch):
    source, _ = world
    bert = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32}  # fmt: skip
    vit = {"model_type": "vit", "image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "intermediate_size": 32}  # fmt: skip
    items = {
        "text": {"pretrained": None, "hf_config": bert, "freeze": "top_k", "trainable_blocks": 1},
        "image": {"backbone": None, "hf_config": vit, "freeze": "all"},
    }
    model = ModelConfig(d_model=16, max_len=8, item_encoder="mom", item_encoder_config=items)
    cached, on, on_steps = counted_run(run_config(source, tmp_path / "on", model=model), monkeypatch)
    plain, off, off_steps = counted_run(run_config(source, tmp_path / "off", model=model, trunk_cache=False),
                                        monkeypatch)  # fmt: skip
    assert cached.best_epoch == plain.best_epoch
    for key, value in plain.test.items():
        assert cached.test[key] == pytest.approx(value, abs=1e-6), key
    assert not (tmp_path / "on" / "trunk_cache").exists()

    # Cached: the frozen blocks (BERT's lower layer, the ViT's layer) ran once per item routed to them, while
    # the cache was built, and never again: not in a training step, nor in validation or the test.
    assert on.backbones.keys() == {"BertModel", "HFVisionFeatures"}
    routed = {
        "BertModel": int(source.has_text.sum()),
        "HFVisionFeatures": int((source.has_image & ~source.has_text).sum()),
    }
    assert on.backbone_rows() == routed and min(routed.values()) > 0
    assert len(on_steps) > 3 and all(rows == on.rows for _, rows in on_steps)
    # Uncached: every training step ran every frozen block again.
    steps = [i for i, (event, _) in enumerate(off_steps) if event == "step"]
    assert len(steps) == len([e for e, _ in on_steps if e == "step"]) > 3
    for i in steps[1:]:
        before, after = off_steps[i - 1][1], off_steps[i][1]
        assert all(after[key] > before[key] for key in before), (i, before, after)
    assert all(off.backbone_rows()[label] > 3 * rows for label, rows in routed.items())


def test_the_reference_path_trains_the_same_objective_slot_by_slot(world, tmp_path):
    source, _ = world
    model = ModelConfig(d_model=16, max_len=8, item_encoder="id", user_encoder="sasrec",
                        user_encoder_config={"dropout": 0.0})  # fmt: skip
    fast = train(run_config(source, tmp_path / "fast", model=model), progress=False)
    slow = train(run_config(source, tmp_path / "slow", model=model, reference_path=True), progress=False)
    # Without dropout, encoding each slot separately computes the same loss: the same run.
    for key, value in fast.test.items():
        assert slow.test[key] == pytest.approx(value, abs=1e-6), key
    with pytest.raises(ValueError, match="reference_path"):
        train(run_config(source, tmp_path / "x", model=model, reference_path=True, objective="inbatch"),
              progress=False)  # fmt: skip


def test_bf16_autocast_trains_with_float32_weights_and_fp16_needs_cuda(world, tmp_path):
    source, _ = world
    train(run_config(source, tmp_path / "bf16", precision="bf16"), progress=False)
    train(run_config(source, tmp_path / "still", precision="bf16", optim=OptimConfig(lr=0.0)), progress=False)
    last = {}
    for run in ("bf16", "still"):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
        last[run] = json.loads(lines[-1])["loss"]
    assert last["bf16"] < last["still"]  # it learns under autocast: the same batches at lr 0 score worse
    weights = SequentialRecommender.from_pretrained(tmp_path / "bf16" / "best").state_dict()
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(run_config(source, tmp_path / "fp16", precision="fp16", device="cpu"), progress=False)
