"""A run directory belongs to one run (``training.run_directory``): a different config is refused, keys that
cannot change the weights may differ, ``force`` continues and keeps the old config, a finished run is not
trained again, a checkpoint moved aside by a kill is recovered, and the optimizer state is restored by
parameter name."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
import yaml

import transrec.training.trainer
import transrec.utils.io
from tests.training.test_trainer import run_config  # the same small ID run
from transrec.cli.main import main as cli
from transrec.config import ConfigError, dump_yaml
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.checkpoint import CheckpointError, optimizer_tensors, restore_optimizer
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.run_directory import TRAJECTORY_FREE
from transrec.training.trainer import TrainingCollapsed, build_optimizer, train


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw", max_text_tokens=12)
    return prepare(world.source, config, root / "source", progress=False)


class Recorder:
    """A ``train`` hook keeping (epoch, step, loss) of every step and the number of evaluated epochs."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float]] = []
        self.epochs = 0

    def __call__(self, event, info):
        if event == "step":
            self.steps.append((info["epoch"], info["step"], info["loss"]))
        else:
            self.epochs += 1


def run(config: TrainConfig):
    record = Recorder()
    return train(config, progress=False, hook=record), record


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """An uninterrupted 3-epoch run (its steps and result) and a copy of its directory after epoch 1."""
    root = tmp_path_factory.mktemp("reference")
    result, record = run(run_config(source, root / "ref"))
    train(run_config(source, root / "one", epochs=1), progress=False)
    per_epoch = len(record.steps) // 3
    assert per_epoch >= 2 and record.steps[per_epoch][0] == 1
    return result, record.steps, per_epoch, root / "one"


def one_epoch_run(reference, tmp_path):
    """A copy of a finished 1-epoch run (the reference's config, epochs=1)."""
    out = tmp_path / "run"
    shutil.copytree(reference[3], out)
    return out


def test_a_different_config_is_refused_naming_each_key_before_anything_trains(source, reference, tmp_path):
    out = one_epoch_run(reference, tmp_path)
    before = (out / "config.yaml").read_text()
    changed = run_config(source, out, epochs=3, seed=2, optim=OptimConfig(lr=0.01))
    record = Recorder()
    with pytest.raises(ConfigError) as refused:
        train(changed, progress=False, hook=record)
    message = str(refused.value)
    assert "optim.lr: 0.003 -> 0.01" in message and "seed: 1 -> 2" in message
    assert "epochs" not in message  # may differ: listed in TRAJECTORY_FREE
    assert "resume=force" in message and "\n" not in message
    assert record.steps == [] and record.epochs == 0
    assert (out / "config.yaml").read_text() == before  # the recorded config still describes the weights


def test_keys_that_cannot_change_the_weights_may_differ_and_the_run_continues(source, reference, tmp_path):
    ref_result, ref_steps, per_epoch, _ = reference
    out = one_epoch_run(reference, tmp_path)
    free = {"epochs": 3, "patience": 20, "eval_batch_size": 7, "collapse_grace": 4, "ks": (10, 20),
            "parallel": "fsdp"}  # fmt: skip
    assert set(free) <= set(TRAJECTORY_FREE)
    result, record = run(run_config(source, out, **free))
    assert record.steps == ref_steps[per_epoch:]  # epochs 2 and 3 only, as the uninterrupted run took them
    assert result.best_epoch == ref_result.best_epoch
    assert set(result.test) == {"HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR"}
    for key, value in result.test.items():
        assert value == pytest.approx(ref_result.test[key], abs=1e-6), key
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 3 and saved["eval_batch_size"] == 7
    assert not list(out.glob("config.*.yaml")) and not (out / "config_changes.jsonl").exists()


def test_force_continues_with_the_new_config_and_keeps_the_old_one(source, reference, tmp_path):
    _, ref_steps, per_epoch, _ = reference
    out = one_epoch_run(reference, tmp_path)
    result, record = run(run_config(source, out, epochs=2, resume="force", optim=OptimConfig(lr=0.03)))
    assert [epoch for epoch, _, _ in record.steps] == [1] * per_epoch
    # The first step's loss is that of epoch 1's weights; the later ones follow the new learning rate
    # (restoring the moments must not bring the old one back).
    assert record.steps[0] == ref_steps[per_epoch]
    assert all(ours[2] != theirs[2] for ours, theirs in zip(record.steps[1:], ref_steps[per_epoch + 1 :]))
    assert yaml.safe_load((out / "config.1.yaml").read_text())["optim"]["lr"] == 0.003
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.03
    change = json.loads((out / "config_changes.jsonl").read_text())
    assert change == {"after_epoch": 1, "previous": "config.1.yaml",
                      "changed": {"optim.lr": {"old": 0.003, "new": 0.03}}}  # fmt: skip
    assert result.epochs_run == 2


