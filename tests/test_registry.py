import pytest

from transrec.registry import Registry


def test_register_get_and_unknown_names_listed():
    registry: Registry = Registry("widget")

    @registry.register("a")
    def make_a():
        return "a"

    assert registry.get("a") is make_a
    assert "a" in registry and registry.names() == ["a"]
    with pytest.raises(KeyError, match="unknown widget 'b'; known: a"):
        registry.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(make_a)
