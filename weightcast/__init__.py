"""weightcast: meta-learned weight predictors that make neural-network training faster.

The pipeline's stages are subpackages (`weightcast.zoo` <- `weightcast.collect` <-
`weightcast.train_predictor` <- `weightcast.eval`), each a `weightcast` subcommand. A practitioner
needs only what this module exports:

    from weightcast import Nowcaster

    nowcaster = Nowcaster(model, optimizer, probe=(x_probe, y_probe, loss_fn))  # the shipped default
    for epoch in range(epochs):
        train_one_epoch(model, optimizer)
        nowcaster()

Importing `weightcast` is cheap: each name below is imported on first use (PEP 562), so nothing of
torch, collect, Ray, wandb or the zoo's tasks loads until it is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weightcast._lazy import lazy_exports
from weightcast.errors import WeightcastError

__all__ = [
    "Nowcaster",
    "NowcastConfig",
    "NowcastHook",
    "PredictorBundle",
    "load_bundle",
    "WeightcastError",
    "__version__",
]

# public name -> the module that defines it
_LAZY = {
    "Nowcaster": "weightcast.eval.runtime",
    "NowcastConfig": "weightcast.eval.runtime",
    "NowcastHook": "weightcast.eval.runtime",
    "PredictorBundle": "weightcast.train_predictor.bundle",
    "load_bundle": "weightcast.train_predictor.bundle",
}

if TYPE_CHECKING:
    from weightcast.eval.runtime import Nowcaster, NowcastConfig, NowcastHook
    from weightcast.train_predictor.bundle import PredictorBundle, load_bundle

_getattr, __dir__ = lazy_exports(__name__, _LAZY, __all__)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from weightcast.zoo.rundir import package_version

        return package_version()
    return _getattr(name)
