"""The validation step (``training.validation``): every row of its tables refuses what it should, the
issue's cases are refused by hand-written examples, defaults and every shipped config pass, and a bad
config is refused before the dataset is read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from transrec.cli.main import main
from transrec.config import ConfigError, load_config
from transrec.demo.pipeline import DemoConfig
from transrec.demo.pipeline import train_config as demo_train_config
from transrec.training import validation
from transrec.training.config import TrainConfig
from transrec.training.trainer import train
from transrec.training.validation import (
    ENCODER_RULES,
    NEEDS,
    OBJECTIVES,
    RULES,
    config_problems,
    validate_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULTS = TrainConfig(dataset="", output_dir="")


def config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, ["dataset=data", "output_dir=out", *overrides])


def refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config(*overrides))
    return str(caught.value)


def _get(value, key: str):
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _other(value):
    """A value unlike ``value`` of the same type (a block: its first field changed)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 + 0.25
    raise TypeError(f"no other value for {value!r}")


def non_default(key: str) -> tuple[str, str]:
    """``(dotted key, override)`` setting ``key`` (or, for a block, its first field) off its default."""
    value = _get(DEFAULTS, key)
    if dataclasses.is_dataclass(value):
        first = dataclasses.fields(value)[0].name
        key, value = f"{key}.{first}", getattr(value, first)
    return key, f"{key}={json.dumps(_other(value))}"


# -- the tables, row by row ---------------------------------------------------------------------------
OBJECTIVE_KEYS = list(dict.fromkeys(r.key for row in OBJECTIVES.values() for r in row.reads))
UNREAD = [(key, name) for key in OBJECTIVE_KEYS for name, row in OBJECTIVES.items()
          if key not in {r.key for r in row.reads}]  # fmt: skip
READ = [(key, name) for key in OBJECTIVE_KEYS for name, row in OBJECTIVES.items()
        if key in {r.key for r in row.reads}]  # fmt: skip


def test_the_tables_are_not_empty():
    # Guards the parametrisations below against passing by having nothing to run.
    assert len(UNREAD) >= 20 and len(READ) >= 8 and len(RULES) >= 8 and len(ENCODER_RULES) >= 4


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_each_objective_example_is_a_valid_config(objective):
    assert config_problems(config(*OBJECTIVES[objective].example)) == []


@pytest.mark.parametrize(("key", "objective"), UNREAD)
def test_an_objective_refuses_the_keys_only_other_objectives_read(key, objective):
    dotted, override = non_default(key)
    problems = config_problems(config(*OBJECTIVES[objective].example, override))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{dotted}=") and f"is ignored by objective {objective}:" in problems[0]
    readers = [name for name, row in OBJECTIVES.items() if key in {r.key for r in row.reads}]
    assert all(name in problems[0].split(":", 1)[1] for name in readers), problems[0]


@pytest.mark.parametrize(("key", "objective"), READ)
def test_an_objective_accepts_the_keys_it_reads(key, objective):
    row = OBJECTIVES[objective]
    reads = next(r for r in row.reads if r.key == key)
    _, override = non_default(key)
    run = config(*row.example, override)
    assert reads.when is None or reads.when(run)  # each example meets its objective's conditions
    assert config_problems(run) == []


def _row_key(row) -> str:
    if isinstance(row, validation.EncoderRule):
        return f"{row.config_class.__name__}.{row.field}"
    return row.key


@pytest.mark.parametrize("rule", [*RULES, *ENCODER_RULES], ids=_row_key)
def test_every_rule_refuses_its_example_and_only_for_its_key(rule):
    problems = config_problems(config(*rule.example))
    assert len(problems) == 1, problems
    key = rule.key if isinstance(rule, validation.Rule) else rule.field
    name, reason_and_user = problems[0].split(" is ignored by ", 1)
    assert name.split("=")[0].endswith(key) and rule.used_by in reason_and_user, problems[0]
    # Without the refused key, the example is a valid config: the row, not something else, refused it.
    rest = [o for o in rule.example if not o.split("=")[0].endswith(key)]
    assert len(rest) == len(rule.example) - 1 and config_problems(config(*rest)) == []


