"""Tests of train_predictor.importers and `weightcast import`: tiny files written here in each peer's real
format (the WNN authors' PyTorch state dict and Keras .h5, NiNo's {'state_dict', 'model_args'}), the
imported predictors against float64 references of the peers' formulas written here, bundle round
trips; the real released files too when ../shared/peers exists beside the repository (it holds
nino_no_posw.pt but not NiNo's default nino.pt, whose format a tiny file written here stands in for)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from weightcast.train_predictor.bundle import PredictorBundle, save_bundle
from weightcast.train_predictor.importers import (
    CheckpointImportError,
    import_nino,
    import_wnn_authors,
    load_wnn_authors,
    nino_mlp_from_checkpoint,
    wnn_authors_state_dict,
)
from weightcast.train_predictor.predictors.neuron_graph import build_neuron_graph

from weightcast.cli import main as cli_main

try:  # the optional extra `weightcast[import]`; only the Keras tests need it
    import h5py
except ImportError:
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="h5py (weightcast[import]) is not installed")

U = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32
PEERS = Path(__file__).resolve().parents[2].parent / "shared" / "peers"
needs_peers = pytest.mark.skipif(
    not PEERS.is_dir(), reason="the peers' released files (../shared/peers) are absent"
)

# The authors' layer sizes, (out, in), by their PyTorch port's index; L1 layers are `LinearL1` (`.linear`).
_WNN_SHAPES = {0: (64, 5), 1: (8, 64), 2: (64, 8), 3: (64, 8), 4: (64, 8), 5: (32, 64), 6: (64, 4),
               7: (8, 64), 8: (64, 8), 9: (64, 8), 10: (64, 8), 11: (32, 64), 12: (1, 64)}  # fmt: skip
_L1 = (0, 5, 6, 11)


def _wnn_prefix(i: int) -> str:
    return ("dense" if i == 0 else f"dense_{i}") + (".linear" if i in _L1 else "")


def _authors_state(seed: int = 0) -> OrderedDict:
    """A state dict with the authors' key names, random weights of their init's scale."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for i, (out, inp) in _WNN_SHAPES.items():
        if i in _L1:
            state[f"{_wnn_prefix(i)[:-7]}.weight_loss"] = torch.zeros(1)
            state[f"{_wnn_prefix(i)[:-7]}.bias_loss"] = torch.zeros(1)
        state[f"{_wnn_prefix(i)}.weight"] = (3 / inp) ** 0.5 * (2 * torch.rand(out, inp, generator=g) - 1)
        state[f"{_wnn_prefix(i)}.bias"] = 0.1 * torch.randn(out, generator=g)
    return state


def _write_keras_h5(path: Path, state: OrderedDict, base: int = 14) -> None:
    """The Keras 2 `save_weights` layout: group dense_{base+i}/dense_{base+i}/{kernel:0 (in, out), bias:0}."""
    with h5py.File(path, "w") as f:
        names = []
        for i in _WNN_SHAPES:
            name = f"dense_{base + i}"
            inner = f.create_group(name).create_group(name)
            inner["kernel:0"] = state[f"{_wnn_prefix(i)}.weight"].T.numpy()
            inner["bias:0"] = state[f"{_wnn_prefix(i)}.bias"].numpy()
            names.append(name.encode())
        for other in ("input_3", "input_4", "leaky_re_lu_3", "concatenate_2"):  # weightless layers
            f.create_group(other)
            names.append(other.encode())
        f.attrs["layer_names"] = np.array(names)
        f.attrs["keras_version"], f.attrs["backend"] = b"2.2.4", b"tensorflow"


