"""Cost of training the `nino` graph network on whole models (train_predictor stage): the seconds
of one training step (`graph_data.graph_batch_loss` forward, backward, an Adam step) on a zoo
model's neuron graph, and the memory of the neuron graph itself (`edge_index`, `edge_type`) and of
the (E, hidden) edge states a forward needs, for models up to ~1e7 parameters (graph only there).

    python -m weightcast.train_predictor.graph_benchmark            # NiNo's size: c 5, K 40, hidden 128
    python -m weightcast.train_predictor.graph_benchmark --threads 1 --steps 3

States are synthetic (a random walk from the model's initial weights); what is timed does not
depend on their values. Prints one line per model.

Measured on the shared 2-core CPU machine, 1 thread (2026-12-01): one training step on one sample
0.16 s (zoo MLP on mnist1d, 7.4k params, 7.6k edges), 0.15 s (conv1d, 31.7k params, 7.2k edges),
1.7 s (lenet5, 61.7k params, 59.7k edges: a 5 x 5 kernel is 3 parallel edges), 0.05 s (nino-cnn,
14.7k params); the 1e7-parameter MLP's graph is 230 MiB (built in 0.5 s), and one `predict_graph`
on it took 153 s and 5.1 GiB above the model (its (E, 128) edge states are 4.8 GiB).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from weightcast.train_predictor.graph_data import graph_batch_loss, graph_sample
from weightcast.train_predictor.predictors import build_predictor
from weightcast.train_predictor.predictors.neuron_graph import build_neuron_graph
from weightcast.zoo.layer_types import layer_types
from weightcast.zoo.models import count_parameters, create_model
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["graph_bytes", "main", "step_seconds"]

MNIST1D = TaskSpec("signal", (1, 40), 10, "classification")
MNIST = TaskSpec("image", (1, 28, 28), 10, "classification")
CIFAR = TaskSpec("image", (3, 32, 32), 10, "classification")
TRAINED = [  # (label, arch, spec, arch_kwargs): what one training step is timed on
    ("mlp mnist1d (zoo default)", "mlp", MNIST1D, {}),
    ("conv1d mnist1d", "conv1d", MNIST1D, {}),
    ("lenet5 mnist", "lenet5", MNIST, {}),
    ("nino-cnn cifar", "nino-cnn", CIFAR, {}),
]
GRAPH_ONLY = [("mlp 3 x 2048 (1e7)", "mlp", MNIST, {"depth": 3, "width": 2048})]


def graph_bytes(graph) -> int:
    """Bytes of a neuron graph's tensors (edge_index, edge_type, positional encodings if computed)."""
    tensors = [graph.edge_index, graph.edge_type] + ([graph.pe] if graph.pe is not None else [])
    return sum(t.numel() * t.element_size() for t in tensors)


def step_seconds(model: nn.Module, predictor, steps: int = 3) -> tuple[float, int, int]:
    """(median seconds of one training step on one whole-model sample, edges, nodes)."""
    graph = build_neuron_graph(model, max_feat=predictor.max_feat)
    c, k = predictor.input_length, predictor.horizon
    g = torch.Generator().manual_seed(0)
    histories = {
        n: p.detach() + 1e-3 * torch.randn(c + k, *p.shape, generator=g).cumsum(0)
        for n, p in model.named_parameters()
    }
    sample = graph_sample("bench", graph, histories, layer_types(model), c - 1, c, k, predictor.eps)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):  # the first also computes the Laplacian encodings: not counted
        start = time.perf_counter()
        loss = graph_batch_loss(predictor, [sample])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2], graph.num_edges, graph.num_nodes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (median)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--horizon", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    predictor = build_predictor("nino", hidden=args.hidden, horizon=args.horizon)
    print(f"nino: c {predictor.input_length}, K {predictor.horizon}, hidden {predictor.hidden}; "
          f"{args.threads} thread(s)")  # fmt: skip
    for label, arch, spec, kwargs in TRAINED:
        model = create_model(arch, spec, **kwargs)
        seconds, edges, nodes = step_seconds(model, predictor, args.steps)
        print(f"{label:<28} {count_parameters(model):>10,} params {edges:>10,} edges {nodes:>8,} nodes  "
              f"train step {seconds:.3f} s")  # fmt: skip
    for label, arch, spec, kwargs in GRAPH_ONLY:
        model = create_model(arch, spec, **kwargs)
        start = time.perf_counter()
        graph = build_neuron_graph(model, max_feat=predictor.max_feat)
        built = time.perf_counter() - start
        edge_states = graph.num_edges * predictor.hidden * 4
        print(f"{label:<28} {count_parameters(model):>10,} params {graph.num_edges:>10,} edges "
              f"{graph.num_nodes:>8,} nodes  graph {graph_bytes(graph) / 2**20:.0f} MiB (built in "
              f"{built:.1f} s); a forward's (E, {predictor.hidden}) float32 edge states "
              f"{edge_states / 2**30:.1f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
