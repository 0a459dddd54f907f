"""The whole-model path of the `eval` runtime for graph predictors (`nino`, whose predictor has
`predict_graph`): a `Nowcaster` (`eval.runtime.nowcaster`) builds the model's neuron graph once, at
construction, and at each jump predicts every parameter the graph places with ONE `predict_graph`
call on the windows of its ring buffer, as NiNo does; the parameters the graph does not place
(`graph.fallback`) keep the per-tensor path.

Which network: a bundle holds one predictor per layer type, while the graph network is one network
for every type (train-predictor's graph training, like the NiNo importer, exports copies of the same
weights under each type). The path is taken only when the predictors serving the model's predicted
layer types are the same network: one kind with `predict_graph`, equal configs but for `layer_type`,
equal weights. Otherwise the nowcaster stays per tensor.

Parameters the graph places but the nowcaster does not predict (frozen ones, or types left out by
`NowcastConfig.layer_types`) enter the graph with their current value as every state (a frozen
parameter's true window); their predictions are discarded.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.predictors import Predictor
from weightcast.train_predictor.predictors.neuron_graph import (
    NeuronGraph,
    NeuronGraphWarning,
    build_neuron_graph,
)

__all__ = ["GraphPath"]


class GraphPath:
    """A graph predictor, the model's neuron graph (without its fallback parameters) and the
    predicted parameters it covers (`covered`, in graph order)."""

    def __init__(
        self, predictor: Predictor, graph: NeuronGraph, module: nn.Module, predicted: Mapping[str, str]
    ):
        self.predictor, self.graph, self.module = predictor, graph, module
        self.covered = [p.name for p in graph.params if p.name in predicted]

    @classmethod
    def build(
        cls, module: nn.Module, bundle: PredictorBundle, predicted: Mapping[str, str]
    ) -> GraphPath | None:
        """The path for `module` when `bundle` serves its predicted layer types with one graph network
        (see the module docstring), else None. Parameters without a place in the graph are left to
        the per-tensor path silently (build_neuron_graph's warning is for users of predict_graph)."""
        predictors = [bundle.predictor_for(t) for t in sorted(set(predicted.values()))]
        first = predictors[0]
        if not hasattr(first, "predict_graph") or not all(_same_network(first, p) for p in predictors[1:]):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NeuronGraphWarning)
            graph = build_neuron_graph(module, max_feat=first.config.get("max_feat", 9))
        path = cls(first, dataclasses.replace(graph, fallback=[]), module, predicted)
        return path if path.covered else None

    def steps(self, groups: Sequence[Any], next_slot: int, horizon: int) -> dict[str, Tensor]:
        """{name: (numel,) prediction `horizon` ahead - last snapshot} of every covered parameter, in
        the buffer's dtype promoted to float32, from the ring buffers of the nowcaster's `groups`
        (`_Group`: names, sizes, history (input_length, N)) whose oldest slot is `next_slot`."""
        states: dict[str, Tensor] = {}
        for group in groups:
            capacity = group.history.shape[0]
            order = [(next_slot + i) % capacity for i in range(capacity)]  # ring slots, oldest first
            dtype = torch.promote_types(group.history.dtype, torch.float32)
            begin = 0
            for name, size in zip(group.names, group.sizes):
                states[name] = group.history[order, begin : begin + size].to(dtype)  # (c, numel)
                begin += size
        params = dict(self.module.named_parameters())
        c = self.predictor.input_length
        inputs = {}
        for p in self.graph.params:
            if p.name in states:
                inputs[p.name] = states[p.name].reshape(c, *p.shape)
            else:  # in the graph, not predicted: its current value as every state
                inputs[p.name] = params[p.name].detach().float().expand(c, *p.shape)
        predicted = self.predictor.predict_graph(self.graph, inputs, horizon)
        return {
            name: predicted[name].reshape(-1).to(states[name]) - states[name][-1] for name in self.covered
        }


def _same_network(a: Predictor, b: Predictor) -> bool:
    """Same kind, config but for layer_type, and weights."""
    if a is b:
        return True
    config_a = {k: v for k, v in a.config.items() if k != "layer_type"}
    config_b = {k: v for k, v in b.config.items() if k != "layer_type"}
    if a.kind != b.kind or config_a != config_b:
        return False
    state_a, state_b = a.state_dict(), b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