def reference_wnn(state: dict, window: np.ndarray, slope: float = 0.3) -> np.ndarray:
    """The WNN authors' Keras network and callback formula (jjh6297/WNN, CNN/WNN.py) in float64:
    anchor the first value, divide by 2 * (range + 1e-8 + 1e-5); Dense(64) -> z = relu(Dense8) ->
    A(z) + B(z) * exp(C(z) * h) -> Dense(32) -> LeakyReLU(0.3) per stream; tanh head; the prediction
    is (normalized last + delta) * 2 * (range + 1e-8 + 1e-5) + first value."""
    p = {k: v.double().numpy() for k, v in state.items()}

    def dense(i, x):
        return x @ p[f"{_wnn_prefix(i)}.weight"].T + p[f"{_wnn_prefix(i)}.bias"]

    def stream(i, x):
        h = dense(i, x)
        z = np.maximum(dense(i + 1, h), 0.0)
        y = dense(i + 5, dense(i + 2, z) + dense(i + 3, z) * np.exp(dense(i + 4, z) * h))
        return np.where(y >= 0, y, slope * y)

    first = window[:, :1]
    rng = (window - first).max(1, keepdims=True) - (window - first).min(1, keepdims=True) + 1e-8
    n = (window - first) / (rng + 1e-5) / 2
    delta = np.tanh(dense(12, np.concatenate([stream(0, n), stream(6, np.diff(n, axis=1))], 1)))[:, 0]
    return (n[:, -1] + delta) * (rng[:, 0] + 1e-5) * 2 + first[:, 0]


