"""Timing models: how long a simulated step takes, apart from the model the policy plans with.

The policy plans with its latency model; the simulator's clock asks a ``TimingModel``, built
once per replica from ``SimConfig.timing`` (``TimingConfig``) by ``make_timing``:

* ``oracle`` (``OracleTiming``): the planning model's prediction itself. The default, and the
  simulator before timing models existed, bit for bit: prediction error never hurts, so a
  safety margin is pure loss.
* ``noise`` (``NoiseTiming``): that prediction times exp(sigma z), z standard normal, drawn
  independently per step: lognormal noise with median 1 (the planning model stands for the
  median step, as the engine's online correction, a median ratio, sets it), mean
  exp(sigma^2 / 2). ``fit_noise`` fits sigma to measured repeats of one step shape. With
  ``noise_rho`` > 0, z follows a stationary AR(1) process instead (``AR1Draws``:
  z_j = rho z_(j-1) + sqrt(1 - rho^2) e_j, e_j the same independent draws): every z is still
  standard normal, but slow steps come in runs, as on a machine whose other tenants' load
  comes and goes, which costs a queue more than the same variance spread evenly.
* ``replay`` (``ReplayTiming``): measured step times looked up by shape in a step trace
  (``ReplayTable``). A shape measured in the trace takes one of its measured times (picked
  uniformly by the seeded draw); any other shape takes the measured/predicted ratio of its
  nearest measured shape (Euclidean distance between log(1 + feature) vectors, ties to the
  shape measured first) times its own prediction.

Every kind's execution time is multiplied by ``TimingConfig.scale`` (1 unless a run measured
its machine slower or faster than the planning model; ``prefill_scale`` for steps that run
prefill tokens, when set), and every kind adds the policy's planning
time to each step (``TimingConfig.plan_time_s``): the policy plans while the engine waits, so a
step ends plan + execution after it starts.

Reproducible by seed, whatever the wall clock: the draw of a replica's j-th step is element
j mod 4096 of ``default_rng([seed, replica, j // 4096])``. A step's draw is therefore a pure
function of (seed, replica, step number), and fast-forward (which times many steps at once)
draws exactly what stepping one by one draws, so its records stay bit-identical. (With AR(1)
noise, block b continues from the last z of block b - 1, so a draw is still a pure function of
the same three numbers.)

Fitting the noise (``fit_noise``). The CPU step profile (``predictor/data/cpu_tiny/steps.csv``)
measures every step shape several times (column ``repeat``; runs of the profiler in ``run``).
sigma is the pooled within-shape standard deviation of log(step time): the sum over shapes of
squared deviations from the shape's mean log time, over (rows - shapes), using shapes measured
at least twice (the lognormal's maximum-likelihood sigma with one median per shape). The
default fit reads run 5, the profile measured on the least loaded machine (load average ~2;
runs 1 and 3 ran at 5-29 and their repeats hold other tenants' contention); see
docs/simulator.md for the figures.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from slidingserve.latency import LatencyModel
from slidingserve.latency.features import F_DECODE_REQS, F_PREFILL_REQS, F_PREFILL_TOKENS
from slidingserve.sim.config import TimingConfig

DEFAULT_NOISE_PROFILE = Path(__file__).resolve().parents[2] / "predictor/data/cpu_tiny/steps.csv"
DEFAULT_NOISE_RUNS: tuple[int, ...] = (5,)  # the profile run on the quietest machine
BLOCK = 4096  # draws per block of a replica's stream


# -- fitting --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseFit:
    """Lognormal step-time noise fitted to repeats of identical step shapes."""

    sigma: float  # pooled within-shape std of log(step time)
    robust_sigma: float  # 1.4826 x median |log(t / shape median)|: the body, without the tails
    mean_ratio: float  # mean of t / (its shape's median): the measured tails' weight
    rows: int  # measurements used (shapes measured at least twice)
    shapes: int
    source: str


def fit_noise_rows(X: np.ndarray, latency_s: np.ndarray, source: str = "<rows>") -> NoiseFit:
    """Fit sigma (module docstring) to step rows: features ``X`` (n, F), measured ``latency_s``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.log(np.asarray(latency_s, dtype=np.float64))
    if len(y) == 0:
        raise ValueError(f"{source}: no step rows to fit noise to")
    _, inverse, counts = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    keep = counts[inverse] >= 2
    if not keep.any():
        raise ValueError(f"{source}: no step shape is measured twice; cannot fit noise")
    groups, y = inverse[keep], y[keep]
    n_groups = len(np.unique(groups))
    means = np.bincount(groups, weights=y, minlength=len(counts)) / np.maximum(counts, 1)
    dev = y - means[groups]
    sigma = math.sqrt(float((dev * dev).sum()) / (len(y) - n_groups))
    medians = np.zeros(len(counts))
    for g in np.unique(groups):
        medians[g] = np.median(y[groups == g])
    res = y - medians[groups]
    return NoiseFit(
        sigma=sigma,
        robust_sigma=1.4826 * float(np.median(np.abs(res))),
        mean_ratio=float(np.exp(res).mean()),
        rows=len(y),
        shapes=n_groups,
        source=source,
    )


