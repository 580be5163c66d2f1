"""Fit the rational ``erf`` of ``zoo/kernels/vision.cpp``: ``erf(z) = z P(z^2) / Q(z^2)`` on ``[0, 4]``, ``P`` of
degree 6 and ``Q`` of degree 5 (``Q(0) = 1``), for the least maximum relative error.

A maintainer's tool of the zoo's checkout: it prints the coefficients as float32 (what ``ERF_P`` / ``ERF_Q`` hold)
and the fit's error in exact arithmetic. The fit is linearised least squares (the error ``P - f Q`` weighted by
``1 / (f Q)`` of the previous round, ``f = erf(z) / z``), with Lawson's reweighting toward the minimax solution, on
40000 Chebyshev points; its round with the least maximum error is kept. The kernel's own error (float32 coefficients,
Horner's fused multiply-adds) is measured over every float32 by ``tests/kernels/test_vision_kernels.py``::

    python tools/fit_erf.py
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

DEGREE_P, DEGREE_Q, Z_MAX, POINTS, ROUNDS = 6, 5, 4.0, 40000, 400


def fit() -> tuple[float, np.ndarray, np.ndarray]:
    """(maximum relative error, P's coefficients, Q's), lowest degree first."""
    z = 0.5 * Z_MAX * (1 - np.cos(np.linspace(0, np.pi, POINTS + 1)))[1:]
    s, f = z * z, erf(z) / z
    vp, vq = np.vander(s, DEGREE_P + 1, increasing=True), np.vander(s, DEGREE_Q + 1, increasing=True)
    weight, q, best = np.ones_like(s), np.ones_like(s), None
    for round_ in range(ROUNDS):
        scale = weight / (q * f)
        system = np.hstack([vp, -f[:, None] * vq[:, 1:]]) * scale[:, None]
        c, *_ = np.linalg.lstsq(system, f * scale, rcond=None)
        p, qc = c[: DEGREE_P + 1], np.concatenate([[1.0], c[DEGREE_P + 1 :]])
        q = vq @ qc
        err = np.abs((vp @ p) / q / f - 1)
        worst = err.max()
        if best is None or worst < best[0]:
            best = (worst, p, qc)
        if round_ > 5:  # Lawson: weight the points by their error
            weight = weight * (err + 1e-3 * worst)
            weight /= weight.max()
    return best


def main() -> None:
    worst, p, q = fit()
    print(f"maximum relative error in exact arithmetic: {worst:.3g}")
    for name, coef in (("ERF_P", p), ("ERF_Q", q)):
        print(f"{name} = {{{', '.join(repr(float(np.float32(c))) + 'f' for c in coef)}}}")


if __name__ == "__main__":
    main()
