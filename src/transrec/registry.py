"""A name -> component table. There is one registry per kind of component (loaders, item encoders,
user encoders, losses...); adding a component is one new file plus one ``@REGISTRY.register`` line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from transrec.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components of one kind.

    >>> LOADERS = Registry("data loader")
    >>> @LOADERS.register("recbole")
    ... def load_recbole(path): ...
    >>> LOADERS.get("recbole") is load_recbole
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(component: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = component
            return component

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