def fit_noise(
    path: Path = DEFAULT_NOISE_PROFILE, runs: Sequence[int] | None = DEFAULT_NOISE_RUNS
) -> NoiseFit:
    """Fit sigma to the repeats in a step trace (a profile; ``runs``: only rows of those values
    of its ``run`` column; None: every row)."""
    from predictor.steptrace import read_steptrace  # the predictor package is optional here

    trace = read_steptrace(path)
    keep = np.ones(len(trace), dtype=bool)
    source = str(path)
    if runs is not None:
        if "run" not in trace.extra:
            raise ValueError(f"{path}: no 'run' column to select runs {list(runs)} from")
        keep = np.isin(np.asarray(trace.extra["run"], dtype=np.int64), list(runs))
        source += f" (run {', '.join(map(str, runs))})"
    return fit_noise_rows(trace.X[keep], trace.latency_s[keep], source)


@functools.lru_cache(maxsize=1)
def fitted_noise_sigma() -> float:
    """sigma fitted to the default profile (``fit_noise()``), read once per process."""
    return fit_noise().sigma


def resolve_timing(config: TimingConfig) -> TimingConfig:
    """``config`` with every default filled in (the fitted sigma), as a run records it."""
    if config.kind == "noise" and config.noise_sigma is None:
        return config.model_copy(update={"noise_sigma": round(fitted_noise_sigma(), 4)})
    return config


# -- replay table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayTable:
    """Measured step times by shape: distinct feature rows and each one's measured times."""

    X: np.ndarray  # (shapes, F), in order of first appearance in the trace
    times: tuple[np.ndarray, ...]  # measured step times per shape, in trace order
    source: str

    @classmethod
    def from_rows(cls, X: np.ndarray, latency_s: np.ndarray, source: str = "<rows>"
                  ) -> ReplayTable:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(latency_s, dtype=np.float64)
        if len(y) == 0:
            raise ValueError(f"{source}: no measured steps to replay")
        _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(first, kind="stable")  # unique rows -> order of first appearance
        return cls(
            X=X[first[order]],
            times=tuple(y[inverse == g] for g in order),
            source=source,
        )

    def index(self) -> dict[tuple[float, ...], int]:
        return {tuple(row): i for i, row in enumerate(self.X.tolist())}


@functools.lru_cache(maxsize=4)
def load_replay_table(path: Path) -> ReplayTable:
    """A step trace's measured times by shape; read once per process."""
    from predictor.steptrace import read_steptrace

    trace = read_steptrace(path)
    return ReplayTable.from_rows(trace.X, trace.latency_s, str(path))


