"""PEP 562 lazy exports for weightcast's package `__init__`s: a package names its public objects
and the modules that define them, and each module is imported when one of its names is first used,
so importing the package itself loads nothing."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping, Sequence

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose name -> defining module map is `exports`
    and whose `__all__` is `public`:

        __getattr__, __dir__ = lazy_exports(__name__, {"Nowcaster": "weightcast.eval.runtime"}, __all__)
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(public))

    return __getattr__, __dir__
