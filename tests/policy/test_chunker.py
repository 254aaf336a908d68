"""SlidingChunker: deadlines respected when they can be met; next-step slack used."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidingserve.latency import RooflineModel
from slidingserve.latency.features import (
    F_PREFILL_TOKENS,
    decode_features,
    with_prefill_chunks,
)
from slidingserve.policy.chunker import ChunkerConfig, SlidingChunker

LAT = RooflineModel()


def step_time(ctx: list[int], chunk: int, done: float = 0.0) -> float:
    x = with_prefill_chunks(decode_features(ctx), np.array([float(chunk)]), np.array(done))
    return float(LAT.predict_features(x)[0])


@settings(max_examples=150, deadline=None)
@given(
    n_dec=st.integers(1, 64),
    slack_ms=st.lists(st.floats(-50.0, 400.0), min_size=1, max_size=8),
    limit=st.integers(0, 9000),
    window=st.sampled_from([1, 2]),
    safety=st.sampled_from([1.0, 1.2]),
)
def test_chunk_never_exceeds_the_slack(n_dec, slack_ms, limit, window, safety) -> None:
    ch = SlidingChunker(ChunkerConfig(window=window, safety=safety, late_tolerance_s=0.0))
    ctx = [1000] * n_dec
    slack = np.resize(np.array(slack_ms) / 1e3, n_dec)
    tpot = np.full(n_dec, 0.05)
    c1, t1 = ch.plan(LAT, decode_features(ctx), 0.0, limit, slack, tpot,
                     np.array([500.0, 2000.0, 9000.0]), np.array([0.05, 0.4, 0.4]))
    assert 0 <= c1 <= limit
    assert abs(t1 - step_time(ctx, c1)) < 1e-12
    on_pace = slack[slack >= 0.0]  # late_tolerance_s=0: decodes already late do not bound
    if on_pace.size == 0:
        return
    meetable = step_time(ctx, 0) * safety <= on_pace.min()
    if meetable:
        assert t1 * safety <= on_pace.min() + 1e-12  # the deadline invariant
        # and nothing bigger than the greedy chunk is ever taken
        greedy, _ = SlidingChunker(ChunkerConfig(window=1, safety=safety,
                                                 late_tolerance_s=0.0)).plan(
            LAT, decode_features(ctx), 0.0, limit, slack, tpot, np.array([]), np.array([]))
        assert c1 <= greedy
    else:
        assert c1 == 0  # decode-only step: the fastest way back on pace


def test_greedy_fills_the_slack_to_the_grid() -> None:
    ch = SlidingChunker(ChunkerConfig(window=1, granularity=1))
    ctx = [1500] * 100
    c1, t1 = ch.plan(LAT, decode_features(ctx), 0.0, 8192, np.array([0.05]), np.array([0.05]),
                     np.array([]), np.array([]))
    assert t1 <= 0.05 < step_time(ctx, c1 + 1)


def test_no_decodes_means_no_slack_bound() -> None:
    ch = SlidingChunker(ChunkerConfig(max_chunk=4096))
    c1, _ = ch.plan(LAT, decode_features([]), 0.0, 10_000, np.array([]), np.array([]),
                    np.array([10_000.0]), np.array([0.05]))
    assert c1 == 4096


def test_uses_next_step_slack() -> None:
    """Batch decodes have 100 ms of slack and 0.4 s TPOT; an interactive prompt of 1000 tokens
    heads the queue. Greedy fills step 1 (finishing the prompt, so step 2 is held to the new
    decode's 50 ms TPOT); the sliding chunker stops short of finishing it in step 1 and gets
    more prefill through the two steps together, without exceeding step 1's slack."""
    ctx = [1200] * 50
    slack, tpot = np.full(50, 0.10), np.full(50, 0.4)
    queue_tokens, queue_tpot = np.array([1000.0, 20_000.0]), np.array([0.05, 0.4])
    args = (LAT, decode_features(ctx), 0.0, 21_000, slack, tpot, queue_tokens, queue_tpot)
    greedy = SlidingChunker(ChunkerConfig(window=1)).plan(*args)[0]
    sliding = SlidingChunker(ChunkerConfig(window=2)).plan(*args)[0]

    def two_steps(c1: int) -> int:
        t1 = step_time(ctx, c1)
        s2 = min(0.10 + 0.4 - t1, 0.05 if c1 >= 1000 else np.inf)
        grid = np.arange(0, 8193, 16)
        times = np.array([step_time(ctx, int(c)) for c in grid])
        return c1 + int(grid[times <= s2].max())

    assert greedy >= 1000 > sliding
    assert step_time(ctx, sliding) <= 0.10
    assert two_steps(sliding) > two_steps(greedy)


@settings(max_examples=80, deadline=None)
@given(
    slack_ms=st.floats(-50.0, 400.0),
    limit=st.integers(0, 3000),
    floor=st.sampled_from([0, 64, 128, 512]),  # on the 16-token grid
)
def test_progress_floor(slack_ms: float, limit: int, floor: int) -> None:
    """With ``min_chunk``, the chunk is the floor (capped by what can run) whenever the slack
    rule would choose less, and the slack rule's choice otherwise."""
    ctx = [1000] * 16
    args = (LAT, decode_features(ctx), 0.0, limit, np.array([slack_ms / 1e3]), np.array([0.05]),
            np.array([3000.0]), np.array([0.4]))
    free, _ = SlidingChunker(ChunkerConfig(late_tolerance_s=0.0)).plan(*args)
    c1, t1 = SlidingChunker(ChunkerConfig(late_tolerance_s=0.0, min_chunk=floor)).plan(*args)
    assert c1 == max(free, min(floor, limit))
    assert abs(t1 - step_time(ctx, c1)) < 1e-12


def rule_by_enumeration(ch: SlidingChunker, grid, t, slack, tpot, queue_tokens, queue_tpot) -> int:
    """The module docstring's rule, every candidate pair enumerated in plain Python: the index
    in ``grid`` of the chosen first chunk."""
    cfg = ch.config
    bound = [(s, p) for s, p in zip(slack, tpot, strict=True) if s >= -cfg.late_tolerance_s]
    if not bound:
        return len(grid) - 1
    s1 = min(s for s, _ in bound)
    fitting = [i for i in range(len(grid)) if t[i] * cfg.safety <= s1
               and not any(t[j] < t[i] for j in range(i + 1, len(grid)))]  # not dominated
    if not fitting:
        return 0
    if cfg.window == 1:
        return fitting[-1]
    best, best_total = 0, -1.0
    for i in fitting:
        s2 = min(s + p for s, p in bound) - t[i]
        finished = [q for q, c in zip(queue_tpot, np.cumsum(queue_tokens), strict=True)
                    if c <= grid[i]]
        s2 = min([s2, *finished])
        c2 = max([0.0] + [grid[j] for j in range(len(grid)) if t[j] * cfg.safety <= s2])
        total = grid[i] + min(c2, grid[-1] - grid[i])
        if total >= best_total:  # ties: the larger c1
            best, best_total = i, total
    return best


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.floats(-0.01, 0.02), min_size=1, max_size=40),
    slack_ms=st.lists(st.floats(-150.0, 400.0), max_size=5),
    queue=st.lists(st.tuples(st.integers(1, 300), st.sampled_from([0.05, 0.1, 0.2])),
                   max_size=4),
    window=st.sampled_from([1, 2]),
    safety=st.sampled_from([1.0, 1.2]),
)
def test_choice_matches_the_rule_enumerated(steps, slack_ms, queue, window, safety) -> None:
    """Shortcuts included (no bounding decode; the whole grid fitting), ``_choose`` picks what
    enumerating every pair of the rule picks, on step times that need not grow with the chunk
    (``plan`` passes their suffix minimum and which chunks a larger one beats)."""
    ch = SlidingChunker(ChunkerConfig(window=window, safety=safety))
    grid = ch.grid(16 * len(steps) - 16 + 7)
    t = np.maximum(0.01 + np.cumsum(np.array([*steps, 0.0])[: len(grid)]), 0.001)
    slack = np.array(slack_ms) / 1e3
    tpot = np.full(len(slack), 0.05)
    q_tokens = np.array([float(n) for n, _ in queue])
    q_tpot = np.array([p for _, p in queue])
    u = np.minimum.accumulate(t[::-1])[::-1]
    got = ch._choose(grid, u, t > u, slack, tpot, q_tokens, q_tpot, safety)
    assert got == rule_by_enumeration(ch, grid, t, slack, tpot, q_tokens, q_tpot)