# -- timing models --------------------------------------------------------------------------------
SPELL_STREAM = 7_919  # the slow spells' random stream, apart from the step draws' blocks


class SlowSpells:
    """Spells of a slower machine on one replica: they start as a Poisson process of
    ``rate_hz`` per second of simulated time, last an exponential time of mean ``duration_s``,
    and multiply every step's execution time by ``factor`` while they last (a step takes the
    factor of the moment its execution starts). A pure function of (seed, replica, time):
    every policy run on the same seed meets the same spells at the same times."""

    def __init__(self, rate_hz: float, duration_s: float, factor: float, seed: int,
                 replica: int):
        self.rate_hz, self.duration_s, self.factor = rate_hz, duration_s, factor
        self._rng = np.random.default_rng([seed, replica, SPELL_STREAM])
        self.spans: list[tuple[float, float]] = []  # (start, end) of each spell, in order
        self._horizon = 0.0  # spells are drawn up to here
        self._next = 0  # first span not yet over (queries come in time order)

    def factor_at(self, t: float) -> float:
        while self._horizon <= t:  # draw spells until one ends after t
            start = self._horizon + float(self._rng.exponential(1.0 / self.rate_hz))
            end = start + float(self._rng.exponential(self.duration_s))
            self.spans.append((start, end))
            self._horizon = end
        if self._next and t < self.spans[self._next - 1][1]:
            self._next = 0  # a query earlier than the last one (a new replica clock)
        while self.spans[self._next][1] <= t:
            self._next += 1
        return self.factor if self.spans[self._next][0] <= t else 1.0


class StepDraws:
    """Random numbers indexed by a replica's step number (module docstring): block b is
    ``transform(default_rng([seed, replica, b]))``, BLOCK values."""

    def __init__(self, seed: int, replica: int,
                 transform: Callable[[np.random.Generator], np.ndarray]):
        self._key = (seed, replica)
        self._transform = transform
        self._block = -1
        self._array = np.zeros(0)
        self._list: list[float] = []

    def _load(self, block: int) -> None:
        self._array = self._transform(np.random.default_rng([*self._key, block]))
        self._list = self._array.tolist()
        self._block = block

    def at(self, step: int) -> float:
        block, i = divmod(step, BLOCK)
        if block != self._block:
            self._load(block)
        return self._list[i]

    def span(self, first: int, n: int) -> np.ndarray:
        """Draws of steps first .. first + n - 1."""
        parts = [np.zeros(0)]
        step, end = first, first + n
        while step < end:
            block, i = divmod(step, BLOCK)
            if block != self._block:
                self._load(block)
            take = min(BLOCK - i, end - step)
            parts.append(self._array[i : i + take])
            step += take
        return parts[1] if len(parts) == 2 else np.concatenate(parts)


class AR1Draws(StepDraws):
    """exp(sigma z) with z a stationary AR(1) process of lag-1 correlation ``rho`` over a
    replica's steps (module docstring); block b's innovations are ``StepDraws``' block b."""

    def __init__(self, seed: int, replica: int, sigma: float, rho: float):
        super().__init__(seed, replica, lambda g: g.standard_normal(BLOCK))
        self.sigma, self.rho = sigma, rho
        self._last_z: dict[int, float] = {}  # block -> its last z (the next block starts there)

    def _z(self, block: int) -> np.ndarray:
        if block > 0 and block - 1 not in self._last_z:
            self._z(block - 1)
        e = self._transform(np.random.default_rng([*self._key, block]))
        rho, c = self.rho, math.sqrt(1.0 - self.rho * self.rho)
        z = np.empty(BLOCK)
        z[0] = e[0] if block == 0 else rho * self._last_z[block - 1] + c * e[0]
        for j in range(1, BLOCK):  # 4096 multiply-adds per block
            z[j] = rho * z[j - 1] + c * e[j]
        self._last_z[block] = float(z[-1])
        return z

    def _load(self, block: int) -> None:
        self._array = np.exp(self.sigma * self._z(block))
        self._list = self._array.tolist()
        self._block = block