NEED_ROWS = [*(n for row in OBJECTIVES.values() for n in row.needs), *NEEDS]


@pytest.mark.parametrize("need", NEED_ROWS, ids=lambda n: n.key)
def test_every_need_refuses_its_example(need):
    problems = config_problems(config(*need.example))
    assert problems == [need.message] and need.key in need.message


def test_the_module_docstring_documents_every_row():
    doc = validation.__doc__
    for key in [*OBJECTIVE_KEYS, *(r.key for r in RULES), *(r.field for r in ENCODER_RULES)]:
        assert key.removeprefix("pmmrec.").removeprefix("cpc.") in doc, key
    for name, row in OBJECTIVES.items():
        assert any(line.split()[:1] == [name] and " ".join(row.modes) in line for line in doc.splitlines()), (
            name
        )


# -- the issue's cases, written out by hand (deleting a row of the tables fails one of these) ----------
PMMREC = ("objective=pmmrec", "model.item_encoder=mm", "model.nid_head=true")
REFUSED = [
    # (overrides, the key named, what the message must also say)
    (("model.uep_head=true",), "model.uep_head=true", "ignored by objective bce: only objective uep"),
    (("objective=inbatch", "model.uep_head=true"), "model.uep_head=true", "ranks every item through it"),
    (("objective=uep",), "model.uep_head=true", "the uep objective needs"),
    *((("objective=bce", "logq=true"), "logq=true", "bce: only objectives inbatch and pmmrec"),
      (("objective=full_softmax", "logq=true"), "logq=true", "ignored by objective full_softmax"),
      (("objective=uep", "model.uep_head=true", "logq=true"), "logq=true", "ignored by objective uep"),
      (("objective=cpc", "mode=s2o", "logq=true"), "logq=true", "ignored by objective cpc"),
      ((*PMMREC, "pmmrec.dap_negatives=slots", "logq=true"), "logq=true", "unless pmmrec.dap > 0 and"),
      (("objective=bce", "temperature=0.5"), "temperature=0.5", "ignored by objective bce"),
      (("objective=full_softmax", "temperature=0.5"), "temperature=0.5", "ignored by objective full_softmax"),
      (("objective=uep", "model.uep_head=true", "temperature=0.5"), "temperature=0.5", "objective uep"),
      (("objective=cpc", "mode=s2o", "temperature=0.5"), "temperature=0.5", "ignored by objective cpc")),
    (("objective=inbatch", "n_negatives=4"), "n_negatives=4", "objective inbatch: only objective bce"),
    (("objective=full_softmax", "n_negatives=4"), "n_negatives=4", "ignored by objective full_softmax"),
    ((*PMMREC, "n_negatives=4"), "n_negatives=4", "ignored by objective pmmrec"),
    (("objective=uep", "model.uep_head=true", "n_negatives=4"), "n_negatives=4", "objective uep"),
    (("objective=cpc", "mode=s2o", "n_negatives=4"), "n_negatives=4", "cpc draws cpc.negatives"),
    (("mask_prob=0.3",), "mask_prob=0.3", "ignored by mode s2s: only mode masked"),
    (("mode=s2o", "mask_prob=0.3"), "mask_prob=0.3", "ignored by mode s2o"),
    (("pmmrec.nid=0.5",), "pmmrec.nid=0.5", "ignored by objective bce: only objective pmmrec"),
    (("objective=inbatch", "pmmrec.variant=icl"), "pmmrec.variant=\"icl\"", "only objective pmmrec"),
    (("cpc.negatives=8",), "cpc.negatives=8", "ignored by objective bce: only objective cpc"),
    (("objective=uep", "model.uep_head=true", "cpc.positives=3"), "cpc.positives=3", "objective uep"),
    ((*PMMREC, "reference_path=true"), "reference_path=true", "objective pmmrec: only objective bce"),
    (("objective=inbatch", "reference_path=true"), "reference_path=true", "ignored by objective inbatch"),
    (("objective=cpc", "mode=s2o", "reference_path=true"), "reference_path=true", "objective cpc"),
    (("mode=masked", "model.user_encoder=bert4rec", "reference_path=true"), "reference_path=true",
     "ignored by objective bce unless mode s2s, n_negatives=1 and item encoder text, image or id"),
    (("mode=s2o", "reference_path=true"), "reference_path=true", "unless mode s2s"),
    (("n_negatives=2", "reference_path=true"), "reference_path=true", "unless mode s2s, n_negatives=1"),
    (("model.item_encoder=mom", "reference_path=true"), "reference_path=true", "image or id"),
    (("init_components=[item_encoder]",), "init_components=[\"item_encoder\"]", "init_checkpoint=null"),
    (("frozen=[modality_encoders]",), "frozen=[\"modality_encoders\"]", "item encoder id, which has no"),
    (("model.item_encoder=text", "model.item_encoder_config.attention_heads=2"),
     "model.item_encoder_config.attention_heads=2", "ignored by pooling mean: only pooling attention"),
    (("model.item_encoder=mom", "model.item_encoder_config.text.attention_heads=2"),
     "model.item_encoder_config.text.attention_heads=2", "ignored by pooling mean"),
    (("model.item_encoder=id_modality", "model.item_encoder_config.modality_config.attention_heads=2"),
     "model.item_encoder_config.modality_config.attention_heads=2", "only pooling attention"),
    (("ks=[5, 20]",), "ks must include 10", "early stopping"),
    (("optim.encoder_lr=0.001",), "optim.encoder_lr=0.001", "item encoder id, which has no pretrained"),
    (("model.item_encoder=text", "frozen=[modality_encoders]", "optim.encoder_lr=0.001"),
     "optim.encoder_lr=0.001", "ignored by frozen: [modality_encoders]"),
    (("model.item_encoder=text", "model.item_encoder_config.freeze=all", "optim.encoder_weight_decay=0.1"),
     "optim.encoder_weight_decay=0.1", "backbones all have freeze: all"),
    (("model.feature_dim=8",), "model.feature_dim=8", "a model without side features"),
    (("mode=masked",), "mode=masked needs a masked-item user encoder", "bert4rec"),
    (("model.user_encoder=bert4rec", "mode=s2o"), "model.user_encoder=bert4rec", "use mode=masked"),
    (("objective=pmmrec", "mode=s2o", "model.item_encoder=mm", "model.nid_head=true"), "mode=s2o",
     "use mode s2s"),
    (("objective=cpc", "mode=s2s"), "mode=s2s", "use mode s2o"),
    (("objective=uep", "mode=masked", "model.uep_head=true", "model.user_encoder=bert4rec"), "mode=masked",
     "use mode s2s or s2o"),
    (("objective=pmmrec", "model.item_encoder=mm"), "model.nid_head=true", "NID term"),
    ((*PMMREC, "pmmrec.nid=0"), "model.nid_head=true", "ignored by objective pmmrec unless pmmrec.nid > 0"),
    ((*PMMREC, "pmmrec.contrastive=0", "pmmrec.variant=vcl"), 'pmmrec.variant="vcl"', "cross-modal term"),
    ((*PMMREC, "model.nid_head=false", "pmmrec.nid=0", "pmmrec.rcl=0", "pmmrec.shuffle=0.3"),
     "pmmrec.shuffle=0.3", "only the NID and RCL terms"),
    (("objective=pmmrec", "model.item_encoder=text", "model.nid_head=true"), "model.item_encoder=mm",
     "cross-modal term"),
    (("model.item_encoder=text", "model.item_encoder_config.freeze=none", "trunk_cache_max_memory_mb=64"),
     "trunk_cache_max_memory_mb=64", "without a frozen trunk"),
    (("trunk_cache=false",), "trunk_cache=false", "without a frozen trunk"),
    (("precision=fp16", "device=cpu"), "precision fp16 needs a CUDA device", "bf16"),
]  # fmt: skip

