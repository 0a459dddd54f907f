"""WNN, the Weight Nowcaster Network (Jang et al., ICML 2023), a `train_predictor` predictor.

Per scalar, from its last `input_length` (5) values: normalize (subtract the window's FIRST value,
divide by `2 * (max - min + eps)`), feed the normalized values and their first differences to two
streams, and predict a bounded residual `delta = tanh(...)`; the prediction `horizon` (5) steps
ahead is `w[first] + 2 * (range + eps) * (L[last] + delta)`, i.e. the last value plus up to about
twice the window's range. Layer sizes, initialization and the L1 penalties follow the authors'
Keras model (9,425 parameters at input_length 5).

Differences are fed oldest first, `L[1]-L[0], ..., L[4]-L[3]`, as the authors' code does (the
paper's eq. 6 lists them newest first). VarianceScaling init and the L1 penalties apply to the
four stream Dense layers only; the activation networks and the head keep Keras defaults
(glorot_uniform kernels, zero biases), as in the authors' model.

eps: the paper states no epsilon; the authors' code divides by `2 * (range + 1e-8 + 1e-5)`. We use
one `eps`, 1e-5 by default (pass 1.001e-5 to match their code exactly).

Inference (`predict`) runs `_FusedInference`: the same function with the linear maps folded into
five matmuls per block (see its docstring), features-major, in cache-sized blocks; it agrees
with `forward` to float32 rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightcast.train_predictor.predictors.base import Kernel, Predictor, register_predictor

__all__ = ["WNN", "normalize", "denormalize"]

_STREAM_WIDTH = 64  # Dense(64) after each stream's input
_ACT_HIDDEN = 8  # bottleneck of the activation network
_STREAM_OUT = 32  # Dense(32) at each stream's end
_LEAKY_SLOPE = 0.3  # Keras LeakyReLU default, which the authors use
_INIT_SCALE = 0.1  # VarianceScaling(scale=0.1, mode="fan_in", distribution="uniform")
# Inference blocks, in scalars. CPU: 2048 per thread (one block's activations, 419 floats per
# scalar, mostly stay in the L2 caches, and per-op dispatch and thread fork/join costs are
# amortized), but at most 1/640 of a chunk, so that the scratch (~491 floats per block scalar)
# stays below the output's size; normalization runs per super-block of 8 blocks. CUDA: large
# blocks, few kernel launches.
_CPU_BLOCK_PER_THREAD, _MIN_BLOCK, _BLOCKS_PER_SUPER = 2048, 128, 8
_CUDA_BLOCK = 262_144  # ~0.5 GB of activations


def normalize(window: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """WNN normalization of (N, L) windows: returns (normalized (N, L), anchor (N, 1),
    scale (N, 1)) with anchor = the first value and scale = 2 * (max - min + eps)."""
    anchor = window[:, :1]
    scale = 2 * (window.amax(dim=1, keepdim=True) - window.amin(dim=1, keepdim=True) + eps)
    return (window - anchor) / scale, anchor, scale


def denormalize(values: Tensor, anchor: Tensor, scale: Tensor) -> Tensor:
    """Inverse of `normalize` for normalized values (N, k) given anchor and scale (N, 1)."""
    return anchor + scale * values


@register_predictor
class WNN(Predictor):
    """Two-stream weight nowcaster; `horizon` is the skip (epochs between the last input and the
    target), metadata for which step the network was trained on."""

    kind = "wnn"

    def __init__(
        self,
        input_length: int = 5,
        horizon: int = 5,
        eps: float = 1e-5,
        kernel_l1: float = 1e-6,
        bias_l1: float = 0.1,
    ):
        if input_length < 2:
            raise self.config_error(f"input_length must be >= 2 (one difference), got {input_length}")
        if eps <= 0 or kernel_l1 < 0 or bias_l1 < 0:
            raise self.config_error(
                f"need eps > 0 and non-negative L1 weights, got {eps=}, {kernel_l1=}, {bias_l1=}"
            )
        config = dict(
            input_length=input_length, horizon=horizon, eps=eps, kernel_l1=kernel_l1, bias_l1=bias_l1
        )
        super().__init__(input_length=input_length, horizon=horizon, config=config)
        self.eps, self.kernel_l1, self.bias_l1 = eps, kernel_l1, bias_l1
        self.values = _Stream(input_length)  # normalized values
        self.diffs = _Stream(input_length - 1)  # their first differences, oldest first
        self.head = nn.Linear(2 * _STREAM_OUT, 1)
        nn.init.xavier_uniform_(self.head.weight)  # Keras default (glorot_uniform), zero bias
        nn.init.zeros_(self.head.bias)

    def delta(self, normalized: Tensor) -> Tensor:
        """(N, L) normalized windows -> (N, 1) residual in normalized units, in (-1, 1)."""
        features = torch.cat([self.values(normalized), self.diffs(normalized.diff(dim=1))], dim=1)
        return torch.tanh(self.head(features))

    def forward(self, window: Tensor) -> Tensor:
        """(N, L) -> (N, 1) prediction `horizon` steps after the last input."""
        normalized, anchor, scale = normalize(window, self.eps)
        return denormalize(normalized[:, -1:] + self.delta(normalized), anchor, scale)

    def loss(self, window: Tensor, target: Tensor) -> Tensor:
        """Mean |delta - (normalized target - L[last])| (normalized units, eq. 9 of the paper)
        plus the L1 penalties of `regularization`."""
        target = self.check_target(window, target)
        normalized, anchor, scale = normalize(window, self.eps)
        residual = (target - anchor) / scale - normalized[:, -1:]  # (N, 1)
        return (self.delta(normalized) - residual).abs().mean() + self.regularization()

    def predict_kernel(self, horizon: int) -> Kernel:
        """The fused inference path (`_FusedInference`), built from the current parameters."""
        return _FusedInference(self)

    def stream_layers(self) -> list[nn.Linear]:
        """The Dense(64) and Dense(32) of both streams: VarianceScaling init, L1-penalized."""
        return [self.values.inp, self.values.out, self.diffs.inp, self.diffs.out]

    def regularization(self) -> Tensor:
        """kernel_l1 * sum|kernel| + bias_l1 * sum|bias| over the four stream Dense layers
        (Keras adds these once per batch, not per sample)."""
        kernels = sum(layer.weight.abs().sum() for layer in self.stream_layers())
        biases = sum(layer.bias.abs().sum() for layer in self.stream_layers())
        return self.kernel_l1 * kernels + self.bias_l1 * biases


class _Stream(nn.Module):
    """Dense(64) -> activation network -> Dense(32) -> LeakyReLU(0.3), on (N, in_features)."""

    def __init__(self, in_features: int):
        super().__init__()
        self.inp = nn.Linear(in_features, _STREAM_WIDTH)
        self.act = _ActivationNetwork(_STREAM_WIDTH, _ACT_HIDDEN)
        self.out = nn.Linear(_STREAM_WIDTH, _STREAM_OUT)
        for layer in (self.inp, self.out):  # the stream layers carry the paper's init and L1
            _variance_scaling_(layer.weight, _INIT_SCALE)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.out(self.act(self.inp(x))), _LEAKY_SLOPE)


class _ActivationNetwork(nn.Module):
    """Learned activation on h (N, 64): z = ReLU(Dense8(h)); A(z) + B(z) * exp(C(z) * h)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.squeeze = nn.Linear(width, hidden)
        self.a = nn.Linear(hidden, width)
        self.b = nn.Linear(hidden, width)
        self.c = nn.Linear(hidden, width)
        for layer in (self.squeeze, self.a, self.b, self.c):  # Keras defaults
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: Tensor) -> Tensor:
        z = F.relu(self.squeeze(h))  # (N, 8)
        if torch.is_grad_enabled():
            return torch.addcmul(self.a(z), self.b(z), torch.exp(self.c(z) * h))  # (N, 64)
        # Without autograd (predict_path): the same in place, a third less memory traffic.
        return self.b(z).mul_(self.c(z).mul_(h).exp_()).add_(self.a(z))