class TimingModel(ABC):
    """A replica's clock: the duration of its step number ``step`` (0-based) with features
    ``x``, planning time included. ``step_times`` times consecutive steps at once and must
    return, row by row, exactly what ``step_time`` would (fast-forward relies on it)."""

    kind: ClassVar[str]

    def __init__(self, latency: LatencyModel, plan_s: float = 0.0):
        self.latency = latency  # the policy's planning model
        self.plan_s = plan_s
        self.scale = self.prefill_scale = 1.0  # execution time x these (``configure``)
        self._held: list[int] = []  # planning time by requests held (``plan_s_by_held``)
        self._plan: list[float] = []
        self.spells: SlowSpells | None = None  # slow spells by simulated time

    def configure(self, config: TimingConfig, replica: int = 0) -> TimingModel:
        """Takes ``config``'s scales, planning-time table and slow spells (every kind's
        ``from_config`` ends with it)."""
        self.spells = SlowSpells(config.spell_rate_hz, config.spell_s, config.spell_x,
                                 config.seed, replica) if config.spell_rate_hz > 0 else None
        self.scale = config.scale
        self.prefill_scale = config.scale if config.prefill_scale is None else \
            config.prefill_scale
        self._held = [n for n, _ in config.plan_s_by_held]
        self._plan = [sec for _, sec in config.plan_s_by_held]
        return self

    def plan_time(self, held: float) -> float:
        """Planning time of a step planned with ``held`` requests on the replica."""
        if not self._held:
            return self.plan_s
        return self._plan[bisect_right(self._held, held) - 1]

    @classmethod
    def from_config(cls, config: TimingConfig, latency: LatencyModel, replica: int,
                    plan_s: float) -> TimingModel:
        return cls(latency, plan_s).configure(config, replica)

    def _scale_of(self, x: np.ndarray) -> float:
        return self.prefill_scale if x[F_PREFILL_TOKENS] > 0 else self.scale

    def step_time(self, x: np.ndarray, step: int, held: int | None = None,
                  now: float | None = None) -> float:
        """``held``: the requests the replica held when it planned the step (default: those
        the step runs, as in a decode-only run with nothing waiting); ``now``: when the step
        starts (it matters with slow spells only)."""
        if self._held:
            plan = self.plan_time(x[F_DECODE_REQS] + x[F_PREFILL_REQS] if held is None else held)
        else:
            plan = self.plan_s
        scale = self._scale_of(x)
        if self.spells is not None:
            if now is None:
                raise ValueError("timing with slow spells needs each step's start time")
            scale *= self.spells.factor_at(now + plan)
        return self.run_time(x, step) * scale + plan

    def step_times(self, X: np.ndarray, first_step: int) -> list[float]:
        """Consecutive decode-only steps with nothing waiting (fast-forward): each step's
        planner held the requests it runs."""
        if self.spells is not None:
            raise ValueError("timing with slow spells times steps one by one (no fast-forward)")
        times = self.run_times(X, first_step)
        if self._held:
            plans = [self.plan_time(n) for n in (X[:, F_DECODE_REQS] + X[:, F_PREFILL_REQS])]
        else:
            plans = [self.plan_s] * len(times)
        if self.scale != 1.0 or self.prefill_scale != 1.0:
            k = np.where(X[:, F_PREFILL_TOKENS] > 0, self.prefill_scale, self.scale).tolist()
            return [t * s + p for t, s, p in zip(times, k, plans, strict=True)]
        if not self._held and not self.plan_s:
            return times
        return [t + p for t, p in zip(times, plans, strict=True)]

    @abstractmethod
    def run_time(self, x: np.ndarray, step: int) -> float:
        """Execution time of one step (features ``x``, shape (F,))."""

    @abstractmethod
    def run_times(self, X: np.ndarray, first_step: int) -> list[float]:
        """Execution times of steps first_step, first_step + 1, ... (rows of ``X``)."""


