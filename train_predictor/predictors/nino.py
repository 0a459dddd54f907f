"""NiNo's graph-free nowcaster ("WNN+", Knyazev et al., ICLR 2025), the `nino-mlp` predictor of the
`train_predictor` stage, with the NiNo facts the runtime and the graph network share: the layer-type
ids (`NINO_TYPE_IDS`), the per-tensor standardization and the horizon schedule.

Per scalar, from the last c = `input_length` (5) states of its parameter TENSOR:

    z      = (w - mean) / (std + eps)        mean, std over every element of the tensor and all c
                                             states (torch.std: Bessel-corrected), eps = 1e-6
    h      = Linear(c -> hidden)(z) + Embedding(type id)
    h      = MLP(h)                          `depth` x [Linear(hidden -> hidden), SiLU]
    deltas = Linear(hidden -> K)(h)          K = `horizon` (NiNo: 40) future states at once
    w_k    = (z[last] + deltas[k - 1]) * std + mean

The prediction is un-standardized with `std`, not `std + eps`, as NiNo's `unscale_params` does.
Row k of the head is state k after the last input, in units of the context spacing (NiNo records a
state every `period / c` optimizer steps; weightcast windows are consecutive recorded states).

The calling contract that differs from the element-wise predictors (`per_tensor = True`): a
window passed to `predict` / `predict_path` / `forward` is ONE parameter tensor, flattened to
(numel, c); the statistics are computed over the whole window before chunking. The caller (the
runtime) therefore calls it once per parameter tensor:

    predictor.predict(states.reshape(c, -1).T, k, layer_type="conv")   # -> (numel,)

`layer_type` is a weightcast layer type (zoo.layer_types.LAYER_TYPES) or a NiNo type id (int);
by default the predictor's configured `layer_type`, which is what `PredictorBundle.predict`
relies on (an imported bundle holds one copy per layer type, each configured with its type).
NiNo gives a norm layer's BIAS the bias id 2: pass `layer_type=nino_type_id("norm", param_name)`
to reproduce that. The windows may be any floating dtype; the output has the window's dtype.

Training (`loss`): the train-predictor pipeline gives batches of windows of one layer type drawn
from many tensors, without tensor ids. `loss(window, target, groups=None)` standardizes per
group of `groups` (tensor ids, (N,)) when given; without them the whole batch is standardized as
one tensor, which approximates each tensor's statistics by those of the layer type's batch. The
loss is NiNo's: mean L1 between predicted and true future states in standardized units, over
the first m <= K rows for targets (N, m). NiNo trains one model for all layer types; the
pipeline fits one per layer type, each with its own type id.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from weightcast.train_predictor.predictors.base import (
    DEFAULT_CHUNK_SIZE,
    Kernel,
    Predictor,
    register_predictor,
)
from weightcast.zoo.layer_types import LAYER_TYPES

__all__ = [
    "NINO_NUM_TYPES",
    "NINO_TYPE_IDS",
    "NiNoMLP",
    "PerTensorPredictor",
    "nino_horizon_schedule",
    "nino_type_id",
    "tensor_stats",
]

# NiNo's edge-type ids (its graph/graph*.py `_param_type`): 0 dummy, 1 fc weight, 2 bias (and
# anything else 1-D that is not a norm weight), 3 conv weight, 4 norm weight, 5 word embeddings,
# 6 positional embeddings, 7/8/9 attention q/k/v weights, 10 residual, 11 attention heads,
# 12 reserved, 13 self-loops; its embedding table has 15 rows.
# weightcast's layer types map onto them as below; a norm BIAS is NiNo type 2 (`nino_type_id`
# with the parameter name gives it), and positional tables are typed `embedding` by weightcast.
NINO_TYPE_IDS: dict[str, int] = {"linear": 1, "bias": 2, "conv": 3, "norm": 4, "embedding": 5}
NINO_NUM_TYPES = 15
NINO_SELF_LOOP, NINO_RESIDUAL = 13, 10
assert set(NINO_TYPE_IDS) == set(LAYER_TYPES)
# Scalars per block inside an inference chunk: a (block, hidden) activation is 32 MB at hidden 128.
_BLOCK = 65_536


def nino_type_id(layer_type: str | int, param_name: str | None = None) -> int:
    """NiNo type id of a weightcast layer type (or an id, returned as is); a `norm` parameter
    whose name ends in `bias` is NiNo's bias type (2), as in NiNo's own graphs."""
    if isinstance(layer_type, int) and not isinstance(layer_type, bool):
        if not 0 <= layer_type < NINO_NUM_TYPES:
            raise ValueError(f"NiNo type ids are 0..{NINO_NUM_TYPES - 1}, got {layer_type}")
        return layer_type
    if layer_type not in NINO_TYPE_IDS:
        raise ValueError(f"unknown layer type {layer_type!r}; valid: {', '.join(LAYER_TYPES)} or a NiNo id")
    if layer_type == "norm" and param_name is not None and param_name.endswith("bias"):
        return NINO_TYPE_IDS["bias"]
    return NINO_TYPE_IDS[layer_type]


def nino_horizon_schedule(max_steps: int, period: int, k_max: int = 40, power: float = 2.0) -> list[int]:
    """NiNo's horizon per jump: round(linspace(k_max ** (1/power), 1, max_steps // period) ** power),
    e.g. [40, 33, 26, 21, 16, 11, 8, 5, 3, 1] for 10,000 steps, period 1000 (at least one jump).
    Jump j (0-based) uses entry min(j, len - 1); k counts context spacings (period / c steps)."""
    if max_steps < 1 or period < 1 or k_max < 1 or power <= 0:
        raise ValueError(
            f"need max_steps, period, k_max >= 1 and power > 0, got {max_steps=}, {period=}, "
            f"{k_max=}, {power=}"
        )
    # numpy, as NiNo: its linspace and round-half-to-even give the published values exactly.
    values = np.linspace(k_max ** (1 / power), 1, num=max(1, max_steps // period)) ** power
    return [int(k) for k in values.round()]


def tensor_stats(window: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """NiNo's scaling of one tensor's window (numel, c): (mean, std) over all its values, 0-dim,
    in float32 at least; standardize with (w - mean) / (std + eps), undo with z * std + mean."""
    values = window if window.dtype in (torch.float32, torch.float64) else window.float()
    if values.numel() < 2:  # torch.std of one value is nan; a single value has no spread
        return values.sum() if values.numel() else values.new_zeros(()), values.new_zeros(())
    std, mean = torch.std_mean(values)
    return mean, std


class PerTensorPredictor(Predictor):
    """Base of the NiNo predictors: windows are ONE parameter tensor each (numel, c), standardized
    by the tensor's mean and std (`tensor_stats`), and a subclass's `deltas` maps standardized
    windows to standardized deltas of a K-row head; see the module docstring for the contract."""

    per_tensor = True  # windows are one parameter tensor each; see the module docstring
    eps: float
    layer_type: str
    _pending: tuple[Tensor, Tensor, int] | None = None  # (mean, std, type id) while `predict` runs

    def deltas(self, z: Tensor, type_id: int | Tensor, rows: slice = slice(None)) -> Tensor:
        """Standardized windows (N, c) -> (N, k) standardized deltas of the head's `rows`;
        `type_id` is one id or (N,) ids."""
        raise NotImplementedError

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(range(1, self.horizon + 1))

    def type_index(self, layer_type: str | int | None = None) -> int:
        """The embedding row used for `layer_type` (default: the configured `layer_type`)."""
        return nino_type_id(self.layer_type if layer_type is None else layer_type)

    def forward(self, window: Tensor, layer_type: str | int | None = None) -> Tensor:
        """(numel, c) states of ONE tensor -> (numel, K) predicted states 1..K ahead."""
        mean, std = tensor_stats(window, self.eps)
        return self._path(window, mean, std, self.type_index(layer_type))

    def predict(
        self,
        window: Tensor,
        horizon: int | None = None,
        *,
        layer_type: str | int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        out: Tensor | None = None,
    ) -> Tensor:
        """(numel, c) states of ONE parameter tensor -> (numel,) its state `horizon` (default K)
        context spacings after the last; statistics over the whole window, then chunked."""
        self.check_window(window)
        mean, std = tensor_stats(window, self.eps)
        self._pending = (mean, std, self.type_index(layer_type))
        try:
            return super().predict(window, horizon, chunk_size=chunk_size, out=out)
        finally:
            self._pending = None

    def predict_path(
        self, window: Tensor, *, layer_type: str | int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Tensor:
        """(numel, c) states of ONE tensor -> (numel, K): the states 1..K ahead."""
        self.check_window(window)
        mean, std = tensor_stats(window, self.eps)
        type_id = self.type_index(layer_type)

        def kernel(w: Tensor, out: Tensor) -> None:
            for begin in range(0, w.shape[0], _BLOCK):
                out[begin : begin + _BLOCK] = self._path(w[begin : begin + _BLOCK], mean, std, type_id)

        return self._chunked(window, kernel, chunk_size, (len(self.horizons),))

    def predict_kernel(self, horizon: int) -> Kernel:
        """Row `horizon - 1` of the head only, with the statistics `predict` computed."""
        if self._pending is None:
            raise RuntimeError("nino-mlp kernels need the tensor statistics: call predict(), not the kernel")
        mean, std, type_id = self._pending
        rows = slice(horizon - 1, horizon)

        def kernel(window: Tensor, out: Tensor) -> None:
            m, s = mean.to(window), std.to(window)
            for begin in range(0, window.shape[0], _BLOCK):
                z = (window[begin : begin + _BLOCK] - m) / (s + self.eps)
                delta = self.deltas(z, type_id, rows)[:, 0]
                torch.add(z[:, -1], delta, out=out[begin : begin + _BLOCK]).mul_(s).add_(m)

        return kernel

    def loss(self, window: Tensor, target: Tensor, groups: Tensor | None = None) -> Tensor:
        """Mean L1 between predicted and true states 1..m (m <= K) in standardized units, on
        windows (N, c) and targets (N, m); `groups` (N,) tensor ids standardize per tensor,
        without them the batch is one tensor (see the module docstring)."""
        self.check_window(window)
        if target.dim() == 1:
            target = target[:, None]
        if (
            target.dim() != 2
            or target.shape[0] != window.shape[0]
            or not 1 <= target.shape[1] <= self.horizon
        ):
            raise ValueError(
                f"predictor {self.kind!r} needs targets of shape ({window.shape[0]}, m), 1 <= m <= "
                f"{self.horizon}, for {window.shape[0]} windows, got {tuple(target.shape)}"
            )
        mean, std = _group_stats(window, groups, self.eps)
        scale = std + self.eps
        z = (window - mean) / scale
        zt = (target - mean) / scale
        m = target.shape[1]
        predicted = z[:, -1:] + self.deltas(z, self.type_index(), slice(0, m))
        return (predicted - zt).abs().mean()

    def _path(self, window: Tensor, mean: Tensor, std: Tensor, type_id: int) -> Tensor:
        m, s = mean.to(window), std.to(window)
        z = (window - m) / (s + self.eps)
        return (z[:, -1:] + self.deltas(z, type_id)) * s + m


@register_predictor
class NiNoMLP(PerTensorPredictor):
    """NiNo's per-scalar nowcaster with a K-step head (see the module docstring for the formula
    and the per-tensor calling contract).

    Args:
        input_length: c, the context states per scalar (NiNo: 5).
        horizon: K, the head's rows, i.e. future states 1..K (NiNo: 40).
        hidden: width of the projection, embedding and MLP (NiNo: 128).
        depth: hidden Linear+SiLU layers of the MLP before the head (NiNo: 3).
        num_types: rows of the type embedding (NiNo: 15).
        layer_type: the type used when `predict` gets none (a `LAYER_TYPES` name).
        eps: added to the std before dividing (NiNo: 1e-6).
    """

    kind = "nino-mlp"

    def __init__(
        self,
        input_length: int = 5,
        horizon: int = 40,
        hidden: int = 128,
        depth: int = 3,
        num_types: int = NINO_NUM_TYPES,
        layer_type: str = "linear",
        eps: float = 1e-6,
    ):
        if hidden < 1 or depth < 0 or eps < 0:
            raise self.config_error(
                f"need hidden >= 1, depth >= 0, eps >= 0; got {hidden=}, {depth=}, {eps=}"
            )
        if layer_type not in NINO_TYPE_IDS:
            raise self.config_error(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}")
        if num_types <= max(NINO_TYPE_IDS.values()):
            raise self.config_error(
                f"num_types must exceed the largest type id {max(NINO_TYPE_IDS.values())}"
            )
        config = dict(
            input_length=input_length,
            horizon=horizon,
            hidden=hidden,
            depth=depth,
            num_types=num_types,
            layer_type=layer_type,
            eps=eps,
        )
        super().__init__(input_length=input_length, horizon=horizon, config=config)
        self.eps, self.layer_type = eps, layer_type
        self.proj = nn.Linear(input_length, hidden)
        self.type_embed = nn.Embedding(num_types, hidden)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, horizon)  # row k - 1: the standardized delta k states ahead
        self.apply(_nino_init)

    def deltas(self, z: Tensor, type_id: int | Tensor, rows: slice = slice(None)) -> Tensor:
        """Standardized windows (N, c) -> (N, k) standardized deltas of the head's `rows`;
        `type_id` is one id or (N,) ids."""
        ids = torch.as_tensor(type_id, device=z.device)
        h = self.mlp(self.proj(z) + self.type_embed(ids))
        return F.linear(h, self.head.weight[rows], self.head.bias[rows])


def _group_stats(window: Tensor, groups: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    """(mean, std) per row: of the row's group (tensor) when `groups` is given, else of the batch."""
    if groups is None:
        mean, std = tensor_stats(window, eps)
        return mean.expand(window.shape[0], 1), std.expand(window.shape[0], 1)
    if groups.shape != window.shape[:1]:
        raise ValueError(f"groups must be ({window.shape[0]},) tensor ids, got {tuple(groups.shape)}")
    ids, inverse = torch.unique(groups, return_inverse=True)
    count = torch.zeros(len(ids), dtype=window.dtype, device=window.device)
    count.index_add_(0, inverse, torch.full_like(window[:, 0], window.shape[1]))
    total = torch.zeros_like(count).index_add_(0, inverse, window.sum(dim=1))
    mean = total / count
    centered = window - mean[inverse, None]
    square = torch.zeros_like(count).index_add_(0, inverse, centered.square().sum(dim=1))
    std = (square / (count - 1).clamp(min=1)).sqrt()  # Bessel-corrected, as torch.std
    return mean[inverse, None], std[inverse, None]


def _nino_init(module: nn.Module) -> None:
    """NiNo's init: normal(0, 0.02) weights and embeddings, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear):
        nn.init.zeros_(module.bias)
