"""The `nino` graph network trained from shards on whole models (train_predictor.graph_data,
NiNoGraph.graph_loss, the graph branch of `weightcast train-predictor`): exact standardized samples
of every parameter of a run, the loss against a float64 hand computation, a few steps lowering it,
and the trained bundle's round trip and graph path on a rebuilt model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from weightcast.collect import Collection, load_collect_config, run_collection
from weightcast.train_predictor.bundle import PredictorBundle, save_bundle
from weightcast.train_predictor.config import load_train_predictor_config
from weightcast.train_predictor.data import open_collection, select_runs, split_runs
from weightcast.train_predictor.fit import latest_checkpoint
from weightcast.train_predictor.graph_data import (
    GraphDataError,
    graph_batch_loss,
    graph_batches,
    graph_sample,
    graph_samples,
    run_graph,
    run_model,
)
from weightcast.train_predictor.predictors import NiNoGraph, build_predictor
from weightcast.train_predictor.predictors.neuron_graph import NeuronGraphWarning, build_neuron_graph
from weightcast.train_predictor.predictors.nino import tensor_stats
from weightcast.train_predictor.train import train_predictors

from .test_nino_graph import _randomized, reference_nino_graph
from .test_train_predictor import DEBUG, ROOT

# 4 MLP runs (13 snapshots) and 2 conv1d runs (9 snapshots, a conv net of 31,690 parameters); two
# runs per shard group, so that a group's shards hold several runs.
GRAPH_COLLECTION = """
name: graphs
population:
  - arch: [mlp]
    arch_kwargs: [{depth: 1, width: 8}]
    task: [syn1, syn2]
    optimizer: [adam, sgd]
    lr: [0.01]
    batch_size: [16]
    epochs: [12]
  - arch: [conv1d]
    arch_kwargs: [{}]
    task: [mnist1d]
    optimizer: [adam]
    lr: [0.003]
    epochs: [8]
    seed: [0, 1]
record:
  shard_size: 4KB
engine:
  workers: 1
"""
C, K = 3, 4  # input_length, horizon of the tests' predictors


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("graph-collection")
    (folder / "graphs.yaml").write_text(GRAPH_COLLECTION)
    config = load_collect_config(folder / "graphs.yaml", [f"out_dir={folder / 'graphs'}"])
    run_collection(config, progress=False, echo=lambda message: None)
    return str(folder / "graphs")


def _predictor(seed: int = 0) -> NiNoGraph:
    torch.manual_seed(seed)
    return build_predictor("nino", input_length=C, horizon=K, hidden=16, lpe=2)


def test_graph_samples_are_standardized_windows_of_every_parameter(collection):
    source = open_collection(collection)
    records = {r["run_id"]: r for r in source.runs}
    histories = {(h.run_id, h.param_name): h for h in Collection(collection).histories()}
    train_ids, _ = split_runs(
        select_runs(source, split="train", statuses=["complete"]), by="run", fraction=0.3
    )
    predictor = _predictor()
    samples = list(graph_samples(source, train_ids, predictor, samples_per_run=2, runs_per_read=1, seed=3))
    assert sorted({s.run_id for s in samples}) == sorted(train_ids) and len(samples) == 2 * len(train_ids)
    for s in samples:
        record = records[s.run_id]
        assert list(s.states) == [p["name"] for p in record["params"]]  # every parameter, model order
        assert s.graph is run_graph(record)  # one graph per architecture, built once
        assert C - 1 <= s.time <= record["snapshots"] - 1 - K
        for name, z in s.states.items():
            values = histories[(s.run_id, name)].values  # (T, *shape)
            assert z.shape == (C, *values.shape[1:]) and s.targets[name].shape == (K, *values.shape[1:])
            window, future = values[s.time - C + 1 : s.time + 1], values[s.time + 1 : s.time + 1 + K]
            mean, std = tensor_stats(window.reshape(C, -1).T)  # NiNo's statistics of the window only
            assert torch.equal(z, (window - mean) / (std + 1e-6))
            assert torch.equal(s.targets[name], (future - mean) / (std + 1e-6))
            assert torch.equal(s.scales[name][0], mean) and torch.equal(s.scales[name][1], std)
            assert s.layer_types[name] == histories[(s.run_id, name)].layer_type
            if z.numel() > 2:  # standardized: mean 0, std std / (std + eps), up to float32 rounding
                assert (
                    abs(z.mean().item()) < 1e-5 and abs(z.std().item() - (std / (std + 1e-6)).item()) < 1e-5
                )
        graph_names = [p.name for p in s.graph.params] + s.graph.fallback  # the sample fits its graph
        assert sorted(graph_names) == sorted(s.states)


def test_graph_batches_repeat_the_runs_and_cover_every_rank_count(collection):
    source = open_collection(collection)
    ids = [r["run_id"] for r in source.runs]
    batches = list(graph_batches(source, ids, _predictor(), batch_size=3, samples_per_run=1, num_batches=7))
    assert len(batches) == 7 and all(len(b) == 3 for b in batches)  # 21 samples of 6 runs: passes repeat
    assert {s.run_id for b in batches for s in b} == set(ids)
    # too short for every run: no batch at all (train-predictor then says so)
    long = build_predictor("nino", input_length=10, horizon=4, hidden=4, lpe=0)
    assert list(graph_batches(source, ids, long, batch_size=2, samples_per_run=1, num_batches=3)) == []


class _BareMLP(nn.Module):
    """An MLP with a parameter used functionally: `scale` falls back to the per-scalar path."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) * self.scale)


