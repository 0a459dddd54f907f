"""Tests of train_predictor.benchmark (the nowcast throughput benchmark) and of the fused inference
paths it measures: the quick mode prints finite rows, the work counts are the models' own, and
`predict` with a reused output agrees with the autograd forward. No timing assertions."""

from __future__ import annotations

import math

import pytest
import torch

from weightcast.train_predictor.benchmark import main, moved_bytes, nominal_flops
from weightcast.train_predictor.predictors import LFD2, WNN


def test_quick_benchmark_prints_finite_rows(capsys):
    main(["--quick", "--sizes", "3000"])
    lines = capsys.readouterr().out.splitlines()
    assert any("matmul" in line and "GFLOP/s" in line for line in lines)
    rows = [line.strip("|").split("|") for line in lines if line.startswith("| 3,000 |")]
    assert [row[1].strip() for row in rows] == ["wnn", "lfd2"]
    for row in rows:
        seconds, per_second, achieved, of_peak, new_output, extra = (cell.strip() for cell in row[2:])
        # Printed rounded: a slow or busy machine may print 0 for a share of its peak, so >= 0.
        numbers = [float(seconds), float(per_second), float(achieved.split()[0]), float(new_output)]
        numbers.append(float(of_peak.rstrip("%")))
        assert all(math.isfinite(x) and x >= 0 for x in numbers), row
        assert extra == "n/a" or (math.isfinite(float(extra)) and float(extra) >= 0)
        assert achieved.split()[1] == ("GFLOP/s" if row[1].strip() == "wnn" else "GB/s")


def test_work_counts():
    # WNN: values stream 5*64 + 64*8 + 3*8*64 + 64*32 = 4416 MACs, differences 4352, head 64.
    assert nominal_flops(WNN()) == 2 * (4416 + 4352 + 64) == 17_664
    assert moved_bytes(LFD2()) == 12  # two columns read, one value written


@pytest.mark.parametrize("layout", ["rows", "ring"])
def test_fused_predict_matches_forward(layout):
    torch.manual_seed(0)
    history = torch.randn(1, 5000) + 0.05 * torch.randn(21, 5000).cumsum(0)  # (L, N)
    for predictor in (WNN(), LFD2(horizon=7)):
        with torch.no_grad():  # not the init: exercise every folded weight
            for p in predictor.parameters():
                p.add_(0.05 * torch.randn(p.shape))
        window = history[: predictor.input_length].t()  # the ring buffer's (N, L) view
        if layout == "rows":
            window = window.contiguous()
        expected = predictor(window)[:, -1].detach()
        out = torch.full((5000,), math.nan)
        assert predictor.predict(window, out=out, chunk_size=1234) is out
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="out must be"):
            predictor.predict(window, out=torch.empty(4999))