def test_a_finished_run_is_not_trained_again(source, reference, tmp_path):
    ref_result, _, _, _ = reference
    out = tmp_path / "ref"
    shutil.copytree(ref_result.output_dir, out)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again, record = run(run_config(source, out))
    assert record.steps == [] and record.epochs == 0
    assert (again.test, again.best_valid, again.best_epoch, again.epochs_run) == (
        ref_result.test, ref_result.best_valid, ref_result.best_epoch, ref_result.epochs_run
    )  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files  # nothing written


def test_an_early_stopped_run_is_not_trained_again(source, tmp_path):
    out = tmp_path / "run"
    config = run_config(source, out, epochs=40, patience=1, optim=OptimConfig(lr=3e-2))
    first, record = run(config)
    assert first.epochs_run < 40 and first.best_epoch == first.epochs_run - 1  # stopped early
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again, record = run(config)
    assert record.steps == [] and record.epochs == 0 and again.test == first.test
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files  # nothing written
    # Killed after stopping early, before the test: only the test is left to do.
    (out / "result.json").unlink()
    resumed, record = run(config)
    assert record.steps == [] and resumed.test == first.test and resumed.epochs_run == first.epochs_run


def test_a_collapsed_run_stays_collapsed(source, reference, tmp_path):
    out = one_epoch_run(reference, tmp_path)
    (out / "result.json").write_text(json.dumps({"status": "collapsed", "reason": "the loss became nan"}))
    record = Recorder()
    with pytest.raises(TrainingCollapsed, match="the loss became nan"):
        train(run_config(source, out, epochs=3), progress=False, hook=record)
    assert record.steps == []


def test_never_replaces_the_run_in_the_directory(source, reference, tmp_path):
    _, ref_steps, per_epoch, _ = reference
    out = one_epoch_run(reference, tmp_path)
    (out / "config.1.yaml").write_text("left by an earlier forced run\n")
    (out / "notes.txt").write_text("the user's own file\n")
    _, record = run(run_config(source, out, epochs=1, resume="never", seed=1))
    assert record.steps == ref_steps[:per_epoch]  # from scratch
    assert not (out / "config.1.yaml").exists() and (out / "notes.txt").is_file()
    assert TrainConfig(dataset="d", output_dir="o", resume=True).resume == "auto"
    assert TrainConfig(dataset="d", output_dir="o", resume=False).resume == "never"


def test_a_checkpoint_left_moved_aside_by_a_kill_is_recovered(source, reference, tmp_path):
    ref_result, ref_steps, per_epoch, _ = reference
    out = one_epoch_run(reference, tmp_path)
    # What a kill between atomic_directory's two renames leaves: last/ moved aside, the new one unfinished.
    (out / "last").rename(out / ".last.old-4242")
    (out / ".last.tmp-4242").mkdir()
    (out / ".last.tmp-4242" / "optimizer.safetensors").write_bytes(b"half")
    result, record = run(run_config(source, out))
    assert record.steps == ref_steps[per_epoch:]
    assert result.test == ref_result.test
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".last")) == []


def test_an_exception_between_the_renames_keeps_last(source, reference, monkeypatch, tmp_path):
    ref_result, ref_steps, per_epoch, _ = reference
    out = tmp_path / "run"
    swap = transrec.utils.io._swap_in
    calls = []

    def fail_on_epoch_two_last(tmp, target):
        calls.append(target.name)
        if target.name == "last" and calls.count("last") == 2:
            raise KeyboardInterrupt("killed with last/ moved aside")
        swap(tmp, target)

    monkeypatch.setattr(transrec.utils.io, "_swap_in", fail_on_epoch_two_last)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(source, out), progress=False)
    monkeypatch.setattr(transrec.utils.io, "_swap_in", swap)
    # The old last/ (epoch 1) is back in place, nothing is left beside it.
    assert json.loads((out / "last" / "trainer_state.json").read_text())["trainer"]["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".last")]
    result, record = run(run_config(source, out))
    assert record.steps == ref_steps[per_epoch:] and result.test == ref_result.test
    assert (out / "metrics.jsonl").read_text() == (ref_result.output_dir / "metrics.jsonl").read_text()


def test_a_fine_tuning_run_resumes_without_its_source_checkpoint(source, reference, tmp_path):
    _, _, per_epoch, one = reference
    shutil.copytree(one / "best", tmp_path / "source")
    config = run_config(source, tmp_path / "run", epochs=1, init_checkpoint=str(tmp_path / "source"),
                        init_components=("user_encoder",))  # fmt: skip
    train(config, progress=False)
    shutil.rmtree(tmp_path / "source")  # moved or deleted: a resumed run's weights all come from last/
    _, record = run(replace(config, epochs=2))
    assert [epoch for epoch, _, _ in record.steps] == [1] * per_epoch


def small_model(**overrides) -> SequentialRecommender:
    text = {"pretrained": None, "hf_config": {"model_type": "bert", "vocab_size": 50, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}}  # fmt: skip
    config = {"d_model": 8, "max_len": 4, "item_encoder": "text", "item_encoder_config": text,
              "user_encoder": "sasrec", "n_items": 5, **overrides}  # fmt: skip
    return SequentialRecommender(ModelConfig(**config))


def stepped_optimizer(model: SequentialRecommender) -> torch.optim.AdamW:
    """build_optimizer's AdamW after two steps on gradients that differ for every parameter."""
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2, encoder_lr=1e-3))
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()
    return optimizer


