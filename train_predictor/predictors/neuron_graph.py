"""The neuron graph of a model, built automatically for the `nino` predictor (train_predictor stage):
neurons are nodes, parameters are edges, as in NiNo (Knyazev et al., ICLR 2025), but derived from the
model by torch.fx tracing instead of one hand-written class per architecture.

Each traced value (activation) carries the node ids of its channel neurons (dimension 1; for a
Linear, the last one). Rules per operation:
- Linear(in, out): `out` new neurons; weight element (o, j) is an edge from input neuron j // S to o
  (S = in / input neurons: a flatten of C channels x S positions gives S parallel edges per pair);
  bias: an auxiliary node with one edge to each output neuron.
- Conv{1,2,3}d: `out` new neurons; an edge per (input channel, output channel) of a group, whose
  features are the k x k (x k) kernel values, split across parallel edges of at most `max_feat`
  features (NiNo's 9 = 3 x 3) when larger; bias as for Linear.
- BatchNorm / LayerNorm / GroupNorm / InstanceNorm: the same neurons; weight and bias hang from one
  auxiliary node each (NiNo types 4 and 2).
- Embedding(num, dim): `num` token nodes, `dim` new neurons, an edge per table entry (type 5).
  The token embedding (the first Embedding, in execution order, whose indices are a model input,
  possibly reshaped, cast or sliced, rather than positions computed in forward by torch.arange)
  labels its token nodes: `NeuronGraph.node_tokens[node]` = the token id t of table row t, -1 for
  every other node (NiNo's `pos_w`, which its GPT-2 graph sets on the rows of `wte`).
- add / sub of two values (residual connections): the result keeps the second operand's neurons,
  and each neuron of the first gets a fixed residual edge (type 10, features 1) to its counterpart.
- cat along the channel dimension (DenseNet): the neuron lists are concatenated.
- element-wise functions, pooling, flatten, dropout, spatial slicing, channel zero-padding: the
  neurons pass through; any other operation gives a value of unknown neurons, and its consumer
  gets fresh input nodes (e.g. attention's reshapes: Q/K/V are not split per head).
- RNN / GRU / LSTM: `hidden_size` neurons per layer and direction; each gate row of weight_ih is an
  edge from an input neuron to its hidden neuron, weight_hh the same among the hidden neurons (the
  recurrence), biases hang from auxiliary nodes; indexing its (output, state) keeps the neurons.
- parameters that no rule places (nn.MultiheadAttention and other leaves with parameters, LSTM
  projections, bare nn.Parameters used in functional code, a model fx cannot trace) fall back to
  the per-scalar path of the predictor, and `build_neuron_graph` warns naming them.
Every node gets a self-loop (type 13, first feature 2), as in NiNo.

Memory: O(parameters): an edge per weight scalar (per kernel for convolutions), int64 indices.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from weightcast.errors import WeightcastWarning

__all__ = ["NeuronGraph", "NeuronGraphWarning", "ParamEdges", "build_neuron_graph", "laplacian_pe"]

TYPE_FC, TYPE_BIAS, TYPE_CONV, TYPE_NORM, TYPE_EMBED = 1, 2, 3, 4, 5
TYPE_QUERY, TYPE_KEY, TYPE_VALUE = 7, 8, 9
TYPE_RESIDUAL, TYPE_SELF_LOOP = 10, 13

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Softplus,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_PASS_FUNCTIONS = {
    F.relu, F.relu6, F.gelu, F.silu, F.tanh, F.sigmoid, F.leaky_relu, F.elu, F.hardswish, F.dropout,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, torch.relu, torch.tanh, torch.sigmoid, torch.flatten, operator.neg,
}  # fmt: skip
_PASS_METHODS = {"relu", "tanh", "sigmoid", "flatten", "contiguous", "clone", "float", "to", "detach"}
_ADD = {operator.add, operator.iadd, torch.add, operator.sub, torch.sub}
_SCALE = {operator.mul, operator.truediv, torch.mul}
# what token ids go through between a model input and the token embedding: they stay token ids
_ID_METHODS = {
    "view", "reshape", "long", "int", "to", "contiguous", "flatten", "squeeze", "unsqueeze", "clone",
    "detach",
}  # fmt: skip
_ID_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}


class NeuronGraphWarning(WeightcastWarning):
    """Some parameters of a model have no place in its neuron graph; they are predicted per scalar."""


@dataclass(frozen=True)
class ParamEdges:
    """Where one parameter's scalars live among the graph's edges: the parameter viewed as
    (rows, kk) (kk = kernel size, 1 otherwise), row r split into `splits` parallel edges
    `start + r * splits + f // max_feat`, feature f % max_feat."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    start: int
    rows: int
    kk: int
    splits: int

    @property
    def edges(self) -> int:
        return self.rows * self.splits