def test_graph_loss_equals_a_hand_computation():
    torch.manual_seed(0)
    model = _BareMLP()
    with pytest.warns(NeuronGraphWarning):
        graph = build_neuron_graph(model)
    assert graph.fallback == ["scale"]
    predictor = _randomized(NiNoGraph(input_length=C, horizon=K, hidden=8, lpe=3), seed=1)
    g = torch.Generator().manual_seed(2)
    histories = {  # (T, *shape): a drift of ~1e-2 per state
        n: p.detach() + 1e-2 * torch.randn(9, *p.shape, generator=g).cumsum(0)
        for n, p in model.named_parameters()
    }
    types = {
        "fc1.weight": "linear",
        "fc1.bias": "bias",
        "fc2.weight": "linear",
        "fc2.bias": "bias",
        "scale": "norm",
    }
    t, m = 4, 3  # last input state, steps scored (m <= K)
    sample = graph_sample("run", graph, histories, types, t, C, K)
    targets = {n: z[:m] for n, z in sample.targets.items()}
    got = predictor.graph_loss(graph, sample.states, targets, layer_types=types).item()

    raw = {n: v[t - C + 1 : t + 1] for n, v in histories.items()}
    errors = []
    for k in range(1, m + 1):
        predicted = reference_nino_graph(predictor, graph, raw, k)  # float64 NumPy of NiNo's forward
        window = raw["scale"].reshape(C, -1).T
        predicted["scale"] = predictor.predict(window, k, layer_type="norm").double().numpy()  # per scalar
        for name, value in predicted.items():
            w = raw[name].double().numpy()
            mean, std = w.mean(), w.std(ddof=1)
            future = histories[name][t + k].double().numpy()
            # in standardized units: the prediction (last + delta) and the truth (w - mean) / (std + eps)
            errors.append(np.abs((value - mean) / std - (future - mean) / (std + 1e-6)).ravel())
    expected = np.concatenate(errors).mean()
    # Each standardized prediction is within 1e-4 of the float64 one (the bound of
    # test_predict_graph_matches_reference), so is the mean of absolute errors.
    assert abs(got - expected) < 1e-4
    with pytest.raises(ValueError, match="targets"):
        predictor.graph_loss(
            graph, sample.states, {n: z[:m] if n != "scale" else z for n, z in sample.targets.items()}
        )
    with pytest.raises(ValueError, match="missing"):
        predictor.graph_loss(graph, {}, targets)


def test_training_on_a_fixed_batch_lowers_the_graph_loss(collection):
    source = open_collection(collection)
    by_arch = {}
    for r in source.runs:
        by_arch.setdefault(r["arch"], r["run_id"])
    predictor = _predictor()
    batch = list(graph_samples(source, by_arch.values(), predictor, samples_per_run=1, seed=0))
    assert sorted(by_arch) == ["conv1d", "mlp"] and len(batch) == 2  # an MLP and a conv net
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = graph_batch_loss(predictor, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0]


