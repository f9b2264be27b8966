"""ACIQ (Banner et al., 2019): expected MSE of clipping + uniform quantization, and the optimal clip.

Both MSEs are in absolute units; `optimal_alpha` works in units of b (Laplace) or sigma (Gaussian).
Derived here (brentq on the derivative, not copied from a table), bits 2..8:

    laplace alpha/b:     2.8307 3.8972 5.0286 6.2048 7.4131 8.6456 9.8968
    gauss   alpha/sigma: 1.7106 2.1516 2.5591 2.9362 3.2869 3.6151 3.9240

These agree with Banner's published table (2.83 ... 9.89, 1.71 ... 3.92) to within 0.01.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.special import erfc

DISTRIBUTIONS = ("laplace", "gauss")
_SQRT2 = math.sqrt(2.0)


def _noise(alpha, bits):
    # Banner's term: 2*alpha split into 2^bits bins of width D, noise D^2/12 = alpha^2 / (3 * 4^bits).
    return alpha * alpha / (3.0 * 4.0 ** bits)


def laplace_mse(alpha, b, bits) -> float:
    """MSE for X ~ Laplace(mu, b) clipped to mu +- alpha: 2 b^2 exp(-alpha/b) + alpha^2 / (3 * 4^bits)."""
    return float(2.0 * b * b * np.exp(-alpha / b) + _noise(alpha, bits))


def gauss_mse(alpha, sigma, bits) -> float:
    """MSE for X ~ N(mu, sigma^2) clipped to mu +- alpha, plus the same noise term alpha^2 / (3 * 4^bits).

    Clipping term (exact, both tails), with z = alpha/sigma, phi/Q the standard normal pdf/upper tail:
        2 * int_alpha^inf (x - alpha)^2 pdf(x) dx = 2 sigma^2 [(1 + z^2) Q(z) - z phi(z)]
        = (alpha^2 + sigma^2) erfc(alpha / (sqrt2 sigma)) - sqrt(2/pi) alpha sigma exp(-alpha^2 / (2 sigma^2)).
    (Expand (x-alpha)^2 and use int_z^inf t phi = phi(z), int_z^inf t^2 phi = z phi(z) + Q(z).)
    """
    z = alpha / sigma
    clip = (alpha * alpha + sigma * sigma) * erfc(z / _SQRT2) \
        - math.sqrt(2.0 / math.pi) * alpha * sigma * np.exp(-0.5 * z * z)
    return float(clip + _noise(alpha, bits))


@lru_cache(maxsize=None)
def optimal_alpha(bits: int, distribution: str = "laplace") -> float:
    """argmin over alpha of laplace_mse(alpha, 1, bits) or gauss_mse(alpha, 1, bits).

    Both MSEs are strictly convex in alpha (second derivatives 2 e^-a + k and 4 Q(a) + k, k > 0),
    so the minimum is the unique root of the derivative, which is negative at 0 and positive at 64.
    Laplace has a closed form too: alpha e^alpha = 3 * 4^bits, i.e. alpha = W0(3 * 4^bits).
    """
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 1..16, got {bits!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    k = 2.0 / (3.0 * 4.0 ** bits)  # derivative of the noise term is k * alpha
    if distribution == "laplace":
        def grad(a):
            return -2.0 * math.exp(-a) + k * a
    else:
        def grad(a):  # d/da of the clipping term is 4 (a Q(a) - phi(a))
            q = 0.5 * erfc(a / _SQRT2)
            phi = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
            return 4.0 * (a * q - phi) + k * a
    return float(brentq(grad, 0.0, 64.0, xtol=1e-12, rtol=1e-14))
