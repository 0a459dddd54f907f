"""weightcast stage train_predictor: per-layer-type weight predictors, fitted on collected
trajectories and shared as PredictorBundles (format and loading in `bundle`, Hub transfers in `hub`).

Pipeline: zoo <- collect <- **train_predictor** <- eval.

Importing this package loads nothing: each name below is imported from its module on first use
(PEP 562), so `weightcast.train_predictor.bundle` does not pull in the training code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightcast._lazy import lazy_exports

__all__ = [
    "PredictorBundle",
    "BundleFormatError",
    "BundleNotFoundError",
    "MissingPredictorError",
    "HubError",
    "load_bundle",
    "publish",
    "save_bundle",
]

_LAZY = {name: "weightcast.train_predictor.bundle" for name in __all__} | {
    "HubError": "weightcast.train_predictor.hub"
}

if TYPE_CHECKING:
    from weightcast.train_predictor.bundle import (
        BundleFormatError,
        BundleNotFoundError,
        MissingPredictorError,
        PredictorBundle,
        load_bundle,
        publish,
        save_bundle,
    )
    from weightcast.train_predictor.hub import HubError

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
