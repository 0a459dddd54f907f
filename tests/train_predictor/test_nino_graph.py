"""Tests of the `nino` graph predictor and the automatic neuron graph (train_predictor.predictors.nino_graph,
neuron_graph): graph structure by hand on small models, every zoo family, the fallback warnings, the
Laplacian encodings, the token nodes of a language model, and predict_graph against a float64
reference of NiNo's message passing (with and without its token-position embedding)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from weightcast.train_predictor.bundle import PredictorBundle, save_bundle
from weightcast.train_predictor.importers import (
    CheckpointImportError,
    import_nino,
    nino_graph_from_checkpoint,
)
from weightcast.train_predictor.predictors import NiNoGraph, build_predictor
from weightcast.train_predictor.predictors.neuron_graph import (
    NeuronGraphWarning,
    build_neuron_graph,
    laplacian_pe,
)
from weightcast.train_predictor.predictors.nino_graph import TokenVocabularyWarning
from weightcast.zoo.models import create_model
from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.tasks.base import TaskSpec

U = torch.finfo(torch.float32).eps / 2
PEERS = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "peers"


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _states(model: nn.Module, c: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """c states per parameter: its values drifting by ~1e-2 per state."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.stack([p.detach()]).expand(c, *p.shape)
        + 1e-2 * torch.randn(c, *p.shape, generator=g).cumsum(0)
        for name, p in model.named_parameters()
    }


def _randomized(predictor: NiNoGraph, seed: int = 0) -> NiNoGraph:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in predictor.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return predictor


# ---------------------------------------------------------------- the neuron graph


def test_mlp_graph_by_hand():
    graph = build_neuron_graph(_mlp())
    # nodes: inputs 0-2, hidden 3-6, bias node 7, outputs 8-9, bias node 10
    assert graph.num_nodes == 11 and graph.fallback == []
    w1 = [(j, 3 + o) for o in range(4) for j in range(3)]  # weight (out, in), row-major
    b1 = [(7, 3 + o) for o in range(4)]
    w2 = [(3 + j, 8 + o) for o in range(2) for j in range(4)]
    b2 = [(10, 8 + o) for o in range(2)]
    loops = [(n, n) for n in range(11)]
    expected = torch.tensor(w1 + b1 + w2 + b2 + loops).T
    assert torch.equal(graph.edge_index, expected)
    assert graph.edge_type.tolist() == [1] * 12 + [2] * 4 + [1] * 8 + [2] * 2 + [13] * 11
    assert [(p.name, p.start, p.rows, p.kk) for p in graph.params] == [
        ("0.weight", 0, 12, 1),
        ("0.bias", 12, 4, 1),
        ("2.weight", 16, 8, 1),
        ("2.bias", 24, 2, 1),
    ]


class _ConvNet(nn.Module):
    def __init__(self, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2), 1))


def test_conv_pool_flatten_and_norm_graph():
    graph = build_neuron_graph(_ConvNet())
    conv, _, bn_w, bn_b, fc, _ = graph.params
    assert (conv.rows, conv.kk, conv.splits, conv.type_id) == (6, 9, 1, 3)
    assert (bn_w.type_id, bn_b.type_id) == (4, 2)
    src, dst = graph.edge_index
    conv_out = dst[conv.start : conv.start + conv.edges].unique()
    # norm parameters hang off one auxiliary node each onto the conv's output neurons
    assert set(dst[bn_w.start : bn_w.start + 3].tolist()) == set(conv_out.tolist())
    assert len(src[bn_w.start : bn_w.start + 3].unique()) == 1
    # flatten of 3 channels x 4 positions: fc input feature j comes from channel j // 4
    fc_src = src[fc.start : fc.start + fc.edges].reshape(2, 12)
    assert torch.equal(fc_src[0], conv_out.repeat_interleave(4))
    # a 5 x 5 kernel (25 values) spreads over 3 parallel edges of at most 9 features
    assert build_neuron_graph(_ConvNet(kernel=5)).params[0].splits == 3


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        return h + self.b(torch.relu(h))