ACCEPTED = [
    ("objective=inbatch", "logq=true", "temperature=0.5"),
    (*PMMREC, "logq=true", "temperature=0.5"),
    ("objective=bce", "mode=masked", "model.user_encoder=bert4rec", "n_negatives=4", "mask_prob=0.3"),
    ("objective=bce", "mode=s2s", "reference_path=true"),
    ("model.item_encoder=text", "reference_path=true"),
    ("objective=uep", "model.uep_head=true", "mode=s2o"),
    ("objective=cpc", "mode=s2o", "cpc.negatives=8"),
    ("init_checkpoint=runs/x/best", "init_components=[item_encoder]"),
    ("model.item_encoder=text", "frozen=[modality_encoders]"),
    ("model.item_encoder=text", "model.item_encoder_config.pooling=attention",
     "model.item_encoder_config.attention_heads=2"),
    ("model.item_encoder=text", "model.item_encoder_config.freeze=all", "trunk_cache=false"),
    ("ks=[10]",),
    ("model.item_encoder=mom", "optim.encoder_lr=0.001", "optim.encoder_weight_decay=0.1"),
    ("model.item_features=[class]", "model.feature_dim=8"),
    ("precision=bf16", "device=cpu"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "key", "says"), REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_the_issues_cases_are_refused_naming_key_reason_and_user(overrides, key, says):
    message = refusal(*overrides)
    assert key in message and says in message, message


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(c) for c in ACCEPTED])
def test_what_a_run_reads_is_accepted(overrides):
    assert config_problems(config(*overrides)) == []


