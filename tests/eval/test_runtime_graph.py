"""The runtime's graph path (eval.runtime.graph_path): a `nino` bundle makes the Nowcaster predict
every parameter of a model with one `predict_graph` call per jump on its neuron graph, with the
result of calling `predict_graph` directly on the same windows."""

from __future__ import annotations

import torch
from torch import nn
from weightcast.eval.runtime import NowcastConfig, Nowcaster
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.predictors import NiNoGraph, build_predictor
from weightcast.train_predictor.predictors.neuron_graph import build_neuron_graph

C, H = 3, 2  # the bundle's window, the jumps' horizon


def _nino_bundle(same_weights: bool = True) -> PredictorBundle:
    predictors = {}
    for i, layer_type in enumerate(("linear", "bias")):
        predictor = build_predictor("nino", input_length=C, horizon=4, hidden=8, lpe=2, layer_type=layer_type)
        g = torch.Generator().manual_seed(0 if same_weights else i)
        with torch.no_grad():
            for p in predictor.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        predictors[layer_type] = predictor
    return PredictorBundle.from_predictors(predictors)


def _train_to_jump(model: nn.Module, nowcaster: Nowcaster) -> list[dict[str, torch.Tensor]]:
    """C calls after C random moves of the weights; returns the states after each call."""
    generator = torch.Generator().manual_seed(1)
    states = []
    for _ in range(C):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=generator))
        states.append({n: p.detach().clone() for n, p in model.named_parameters()})
        jump = nowcaster()
    assert jump is not None and jump.outcome == "accepted"
    return states


def _spy(predictor: NiNoGraph, method: str) -> list:
    calls, original = [], getattr(predictor, method)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    setattr(predictor, method, spy)
    return calls


def test_nino_bundle_jumps_an_mlp_through_the_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    bundle = _nino_bundle()
    nowcaster = Nowcaster(model, None, bundle, NowcastConfig(guard=False, horizon=H))
    assert nowcaster._graph is not None
    assert nowcaster._graph.covered == [n for n, _ in model.named_parameters()]
    predictor = nowcaster._graph.predictor
    graph_calls = _spy(predictor, "predict_graph")
    tensor_calls = [_spy(bundle.predictor_for(t), "predict") for t in ("linear", "bias")]
    states = _train_to_jump(model, nowcaster)
    assert len(graph_calls) == 1 and not any(tensor_calls)  # one call for the whole model, none per tensor
    windows = {n: torch.stack([s[n] for s in states]) for n in states[-1]}  # (C, *shape), oldest first
    expected = predictor.predict_graph(build_neuron_graph(model), windows, H)
    for name, param in model.named_parameters():
        last = states[-1][name]
        assert torch.equal(param.detach(), last + (expected[name] - last)), name  # the jump writes w + step


def test_frozen_parameters_enter_the_graph_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    model[0].bias.requires_grad_(False)
    frozen = model[0].bias.detach().clone()
    nowcaster = Nowcaster(model, None, _nino_bundle(), NowcastConfig(guard=False, horizon=H))
    assert "0.bias" not in nowcaster._graph.covered and len(nowcaster._graph.covered) == 3
    states = _train_to_jump(model, nowcaster)
    windows = {n: torch.stack([s[n] for s in states]) for n in states[-1]}  # the frozen one: constant
    expected = nowcaster._graph.predictor.predict_graph(build_neuron_graph(model), windows, H)
    assert torch.equal(model[0].bias.detach(), frozen)
    for name in nowcaster._graph.covered:
        last = states[-1][name]
        assert torch.equal(dict(model.named_parameters())[name].detach(), last + (expected[name] - last))


def test_different_networks_per_layer_type_stay_per_tensor():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    bundle = _nino_bundle(same_weights=False)
    nowcaster = Nowcaster(model, None, bundle, NowcastConfig(guard=False, horizon=H))
    assert nowcaster._graph is None
    calls = [_spy(bundle.predictor_for(t), "predict") for t in ("linear", "bias")]
    _train_to_jump(model, nowcaster)
    assert [len(c) for c in calls] == [2, 2]  # one call per parameter tensor, as before
