"""The simulated planner's online correction (``TimingConfig.planner_correction``): the planner
scales its model by the moving average of log(step time / prediction), as the engine adapter
does, while the clock keeps timing steps with the model as given."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
from sim_factories import small_workload, tiers

from slidingserve.engine import EngineSchedulerConfig
from slidingserve.engine.bench_config import BenchConfig
from slidingserve.engine.latency_source import LiveLatencyModel
from slidingserve.latency import RooflineModel
from slidingserve.sim import SimConfig, simulate
from slidingserve.sim.config import TimingConfig


def _run(timing: TimingConfig, n: int = 80, latency=None, fast_forward: bool = True):
    cfg = SimConfig(record_token_times=True, timing=timing, fast_forward=fast_forward)
    return simulate(small_workload(n, rate=30.0), tiers(), "slidingserve", cfg, latency)


def _records(result):
    return [(r.key, r.first_token_s, r.last_token_s, r.token_times) for r in result.records]


def test_the_oracle_is_a_fixed_point_of_the_correction():
    plain = _run(TimingConfig())
    corrected = _run(TimingConfig(planner_correction=0.9))
    assert corrected.stats["planner_scale"] == [1.0]
    assert plain.stats["planner_scale"] == [None]
    # every step is seen one by one: no decode run is fast-forwarded past the planner
    assert corrected.stats["fast_forwarded_steps"] == 0 < plain.stats["fast_forwarded_steps"]
    assert _records(corrected) == _records(plain)


def test_the_planner_learns_a_slower_machine_and_the_clock_does_not_follow_it():
    slow = TimingConfig(kind="noise", noise_sigma=0.0, scale=2.0)
    fixed = _run(slow)
    learned = _run(slow.model_copy(update={"planner_correction": 0.9}))
    assert learned.stats["planner_scale"][0] == pytest.approx(2.0, rel=1e-6)
    assert fixed.stats["planner_scale"] == [None]
    assert learned.stats["timing"].endswith("planner-corrected(0.9)")
    # the clock times steps with the model as given: had it used the corrected model, the
    # run would take about twice as long again
    assert learned.stats["end_s"] == pytest.approx(fixed.stats["end_s"], rel=0.2)


def test_the_correction_starts_from_the_one_the_model_carries():
    base = LiveLatencyModel(RooflineModel(), "roofline", initial_scale=1.5)
    timing = TimingConfig(kind="noise", noise_sigma=0.0, planner_correction=0.9)
    result = _run(timing, latency=base)
    # the clock times steps at the model's 1.5, so the planner's scale stays there ...
    assert result.stats["planner_scale"][0] == pytest.approx(1.5, rel=1e-9)
    # ... and the model handed in is not the one corrected
    assert base.scale == 1.5 and base.correction_decay == 0.0


def test_slow_spells_inflate_the_planner_reproducibly():
    spells = TimingConfig(kind="noise", noise_sigma=0.4, noise_rho=0.95, seed=3,
                          planner_correction=0.95)
    a, b = _run(spells), _run(spells)
    c = _run(spells.model_copy(update={"seed": 4}))
    assert a.stats["planner_scale"] == b.stats["planner_scale"]
    assert _records(a) == _records(b)
    assert a.stats["planner_scale"] != c.stats["planner_scale"]
    # the end-of-run scale is the correlated noise's recent level, not 1
    assert not math.isclose(a.stats["planner_scale"][0], 1.0, rel_tol=1e-3)


def test_bad_correction_values_are_refused_by_name():
    with pytest.raises(ValidationError, match="planner_correction"):
        TimingConfig(planner_correction=1.0)
    with pytest.raises(ValidationError, match="sim_planner_correction"):
        BenchConfig(sim_planner_correction=-0.1)
    # the simulated planner corrects as the engine adapter's default does
    assert BenchConfig().sim_planner_correction == \
        EngineSchedulerConfig().latency_correction_decay