@dataclass
class NeuronGraph:
    """A model's neuron graph: `edge_index` (2, E) src -> dst with `edge_type` (E,); parameter edges
    first (`params`, in model order), then residual edges, then self-loops (one per node)."""

    num_nodes: int
    edge_index: Tensor
    edge_type: Tensor
    params: list[ParamEdges]
    num_param_edges: int
    num_residual_edges: int
    max_feat: int
    fallback: list[str] = field(default_factory=list)  # parameters predicted per scalar
    pe: Tensor | None = None  # Laplacian positional encodings (num_nodes, k), computed when first needed
    # (num_nodes,) int64: the token id a node stands for (rows of the model's token embedding), -1 for
    # the others; None when the model has no token embedding (every node a non-token one)
    node_tokens: Tensor | None = None

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]


def build_neuron_graph(model: nn.Module, max_feat: int = 9) -> NeuronGraph:
    """Trace `model` with torch.fx and build its neuron graph (see the module docstring); warns
    (`NeuronGraphWarning`) naming the parameters that fall back to the per-scalar path."""
    builder = _Builder(model, max_feat)
    try:
        traced = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types on untraceable code
        names = [n for n, _ in model.named_parameters()]
        warnings.warn(
            f"torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {err}); all {len(names)} "
            "parameters are predicted per scalar, without the neuron graph",
            NeuronGraphWarning,
            stacklevel=2,
        )
        return builder.finish(fallback=names)
    builder.run(traced)
    placed = {p.name for p in builder.params}
    fallback = [n for n, _ in model.named_parameters() if n not in placed]
    if fallback:
        warnings.warn(
            f"no neuron-graph connectivity derived for {len(fallback)} parameters of {type(model).__name__}, "
            f"predicted per scalar instead: {', '.join(fallback)}",
            NeuronGraphWarning,
            stacklevel=2,
        )
    return builder.finish(fallback=fallback)


