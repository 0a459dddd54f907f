"""weightcast stage train_predictor: per-layer-type weight predictors, fitted on collected
trajectories and shared as PredictorBundles on the Hugging Face Hub (all Hub I/O in `hub`).

Pipeline: zoo <- collect <- **train_predictor** <- eval.
"""

from weightcast.train_predictor.bundle import BundleFormatError, MissingPredictorError, PredictorBundle
from weightcast.train_predictor.hub import HubError, load_bundle, publish, save_bundle

__all__ = [
    "PredictorBundle",
    "BundleFormatError",
    "MissingPredictorError",
    "HubError",
    "load_bundle",
    "publish",
    "save_bundle",
]
