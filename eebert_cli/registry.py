"""A plain name -> class registry, shared by exits, criteria, objectives and backbones.

Recipes and flags name components by string; adding a component means writing a
class and decorating it with ``@REGISTRY.register("name")`` in its own module.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import EebertError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            setattr(obj, "registry_name", name)
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise EebertError(
                f"unknown {self.kind} {name!r}", f"choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
