"""The runtime a practitioner installs weightcast for: a `Nowcaster` that applies a predictor
bundle to any PyTorch training loop (two lines, see `nowcaster`), and `NowcastHook`, the same for
the zoo's loop. It depends on the bundle format (`train_predictor.bundle`) and the layer types
(`zoo.layer_types`) only, never on the evaluation harness around it."""

from weightcast.eval.runtime.nowcaster import (
    BUFFER_DTYPES,
    DEFAULT_BUNDLE,
    FIRST_MOMENT_KEYS,
    GUARD_RULES,
    HORIZON_SCHEDULES,
    MODES,
    OPTIMIZER_POLICIES,
    OUTCOMES,
    SHIPPED_BUNDLES_DIR,
    SHIPPED_PREFIX,
    STATE_VERSION,
    Jump,
    NowcastConfig,
    Nowcaster,
    NowcastStats,
    NowcastWarning,
    ProbeLoss,
    apply_optimizer_policy,
    horizon_schedule,
    open_bundle,
    probe_batch,
    shipped_bundle_folder,
    unwrap,
)

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