class _FusedInference:
    """`WNN.forward` for inference, `kernel(window (c, L), out (c,))`, with its linear maps folded.

    Features-major (activations are (features, b) and weights multiply from the left), per block
    of b scalars, with n (L, b) the normalized windows and a row of ones for the biases:
      G   = P @ [n; 1]          (145, b): h_v, h_d (64 each), pre-ReLU z_v, z_d (8 each), 1
      BCZ = Q @ relu(G[128:])   (274, b): B_v, B_d, z_v, 1, C_v, C_d, z_d, 1
      C <- B * exp(C * h)       in place, both streams at once (128 rows)
      y_v = R_v @ [z_v; 1; C_v],  y_d = R_d @ [C_d; z_d; 1]   (32, b) each, into BCZ[:64]
      delta = tanh(w_head @ leaky_relu([y_v; y_d]) + b_head)
    Folded: the differences stream reads n through the difference matrix; the squeeze Dense(8)
    reads [n; 1] through Dense(64) (nothing nonlinear in between); A(z) enters only through
    Dense(32), which therefore reads z through W_out @ W_a with bias W_out @ b_a + b_out (no A
    activations). Q is block-diagonal over the streams: its zero blocks cost less than a second
    matmul call. Per scalar that is ~20.5 kFLOP executed, ~15.8k of them nonzero, against the
    model's nominal 17.7k. Sums are reassociated: results differ from `forward` by float32
    rounding.
    """

    def __init__(self, wnn: WNN):
        L, H, Z, O = wnn.input_length, _STREAM_WIDTH, _ACT_HIDDEN, _STREAM_OUT
        weight = wnn.head.weight
        kw = dict(dtype=weight.dtype, device=weight.device)
        eye = torch.eye(L, **kw)
        streams = ((wnn.values, eye), (wnn.diffs, eye[1:] - eye[:-1]))  # (stream, its input map on n)
        with torch.no_grad():
            inp = [torch.cat([s.inp.weight @ t, s.inp.bias[:, None]], 1) for s, t in streams]  # (H, L + 1)
            sq = [s.act.squeeze.weight @ m for (s, _), m in zip(streams, inp)]  # (Z, L + 1)
            for (s, _), m in zip(streams, sq):
                m[:, L] += s.act.squeeze.bias
            ones = torch.zeros(1, L + 1, **kw)
            ones[0, L] = 1
            self.p = torch.cat(inp + sq + [ones])  # (2H + 2Z + 1, L + 1)
            self.q = torch.zeros(4 * H + 2 * Z + 2, 2 * Z + 1, **kw)  # on [z_v; z_d; 1]
            for k, (s, _) in enumerate(streams):
                zk = slice(Z * k, Z * (k + 1))
                for row, layer in ((H * k, s.act.b), (2 * H + Z + 1 + H * k, s.act.c)):
                    self.q[row : row + H, zk] = layer.weight
                    self.q[row : row + H, 2 * Z] = layer.bias
                copy = 2 * H if k == 0 else 4 * H + Z + 1  # rows of z_k's copy and its 1
                self.q[copy : copy + Z, zk] = torch.eye(Z, **kw)
                self.q[copy + Z, 2 * Z] = 1
            r = []
            for s, _ in streams:  # Dense(32) on z through A, its bias, and on B * exp(C * h)
                w_out = s.out.weight
                r.append((w_out @ s.act.a.weight, (w_out @ s.act.a.bias + s.out.bias)[:, None], w_out))
            (za_v, bias_v, w_v), (za_d, bias_d, w_d) = r
            self.r_v = torch.cat([za_v, bias_v, w_v], 1)  # (O, Z + 1 + H) on [z_v; 1; C_v]
            self.r_d = torch.cat([w_d, za_d, bias_d], 1)  # (O, H + Z + 1) on [C_d; z_d; 1]
            self.w_head, self.b_head = weight.clone(), wnn.head.bias.clone()  # (1, 2 * O), (1,)
        self.dims, self.eps, self.kw = (L, H, Z, O), wnn.eps, kw
        self.block = self.super_block = 0  # sized by the first chunk
        self.scratch: tuple[Tensor, ...] = ()  # nx, low, high, delta (super-block); G, BCZ (block)

    def __call__(self, window: Tensor, out: Tensor) -> None:
        if not self.scratch:
            self._allocate(window.shape[0])  # later chunks are no longer than the first
        for begin in range(0, window.shape[0], self.super_block):
            end = begin + self.super_block
            self._super_block(window[begin:end], out[begin:end])

    def _super_block(self, window: Tensor, out: Tensor) -> None:
        """Normalize (c, L) windows features-major, run the blocks, denormalize into out (c,)."""
        L, c = self.dims[0], window.shape[0]
        nx, low, scale, delta = (t[..., :c] for t in self.scratch[:4])  # (L + 1, c), (c,) x 3
        torch.aminmax(window, dim=1, out=(low, scale))
        scale.sub_(low).add_(self.eps).mul_(2)
        xt = window.t()
        torch.sub(xt, xt[:1], out=nx[:L]).div_(scale)  # nx[L] stays ones
        for begin in range(0, c, self.block):
            cols = slice(begin, begin + self.block)
            self._block(nx[:, cols], delta[None, cols])
        delta.add_(self.b_head).tanh_().add_(nx[L - 1])
        torch.addcmul(window[:, 0], scale, delta, out=out)

    def _block(self, nx: Tensor, delta: Tensor) -> None:
        """[n; 1] (L + 1, b) -> delta (1, b), before the head's bias and tanh."""
        _, H, Z, O = self.dims
        g, bcz = (t[:, : nx.shape[1]] for t in self.scratch[4:])
        feats = bcz[: 2 * O]  # B_v's rows, free once C holds B * exp(C * h)
        torch.mm(self.p, nx, out=g)
        g[2 * H : 2 * H + 2 * Z].relu_()
        torch.mm(self.q, g[2 * H :], out=bcz)
        bcz[2 * H + Z + 1 : 4 * H + Z + 1].mul_(g[: 2 * H]).exp_().mul_(bcz[: 2 * H])
        torch.mm(self.r_v, bcz[2 * H : 3 * H + Z + 1], out=feats[:O])
        torch.mm(self.r_d, bcz[3 * H + Z + 1 :], out=feats[O:])
        F.leaky_relu(feats, _LEAKY_SLOPE, inplace=True)
        torch.mm(self.w_head, feats, out=delta)

    def _allocate(self, chunk: int) -> None:
        """Choose the block sizes for chunks of `chunk` scalars and allocate their scratch."""
        L, H, Z, O = self.dims
        if self.kw["device"].type == "cuda":
            self.block = self.super_block = min(chunk, _CUDA_BLOCK)
        else:
            per_thread = _CPU_BLOCK_PER_THREAD * torch.get_num_threads()
            self.block = min(chunk, per_thread, max(_MIN_BLOCK, chunk // 640))
            self.super_block = min(chunk, self.block * _BLOCKS_PER_SUPER)
        nx = torch.empty(L + 1, self.super_block, **self.kw)
        nx[L] = 1
        self.scratch = (nx,) + tuple(torch.empty(self.super_block, **self.kw) for _ in range(3)) + tuple(
            torch.empty(rows, self.block, **self.kw) for rows in (2 * H + 2 * Z + 1, 4 * H + 2 * Z + 2)
        )


def _variance_scaling_(weight: Tensor, scale: float) -> None:
    """Keras VarianceScaling(scale, fan_in, uniform): U(-sqrt(3 scale / fan_in), +...)."""
    limit = math.sqrt(3 * scale / weight.shape[1])  # nn.Linear weight is (out, in)
    with torch.no_grad():
        weight.uniform_(-limit, limit)
