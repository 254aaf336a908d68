"""Arrival processes: Poisson and Gamma (burstiness) at a given rate, seeded."""

from __future__ import annotations

import numpy as np


def poisson_arrivals(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times (s, first at 0) of a Poisson process with ``rate`` requests/s."""
    return gamma_arrivals(rate, 1.0, n, rng)


def gamma_arrivals(rate: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times whose gaps are Gamma distributed with mean 1/rate and CV ``cv``.

    CV 1 is Poisson; CV > 1 is burstier, CV < 1 smoother. The first request arrives at 0.
    """
    if not rate > 0:
        raise ValueError(f"arrival rate must be > 0 requests/s (got {rate})")
    if not cv > 0:
        raise ValueError(f"burstiness cv must be > 0 (got {cv})")
    if n < 1:
        raise ValueError(f"number of requests must be >= 1 (got {n})")
    shape = 1.0 / (cv * cv)
    gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])