def test_optimizer_moments_are_restored_by_parameter_name_whatever_the_order(tmp_path):
    torch.manual_seed(0)
    model = small_model()
    saved = stepped_optimizer(model)
    tensors, meta = optimizer_tensors(saved, model)
    assert meta["state"] and all(key.startswith(("item_encoder.", "user_encoder.")) for key in tensors)
    # The same parameters, groups and parameters within them in reverse order.
    groups = [{"name": g["name"], "lr": g["lr"] / 2, "params": list(reversed(g["params"]))}
              for g in reversed(saved.param_groups)]  # fmt: skip
    restored = torch.optim.AdamW(groups)
    restore_optimizer(restored, model, tensors, meta)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in saved.param_groups:
        for param in group["params"]:
            for key, value in saved.state[param].items():
                assert torch.equal(restored.state[param][key], value), (names[id(param)], key)
    assert [g["lr"] for g in restored.param_groups] == [5e-4, 5e-3]  # the optimizer's own, not the saved


def test_optimizer_state_that_does_not_fit_is_refused_naming_the_parameters():
    torch.manual_seed(0)
    model = small_model()
    tensors, meta = optimizer_tensors(stepped_optimizer(model), model)

    model.user_encoder.requires_grad_(False)  # frozen now: its moments have nowhere to go
    with pytest.raises(CheckpointError, match=r"in the checkpoint but not trained now: user_encoder\."):
        restore_optimizer(build_optimizer(model, OptimConfig()), model, tensors, meta)
    model.user_encoder.requires_grad_(True)

    one_group = torch.optim.AdamW(model.parameters())  # the backbone's parameters left their group
    with pytest.raises(CheckpointError, match=r"in another parameter group: item_encoder\.backbone\."):
        restore_optimizer(one_group, model, tensors, meta)

    wider = small_model(d_model=12)
    with pytest.raises(CheckpointError, match=r"of another shape: .*\(saved \(8,\), now \(12,\)\)"):
        restore_optimizer(build_optimizer(wider, OptimConfig()), wider, tensors, meta)

    positional = {k: v for k, v in meta.items() if k != "format"}
    with pytest.raises(CheckpointError, match="by parameter position"):
        restore_optimizer(build_optimizer(model, OptimConfig()), model, tensors, positional)


def test_a_resumed_run_that_freezes_more_is_refused_naming_the_parameters(source, reference, tmp_path):
    out = one_epoch_run(reference, tmp_path)
    config = run_config(source, out, resume="force", frozen=("user_encoder",))
    before = (out / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"not trained now: user_encoder\.stack\."):
        train(config, progress=False)
    assert (out / "config.yaml").read_text() == before and not (out / "config.1.yaml").exists()


def test_a_last_checkpoint_of_the_positional_format_is_refused_before_the_model_is_built(
    source, reference, monkeypatch, tmp_path
):
    out = one_epoch_run(reference, tmp_path)
    state_file = out / "last" / "trainer_state.json"
    saved = json.loads(state_file.read_text())
    del saved["optimizer"]["format"]  # what an older transrec wrote
    state_file.write_text(json.dumps(saved))

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the checkpoint's format was checked")

    monkeypatch.setattr(transrec.training.trainer, "SequentialRecommender", no_model)
    with pytest.raises(CheckpointError, match="saved by parameter position"):
        train(run_config(source, out), progress=False)
    assert not (out / "config.1.yaml").exists() and (out / "result.json").is_file()


def test_the_cli_reports_a_refused_config_in_one_line_and_a_finished_run_s_stored_result(
    source, reference, tmp_path, capsys
):
    out = one_epoch_run(reference, tmp_path)
    stored = json.loads((out / "result.json").read_text())
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_yaml(replace(run_config(source, out), epochs=1)))
    code = cli(["train", "--config", str(config_file), "--quiet", "optim.lr=0.01", "seed=2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("transrec: error: ")
    assert "optim.lr: 0.003 -> 0.01; seed: 1 -> 2" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.003
    # The same config: the finished run is printed as it was stored, not trained or evaluated again.
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli(["train", "--config", str(config_file), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"best epoch {stored['best_epoch']} of 1 ({stored['seconds']:.1f} s)" in printed
    assert f"NDCG@10 {stored['test']['NDCG@10']:.4f}" in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files