def laplacian_pe(graph: NeuronGraph, k: int = 8) -> Tensor:
    """(num_nodes, k) Laplacian eigenvector positional encodings, as NiNo (PyG's
    AddLaplacianEigenvectorPE): the k eigenvectors after the first of the symmetric normalized
    Laplacian of the undirected graph without self-loops and duplicate edges, smallest eigenvalues
    first; each vector's sign is fixed so that its largest-magnitude entry is positive (NiNo draws
    random signs in training). Zero columns when the graph has too few nodes."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    n = graph.num_nodes
    src, dst = graph.edge_index.numpy()
    keep = src != dst
    a = sp.coo_matrix((np.ones(keep.sum()), (src[keep], dst[keep])), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    lap = (sp.eye(n) - sp.diags(inv) @ a @ sp.diags(inv)).tocsr()  # isolated nodes: a row of I, as PyG
    m = min(k + 1, n)
    if n < 100 or m >= n - 1:
        values, vectors = np.linalg.eigh(lap.toarray())
    else:
        values, vectors = eigsh(lap, k=m, which="SA", tol=1e-6)
    vectors = vectors[:, np.argsort(values)][:, 1 : k + 1]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    vectors = vectors * np.where(signs == 0, 1, signs)
    pe = torch.zeros(n, k, dtype=torch.float32)
    pe[:, : vectors.shape[1]] = torch.from_numpy(vectors).float()
    return pe


class _Builder:
    """Walks an fx graph, allocating neurons and recording edges."""

    def __init__(self, model: nn.Module, max_feat: int):
        self.model, self.max_feat = model, max_feat
        self.modules = dict(model.named_modules())
        self.nodes = 0
        self.src: list[Tensor] = []
        self.dst: list[Tensor] = []
        self.types: list[Tensor] = []
        self.params: list[ParamEdges] = []
        self.edges = 0
        self.res_src: list[Tensor] = []
        self.res_dst: list[Tensor] = []
        self.used: set[str] = set()
        self.names = {name for name, _ in model.named_parameters()}
        self.recurrent: set[fx.Node] = set()  # values whose indexing keeps the hidden neurons
        self.tokens: Tensor | None = None  # the token nodes of the token embedding, row order

    def new(self, count: int) -> Tensor:
        ids = torch.arange(self.nodes, self.nodes + count)
        self.nodes += count
        return ids

    def run(self, traced: fx.GraphModule) -> None:
        values: dict[fx.Node, Tensor | None] = {}
        for node in traced.graph.nodes:
            values[node] = self.visit(node, values)

    def visit(self, node: fx.Node, values: dict) -> Tensor | None:
        def ids(arg):
            return values.get(arg) if isinstance(arg, fx.Node) else None

        if node.op == "call_module":
            module = self.modules[node.target]
            x = ids(node.args[0]) if node.args else None
            if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
                self.recurrent.add(node)
            if isinstance(module, nn.MultiheadAttention) and node.target not in self.used:
                self.used.add(node.target)
                key, value = (ids(node.args[i]) if len(node.args) > i else x for i in (1, 2))
                return self.attention(node.target, module, x, key, value)
            if isinstance(module, nn.Embedding) and node.target not in self.used:
                self.used.add(node.target)
                index = node.args[0] if node.args else node.kwargs.get("input")
                return self.embedding(node.target, module, token_ids=_reads_input(index))
            return self.module(node.target, module, x)
        if node.op == "call_function":
            fn = node.target
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if fn in _PASS_FUNCTIONS and tensors:
                return ids(tensors[0])
            if fn in _ADD and len(tensors) == 2:
                return self.residual(ids(tensors[0]), ids(tensors[1]))
            if fn in _SCALE and len(tensors) == 1:
                return ids(tensors[0])
            if fn is torch.cat:
                return self.cat(
                    [ids(a) for a in node.args[0]],
                    node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0),
                )
            if fn is F.pad and tensors:
                return self.pad(
                    ids(tensors[0]), node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
                )
            if fn is operator.getitem and tensors:
                if tensors[0] in self.recurrent:  # (output, h_n) of a recurrent layer and its parts
                    self.recurrent.add(node)
                    return ids(tensors[0])
                if _keeps_channels(node.args[1]):
                    return ids(tensors[0])
            return None
        if node.op == "call_method":
            if node.target in _PASS_METHODS:
                return ids(node.args[0])
            if (
                node.target in ("add", "add_", "sub")
                and len(node.args) == 2
                and isinstance(node.args[1], fx.Node)
            ):
                return self.residual(ids(node.args[0]), ids(node.args[1]))
            return None
        return None  # placeholder (unknown inputs), get_attr (bare parameters: fall back), output

    def module(self, name: str, module: nn.Module, x: Tensor | None) -> Tensor | None:
        if isinstance(module, _PASS_MODULES):
            return x
        if isinstance(module, nn.Linear) and name not in self.used:
            self.used.add(name)
            return self.dense(name, module.weight, module.bias, x, module.in_features, 1, 1, TYPE_FC)
        if isinstance(module, _CONVS) and name not in self.used:
            self.used.add(name)
            return self.dense(name, module.weight, module.bias, x, module.in_channels, module.groups,
                              math.prod(module.kernel_size), TYPE_CONV)  # fmt: skip
        if isinstance(module, _NORMS):
            if x is None:
                count = (
                    module.num_features
                    if hasattr(module, "num_features")
                    else (
                        module.num_channels
                        if isinstance(module, nn.GroupNorm)
                        else math.prod(module.normalized_shape)
                    )
                )
                x = self.new(count)
            if name not in self.used and getattr(module, "weight", None) is not None:
                self.used.add(name)
                if x.numel() == module.weight.numel():
                    self.aux(f"{name}.weight", module.weight, x, TYPE_NORM)
                    if module.bias is not None:
                        self.aux(f"{name}.bias", module.bias, x, TYPE_BIAS)
            return x
        if isinstance(module, nn.RNNBase) and name not in self.used:
            self.used.add(name)
            return self.rnn(name, module, x)
        return None  # unknown leaves with parameters: they fall back

    def embedding(self, name: str, module: nn.Embedding, token_ids: bool) -> Tensor:
        """Embedding(num, dim): `num` table-row nodes, `dim` new neurons, an edge per table entry.
        The first one indexed by `token_ids` (a model input) is the token embedding: its row nodes
        are the tokens of `NeuronGraph.node_tokens`."""
        rows, out = self.new(module.num_embeddings), self.new(module.embedding_dim)
        if token_ids and self.tokens is None:
            self.tokens = rows
        src = rows.repeat_interleave(module.embedding_dim)
        dst = out.repeat(module.num_embeddings)
        self.add_param(
            f"{name}.weight", tuple(module.weight.shape), TYPE_EMBED, src, dst, module.weight.numel(), 1
        )
        return out

    def attention(self, name: str, module: nn.MultiheadAttention, q, k, v) -> Tensor:
        """nn.MultiheadAttention: query, key and value neurons (E each, heads are groups of E / heads),
        edges from the inputs typed as NiNo's q/k/v (7/8/9), then out_proj from the value neurons to
        E output neurons (the attention mixes positions, not channels: value neuron i feeds output
        channel i's inputs)."""
        e = module.embed_dim
        neurons = [self.new(e) for _ in range(3)]
        sources = []
        for x, dim in zip((q, k, v), (e, module.kdim, module.vdim)):
            sources.append(x if x is not None and len(x) == dim and not (x < 0).any() else self.new(dim))
        types = (TYPE_QUERY, TYPE_KEY, TYPE_VALUE)
        if module.in_proj_weight is not None:  # (3E, E): rows q, k, v
            dst = torch.cat(neurons).repeat_interleave(e)
            src = torch.cat([sources[i].repeat(e) for i in range(3)])
            kinds = torch.tensor(types).repeat_interleave(e * e)
            self.add_param(f"{name}.in_proj_weight", (3 * e, e), TYPE_QUERY, src, dst, 3 * e * e, 1, kinds)
        else:
            for i, part in enumerate("qkv"):
                w = getattr(module, f"{part}_proj_weight")
                src, dst = sources[i].repeat(e), neurons[i].repeat_interleave(w.shape[1])
                self.add_param(f"{name}.{part}_proj_weight", tuple(w.shape), types[i], src, dst, w.numel(), 1)
        if module.in_proj_bias is not None:
            self.aux(f"{name}.in_proj_bias", module.in_proj_bias, torch.cat(neurons), TYPE_BIAS)
        for kind in ("bias_k", "bias_v"):
            if getattr(module, kind) is not None:
                self.aux(
                    f"{name}.{kind}", getattr(module, kind), neurons[1 if kind == "bias_k" else 2], TYPE_BIAS
                )
        out = module.out_proj
        return self.dense(f"{name}.out_proj", out.weight, out.bias, neurons[2], e, 1, 1, TYPE_FC)

    def rnn(self, name: str, module: nn.RNNBase, x: Tensor | None) -> Tensor:
        """RNN / GRU / LSTM: per layer and direction, `hidden_size` neurons; weight_ih row r (gate
        r // hidden) is an edge from each input neuron to hidden neuron r % hidden, weight_hh the
        same from the hidden neurons to themselves (the recurrence), biases from auxiliary nodes.
        Returns the last layer's hidden neurons (both directions concatenated)."""
        hidden = module.hidden_size
        size = module.proj_size or hidden  # what a layer outputs (LSTM projections)
        directions = 2 if module.bidirectional else 1
        inputs = x
        for layer in range(module.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                neurons = self.new(hidden)
                ih = getattr(module, f"weight_ih{suffix}")
                source = inputs
                if source is None or len(source) != ih.shape[1] or (source < 0).any():
                    source = self.new(ih.shape[1])
                rows = torch.arange(ih.shape[0]) % hidden
                for kind, src_ids, weight in (
                    ("ih", source, ih),
                    ("hh", None, getattr(module, f"weight_hh{suffix}")),
                ):
                    src_ids = neurons if src_ids is None else src_ids
                    if weight.shape[1] != len(src_ids):  # projected LSTM: hh reads the projection
                        src_ids = self.new(weight.shape[1])
                    cols = weight.shape[1]
                    self.add_param(f"{name}.weight_{kind}{suffix}", tuple(weight.shape), TYPE_FC,
                                   src_ids.repeat(weight.shape[0]), neurons[rows].repeat_interleave(cols),
                                   weight.numel(), 1)  # fmt: skip
                    bias = getattr(module, f"bias_{kind}{suffix}", None)
                    if bias is not None:
                        self.aux(f"{name}.bias_{kind}{suffix}", bias, neurons[rows], TYPE_BIAS)
                outputs.append(neurons if size == hidden else self.new(size))
            inputs = torch.cat(outputs)
        return inputs

    def dense(self, name, weight, bias, x, in_features, groups, kk, type_id) -> Tensor:
        """Linear / conv: new output neurons, weight edges from the input neurons, bias edges."""
        out_features = weight.shape[0]
        if x is None or in_features % max(len(x), 1) or len(x) > in_features:
            x = self.new(in_features)
        elif (x < 0).any():  # zero-padded channels: fresh nodes for them
            x = x.clone()
            x[x < 0] = self.new(int((x < 0).sum()))
        spread = in_features // len(x)  # flattened positions per input neuron
        out = self.new(out_features)
        in_per_group, out_per_group = in_features // groups, out_features // groups
        o = torch.arange(out_features).repeat_interleave(in_per_group)  # (rows,)
        j = (o // out_per_group) * in_per_group + torch.arange(in_per_group).repeat(out_features)
        src, dst = x[j // spread], out[o]
        self.add_param(f"{name}.weight", tuple(weight.shape), type_id, src, dst, len(o), kk)
        if bias is not None:
            self.aux(f"{name}.bias", bias, out, TYPE_BIAS)
        return out

    def aux(self, name: str, param: Tensor, neurons: Tensor, type_id: int) -> None:
        """A 1-D parameter: one auxiliary node with an edge to each neuron (-1: none)."""
        node = self.new(1)
        self.add_param(name, tuple(param.shape), type_id, node.expand(len(neurons)), neurons, len(neurons), 1)

    def add_param(self, name, shape, type_id, src, dst, rows, kk, types: Tensor | None = None) -> None:
        if name not in self.names:  # a shared parameter is listed under its first owner only
            return
        splits = -(-kk // self.max_feat)
        if (dst < 0).any():  # padded channels: the parameter cannot sit on real neurons
            return
        self.params.append(ParamEdges(name, shape, type_id, self.edges, rows, kk, splits))
        self.src.append(src.repeat_interleave(splits))
        self.dst.append(dst.repeat_interleave(splits))
        self.types.append(
            torch.full((rows * splits,), type_id) if types is None else types.repeat_interleave(splits)
        )
        self.edges += rows * splits

    def residual(self, a: Tensor | None, b: Tensor | None) -> Tensor | None:
        if a is None or b is None:
            return b if a is None else a
        if len(a) != len(b) or torch.equal(a, b):
            return b if len(b) >= len(a) else a
        keep = (a >= 0) & (b >= 0)
        self.res_src.append(a[keep])
        self.res_dst.append(b[keep])
        return torch.where(b >= 0, b, a)

    def cat(self, parts: list[Tensor | None], dim: int) -> Tensor | None:
        if dim not in (1, -3) or any(p is None for p in parts):
            return None
        return torch.cat(parts)

    def pad(self, x: Tensor | None, pad) -> Tensor | None:
        if x is None or not isinstance(pad, (tuple, list)):
            return x
        if len(pad) >= 6 and (pad[4] or pad[5]):  # (N, C, H, W): the channels are padded with zeros
            return torch.cat([torch.full((pad[4],), -1), x, torch.full((pad[5],), -1)])
        return x

    def finish(self, fallback: list[str]) -> NeuronGraph:
        empty = torch.empty(0, dtype=torch.long)
        src = torch.cat(self.src + self.res_src + [torch.arange(self.nodes)]) if self.nodes else empty
        dst = torch.cat(self.dst + self.res_dst + [torch.arange(self.nodes)]) if self.nodes else empty
        residual = sum(len(r) for r in self.res_src)
        types = torch.cat(self.types + [torch.full((residual,), TYPE_RESIDUAL),
                                        torch.full((self.nodes,), TYPE_SELF_LOOP)])  # fmt: skip
        node_tokens = None
        if self.tokens is not None:
            node_tokens = torch.full((self.nodes,), -1, dtype=torch.long)
            node_tokens[self.tokens] = torch.arange(len(self.tokens))
        return NeuronGraph(
            num_nodes=self.nodes,
            edge_index=torch.stack([src, dst]).long(),
            edge_type=types.long(),
            params=self.params,
            num_param_edges=self.edges,
            num_residual_edges=residual,
            max_feat=self.max_feat,
            fallback=fallback,
            node_tokens=node_tokens,
        )


def _reads_input(index) -> bool:
    """The fx value `index` is a model input (a placeholder), possibly reshaped, cast or sliced:
    token ids, not positions computed in forward (torch.arange) or other derived indices."""
    while isinstance(index, fx.Node):
        if index.op == "placeholder":
            return True
        passes = (index.op == "call_method" and index.target in _ID_METHODS) or (
            index.op == "call_function" and index.target in _ID_FUNCTIONS
        )
        if not passes or not index.args:
            return False
        index = index.args[0]
    return False


def _keeps_channels(index) -> bool:
    """x[index] leaves dimension 1 whole: e.g. the strided spatial slicing of a ResNet shortcut."""
    return (
        isinstance(index, tuple) and len(index) >= 2 and index[0] == slice(None) and index[1] == slice(None)
    )