def test_lightgbm_grid_path_gives_the_same_predictions() -> None:
    """The chunker asks ``predict_prefill_chunks`` where a model has it: bit for bit the
    predictions of ``predict_features`` on the same candidate rows."""
    pytest.importorskip("lightgbm")
    from predictor.model import LightGBMLatencyModel

    model_dir = Path(__file__).resolve().parents[2] / "predictor/data/cpu_tiny/model"
    if not model_dir.is_dir():
        pytest.skip(f"no model at {model_dir}")
    model = LightGBMLatencyModel.load(model_dir)
    rng = np.random.default_rng(0)
    ch = SlidingChunker(ChunkerConfig())
    for _ in range(300):
        base = decode_features(rng.integers(1, 2000, int(rng.integers(0, 40))).tolist())
        grid = ch.grid(int(rng.integers(0, 600)))
        done = float(rng.integers(0, 2000))
        want = model.predict_features(with_prefill_chunks(base, grid, done))
        assert np.array_equal(model.predict_prefill_chunks(base, grid, done), want)


class Jagged:
    """Roofline, except that a 640-token chunk is predicted faster than 512 (a cheap tile)."""

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        t = LAT.predict_features(X).copy()
        t[np.isclose(X[:, F_PREFILL_TOKENS], 640.0)] *= 0.8
        return t


