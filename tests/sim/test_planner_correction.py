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


# -- slow spells ------------------------------------------------------------------------------
def test_slow_spells_are_a_function_of_seed_replica_and_time():
    from slidingserve.sim.timing import SlowSpells

    a, b = SlowSpells(0.5, 0.4, 3.0, 1, 0), SlowSpells(0.5, 0.4, 3.0, 1, 0)
    times = [i * 0.01 for i in range(200_000)]  # 2,000 s
    fa = [a.factor_at(t) for t in times]
    assert fa == [b.factor_at(t) for t in times]
    assert set(fa) == {1.0, 3.0}
    other = SlowSpells(0.5, 0.4, 3.0, 1, 1)  # another replica: other spells
    assert [other.factor_at(t) for t in times] != fa
    # share of time in spells: rate x length / (1 + rate x length) = 1/6
    assert sum(f > 1 for f in fa) / len(fa) == pytest.approx(1 / 6, rel=0.1)
    for start, end in a.spans[:20]:  # the factor holds exactly inside each drawn spell
        assert start < end
        assert a.factor_at(start) == 3.0 or start == end


def test_spells_slow_the_run_reproducibly_and_step_one_by_one():
    spells = TimingConfig(kind="noise", noise_sigma=0.0, spell_rate_hz=2.0, spell_s=0.3,
                          spell_x=4.0, seed=5)
    calm = _run(TimingConfig(kind="noise", noise_sigma=0.0, seed=5), n=150)
    slow, again = _run(spells, n=150), _run(spells, n=150)
    assert _records(slow) == _records(again)
    assert slow.stats["fast_forwarded_steps"] == 0
    assert "spells(2/s of 0.3s x4)" in slow.stats["timing"]
    ttft = [r.first_token_s - r.arrival_s for r in slow.records]
    calm_ttft = [r.first_token_s - r.arrival_s for r in calm.records]
    assert max(ttft) > max(calm_ttft) and sum(ttft) > sum(calm_ttft)


def test_spells_refuse_timing_without_start_times():
    import numpy as np

    from slidingserve.sim.timing import make_timing

    clock = make_timing(TimingConfig(spell_rate_hz=1.0), RooflineModel(), 0, "slidingserve")
    x = np.zeros(8)
    with pytest.raises(ValueError, match="start time"):
        clock.step_time(x, 0)
    with pytest.raises(ValueError, match="one by one"):
        clock.step_times(x[None, :], 0)
    with pytest.raises(ValidationError, match="spell_x"):
        TimingConfig(spell_x=0.5)