def test_run_model_refuses_a_record_of_another_architecture(collection):
    record = dict(open_collection(collection).runs[0])
    record["arch_kwargs"] = {**record["arch_kwargs"], "width": record["arch_kwargs"].get("width", 8) + 1}
    with pytest.raises(GraphDataError, match="differ from the recorded ones"):
        run_model(record)


def test_train_predictor_nino_trains_on_graphs(collection, tmp_path):
    overrides = [
        f"collection={collection}",
        f"out_dir={tmp_path / 'run'}",
        "progress=false",
        "predictors=[nino]",
        f"predictor_kwargs.nino={{input_length: {C}, horizon: {K}, hidden: 16, lpe: 2}}",
        "steps=6",
        "eval_every=3",
        "checkpoint_every=3",
        "graph.batch_size=2",
        "graph.samples_per_run=1",
    ]
    config = load_train_predictor_config(DEBUG, overrides)
    result = train_predictors(config, echo=lambda message: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["layer_type"], r["step"]) for r in rows] == [("graph", 0), ("graph", 3), ("graph", 6)]
    assert all(r["val_loss"] > 0 for r in rows)
    bundle = PredictorBundle.from_pretrained(result.bundles["nino"])
    assert bundle.layer_types == ("conv", "linear", "bias")
    # the exported weights are the fit's best ones, bit for bit, under every layer type
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints" / "nino" / "graph")
    state = json.loads((checkpoint / "state.json").read_text())
    tensors = load_file(checkpoint / "tensors.safetensors")
    prefix = "best/" if state["has_best"] else "model/"
    for layer_type in bundle.layer_types:
        predictor = bundle.predictor_for(layer_type)
        assert predictor.config["layer_type"] == layer_type
        for key, value in predictor.state_dict().items():
            assert torch.equal(value, tensors[prefix + key]), key
        row = result.validation["nino"][layer_type]
        assert (
            set(row["methods"]) == {"nino", "no-jump", "linear-fit"}
            and row["best_step"] == state["best_step"]
        )
    # saved again and loaded: bit-identical
    again = PredictorBundle.from_pretrained(save_bundle(bundle, tmp_path / "again"))
    for a, b in zip(bundle.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # the graph path on a rebuilt model of a held-out run
    source = open_collection(collection)
    _, val_ids = split_runs(select_runs(source, split="train", statuses=["complete"]), by="run", fraction=0.2)
    record = next(r for r in source.runs if r["run_id"] in val_ids)
    model = run_model(record)
    graph = build_neuron_graph(model)
    states = {
        n: p.detach() + 1e-3 * torch.arange(C).view(C, *[1] * p.dim()) for n, p in model.named_parameters()
    }
    out = bundle.predictor_for("linear").predict_graph(graph, states, K)
    assert out.keys() == states.keys()
    assert all(out[n].shape == p.shape and out[n].isfinite().all() for n, p in model.named_parameters())


def test_graph_training_can_be_switched_off(collection, tmp_path):
    overrides = [
        f"collection={collection}",
        f"out_dir={tmp_path / 'run'}",
        "progress=false",
        "predictors=[nino]",
        f"predictor_kwargs.nino={{input_length: {C}, horizon: {K}, hidden: 4, lpe: 0}}",
        "steps=2",
        "eval_every=2",
        "checkpoint_every=2",
        "graph.enabled=false",
    ]
    train_predictors(load_train_predictor_config(DEBUG, overrides), echo=lambda message: None)
    fits = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "nino").iterdir())
    assert fits == ["bias", "conv", "linear"]  # one per-scalar fit per layer type, as before


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_nino_on_graphs(collection, tmp_path):
    """Each rank reads its own runs; DistributedDataParallel syncs the graph network's gradients
    (its last message-passing layer, never run, has none to wait for)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "weightcast.train_predictor", "--config", str(DEBUG), f"collection={collection}",
        f"out_dir={tmp_path}", "progress=false", "device=cpu", "predictors=[nino]",
        f"predictor_kwargs.nino={{input_length: {C}, horizon: {K}, hidden: 8, lpe: 2}}",
        "steps=4", "eval_every=2", "checkpoint_every=2", "graph.batch_size=2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 processes" in done.stdout
    bundle = PredictorBundle.from_pretrained(tmp_path / "nino")
    assert bundle.layer_types == ("conv", "linear", "bias")