def test_defaults_pass():
    validate_config(TrainConfig(dataset="data", output_dir="out"))


def test_every_problem_is_listed_in_one_error():
    message = refusal("logq=true", "mask_prob=0.3", "ks=[5]")
    assert message.startswith("3 problems") and all(k in message for k in ("logq=", "mask_prob=", "ks must"))


def test_unknown_encoder_names_and_keys_are_refused_with_their_key():
    assert "model.item_encoder: unknown item encoder 'txt'" in refusal("model.item_encoder=txt")
    assert "model.user_encoder_config.n_heeds" in refusal("model.user_encoder_config.n_heeds=2")
    assert "model.item_encoder_config.modality: unknown item encoder 'imag'" in refusal(
        "model.item_encoder=id_modality", "model.item_encoder_config.modality=imag"
    )


# -- both directions: every shipped config still validates ----------------------------------------------
# Training configs only: the grids under configs/bench are checked by tests/bench/test_ready_grids.py.
SHIPPED = sorted(path for path in CONFIGS.rglob("*.yaml") if "bench" not in path.relative_to(CONFIGS).parts)


def test_the_shipped_configs_are_found():
    assert len(SHIPPED) >= 20


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path):
    validate_config(load_config(TrainConfig, path))


@pytest.mark.parametrize("modality", ["text", "mom"])
def test_the_demo_runs_validate(modality):
    # An encoder_lr of the user's own must reach the methods that train a backbone and no other.
    demo = DemoConfig(modality=modality, encoder_lr=3e-4)
    dataset = SimpleNamespace(path=Path("data"))
    for method in ("IDRec", "TS", "NoPT", "HasPT"):
        run = demo_train_config(demo, dataset, Path("out"), method, seed=0, epochs=1)
        validate_config(run)
        assert run.optim.encoder_lr == (3e-4 if method in ("NoPT", "HasPT") else DEFAULTS.optim.encoder_lr)


# -- before anything is read -----------------------------------------------------------------------------
def test_a_refused_key_stops_train_before_the_dataset_is_read(tmp_path):
    out = tmp_path / "run"
    bad = TrainConfig(dataset=str(tmp_path / "no-such-dataset"), output_dir=str(out), logq=True)
    with pytest.raises(ConfigError, match=r"logq=true is ignored by objective bce"):
        train(bad, progress=False)
    assert not out.exists()  # nothing written either


def test_transrec_train_refuses_the_key_before_calling_train(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("transrec.training.trainer.train", lambda *args, **kwargs: calls.append(args))
    out = tmp_path / "run"
    code = main(["train", f"dataset={tmp_path / 'no-such-dataset'}", f"output_dir={out}", "objective=cpc",
                 "mode=s2o", "n_negatives=4"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "n_negatives=4 is ignored by objective cpc" in err and not calls
    assert not out.exists()
