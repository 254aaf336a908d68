"""Fleets: the latency model each replica runs with.

``homogeneous``: every replica shares the base model. ``heterogeneous``: half the replicas
(the odd indices, ``N // 2`` of them) run ``SimConfig.slow_factor`` times slower, like an older
GPU generation beside a newer one: each slow replica gets ``ScaledLatency(base, slow_factor)``
(one object shared by the slow replicas), which its policy plans with and its steps are timed
with. Routers read each replica's own model (``Replica.latency``).
"""

from __future__ import annotations

from slidingserve.latency import LatencyModel, ScaledLatency
from slidingserve.sim.config import SimConfig


def is_slow(config: SimConfig, index: int) -> bool:
    return config.fleet == "heterogeneous" and index % 2 == 1


def fleet_latencies(config: SimConfig, base: LatencyModel) -> list[LatencyModel]:
    """Replica i's latency model, for i in range(config.replicas)."""
    slow = ScaledLatency(base, config.slow_factor) if config.fleet == "heterogeneous" else base
    return [slow if is_slow(config, i) else base for i in range(config.replicas)]


def fleet_sim(sim: SimConfig, router: str, replicas: int) -> SimConfig:
    """``sim`` with ``router`` and ``replicas`` (no failure on a single replica), validated."""
    fields = {**sim.model_dump(), "router": router, "replicas": replicas}
    if replicas < 2:
        fields.update(fail_replica_at_s=None, fail_replica=0)
    elif fields["fail_replica"] >= replicas:
        fields["fail_replica"] = 0
    return SimConfig.model_validate(fields)


def fleet_speed(sim: SimConfig, replicas: int | None = None) -> float:
    """The fleet's speed in replicas of the base latency model: fast + slow / slow_factor
    (``replicas``: of this many replicas instead of ``sim.replicas``)."""
    n = sim.replicas if replicas is None else replicas
    cfg = fleet_sim(sim, sim.router, n)
    slow = sum(is_slow(cfg, i) for i in range(n))
    return (n - slow) + slow / sim.slow_factor
