"""Training-curve plots (PNG, matplotlib's Agg backend: no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from weightcast.zoo.train import History  # noqa: E402

__all__ = ["plot_history", "sparkline"]

_BARS = "▁▂▃▄▅▆▇█"


def plot_history(history: History, path: str | Path, title: str = "") -> Path:
    """Loss curves (left) and the validation metric (right) against epochs."""
    epochs = history.column("epoch")
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs[1:], history.column("train_loss")[1:], label="train loss")
    ax_loss.plot(epochs, history.column("val_loss"), label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_metric.plot(epochs, history.column("val_metric"), color="C2")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(f"val {history.metric_name}")
    fig.suptitle(title + (" (diverged)" if history.diverged else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def sparkline(values: list[float]) -> str:
    """A one-line terminal curve: ▁▃▅▇█."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BARS[round((v - lo) / span * (len(_BARS) - 1))] for v in values)
