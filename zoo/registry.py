"""The one `Registry` class of weightcast: architectures, tasks, optimizers, schedules,
augmentations, initializations and (later) predictors are all looked up by name through it.

Registry names are the project's vocabulary: they appear in configs, shard metadata and model cards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from weightcast.errors import WeightcastError

__all__ = ["Registry", "RegistryEntry", "UnknownNameError", "DuplicateNameError"]

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(WeightcastError, ValueError):
    """A name was looked up that no entry of the registry has."""


class DuplicateNameError(WeightcastError, ValueError):
    """A second entry was registered under a name that is taken."""


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    name: str
    factory: T
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> factory function, with free-form metadata per entry (e.g. the inputs an
    architecture accepts, the modality of a task)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}

    def register(self, name: str | None = None, **metadata: Any) -> Callable[[T], T]:
        """Decorator: `@ARCHITECTURES.register("resnet20", inputs=("image",))`.
        Without a name, the function's own name (underscores as dashes) is used."""

        def decorator(factory: T) -> T:
            key = name or factory.__name__.replace("_", "-")
            if key in self._entries:
                raise DuplicateNameError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = RegistryEntry(key, factory, dict(metadata))
            return factory

        return decorator

    def entry(self, name: str) -> RegistryEntry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).factory

    def metadata(self, name: str) -> dict[str, Any]:
        return self.entry(name).metadata

    def check(self, name: str) -> str:
        """Raise `UnknownNameError` unless `name` is registered; return it."""
        self.entry(name)
        return name

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
