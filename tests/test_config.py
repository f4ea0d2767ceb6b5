from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from transrec.config import ConfigError, from_dict, load_config, parse_overrides, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    layers: int = 2


@dataclass
class Outer:
    name: str
    mode: Literal["s2s", "s2o"] = "s2s"
    ks: tuple[int, ...] = (5, 10)
    inner: Inner = field(default_factory=Inner)
    checkpoint: Path | None = None


def test_round_trip_and_coercion():
    config = from_dict(Outer, {"name": "x", "ks": [1, 2], "inner": {"lr": 1}, "checkpoint": "a/b"})
    assert config.ks == (1, 2)
    assert config.inner.lr == 1.0 and isinstance(config.inner.lr, float)
    assert config.checkpoint == Path("a/b")
    assert to_dict(config) == {
        "name": "x", "mode": "s2s", "ks": [1, 2], "inner": {"lr": 1.0, "layers": 2}, "checkpoint": "a/b",
    }  # fmt: skip
    assert from_dict(Outer, to_dict(config)) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "inner": {"lrr": 1}}, "inner.lrr"),
        ({"name": "x", "mode": "s2x"}, "mode"),
        ({"name": "x", "inner": {"layers": 2.5}}, "inner.layers"),
        ({"name": "x", "inner": {"layers": True}}, "inner.layers"),
        ({}, "name"),
    ],
)
def test_errors_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_are_yaml_values_and_win_over_the_file(tmp_path):
    assert parse_overrides(["a.b=3", "c=[1, 2]", "d=true", "e=text"]) == {
        "a": {"b": 3}, "c": [1, 2], "d": True, "e": "text",
    }  # fmt: skip
    file = tmp_path / "c.yaml"
    file.write_text("name: base\ninner:\n  lr: 0.5\n  layers: 4\n")
    config = load_config(Outer, file, ["inner.lr=0.1"])
    assert config.inner == Inner(lr=0.1, layers=4)
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        parse_overrides(["novalue"])


def test_numbers_in_exponent_form_are_floats_wherever_they_come_from(tmp_path):
    # YAML 1.1 reads "1e-3" (no dot) as a string; a learning rate written that way must still work.
    assert load_config(Outer, None, ["name=x", "inner.lr=1e-3"]).inner.lr == pytest.approx(1e-3)
    file = tmp_path / "c.yaml"
    file.write_text("name: base\ninner:\n  lr: 5e-4\n")
    assert load_config(Outer, file, []).inner.lr == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match=r"inner\.lr: expected a number"):
        from_dict(Outer, {"name": "x", "inner": {"lr": "fast"}})
