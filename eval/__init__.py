"""weightcast stage: eval, the last stage of the pipeline (zoo <- collect <- train_predictor <-
eval). It applies pretrained predictor bundles to live training runs: `Nowcaster` in any PyTorch
loop, `NowcastHook` in the zoo's loop (see `eval.runtime` for the two-line use). And it measures
them zero-shot on held-out tasks: `run_eval(load_eval_config(path))` (`weightcast eval`) writes a
report of forecast errors and training speed-ups; `eval.quickstart.quickstart()` (`weightcast
quickstart`) runs the whole pipeline at debug size."""

from eval.cli import EvalResult, run_eval
from eval.config import EvalConfig, load_eval_config
from eval.hooks import NowcastHook
from eval.runtime import (
    BUFFER_DTYPES,
    FIRST_MOMENT_KEYS,
    MODES,
    OPTIMIZER_POLICIES,
    OUTCOMES,
    Jump,
    Nowcaster,
    NowcastConfig,
    NowcastStats,
    NowcastWarning,
    ProbeLoss,
    apply_optimizer_policy,
    open_bundle,
    probe_batch,
    unwrap,
)

__all__ = [
    "Nowcaster",
    "NowcastConfig",
    "NowcastHook",
    "NowcastStats",
    "NowcastWarning",
    "Jump",
    "ProbeLoss",
    "probe_batch",
    "open_bundle",
    "unwrap",
    "apply_optimizer_policy",
    "MODES",
    "OPTIMIZER_POLICIES",
    "OUTCOMES",
    "FIRST_MOMENT_KEYS",
    "BUFFER_DTYPES",
    "EvalConfig",
    "EvalResult",
    "load_eval_config",
    "run_eval",
]