def _windows(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    start = 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return (start + 1e-3 * torch.randn(n, 5, generator=g, dtype=torch.float64).cumsum(1)).float()


def _wnn_tolerance(window: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Float32 against float64: the output's roundings (|w| u per operation; four: 4u|w|) plus the
    network's error in normalized units times the scale 2 * (range + eps): six dot-product layers of
    length <= 64, each within gamma_64 = 64u ~ 3.8e-6 of its magnitude (Higham, 3.1), with O(1)
    activations and exp's relative error of a few u: < 1e-4 of the scale."""
    scale = 2 * (window.max(1) - window.min(1) + 1.001e-5)
    return 4 * U * np.abs(expected) + 1e-4 * scale


def reference_nino_mlp(state: dict, window: np.ndarray, type_id: int, k: int) -> np.ndarray:
    """NiNo's graph-free step (SamsungSAILMontreal/nino optim/model.py with gnn=False, utils/scale.py)
    in float64: scale by the tensor's mean and Bessel std + 1e-6, edge_proj(x) + layer_embed[type],
    edge_mlp (Linear, SiLU) x 3 then Linear -> 40; last + row k-1; unscale by std and mean."""
    p = {key: v.double().numpy() for key, v in state.items()}

    def lin(name, x):
        return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    mean, std = window.mean(), window.std(ddof=1)
    z = (window - mean) / (std + 1e-6)
    h = lin("edge_proj.fc.0", z) + p["layer_embed.weight"][type_id]
    for i in (0, 2, 4):
        h = lin(f"edge_mlp.fc.{i}", h)
        h = h / (1 + np.exp(-h))
    return (z[:, -1] + lin("edge_mlp.fc.6", h)[:, k - 1]) * std + mean


def _nino_mlp_file(path: Path, hid: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = {"layer_embed.weight": (15, hid), "edge_proj.fc.0.weight": (hid, 5), "edge_proj.fc.0.bias": (hid,),
              "edge_mlp.fc.0.weight": (hid, hid), "edge_mlp.fc.0.bias": (hid,),
              "edge_mlp.fc.2.weight": (hid, hid), "edge_mlp.fc.2.bias": (hid,),
              "edge_mlp.fc.4.weight": (hid, hid), "edge_mlp.fc.4.bias": (hid,),
              "edge_mlp.fc.6.weight": (40, hid), "edge_mlp.fc.6.bias": (40,)}  # fmt: skip
    state = {k: 0.3 * torch.randn(s, generator=g) for k, s in shapes.items()}
    torch.save({"state_dict": state, "model_args": {"gnn": False, "hid": hid}}, path)
    return state


def _nino_tolerance(window: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Float32 against float64: 4u|w| for the output's roundings plus the network's standardized
    error (dot products of length <= 8, gamma_8 ~ 8u of O(1) magnitudes over four layers, |z| <= ~5)
    times std: < 1e-5 std."""
    return 4 * U * np.abs(expected) + 1e-5 * window.std(ddof=1)


# ---------------------------------------------------------------- WNN authors


def test_wnn_pt_matches_the_authors_formula(tmp_path):
    state = _authors_state()
    torch.save(state, tmp_path / "NWNN_FC_13.pt")
    wnn = load_wnn_authors(tmp_path / "NWNN_FC_13.pt")
    assert wnn.eps == 1.001e-5
    window = _windows(2000)
    expected = reference_wnn(state, window.double().numpy())
    got = wnn.predict(window).double().numpy()
    assert (np.abs(got - expected) <= _wnn_tolerance(window.double().numpy(), expected)).all()
    # The port's 0.01 LeakyReLU slope would not agree: the check tells the two apart.
    port = reference_wnn(state, window.double().numpy(), slope=0.01)
    assert (np.abs(got - port) > _wnn_tolerance(window.double().numpy(), port)).any()


@needs_h5py
def test_wnn_h5_equals_pt(tmp_path):
    state = _authors_state(seed=3)
    torch.save(state, tmp_path / "w.pt")
    _write_keras_h5(tmp_path / "w.h5", state)
    from_pt, from_h5 = wnn_authors_state_dict(tmp_path / "w.pt"), wnn_authors_state_dict(tmp_path / "w.h5")
    assert from_pt.keys() == from_h5.keys()
    assert all(torch.equal(from_pt[k], from_h5[k]) for k in from_pt)
    assert torch.equal(from_pt["values.act.a.weight"], state["dense_2.weight"])  # A: the additive term
    assert torch.equal(from_pt["diffs.out.weight"], state["dense_11.linear.weight"])


def test_wnn_bundle_round_trip(tmp_path):
    paths = []
    for seed, name in enumerate(("Conv", "FC", "Bias")):
        paths.append(tmp_path / f"NWNN_{name}_13.pt")
        torch.save(_authors_state(seed), paths[-1])
    bundle = import_wnn_authors(*paths, command="weightcast import wnn-authors ...")
    assert bundle.kind == "wnn" and bundle.layer_types == ("conv", "linear", "bias")
    assert bundle.resolve("norm") == "bias" and bundle.resolve("embedding") == "linear"
    assert "jjh6297/WNN" in bundle.trained_on["source"] and len(bundle.trained_on["files"]) == 3
    folder = save_bundle(bundle, tmp_path / "bundle")
    loaded = PredictorBundle.from_pretrained(folder)
    window = _windows(100)
    for layer_type in ("conv", "linear", "bias", "norm"):
        assert torch.equal(loaded.predict(window, layer_type), bundle.predict(window, layer_type))
    assert "jjh6297/WNN" in (folder / "README.md").read_text()


def test_wnn_bad_files(tmp_path):
    state = _authors_state()
    del state["dense_7.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointImportError, match="missing"):
        load_wnn_authors(tmp_path / "missing.pt")
    with pytest.raises(CheckpointImportError, match="no such file"):
        load_wnn_authors(tmp_path / "absent.pt")
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(CheckpointImportError, match="format"):
        load_wnn_authors(tmp_path / "x.onnx")


@needs_h5py
def test_wnn_bad_h5(tmp_path):
    with h5py.File(tmp_path / "few.h5", "w") as f:
        f.create_group("dense_1")
    with pytest.raises(CheckpointImportError, match="13 consecutive"):
        load_wnn_authors(tmp_path / "few.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CheckpointImportError, match="not an HDF5 file"):
        load_wnn_authors(tmp_path / "text.h5")


class _Payload:  # a pickled object of a class: what weights_only=True refuses to rebuild
    pass


def test_no_unpickling_of_objects(tmp_path):
    torch.save({"state_dict": _Payload(), "model_args": {}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointImportError, match="weights_only=True"):
        import_nino(tmp_path / "evil.pt")
    torch.save(_Payload(), tmp_path / "evil2.pt")
    with pytest.raises(CheckpointImportError, match="weights_only=True"):
        load_wnn_authors(tmp_path / "evil2.pt")


# ---------------------------------------------------------------- NiNo


@pytest.mark.parametrize("layer_type, type_id, k", [("conv", 3, 40), ("linear", 1, 1), ("norm", 4, 9)])
def test_nino_mlp_matches_nino_formula(tmp_path, layer_type, type_id, k):
    state = _nino_mlp_file(tmp_path / "nino_mlp.pt")
    bundle = import_nino(tmp_path / "nino_mlp.pt")
    assert bundle.kind == "nino-mlp" and bundle.layer_types == ("conv", "linear", "bias", "norm", "embedding")
    window = _windows(500, seed=2)
    expected = reference_nino_mlp(state, window.double().numpy(), type_id, k)
    got = bundle.predict(window, layer_type, horizon=k).double().numpy()
    assert (np.abs(got - expected) <= _nino_tolerance(window.double().numpy(), expected)).all()


def test_nino_bundle_round_trip_and_cli(tmp_path):
    _nino_mlp_file(tmp_path / "nino_mlp.pt", hid=4)
    assert cli_main(["import", "nino", str(tmp_path / "nino_mlp.pt"), "-o", str(tmp_path / "b")]) == 0
    loaded = PredictorBundle.from_pretrained(tmp_path / "b")
    direct = import_nino(tmp_path / "nino_mlp.pt")
    window = _windows(64)
    for layer_type in ("conv", "bias", "embedding"):
        assert torch.equal(loaded.predict(window, layer_type, 3), direct.predict(window, layer_type, 3))
    card = (tmp_path / "b" / "README.md").read_text()
    assert "SamsungSAILMontreal/nino" in card and "weightcast import nino" in card


def test_nino_bad_model_args(tmp_path):
    state = _nino_mlp_file(tmp_path / "a.pt")
    torch.save(
        {"state_dict": state, "model_args": {"gnn": False, "hid": 8, "act_name": "relu"}}, tmp_path / "b.pt"
    )
    with pytest.raises(CheckpointImportError, match="act_name"):
        import_nino(tmp_path / "b.pt")
    torch.save(_authors_state(), tmp_path / "wnn.pt")
    with pytest.raises(CheckpointImportError, match="not a NiNo checkpoint"):
        import_nino(tmp_path / "wnn.pt")


def _nino_pt_file(path: Path, hid: int = 8, lpe: int = 2, vocab_size: int = 6, seed: int = 0) -> dict:
    """A tiny file in the format of NiNo's default nino.pt: the keys and shapes of NiNoModel(gnn=True,
    wte_pos_enc=True) (its optim/model.py, PNA of optim/gnn.py: 3 layers, edge updates in the first
    two), random weights; model_args leave gnn and wte_pos_enc to NiNoModel's defaults (True)."""
    h = hid
    shapes = {"layer_embed.weight": (15, h), "edge_proj.fc.0.weight": (h, 9 * 5), "edge_proj.fc.0.bias": (h,),
              "wte_pos_enc_layer.weight": (vocab_size + 1, h),  # +1: NiNo's dummy row 0
              "node_proj.fc.0.weight": (h, lpe), "node_proj.fc.0.bias": (h,),
              "edge_out.fc.0.weight": (h, h), "edge_out.fc.0.bias": (h,),
              "edge_out.fc.2.weight": (9 * 40, h), "edge_out.fc.2.bias": (9 * 40,)}  # fmt: skip
    conv = {"edge_encoder": (2 * h, h), "pre_nns.0.0": (h, 2 * h), "post_nns.0.0": (h, 2 * h), "lin": (h, h)}
    for i in range(3):
        for name, (out, inp) in conv.items():
            shapes[f"gnn.convs.{i}.{name}.weight"], shapes[f"gnn.convs.{i}.{name}.bias"] = (out, inp), (out,)
    for i in range(2):
        for name in ("lin_e", "lin_s", "lin_t", "lin1"):
            prefix = f"gnn.edge_update.{i}.{name}"
            shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (h, h), (h,)
    g = torch.Generator().manual_seed(seed)
    state = {k: 0.3 * torch.randn(s, generator=g) for k, s in shapes.items()}
    torch.save({"state_dict": state, "model_args": {"hid": h, "lpe": lpe, "vocab_size": vocab_size}}, path)
    return state


def test_nino_pt_with_token_embedding(tmp_path):
    state = _nino_pt_file(tmp_path / "nino.pt")
    assert cli_main(["import", "nino", str(tmp_path / "nino.pt"), "-o", str(tmp_path / "b")]) == 0
    loaded = PredictorBundle.from_pretrained(tmp_path / "b")
    direct = import_nino(tmp_path / "nino.pt")
    assert direct.kind == loaded.kind == "nino"
    for layer_type, predictor in direct.predictors.items():
        assert predictor.config["vocab_size"] == 6 and predictor.config["layer_type"] == layer_type
        assert torch.equal(predictor.token_embed.weight, state["wte_pos_enc_layer.weight"])
        assert torch.equal(predictor.node_proj.weight, state["node_proj.fc.0.weight"])
        assert torch.equal(predictor.convs[1].pre.weight, state["gnn.convs.1.pre_nns.0.0.weight"])
        ours, saved = predictor.state_dict(), loaded.predictors[layer_type].state_dict()
        assert ours.keys() == saved.keys() and all(torch.equal(ours[k], saved[k]) for k in ours)
        assert loaded.predictors[layer_type].config == predictor.config
    assert direct.trained_on["model_args"]["wte_pos_enc"] is True
    assert direct.trained_on["model_args"]["vocab_size"] == 6
    card = (tmp_path / "b" / "README.md").read_text()
    assert "wte_pos_enc_layer -> token_embed" in card and "weightcast import nino" in card
    # a tiny language model: its 5 tokens read rows 1-5 of the table, and the bundle saved and
    # loaded predicts bit-identically
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 2))
    graph = build_neuron_graph(model)
    assert graph.node_tokens.tolist() == [0, 1, 2, 3, 4] + [-1] * 6
    g = torch.Generator().manual_seed(1)
    states = {n: p.detach() + 0.01 * torch.randn(5, *p.shape, generator=g).cumsum(0)
              for n, p in model.named_parameters()}  # fmt: skip
    got = direct.predictors["embedding"].predict_graph(graph, states, 7)
    again = loaded.predictors["embedding"].predict_graph(graph, states, 7)
    assert all(torch.equal(got[n], again[n]) and got[n].isfinite().all() for n in got)


# ---------------------------------------------------------------- the real released files


@needs_peers
@needs_h5py
@pytest.mark.parametrize("name", ["Conv", "FC", "Bias"])
def test_real_wnn_authors(name):
    pt, h5 = PEERS / "wnn-authors" / f"NWNN_{name}_13.pt", PEERS / "wnn-authors" / f"NWNN_{name}_13.h5"
    from_pt, from_h5 = wnn_authors_state_dict(pt), wnn_authors_state_dict(h5)
    assert all(torch.equal(from_pt[k], from_h5[k]) for k in from_pt)
    wnn = load_wnn_authors(pt)
    assert sum(p.numel() for p in wnn.parameters()) == 9425
    window = _windows(20_000, seed=5)
    expected = reference_wnn(torch.load(pt, weights_only=True), window.double().numpy())
    got = wnn.predict(window).double().numpy()
    assert (np.abs(got - expected) <= _wnn_tolerance(window.double().numpy(), expected)).all()


@needs_peers
@pytest.mark.parametrize("name", ["nino_mlp.pt", "nino_mlp_h32.pt"])
def test_real_nino_mlp(name):
    path = PEERS / "nino" / name
    predictor = nino_mlp_from_checkpoint(path, "conv")
    content = torch.load(path, weights_only=True)
    assert sum(p.numel() for p in predictor.parameters()) == sum(
        v.numel() for v in content["state_dict"].values()
    )
    window = _windows(20_000, seed=6)
    expected = reference_nino_mlp(content["state_dict"], window.double().numpy(), 3, 40)
    got = predictor.predict(window, 40).double().numpy()
    # Hidden 128: dot products of length 128 (gamma_128 ~ 7.6e-6): ten times the tiny files' bound.
    tolerance = 4 * U * np.abs(expected) + 1e-4 * window.double().std().item()
    assert (np.abs(got - expected) <= tolerance).all()