@pytest.mark.parametrize("window", [1, 2])
def test_a_larger_chunk_predicted_faster_is_taken(window: int) -> None:
    """A step whose slack fits 640 tokens' cheap point but not 512's takes 640, the largest
    chunk predicted to fit, and never a chunk that a larger one beats."""
    ctx = [1000] * 32
    base = decode_features(ctx)
    grid = np.arange(0.0, 1025.0, 16.0)
    t = Jagged().predict_features(with_prefill_chunks(base, grid, 0.0))
    at = {int(c): float(x) for c, x in zip(grid, t, strict=True)}
    assert at[640] < at[512]
    slack = np.full(32, (at[640] + at[512]) / 2)
    ch = SlidingChunker(ChunkerConfig(window=window))
    c1, t1 = ch.plan(Jagged(), base, 0.0, 1024, slack, np.full(32, 0.05),
                     np.array([5000.0]), np.array([0.4]))
    assert c1 == 640 and t1 == pytest.approx(at[640]) and t1 <= slack.min()
    assert all(at[c] >= at[640] for c in at if c > 640)  # nothing larger fits


def _first_token_s(tokens: float, chunk: float, step_s: float, safety: float) -> float:
    """When a request with ``tokens`` queued prefill tokens up to its own gets its first token,
    steps of ``chunk`` tokens taking ``step_s`` x ``safety`` each."""
    return math.inf if chunk <= 0 else math.ceil(tokens / chunk) * step_s * safety


