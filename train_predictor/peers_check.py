"""Check the imported peers against the peers' own formulas (train_predictor stage, a maintainer's
script): given the folder of released checkpoints (`../shared/peers` beside the repository),

    python -m weightcast.train_predictor.peers_check ../shared/peers [--scalars 200000] [--seed 0]

prints, per network, the largest absolute difference between weightcast's imported predictor
(`predict`, float32) and a float64 NumPy forward of the authors' formula with their weights, on
random-walk windows, also relative to the window's range (WNN) or the tensor's std (NiNo).

WNN reference: the Keras callback's `get_*_pred` of jjh6297/WNN (normalize by the first value and
2 * (range + 1e-8 + 1e-5), two streams, LeakyReLU 0.3 as Keras, tanh head, de-normalize from the
normalized last value as the paper states). NiNo reference: `NiNoModel` with gnn=False and NiNo's
`scale_params` / `unscale_params` (per-tensor mean and Bessel-corrected std, eps 1e-6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from weightcast.train_predictor.importers import (
    WNN_AUTHORS_FILES,
    load_nino_checkpoint,
    load_wnn_authors,
    nino_mlp_from_checkpoint,
)

__all__ = ["check_peers", "main", "nino_mlp_reference", "wnn_reference"]


def wnn_reference(state: dict[str, np.ndarray], window: np.ndarray) -> np.ndarray:
    """The WNN authors' prediction for windows (N, 5) in float64, from their PyTorch port's state
    dict keys (dense[.linear], dense_1 .. dense_12), computed as their Keras network does."""

    def dense(i: int, x: np.ndarray) -> np.ndarray:
        prefix = ("dense" if i == 0 else f"dense_{i}") + (".linear" if i in (0, 5, 6, 11) else "")
        return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]

    def stream(first: int, x: np.ndarray) -> np.ndarray:
        h = dense(first, x)  # (N, 64)
        z = np.maximum(dense(first + 1, h), 0)  # (N, 8)
        act = dense(first + 2, z) + dense(first + 3, z) * np.exp(dense(first + 4, z) * h)
        y = dense(first + 5, act)
        return np.where(y > 0, y, 0.3 * y)  # Keras LeakyReLU default slope

    low = window[:, :1]
    shifted = window - low
    scale = shifted.max(1, keepdims=True) - shifted.min(1, keepdims=True) + 1e-8
    normalized = shifted / (scale + 1e-5) / 2
    features = np.concatenate([stream(0, normalized), stream(6, np.diff(normalized, axis=1))], axis=1)
    delta = np.tanh(dense(12, features))[:, 0]
    return (normalized[:, -1] + delta) * (scale[:, 0] + 1e-5) * 2 + low[:, 0]


def nino_mlp_reference(state: dict[str, np.ndarray], window: np.ndarray, type_id: int, k: int) -> np.ndarray:
    """NiNo's graph-free prediction k states ahead for ONE tensor's window (numel, 5), float64."""

    def linear(name: str, x: np.ndarray) -> np.ndarray:
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def silu(x: np.ndarray) -> np.ndarray:
        return x / (1 + np.exp(-x))

    mean, std = window.mean(), window.std(ddof=1)
    z = (window - mean) / (std + 1e-6)
    h = linear("edge_proj.fc.0", z) + state["layer_embed.weight"][type_id]
    for i in (0, 2, 4):
        h = silu(linear(f"edge_mlp.fc.{i}", h))
    delta = linear("edge_mlp.fc.6", h)[:, k - 1]
    return (z[:, -1] + delta) * std + mean


def check_peers(peers: str | Path, scalars: int = 200_000, seed: int = 0) -> list[tuple[str, float, float]]:
    """(name, max |imported - reference|, the same relative to the window's scale) per checked network."""
    peers = Path(peers)
    rng = np.random.default_rng(seed)
    # Random walks around N(0, 0.1) starting values, steps of 1e-3: weight histories of a few epochs.
    window = 0.1 * rng.standard_normal((scalars, 1)) + 1e-3 * rng.standard_normal((scalars, 5)).cumsum(1)
    window32 = torch.from_numpy(window.astype(np.float32))
    window = window32.double().numpy()  # the reference sees exactly the float32 inputs
    rows = []
    for layer_type, stem in WNN_AUTHORS_FILES.items():
        for suffix in (".pt", ".h5"):
            path = peers / "wnn-authors" / f"{stem}{suffix}"
            if not path.is_file():
                continue
            state = {k: v.double().numpy() for k, v in torch.load(peers / "wnn-authors" / f"{stem}.pt",
                                                                   weights_only=True).items()}  # fmt: skip
            expected = wnn_reference(state, window)
            got = load_wnn_authors(path).predict(window32).double().numpy()
            scale = window.max(1) - window.min(1) + 1e-8
            diff = np.abs(got - expected)
            rows.append((f"wnn-authors {path.name} ({layer_type})", diff.max(), (diff / scale).max()))
    for name in ("nino_mlp.pt", "nino_mlp_h32.pt"):
        path = peers / "nino" / name
        if not path.is_file():
            continue
        state_t, _ = load_nino_checkpoint(path)
        state = {k: v.double().numpy() for k, v in state_t.items()}
        predictor = nino_mlp_from_checkpoint(path)
        std = window.std(ddof=1)
        for type_id, k in ((1, 40), (3, 1), (2, 10)):
            expected = nino_mlp_reference(state, window, type_id, k)
            got = predictor.predict(window32, k, layer_type=type_id).double().numpy()
            diff = np.abs(got - expected)
            rows.append((f"nino {name} (type {type_id}, k={k})", diff.max(), diff.max() / std))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peers", help="folder with wnn-authors/ and nino/ (e.g. ../shared/peers)")
    parser.add_argument("--scalars", type=int, default=200_000, help="random windows per check")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = check_peers(args.peers, args.scalars, args.seed)
    if not rows:
        print(f"no peer checkpoints found under {args.peers}", file=sys.stderr)
        return 1
    print(f"{'network':<48} {'max abs diff':>14} {'relative':>10}")
    for name, diff, relative in rows:
        print(f"{name:<48} {diff:>14.3e} {relative:>10.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
