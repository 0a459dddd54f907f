"""Element-wise weight predictors of the `train_predictor` stage, looked up by name in
`PREDICTORS` (`build_predictor(kind, **config)`): "wnn", "lfd2", "lfd2-norm", "lfn", "lfl",
"lfs", "no-jump", "linear-fit", "poly2-fit", "exp-fit", "plp", "introspection", "nino-mlp", "nino".

Importing this package registers them all; see `base` for the interface they share.
"""

from weightcast.train_predictor.predictors.base import (
    DEFAULT_CHUNK_SIZE,
    PREDICTORS,
    Predictor,
    RuleBasedPredictor,
    build_predictor,
    register_predictor,
)
from weightcast.train_predictor.predictors.curve_fit import ExpFit, LinearFit, NoJump, Poly2Fit, PolynomialFit
from weightcast.train_predictor.predictors.introspection import Introspection
from weightcast.train_predictor.predictors.lfd import LFD2, LFL, LFN, LFS, LFD2Norm, LinearFarcaster
from weightcast.train_predictor.predictors.nino import NiNoMLP
from weightcast.train_predictor.predictors.nino_graph import NiNoGraph
from weightcast.train_predictor.predictors.plp import PLP
from weightcast.train_predictor.predictors.wnn import WNN

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PREDICTORS",
    "Predictor",
    "RuleBasedPredictor",
    "build_predictor",
    "register_predictor",
    "WNN",
    "LinearFarcaster",
    "LFD2",
    "LFD2Norm",
    "LFN",
    "LFL",
    "LFS",
    "NoJump",
    "PolynomialFit",
    "LinearFit",
    "Poly2Fit",
    "ExpFit",
    "PLP",
    "Introspection",
    "NiNoMLP",
    "NiNoGraph",
]