def test_residual_edges():
    graph = build_neuron_graph(_Residual())
    assert graph.num_residual_edges == 4
    begin = graph.num_param_edges
    src, dst = graph.edge_index[:, begin : begin + 4]
    a_out = graph.edge_index[1, graph.params[0].start : graph.params[0].start + 16].unique()
    b_out = graph.edge_index[1, graph.params[2].start : graph.params[2].start + 16].unique()
    assert torch.equal(src, a_out) and torch.equal(dst, b_out)
    assert (graph.edge_type[begin : begin + 4] == 10).all()


def test_recurrent_graph():
    model = nn.Sequential(nn.GRU(3, 4, num_layers=2, batch_first=True))
    graph = build_neuron_graph(model)
    assert graph.fallback == [] and len(graph.params) == 8
    src, dst = graph.edge_index
    by_name = {p.name: p for p in graph.params}
    ih0, hh0 = by_name["0.weight_ih_l0"], by_name["0.weight_hh_l0"]
    hidden0 = dst[hh0.start : hh0.start + hh0.edges].unique()
    assert len(hidden0) == 4
    # weight_hh (3 gates x 4, 4): each gate row r feeds hidden neuron r % 4 from every hidden neuron
    assert set(src[hh0.start : hh0.start + hh0.edges].tolist()) == set(hidden0.tolist())
    assert dst[hh0.start : hh0.start + 4].tolist() == [hidden0[0].item()] * 4
    assert len(src[ih0.start : ih0.start + ih0.edges].unique()) == 3  # the 3 input neurons
    ih1 = by_name["0.weight_ih_l1"]  # layer 1 reads layer 0's hidden neurons
    assert set(src[ih1.start : ih1.start + ih1.edges].tolist()) == set(hidden0.tolist())


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x  # data-dependent control flow


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attn(h, h, h)[0])


def test_attention_graph():
    graph = build_neuron_graph(_Attention())
    assert graph.fallback == []
    by_name = {p.name: p for p in graph.params}
    src, dst = graph.edge_index
    qkv = by_name["attn.in_proj_weight"]
    types = graph.edge_type[qkv.start : qkv.start + qkv.edges].reshape(3, 16)
    assert (types == torch.tensor([[7], [8], [9]])).all()  # NiNo's q, k, v types: row blocks of (3E, E)
    embed_out = dst[by_name["embed.weight"].start : by_name["embed.weight"].start + 12].unique()
    assert set(src[qkv.start : qkv.start + qkv.edges].tolist()) == set(embed_out.tolist())
    value = dst[qkv.start + 32 : qkv.start + 48].unique()  # the value neurons
    out = by_name["attn.out_proj.weight"]
    assert set(src[out.start : out.start + out.edges].tolist()) == set(value.tolist())
    head = by_name["head.weight"]
    out_neurons = dst[out.start : out.start + out.edges].unique()
    assert set(src[head.start : head.start + head.edges].tolist()) == set(out_neurons.tolist())


class _Bare(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))  # used functionally: no module rule places it
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(x * self.scale)


def test_fallback_warnings_name_the_parameters():
    with pytest.warns(NeuronGraphWarning, match="predicted per scalar instead: scale"):
        graph = build_neuron_graph(_Bare())
    assert graph.fallback == ["scale"] and [p.name for p in graph.params] == ["head.weight", "head.bias"]
    with pytest.warns(NeuronGraphWarning, match="cannot trace"):
        graph = build_neuron_graph(_Untraceable())
    assert graph.fallback == ["fc.weight", "fc.bias"] and graph.params == []


class _TokenLM(nn.Module):
    """A tiny language model whose position embedding runs BEFORE its token embedding, so the rule
    (the first Embedding indexed by a model input) must tell them apart by their indices."""

    def __init__(self, vocab: int = 5, length: int = 3, dim: int = 2):
        super().__init__()
        self.pos = nn.Embedding(length, dim)
        self.tok = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.head(self.pos(positions) + self.tok(tokens.long()))


