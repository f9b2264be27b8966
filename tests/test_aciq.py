"""ACIQ: the MSE formulas, the derived optimal-alpha tables, and LQ vs ACIQ on a real BERT weight."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import lambertw

from bert2onnxq.numerics import (aciq_params, dequantize, gauss_mse, laplace_mse, lq_params, mse,
                                 optimal_alpha, quantize)

# Banner et al. (2019) table, bits 2..8, rounded to 2 decimals.
LAPLACE_TABLE = {2: 2.83, 3: 3.89, 4: 5.03, 5: 6.20, 6: 7.41, 7: 8.64, 8: 9.89}
GAUSS_TABLE = {2: 1.71, 3: 2.15, 4: 2.55, 5: 2.93, 6: 3.28, 7: 3.61, 8: 3.92}
# What brentq gives here (4 decimals); see bert2onnxq/numerics/aciq.py.
LAPLACE_DERIVED = {2: 2.8307, 3: 3.8972, 4: 5.0286, 5: 6.2048, 6: 7.4131, 7: 8.6456, 8: 9.8968}
GAUSS_DERIVED = {2: 1.7106, 3: 2.1516, 4: 2.5591, 5: 2.9362, 6: 3.2869, 7: 3.6151, 8: 3.9240}

WEIGHT = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-sst2" / "model.safetensors"
TENSOR = "bert.encoder.layer.0.intermediate.dense.weight"


def test_mse_formulas_by_hand():
    assert laplace_mse(0.0, 1.5, 4) == pytest.approx(2 * 1.5 ** 2)      # clip to 0: the Laplace variance 2b^2
    assert gauss_mse(0.0, 1.5, 4) == pytest.approx(1.5 ** 2)            # clip to 0: the Gaussian variance
    assert laplace_mse(2.0, 1.0, 2) == pytest.approx(2 * math.exp(-2) + 4 / 48)
    # z = 1, sigma = 2: (4 + 4) erfc(1/sqrt2) - sqrt(2/pi) * 2 * 2 * e^-0.5 + 4 / (3 * 16)
    assert gauss_mse(2.0, 2.0, 2) == pytest.approx(8 * 0.31731050786291415 - 3.1915382432114616 * math.exp(-0.5)
                                                   + 4 / 48)


@pytest.mark.parametrize("alpha,scale", [(0.5, 1.0), (2.0, 0.3), (3.0, 1.7)])
def test_clipping_terms_match_integrals(alpha, scale):
    # Both tails of E[(X - clip(X))^2], integrated numerically; bits=60 makes the noise term vanish.
    lap = 2 * quad(lambda x: (x - alpha) ** 2 * math.exp(-x / scale) / (2 * scale), alpha, np.inf)[0]
    gau = 2 * quad(lambda x: (x - alpha) ** 2 * math.exp(-0.5 * (x / scale) ** 2) / (scale * math.sqrt(2 * math.pi)),
                   alpha, np.inf)[0]
    assert laplace_mse(alpha, scale, 60) == pytest.approx(lap, rel=1e-7)
    assert gauss_mse(alpha, scale, 60) == pytest.approx(gau, rel=1e-7)


@pytest.mark.parametrize("bits", range(2, 9))
def test_optimal_alpha_minimises_mse(bits):
    grid = np.linspace(0.01, 15.0, 150_000)
    for dist, f in (("laplace", laplace_mse), ("gauss", gauss_mse)):
        a = optimal_alpha(bits, dist)
        vals = np.array([f(g, 1.0, bits) for g in grid[::10]])   # coarse pass, then refine around it
        i = int(np.argmin(vals)) * 10
        fine = grid[max(i - 20, 0): i + 20]
        best = fine[int(np.argmin([f(g, 1.0, bits) for g in fine]))]
        assert abs(a - best) / best < 0.01
        assert f(a, 1.0, bits) <= f(best, 1.0, bits) * (1 + 1e-12)
        # scale invariance: alpha * b minimises the MSE at spread b
        assert f(a * 0.05, 0.05, bits) <= min(f(a * 0.05 * 1.01, 0.05, bits), f(a * 0.05 * 0.99, 0.05, bits))


def test_laplace_closed_form():
    for bits in range(1, 17):
        assert optimal_alpha(bits, "laplace") == pytest.approx(lambertw(3 * 4.0 ** bits).real, rel=1e-9)


def test_alpha_tables():
    for bits in range(2, 9):
        lap, gau = optimal_alpha(bits, "laplace"), optimal_alpha(bits, "gauss")
        assert lap == pytest.approx(LAPLACE_DERIVED[bits], abs=5e-5)
        assert gau == pytest.approx(GAUSS_DERIVED[bits], abs=5e-5)
        # The published 2-decimal table is truncated/rounded inconsistently; all entries are within 0.01.
        assert abs(lap - LAPLACE_TABLE[bits]) < 0.01 and abs(gau - GAUSS_TABLE[bits]) < 0.01
    with pytest.raises(ValueError):
        optimal_alpha(4, "cauchy")
    with pytest.raises(ValueError):
        optimal_alpha(0)


def test_aciq_params_on_plain_arrays():
    # mean 0, b = mean|w| = (40 * 1 + 2 * 10) / 42 = 10/7, alpha(4 bits) = 5.0286 * 10/7 = 7.18 < max|w| = 10
    w = np.array([-1.0, 1.0] * 20 + [-10.0, 10.0], np.float32).reshape(-1, 1)
    alpha = optimal_alpha(4) * 10 / 7
    p = aciq_params(w, 4, granularity="tensor")
    assert p.clip == pytest.approx(alpha, rel=1e-6) and p.scale == pytest.approx(alpha / 7, rel=1e-6)
    np.testing.assert_array_equal(dequantize(quantize(w, p), p)[-2:, 0], [-7 * p.scale, 7 * p.scale])
    # per channel: column 2 is column 1 halved, so its alpha halves too
    pc = aciq_params(np.hstack([w, w / 2]), 4)
    np.testing.assert_allclose(pc.clip, [alpha, alpha / 2], rtol=1e-6)
    # Gaussian sigma = 1 on +-1 data: 3.92 * sigma > max|w| = 1, so the clip stops at max|w|
    assert aciq_params(w[:40], 8, distribution="gauss", granularity="tensor").clip == np.float32(1.0)
    # asymmetric: [mu - alpha, mu + alpha] = [3 - 7.18, 3 + 7.18] inside [min, max] = [-7, 13]
    pa = aciq_params(w + 3, 4, symmetric=False, granularity="tensor")
    assert pa.lo == pytest.approx(3 - alpha, rel=1e-6) and pa.hi == pytest.approx(3 + alpha, rel=1e-6)
    assert pa.scale == pytest.approx(2 * alpha / 15, rel=1e-6) and pa.zero_point == round((alpha - 3) / pa.scale)
    # ... and the observed minimum wins where it is inside: lo = max(4, mu - alpha) > 0, widened to 0
    pb = aciq_params(np.abs(w) + 3, 4, symmetric=False, granularity="tensor", distribution="gauss")
    assert pb.lo == 0.0 and pb.zero_point == 0


@pytest.fixture(scope="module")
def bert_weight():
    if not WEIGHT.exists():
        pytest.skip(f"missing {WEIGHT}")
    from safetensors.numpy import load_file
    return load_file(str(WEIGHT))[TENSOR].astype(np.float32).T       # [N, K] -> [K, N]


def _err(w, p):
    return mse(w, dequantize(quantize(w, p), p))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_aciq_beats_lq_on_bert(bert_weight, bits):
    w = bert_weight
    assert w.shape == (384, 1536)
    lq, aciq = _err(w, lq_params(w, bits)), _err(w, aciq_params(w, bits))
    gauss = _err(w, aciq_params(w, bits, distribution="gauss"))
    print(f"\n{bits}-bit per-channel MSE: LQ {lq:.4e}  ACIQ-laplace {aciq:.4e}  ACIQ-gauss {gauss:.4e}")
    assert aciq < lq and gauss < lq


def test_group_beats_channel_on_bert(bert_weight):
    w = bert_weight
    ch, gr = _err(w, lq_params(w, 4)), _err(w, lq_params(w, 4, granularity="group", group_size=32))
    print(f"\n4-bit LQ MSE: channel {ch:.4e}  group32 {gr:.4e}")
    assert gr < ch
