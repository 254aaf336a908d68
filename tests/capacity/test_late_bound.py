"""The late-request lower bound: exact on small cases, never above what a schedule achieves."""

from __future__ import annotations

import numpy as np
import pytest

from slidingserve.capacity.late_bound import late_lower_bound, main, workload_bound
from slidingserve.latency import RooflineModel
from slidingserve.sim import SimConfig, simulate
from slidingserve.slo import SLOTier, TierSet, load_tiers
from slidingserve.workload import RequestSpec


def test_three_jobs_that_fit_two_at_a_time_leave_one_late():
    b = late_lower_bound(np.zeros(3), np.full(3, 10.0), np.ones(3), tokens_per_s=20.0)
    assert (b.late, b.interval, b.in_interval) == (1, (0.0, 1.0), 3)


def test_the_largest_requests_are_dropped_first():
    # 5 + 5 + 30 tokens due in 1 s at 12 tokens/s: dropping the 30 leaves 10, which fits
    b = late_lower_bound(np.zeros(3), np.array([5.0, 30.0, 5.0]), np.ones(3), tokens_per_s=12.0)
    assert b.late == 1
    # at 9 tokens/s one of the small ones must go too
    assert late_lower_bound(np.zeros(3), np.array([5.0, 30.0, 5.0]), np.ones(3), 9.0).late == 2


def test_a_late_interval_is_found_whatever_came_before():
    # an easy early request, then two at 10 s that only fit one at a time
    arrival, work, due = np.array([0.0, 10.0, 10.0]), np.array([1.0, 8.0, 8.0]), np.array(
        [100.0, 11.0, 11.0])
    b = late_lower_bound(arrival, work, due, tokens_per_s=10.0)
    assert b.late == 1 and b.interval == (10.0, 11.0)
    assert late_lower_bound(arrival, work, due, tokens_per_s=16.0).late == 0


def test_no_overload_no_late_request():
    arrival = np.arange(100, dtype=float)
    b = late_lower_bound(arrival, np.full(100, 50.0), arrival + 2.0, tokens_per_s=100.0)
    assert (b.late, b.interval) == (0, None) and b.late_share == 0.0


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan")])
def test_a_ceiling_that_is_not_positive_is_refused(bad):
    with pytest.raises(ValueError, match="tokens_per_s"):
        late_lower_bound(np.zeros(1), np.ones(1), np.ones(1), bad)


def test_arrays_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        late_lower_bound(np.zeros(2), np.ones(3), np.ones(2), 1.0)


def test_the_bound_is_not_above_a_simulated_schedule():
    """At the roofline's largest possible tokens/s (every FLOP a weight GEMM at its efficiency,
    no overhead, no attention), no simulated policy makes fewer requests late than the bound."""
    tiers = TierSet([SLOTier("interactive", ttft_s=2.0, tpot_s=0.05, e2e_s=None, weight=2.0,
                             priority=0, share=0.3),
                     SLOTier("standard", ttft_s=15.0, tpot_s=0.2, e2e_s=15.0, weight=1.0,
                             priority=1, share=0.7)], source="test")
    rng = np.random.default_rng(3)
    names = rng.choice(["interactive", "standard"], size=600, p=[0.3, 0.7])
    arrival = np.cumsum(rng.exponential(1 / 30.0, size=600))  # ~30 x 2,400 tokens/s offered
    specs = [RequestSpec(i, float(arrival[i]), int(rng.integers(500, 4000)),
                         int(rng.integers(20, 300)), str(names[i])) for i in range(600)]
    model = RooflineModel()
    c = model.config
    ceiling = c.peak_flops * c.mfu / (2 * c.num_params)
    bound = workload_bound(specs, tiers, ceiling)
    assert bound.late > 0  # the workload is over the ceiling: the test can fail
    for policy in ("slidingserve", "qoserve"):
        res = simulate(specs, tiers, policy, SimConfig(), latency=model)
        late = sum(not r.meets_slo(tiers[r.tier]) for r in res.records)
        assert late >= bound.late, policy


def test_the_bound_uses_each_tier_deadline():
    tiers = load_tiers("tight")  # interactive: 2 s TTFT, 30 ms TPOT; standard: 120 s end to end
    specs = [RequestSpec(0, 0.0, 100, 11, "interactive"),
             RequestSpec(1, 0.0, 100, 11, "interactive"),
             RequestSpec(2, 0.0, 1400, 100, "standard")]
    # both interactive requests are due at 2 s + 10 x 30 ms = 2.3 s, the standard one at 120 s
    # (not at its 10 s TTFT target: its 1,500 tokens would not fit by then)
    assert workload_bound(specs, tiers, 200.0 / 2.3).late == 1
    assert workload_bound(specs, tiers, 230.0 / 2.3).late == 0


def test_cli_prints_a_bound_per_ceiling_and_names_bad_values(capsys):
    assert main(["--rate", "30", "--num-requests", "300", "--tokens-per-s", "1000,1e9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("C=1000 tokens/s: at least ")
    assert "at least 0 of 300 late" in out[1]
    with pytest.raises(SystemExit):
        main(["--rate", "30", "--tokens-per-s", "0"])
    assert "every value must be > 0: '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--rate", "-1", "--tokens-per-s", "10"])
    assert "--rate must be > 0, got -1.0" in capsys.readouterr().err