def test_token_nodes_by_hand():
    graph = build_neuron_graph(_TokenLM())
    # nodes: pos rows 0-2, pos neurons 3-4, tok rows 5-9, tok neurons 10-11 (the sum keeps these;
    # residual edges 3 -> 10, 4 -> 11), head outputs 12-16, head bias node 17
    assert graph.num_nodes == 18 and graph.fallback == [] and graph.num_residual_edges == 2
    src = graph.edge_index[0]
    tok = next(p for p in graph.params if p.name == "tok.weight")
    assert src[tok.start : tok.start + tok.edges].tolist() == [5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    assert graph.node_tokens.tolist() == [-1] * 5 + [0, 1, 2, 3, 4] + [-1] * 8
    # no token embedding: no token nodes (every node reads the non-token row); a table indexed by
    # torch.arange only (the zoo transformer's learned positions) is not one
    assert build_neuron_graph(_mlp()).node_tokens is None
    positions_only = create_model("transformer", TaskSpec("signal", (1, 40), 10, "classification"))
    assert build_neuron_graph(positions_only).node_tokens is None


class _SlicedTokens(nn.Module):
    """Token ids reshaped and sliced on the way to the table: still token ids."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(4, 3)

    def forward(self, batch):
        return self.tok(batch.view(batch.shape[0], -1)[:, 1:])


def test_token_ids_through_view_and_slicing():
    graph = build_neuron_graph(_SlicedTokens())
    assert graph.node_tokens.tolist() == [0, 1, 2, 3, -1, -1, -1]


def test_zoo_language_model_token_nodes():
    model = create_model("causal-transformer", TaskSpec("tokens", (8,), 11, "language_model"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeuronGraphWarning)
        graph = build_neuron_graph(model)
    tok = next(p for p in graph.params if p.name == "tok_embedding.weight")
    rows = graph.edge_index[0, tok.start : tok.start + tok.edges].reshape(11, -1)[:, 0]  # (vocab,) row nodes
    assert graph.node_tokens[rows].tolist() == list(range(11))
    assert (graph.node_tokens >= 0).sum() == 11  # the position table's rows are not tokens


_SPECS = {
    "image": TaskSpec("image", (3, 16, 16), 10, "classification"),
    "signal": TaskSpec("signal", (1, 40), 10, "classification"),
}


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES.names() if a not in ("causal-transformer",)])
def test_every_zoo_family_builds(arch):
    spec = _SPECS["image" if "image" in ARCHITECTURES.metadata(arch)["inputs"] else "signal"]
    model = create_model(arch, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeuronGraphWarning)
        graph = build_neuron_graph(model)
    numel = {n: p.numel() for n, p in model.named_parameters()}
    placed = {p.name for p in graph.params}
    assert placed | set(graph.fallback) == set(numel) and not placed & set(graph.fallback)
    assert all(p.rows * p.kk == numel[p.name] for p in graph.params)
    # memory linear in the parameters: at most one edge per scalar, plus residuals and self-loops
    assert graph.num_param_edges <= sum(numel.values())
    assert graph.num_edges == graph.num_param_edges + graph.num_residual_edges + graph.num_nodes
    assert graph.fallback == []
    if arch in ("resnet20", "resnet32", "mobilenetv2", "transformer"):
        assert graph.num_residual_edges > 0


def test_laplacian_pe_are_eigenvectors():
    graph = build_neuron_graph(_mlp())
    pe = laplacian_pe(graph, k=3).double().numpy()
    n = graph.num_nodes
    a = np.zeros((n, n))
    for s, d in graph.edge_index.T.tolist():
        if s != d:
            a[s, d] = a[d, s] = 1
    deg = a.sum(1)
    lap = np.eye(n) - a / np.sqrt(np.outer(deg, deg))
    values = np.linalg.eigvalsh(lap)
    for i in range(3):  # the 2nd .. 4th smallest eigenpairs, unit norm, largest entry positive
        v = pe[:, i]
        assert np.allclose(lap @ v, values[i + 1] * v, atol=1e-5)
        assert abs(np.linalg.norm(v) - 1) < 1e-5 and v[np.abs(v).argmax()] > 0


# ---------------------------------------------------------------- NiNo's message passing


def reference_nino_graph(predictor: NiNoGraph, graph, states: dict, k: int) -> dict[str, np.ndarray]:
    """NiNo's forward (optim/model.py with gnn, optim/gnn.py PNA with mean aggregation, modulated
    edges, edge updates, no final edge update) in float64 NumPy with explicit per-node sums. With
    the token-position embedding (wte_pos_enc), x = wte_pos_enc_layer[pos_w] + node_proj(PE), pos_w
    = 1 + the token id of the nodes of tokens the table holds, 0 (the dummy row) for the others."""
    p = {key: v.detach().double().numpy() for key, v in predictor.state_dict().items()}
    c, fs, kk_max = predictor.input_length, predictor.max_feat, predictor.horizon

    def lin(name, x):
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def silu(x):
        return x / (1 + np.exp(-x))

    src, dst = graph.edge_index.numpy()
    feats = np.zeros((graph.num_edges, fs, c))
    stats = {}
    for par in graph.params:
        w = states[par.name].double().numpy().reshape(c, -1).T  # (numel, c)
        mean, std = w.mean(), w.std(ddof=1)
        z = ((w - mean) / (std + predictor.eps)).reshape(par.rows, par.kk, c)
        for r in range(par.rows):
            for f in range(par.kk):
                feats[par.start + r * par.splits + f // fs, f % fs] = z[r, f]
        stats[par.name] = (z[:, :, -1], mean, std)
    feats[graph.num_param_edges : graph.num_param_edges + graph.num_residual_edges, 0] = 1.0
    feats[graph.num_edges - graph.num_nodes :, 0] = 2.0
    e = (
        lin("edge_proj", feats.reshape(graph.num_edges, fs * c))
        + p["type_embed.weight"][graph.edge_type.numpy()]
    )
    x = (
        lin("node_proj", laplacian_pe(graph, predictor.lpe).double().numpy())
        if predictor.lpe
        else np.zeros((graph.num_nodes, predictor.hidden))
    )
    if "token_embed.weight" in p:
        table = p["token_embed.weight"]  # (vocab + 1, H): row 0 the dummy
        pos_w = np.zeros(graph.num_nodes, dtype=np.int64)
        if graph.node_tokens is not None:
            for node, token in enumerate(graph.node_tokens.tolist()):
                if 0 <= token < len(table) - 1:
                    pos_w[node] = token + 1
        x = x + table[pos_w]
    for i in range(len(predictor.convs) - 1):
        scale, shift = np.split(lin(f"convs.{i}.edge_encoder", e), 2, axis=1)
        m = scale * lin(f"convs.{i}.pre", np.concatenate([x[dst], x[src]], 1)) + shift
        agg = np.zeros_like(x)
        count = np.zeros(len(x))
        for j in range(len(m)):
            agg[dst[j]] += m[j]
            count[dst[j]] += 1
        agg /= np.maximum(count, 1)[:, None]
        x = silu(lin(f"convs.{i}.lin", lin(f"convs.{i}.post", np.concatenate([x, agg], 1))))
        u = f"edge_updates.{i}"
        e = lin(
            f"{u}.lin1", silu(lin(f"{u}.lin_e", e) + lin(f"{u}.lin_s", x)[src] + lin(f"{u}.lin_t", x)[dst])
        )
    out = lin("edge_out.2", silu(lin("edge_out.0", e))).reshape(-1, fs, kk_max)[:, :, k - 1]
    result = {}
    for par in graph.params:
        last, mean, std = stats[par.name]
        delta = out[par.start : par.start + par.edges].reshape(par.rows, par.splits * fs)[:, : par.kk]
        result[par.name] = ((last + delta) * std + mean).reshape(par.shape)
    return result


@pytest.mark.parametrize(
    "model_fn, k", [(_mlp, 3), (lambda: _ConvNet(kernel=5), 1), (_Residual, 6), (_Attention, 2)]
)
def test_predict_graph_matches_reference(model_fn, k):
    torch.manual_seed(0)
    model = model_fn()
    predictor = _randomized(NiNoGraph(hidden=8, horizon=6, lpe=3), seed=1)
    graph = build_neuron_graph(model)
    states = _states(model)
    got = predictor.predict_graph(graph, states, k)
    expected = reference_nino_graph(predictor, graph, states, k)
    assert got.keys() == expected.keys() == dict(model.named_parameters()).keys()
    for name, value in got.items():
        w = states[name].double()
        # Float32 against float64: 4u|w| for the output's roundings plus the network's error in
        # standardized units times std: two rounds of dot products of length <= 16 (gamma_16 ~ 1e-6
        # of O(1)-O(10) magnitudes at weights of 0.3, compounded over ~8 layers): < 1e-4 std.
        tolerance = 4 * U * np.abs(expected[name]) + 1e-4 * w.std().item()
        assert (np.abs(value.double().numpy() - expected[name]) <= tolerance).all(), name
    assert all(v.dtype == torch.float32 for v in got.values())


@pytest.mark.parametrize("vocab_size, lpe", [(7, 3), (5, 0), (3, 2)])
def test_predict_graph_with_token_embedding_matches_reference(vocab_size, lpe):
    """The token embedding on a small language model: tokens 0-4 of _TokenLM, a table of 7 (all
    in), 5 (exactly) or 3 tokens (3 and 4 beyond it: the non-token row, with a warning)."""
    torch.manual_seed(0)
    model = _TokenLM()
    predictor = _randomized(NiNoGraph(hidden=8, horizon=6, lpe=lpe, vocab_size=vocab_size), seed=2)
    assert predictor.token_embed.weight.shape == (vocab_size + 1, 8)
    graph = build_neuron_graph(model)
    states = _states(model)
    expected_rows = [0] * 5 + [t + 1 if t < vocab_size else 0 for t in range(5)] + [0] * 8  # by hand
    if vocab_size < 5:
        with pytest.warns(TokenVocabularyWarning, match="tokens 3..4"):
            rows = predictor.token_rows(graph)
        with pytest.warns(TokenVocabularyWarning):
            got = predictor.predict_graph(graph, states, 4)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", TokenVocabularyWarning)
            rows = predictor.token_rows(graph)
            got = predictor.predict_graph(graph, states, 4)
    assert rows.tolist() == expected_rows
    expected = reference_nino_graph(predictor, graph, states, 4)
    without = reference_nino_graph(predictor, _no_tokens(graph), states, 4)  # every node the dummy row
    for name, value in got.items():
        # as test_predict_graph_matches_reference: the token rows are O(1) addends of the node states
        tolerance = 4 * U * np.abs(expected[name]) + 1e-4 * states[name].double().std().item()
        assert (np.abs(value.double().numpy() - expected[name]) <= tolerance).all(), name
    # the tokens' rows change the prediction, by more than ten times the tolerance's std term (by
    # ~7e-3 std here: the rows' O(0.3) node inputs reach the edges through two damped rounds)
    assert any(
        (np.abs(got[n].double().numpy() - without[n]) > 1e-3 * states[n].double().std().item()).any()
        for n in got
    )


def _no_tokens(graph):
    return dataclasses.replace(graph, node_tokens=None, pe=None)


def test_predict_graph_fallback_and_errors():
    model = _Bare()
    predictor = _randomized(NiNoGraph(hidden=4, horizon=3, lpe=0))
    with pytest.warns(NeuronGraphWarning):
        graph = build_neuron_graph(model)
    states = _states(model)
    out = predictor.predict_graph(graph, states, 2, layer_types={"scale": "norm"})
    window = states["scale"].reshape(5, -1).T
    assert torch.equal(out["scale"], predictor.predict(window, 2, layer_type="norm"))
    with pytest.raises(ValueError, match="covers horizons"):
        predictor.predict_graph(graph, states, 4)
    with pytest.raises(ValueError, match="missing"):
        predictor.predict_graph(graph, {}, 1)


@pytest.mark.parametrize("vocab_size", [0, 4])
def test_per_scalar_path_is_an_isolated_edge(vocab_size):
    """predict(window) equals predict_graph on a graph whose parameter is one isolated scalar edge
    (with the token embedding: both nodes read the non-token row)."""
    predictor = _randomized(NiNoGraph(hidden=8, horizon=4, lpe=0, vocab_size=vocab_size))
    model = nn.Sequential(nn.Linear(1, 1, bias=False))
    graph = build_neuron_graph(model)  # nodes 0 -> 1, self-loops: the per-scalar graph of one scalar
    assert graph.num_nodes == 2 and graph.num_edges == 3
    states = _states(model)
    window = states["0.weight"].reshape(5, 1).T
    alone = predictor.predict_graph(graph, states, 2)["0.weight"].reshape(1)
    # a single scalar's std is that of its own five states, as a one-element tensor's
    assert torch.allclose(predictor.predict(window, 2, layer_type="linear"), alone, rtol=0, atol=1e-6)


def test_bundle_save_load_bit_identical(tmp_path):
    cases = (
        ("nino", dict(hidden=8, horizon=3, lpe=2)),
        ("nino", dict(hidden=8, horizon=3, lpe=2, vocab_size=6)),  # with the token embedding
        ("nino-mlp", dict(hidden=8, horizon=3)),
    )
    for case, (kind, kwargs) in enumerate(cases):
        predictors = {}
        for i, t in enumerate(("conv", "linear")):
            p = build_predictor(kind, layer_type=t, **kwargs)
            g = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for q in p.parameters():
                    q.copy_(torch.randn(q.shape, generator=g))
            predictors[t] = p
        bundle = PredictorBundle.from_predictors(predictors)
        loaded = PredictorBundle.from_pretrained(save_bundle(bundle, tmp_path / str(case)))
        for t, p in predictors.items():
            ours, theirs = p.state_dict(), loaded.predictors[t].state_dict()
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
            assert loaded.predictors[t].config == p.config


def test_loss_trains_the_per_scalar_path():
    torch.manual_seed(0)
    predictor = NiNoGraph(hidden=16, horizon=3, lpe=0)
    opt = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    slope = 0.02 * torch.randn(128, 1)
    paths = 0.1 * torch.randn(128, 1) + slope * torch.arange(8.0)  # linear trends
    window, target = paths[:, :5], paths[:, 5:]
    first = predictor.loss(window, target).item()
    for _ in range(40):
        opt.zero_grad()
        loss = predictor.loss(window, target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# ---------------------------------------------------------------- NiNo's graph checkpoints


def _nino_graph_file(path, hid=8, lpe=2, seed=0, vocab_size=0):
    """A NiNo-format graph checkpoint with random weights, keys as NiNoModel(gnn=True) names them;
    `vocab_size` > 0: with wte_pos_enc (nino.pt's format), whose NiNoModel has no node_proj at lpe 0."""
    reference = _randomized(NiNoGraph(hidden=hid, lpe=lpe, vocab_size=vocab_size), seed)
    ours = reference.state_dict()
    theirs = {"layer_embed.weight": ours["type_embed.weight"]}
    for a, b in (("node_proj.fc.0", "node_proj"), ("edge_proj.fc.0", "edge_proj"), ("edge_out.fc.0", "edge_out.0"),
                 ("edge_out.fc.2", "edge_out.2")):  # fmt: skip
        theirs[f"{a}.weight"], theirs[f"{a}.bias"] = ours[f"{b}.weight"], ours[f"{b}.bias"]
    for i in range(3):
        for a, b in (
            ("edge_encoder", "edge_encoder"),
            ("pre_nns.0.0", "pre"),
            ("post_nns.0.0", "post"),
            ("lin", "lin"),
        ):
            for kind in ("weight", "bias"):
                theirs[f"gnn.convs.{i}.{a}.{kind}"] = ours[f"convs.{i}.{b}.{kind}"]
    for i in range(2):
        for name in ("lin_e", "lin_s", "lin_t", "lin1"):
            for kind in ("weight", "bias"):
                theirs[f"gnn.edge_update.{i}.{name}.{kind}"] = ours[f"edge_updates.{i}.{name}.{kind}"]
    args = {"wte_pos_enc": False, "hid": hid, "lpe": lpe}
    if vocab_size:
        theirs["wte_pos_enc_layer.weight"] = ours["token_embed.weight"]
        args.update(wte_pos_enc=True, vocab_size=vocab_size)
        if not lpe:
            del theirs["node_proj.fc.0.weight"], theirs["node_proj.fc.0.bias"]
    torch.save({"state_dict": theirs, "model_args": args}, path)
    return reference


def test_import_nino_graph_file(tmp_path):
    reference = _nino_graph_file(tmp_path / "nino_no_posw.pt")
    bundle = import_nino(tmp_path / "nino_no_posw.pt")
    assert bundle.kind == "nino" and bundle.predictors["conv"].config["layer_type"] == "conv"
    imported = bundle.predictors["linear"]
    assert all(
        torch.equal(a, b) for a, b in zip(reference.state_dict().values(), imported.state_dict().values())
    )
    assert imported.token_embed is None and imported.config["vocab_size"] == 0
    assert bundle.trained_on["token_embedding"].startswith("none")


@pytest.mark.parametrize("lpe", [2, 0])
def test_import_nino_graph_file_with_token_embedding(tmp_path, lpe):
    reference = _nino_graph_file(tmp_path / "nino.pt", lpe=lpe, vocab_size=6)
    bundle = import_nino(tmp_path / "nino.pt")
    imported = bundle.predictors["conv"]
    assert imported.config["vocab_size"] == 6 and imported.config["lpe"] == lpe
    ours, theirs = reference.state_dict(), imported.state_dict()
    assert ours.keys() == theirs.keys()
    # at lpe 0 the file has no node_proj (NiNoModel builds none), which the predictor does not read:
    # zeros, so that every layer type's copy is the same network (what the runtime's graph path needs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if lpe or not k.startswith("node_proj"))
    assert lpe or not (imported.node_proj.weight.any() or imported.node_proj.bias.any())
    for other in bundle.predictors.values():
        assert all(torch.equal(theirs[k], v) for k, v in other.state_dict().items())
    model = _TokenLM()
    graph = build_neuron_graph(model)
    states = _states(model)
    got, expected = imported.predict_graph(graph, states, 3), reference.predict_graph(graph, states, 3)
    assert all(torch.equal(got[n], expected[n]) for n in got)
    # without the embedding's table in the file, or with a vocab_size that does not fit it: refused
    content = torch.load(tmp_path / "nino.pt", weights_only=True)
    del content["state_dict"]["wte_pos_enc_layer.weight"]
    torch.save(content, tmp_path / "cut.pt")
    with pytest.raises(CheckpointImportError, match="missing.*wte_pos_enc_layer"):
        import_nino(tmp_path / "cut.pt")
    content = torch.load(tmp_path / "nino.pt", weights_only=True)
    content["model_args"]["vocab_size"] = 0
    torch.save(content, tmp_path / "zero.pt")
    with pytest.raises(CheckpointImportError, match="vocab_size"):
        import_nino(tmp_path / "zero.pt")
    content["model_args"]["vocab_size"] = 7  # needs a table of 8 rows; the file's has 6 + 1
    torch.save(content, tmp_path / "short.pt")
    with pytest.raises(CheckpointImportError, match="shapes"):
        import_nino(tmp_path / "short.pt")


@pytest.mark.skipif(not PEERS.is_dir(), reason="the peers' released files (../shared/peers) are absent")
def test_real_nino_no_posw():
    predictor = nino_graph_from_checkpoint(PEERS / "nino" / "nino_no_posw.pt", "conv")
    assert sum(p.numel() for p in predictor.parameters()) == 549_992
    torch.manual_seed(0)
    model = _ConvNet()
    graph = build_neuron_graph(model)
    states = _states(model)
    got = predictor.predict_graph(graph, states, 5)
    expected = reference_nino_graph(predictor, graph, states, 5)
    for name, value in got.items():
        # hidden 128: dot products of length <= 256, gamma_256 ~ 1.5e-5: ten times the small model's bound
        tolerance = 4 * U * np.abs(expected[name]) + 1e-3 * states[name].double().std().item()
        assert (np.abs(value.double().numpy() - expected[name]) <= tolerance).all(), name


def test_edge_chunking_does_not_change_predictions(monkeypatch):
    from weightcast.train_predictor.predictors import nino_graph

    torch.manual_seed(0)
    model = _ConvNet(kernel=5)
    predictor = _randomized(NiNoGraph(hidden=8, horizon=3, lpe=2))
    graph = build_neuron_graph(model)
    states = _states(model)
    whole = predictor.predict_graph(graph, states, 2)
    monkeypatch.setattr(nino_graph, "_EDGE_CHUNK", 7)  # many chunks, splitting parameters and kernels
    chunked = predictor.predict_graph(graph, states, 2)
    for name, value in whole.items():
        # the same sums in a different order (index_add_ per chunk): a few roundings of O(1) terms
        assert torch.allclose(
            chunked[name],
            value,
            rtol=0,
            atol=1e-5 * states[name].std().item() + 8 * U * value.abs().max().item(),
        ), name
