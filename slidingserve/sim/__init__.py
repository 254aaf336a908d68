"""Discrete-event simulator: replicas with KV caches, routers, the same policy objects."""

from slidingserve.sim.config import SimConfig, default_kv_blocks
from slidingserve.sim.monitor import ViolationMonitor
from slidingserve.sim.replica import PlanError
from slidingserve.sim.routers import make_router, router_names
from slidingserve.sim.simulator import ConservationError, SimResult, SimulationStalled, simulate

__all__ = [
    "ConservationError",
    "PlanError",
    "SimConfig",
    "SimResult",
    "SimulationStalled",
    "ViolationMonitor",
    "default_kv_blocks",
    "make_router",
    "router_names",
    "simulate",
]