@settings(max_examples=150, deadline=None)
@given(
    slack_ms=st.floats(-50.0, 200.0),
    limit=st.integers(0, 1000),  # (a grid of at most 64 chunks: the search looks at each)
    queue=st.lists(st.tuples(st.integers(1, 600), st.floats(0.0, 2.0), st.booleans()),
                   min_size=1, max_size=8),
    safety=st.sampled_from([1.0, 1.2]),
    recovery=st.sampled_from([None, 0.0, 0.5, 2.0]),
)
def test_ttft_floor_keeps_the_most_first_tokens_on_time(slack_ms, limit, queue, safety,
                                                        recovery) -> None:
    """With ``ttft_floor``, the chunk is the slack rule's choice, unless a larger chunk keeps
    more queued first tokens on time: then the smallest that keeps the most (requests with
    infinite slack do not count), among the chunks whose step overruns the decode's slack by
    at most what ``floor_recovery_steps`` decode-only steps win back at its TPOT."""
    ctx = [1000] * 16
    tpot = 0.05
    tokens = np.array([float(n) for n, _, _ in queue])
    left = np.array([s if counted else math.inf for _, s, counted in queue])
    args = (LAT, decode_features(ctx), 0.0, limit, np.array([slack_ms / 1e3]), np.array([tpot]),
            tokens, np.full(len(queue), 0.05))
    free, _ = SlidingChunker(ChunkerConfig(safety=safety, ttft_floor=False)).plan(*args)
    ch = SlidingChunker(ChunkerConfig(safety=safety, floor_recovery_steps=recovery))
    c1, t1 = ch.plan(*args, queue_slack=left)
    assert abs(t1 - step_time(ctx, c1)) < 1e-12
    cum = np.cumsum(tokens)
    cap = math.inf if recovery is None else \
        slack_ms / 1e3 + recovery * max(tpot - step_time(ctx, 0), 0.0)

    def on_time(c: int) -> int:
        return sum(_first_token_s(cum[k], c, step_time(ctx, c), safety) <= left[k]
                   for k in range(len(queue)))

    larger = [int(c) for c in ch.grid(limit)
              if c > free and step_time(ctx, int(c)) * safety <= cap]
    best = max([on_time(c) for c in larger], default=-1)
    if best <= on_time(free):
        assert c1 == free
    else:
        assert c1 == min(c for c in larger if on_time(c) == best)


def test_ttft_floor_overruns_a_decode_only_by_what_it_can_win_back() -> None:
    """A decode whose TPOT a decode-only step nearly fills (SLO x 0.25 on an H100: 12.5 ms
    against ~12.4 ms) cannot win back an overrun: the floor leaves its step within the slack.
    With a TPOT that leaves room (the CPU engine's), the floor still raises the chunk."""
    ctx = [1000] * 16
    t0 = step_time(ctx, 0)
    queue = np.array([1000.0])
    left = np.array([0.04])  # one step of 1,000 tokens (34 ms) keeps it; four of 288 do not
    for tpot, raised in [(t0 + 1e-4, False), (t0 + 0.05, True)]:
        slack = np.array([t0 + 0.002])
        args = (LAT, decode_features(ctx), 0.0, 4096, slack, np.array([tpot]), queue,
                np.array([0.05]))
        free, _ = SlidingChunker(ChunkerConfig(ttft_floor=False)).plan(*args)
        c, t = SlidingChunker(ChunkerConfig()).plan(*args, queue_slack=left)
        old, _ = SlidingChunker(ChunkerConfig(floor_recovery_steps=None)).plan(
            *args, queue_slack=left)
        assert old > free  # the floor without a bound raises the chunk in both cases
        assert (c > free) == raised
        if not raised:
            assert c == free and t <= slack[0] + 2 * 1e-4


@settings(max_examples=100, deadline=None)
@given(
    ceiling_ms=st.floats(5.0, 80.0),
    slack_ms=st.floats(0.0, 200.0),
    limit=st.integers(0, 9000),
    window=st.sampled_from([1, 2]),
)
def test_step_time_ceiling(ceiling_ms: float, slack_ms: float, limit: int, window: int) -> None:
    """``max_step_s`` bounds a step with decodes as a decode with that slack and TPOT would:
    the same chunk as planning with that decode added, within the ceiling whenever a
    decode-only step is; a step without decodes is not bounded."""
    cap = ceiling_ms / 1e3
    ctx = [1200] * 40
    queue, queue_tpot = np.array([700.0, 3000.0, 9000.0]), np.array([0.05, 0.4, 0.4])
    slack, tpot = np.full(40, slack_ms / 1e3), np.full(40, 0.05)
    capped = SlidingChunker(ChunkerConfig(window=window, max_step_s=cap))
    plain = SlidingChunker(ChunkerConfig(window=window))
    c, t = capped.plan(LAT, decode_features(ctx), 0.0, limit, slack, tpot, queue, queue_tpot)
    c_ref, _ = plain.plan(LAT, decode_features(ctx), 0.0, limit, np.append(slack, cap),
                          np.append(tpot, cap), queue, queue_tpot)
    assert c == c_ref
    if step_time(ctx, 0) <= min(cap, slack_ms / 1e3):
        assert t <= cap + 1e-12
    assert capped.forced(limit, np.array([])) == min(limit, capped.config.max_chunk)
