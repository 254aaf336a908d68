"""A built-in synthetic length distribution, used when no trace is given.

Log-normal prompt and output lengths fitted to the published summary of the Azure LLM
conversation trace (2023): prompts median ~1,020 and mean ~1,155 tokens, outputs median
~129 and mean ~211 tokens. Clipped to [1, 8192] (prompt) and [1, 2048] (output).
"""

from __future__ import annotations

import numpy as np

from slidingserve.workload.trace import Trace

PROMPT_MEDIAN, PROMPT_MEAN, PROMPT_MAX = 1020.0, 1155.0, 8192
OUTPUT_MEDIAN, OUTPUT_MEAN, OUTPUT_MAX = 129.0, 211.0, 2048


def _lognormal(median: float, mean: float, size: int, rng: np.random.Generator) -> np.ndarray:
    mu = np.log(median)
    sigma = np.sqrt(2.0 * np.log(mean / median))  # mean = median * exp(sigma^2 / 2)
    return rng.lognormal(mu, sigma, size=size)


def synthetic_lengths(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (prompt_len, output_len) pairs as int64 arrays."""
    prompt = np.clip(np.rint(_lognormal(PROMPT_MEDIAN, PROMPT_MEAN, n, rng)), 1, PROMPT_MAX)
    output = np.clip(np.rint(_lognormal(OUTPUT_MEDIAN, OUTPUT_MEAN, n, rng)), 1, OUTPUT_MAX)
    return prompt.astype(np.int64), output.astype(np.int64)


def workload_lengths(trace: Trace | None, n: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_len, output_len) of a workload: the trace's, or ``n`` synthetic pairs (seed 0)
    when there is no trace. What the capacity harness's estimates read lengths from."""
    if trace is not None:
        return trace.prompt_len, trace.output_len
    return synthetic_lengths(n, np.random.default_rng(0))