class OracleTiming(TimingModel):
    """The planning model's prediction (the simulator's clock before timing models)."""

    kind = "oracle"

    def run_time(self, x: np.ndarray, step: int) -> float:
        return float(self.latency.predict_features(x[None, :])[0])

    def run_times(self, X: np.ndarray, first_step: int) -> list[float]:
        return self.latency.predict_features(X).tolist()


class NoiseTiming(TimingModel):
    """The planning model's prediction times exp(sigma z), z standard normal per step."""

    kind = "noise"

    def __init__(self, latency: LatencyModel, plan_s: float, sigma: float, seed: int,
                 replica: int, rho: float = 0.0):
        super().__init__(latency, plan_s)
        self.sigma = sigma
        self.draws = (
            AR1Draws(seed, replica, sigma, rho) if rho > 0 else
            StepDraws(seed, replica, lambda g: np.exp(sigma * g.standard_normal(BLOCK)))
        )

    @classmethod
    def from_config(cls, config: TimingConfig, latency: LatencyModel, replica: int,
                    plan_s: float) -> TimingModel:
        sigma = resolve_timing(config).noise_sigma
        assert sigma is not None
        return cls(latency, plan_s, sigma, config.seed, replica,
                   config.noise_rho).configure(config, replica)

    def run_time(self, x: np.ndarray, step: int) -> float:
        return float(self.latency.predict_features(x[None, :])[0]) * self.draws.at(step)

    def run_times(self, X: np.ndarray, first_step: int) -> list[float]:
        factors = self.draws.span(first_step, len(X))
        return (self.latency.predict_features(X) * factors).tolist()


class ReplayTiming(TimingModel):
    """Measured step times by shape (module docstring: exact shapes, nearest neighbours)."""

    kind = "replay"

    def __init__(self, latency: LatencyModel, plan_s: float, table: ReplayTable, seed: int,
                 replica: int):
        super().__init__(latency, plan_s)
        self.table = table
        self._exact = table.index()
        self._log_x = np.log1p(table.X)
        self._predicted: np.ndarray | None = None  # planning model on the table's shapes
        self._nearest: dict[tuple[float, ...], int] = {}
        self.draws = StepDraws(seed, replica, lambda g: g.random(BLOCK))

    @classmethod
    def from_config(cls, config: TimingConfig, latency: LatencyModel, replica: int,
                    plan_s: float) -> TimingModel:
        assert config.replay is not None
        return cls(latency, plan_s, load_replay_table(config.replay), config.seed,
                   replica).configure(config, replica)

    def nearest(self, x: np.ndarray) -> int:
        """Row of the table's shape nearest to ``x`` in log(1 + feature) space."""
        key = tuple(x.tolist())
        i = self._exact.get(key)
        return i if i is not None else self._nearest_of(key, x)

    def _nearest_of(self, key: tuple[float, ...], x: np.ndarray) -> int:
        i = self._nearest.get(key)
        if i is None:
            d = ((self._log_x - np.log1p(x)) ** 2).sum(axis=1)
            i = self._nearest[key] = int(np.argmin(d))  # argmin: the first of equals
        return i

    def _time(self, x: np.ndarray, u: float, predicted: float | None) -> float:
        key = tuple(x.tolist())
        i = self._exact.get(key)
        if i is not None:
            measured = self.table.times[i]
            return float(measured[int(u * len(measured))])
        i = self._nearest_of(key, x)
        measured = self.table.times[i]
        if self._predicted is None:
            self._predicted = self.latency.predict_features(self.table.X)
        if predicted is None:
            predicted = float(self.latency.predict_features(x[None, :])[0])
        return float(measured[int(u * len(measured))]) * (predicted / float(self._predicted[i]))

    def run_time(self, x: np.ndarray, step: int) -> float:
        return self._time(x, self.draws.at(step), None)

    def run_times(self, X: np.ndarray, first_step: int) -> list[float]:
        predicted = self.latency.predict_features(X).tolist()
        draws = self.draws.span(first_step, len(X)).tolist()
        return [self._time(x, u, p) for x, p, u in zip(X, predicted, draws, strict=True)]


