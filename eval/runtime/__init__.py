"""The runtime a practitioner installs weightcast for: a `Nowcaster` that applies a predictor
bundle to any PyTorch training loop (two lines, see `nowcaster`), and `NowcastHook`, the same for
the zoo's loop. It depends on the bundle format (`train_predictor.bundle`) and the layer types
(`zoo.layer_types`) only, never on the evaluation harness around it."""

from weightcast.eval.runtime.config import (
    BUFFER_DTYPES,
    HORIZON_SCHEDULES,
    MODES,
    NowcastConfig,
    horizon_schedule,
)
from weightcast.eval.runtime.guard import GUARD_RULES
from weightcast.eval.runtime.nowcaster import (
    DEFAULT_BUNDLE,
    STATE_VERSION,
    Nowcaster,
    NowcastWarning,
    open_bundle,
    unwrap,
)
from weightcast.eval.runtime.optimizer_policy import (
    FIRST_MOMENT_KEYS,
    OPTIMIZER_POLICIES,
    apply_optimizer_policy,
)
from weightcast.eval.runtime.probe import ProbeLoss, probe_batch
from weightcast.eval.runtime.stats import OUTCOMES, Jump, NowcastStats

# the shipped bundles behind DEFAULT_BUNDLE and `shipped:<kind>`, from train_predictor.bundle
from weightcast.train_predictor.bundle import SHIPPED_BUNDLES_DIR, SHIPPED_PREFIX, shipped_bundle_folder

__all__ = [
    "BUFFER_DTYPES",
    "DEFAULT_BUNDLE",
    "FIRST_MOMENT_KEYS",
    "GUARD_RULES",
    "HORIZON_SCHEDULES",
    "MODES",
    "OPTIMIZER_POLICIES",
    "OUTCOMES",
    "SHIPPED_BUNDLES_DIR",
    "SHIPPED_PREFIX",
    "STATE_VERSION",
    "Jump",
    "NowcastConfig",
    "NowcastHook",
    "NowcastStats",
    "NowcastWarning",
    "Nowcaster",
    "ProbeLoss",
    "apply_optimizer_policy",
    "horizon_schedule",
    "open_bundle",
    "probe_batch",
    "shipped_bundle_folder",
    "unwrap",
]


def __getattr__(name: str) -> object:
    # NowcastHook is for the zoo's training loop (zoo.train and its tasks); `Nowcaster` users never
    # load those (PEP 562: imported on first use).
    if name == "NowcastHook":
        from weightcast.eval.runtime.hook import NowcastHook

        return NowcastHook
    raise AttributeError(f"module 'weightcast.eval.runtime' has no attribute {name!r}")