TIMING_MODELS: dict[str, type[TimingModel]] = {
    c.kind: c for c in (OracleTiming, NoiseTiming, ReplayTiming)
}


def make_timing(config: TimingConfig, latency: LatencyModel, replica: int, policy: str
                ) -> TimingModel:
    """The clock of replica ``replica`` running the registered policy ``policy``."""
    return TIMING_MODELS[config.kind].from_config(
        config, latency, replica, config.plan_time_s(policy)
    )


# -- options (CLIs) -------------------------------------------------------------------------------
def parse_plan_times(text: str) -> tuple[float, dict[str, float]]:
    """``--plan-time-ms``: ``1.8`` (every policy) and/or ``POLICY=MS`` items, comma-separated,
    e.g. ``slidingserve=1.8,qoserve=2.1,0.1``. Returns (seconds for all, seconds by policy)."""
    default, by_policy = 0.0, {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"--plan-time-ms: {item!r} is not MS or POLICY=MS") from None
        if not (math.isfinite(ms) and ms >= 0):
            raise ValueError(f"--plan-time-ms: {item!r} must be >= 0 ms")
        if sep:
            by_policy[name.strip()] = ms / 1e3
        else:
            default = ms / 1e3
    return default, by_policy


def parse_spells(text: str) -> tuple[float, float, float]:
    """``--spells``: ``RATE,SECONDS,X`` (spells per second, their mean length, the factor on
    execution time; ``TimingConfig``'s spell fields; ValueError names the value)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        rate, seconds, factor = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--spells: {text!r} is not RATE,SECONDS,X (e.g. 0.05,0.5,2.5)") from None
    return rate, seconds, factor


def timing_from_options(kind: str = "oracle", seed: int = 0, noise_sigma: float | None = None,
                        replay: Path | None = None, plan_time_ms: str | None = None,
                        spells: str | None = None, planner_correction: float = 0.0
                        ) -> TimingConfig:
    """The resolved ``TimingConfig`` of the CLIs' ``--timing`` options (ValueError names the
    option and value)."""
    from pydantic import ValidationError

    from slidingserve.policy import policy_names

    if kind == "replay" and replay is None:
        raise ValueError("--timing replay needs --replay PATH (a step trace of measured steps)")
    if kind != "replay" and replay is not None:
        raise ValueError(f"--replay is given but --timing is {kind!r} (use --timing replay)")
    if kind != "noise" and noise_sigma is not None:
        raise ValueError(f"--noise-sigma is given but --timing is {kind!r} (use --timing noise)")
    plan_s, by_policy = parse_plan_times(plan_time_ms) if plan_time_ms else (0.0, {})
    rate, spell_s, spell_x = parse_spells(spells) if spells else (0.0, 0.5, 2.5)
    unknown = sorted(set(by_policy) - set(policy_names()))
    if unknown:
        raise ValueError(f"--plan-time-ms: unknown policy {unknown[0]!r} (known: "
                         f"{', '.join(policy_names())})")
    try:
        config = TimingConfig(kind=kind, seed=seed, noise_sigma=noise_sigma,  # type: ignore[arg-type]
                              replay=replay, plan_s=plan_s, plan_s_by_policy=by_policy,
                              planner_correction=planner_correction, spell_rate_hz=rate,
                              spell_s=spell_s, spell_x=spell_x)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "timing"
        raise ValueError(f"timing {where}: {err['msg']} (got {err.get('input')!r})") from None
    if replay is not None and not replay.exists():
        raise ValueError(f"--replay: step trace {str(replay)!r} does not exist")
    return resolve_timing(config)
