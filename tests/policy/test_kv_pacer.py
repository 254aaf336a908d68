"""KV pacing: the chunk cap falls under KV pressure, recovers without it, and on long requests
keeps the running set inside the cache (fewer preemptions, less recomputed work)."""

from __future__ import annotations

import numpy as np

from slidingserve.policy.kv_pacer import KVPacer, KVPacerConfig
from slidingserve.sim.config import SimConfig
from slidingserve.sim.simulator import simulate
from slidingserve.slo import load_tiers
from slidingserve.workload.spec import RequestSpec


def _none(top: int) -> int:
    return 0  # no prefill is free


def test_idle_until_pressure_then_caps_below_the_chunk() -> None:
    p = KVPacer(KVPacerConfig(), ceiling=8192)
    p.observe(2000, free_blocks=500, total_blocks=1000, waiting=True, preempted=False)
    assert p.limit(5000, _none) == 5000  # half the cache free: no pressure
    p.observe(2000, free_blocks=10, total_blocks=1000, waiting=False, preempted=False)
    assert p.limit(5000, _none) == 5000  # full, but nothing waits or is preempted
    p.observe(2000, free_blocks=10, total_blocks=1000, waiting=True, preempted=False)
    assert p.limit(5000, _none) == 1800  # 0.9 x the step's chunk
    p.observe(0, free_blocks=500, total_blocks=1000, waiting=False, preempted=True)
    assert p.limit(5000, _none) == 1620  # a preempting step lowers the cap again
    assert p.limit(1000, _none) == 1000


def test_never_caps_below_the_free_chunk() -> None:
    p = KVPacer(KVPacerConfig(), ceiling=8192)
    p.observe(2000, free_blocks=0, total_blocks=1000, waiting=True, preempted=False)
    assert p.limit(5000, lambda top: 900) == 1800
    assert p.limit(5000, lambda top: 2500) == 2500
    assert p.limit(5000, lambda top: min(top, 9000)) == 5000


def test_cap_has_a_floor_and_recovers_to_idle() -> None:
    p = KVPacer(KVPacerConfig(min_chunk=256), ceiling=4096)
    for _ in range(100):
        p.observe(300, free_blocks=0, total_blocks=1000, waiting=True, preempted=False)
    assert p.limit(5000, _none) == 256
    steps = 0
    while p.limit(5000, _none) < 5000:
        p.observe(256, free_blocks=900, total_blocks=1000, waiting=True, preempted=False)
        steps += 1
    assert steps == int(np.ceil(np.log(4096 / 256) / np.log(1.02)))  # grows 2% a step
    p.observe(0, free_blocks=0, total_blocks=1000, waiting=True, preempted=True)
    assert p.limit(5000, _none) == 5000  # a decode-only step sets no first cap


def test_disabled_never_caps() -> None:
    p = KVPacer(KVPacerConfig(enabled=False), ceiling=8192)
    p.observe(2000, free_blocks=0, total_blocks=1000, waiting=True, preempted=True)
    assert p.limit(5000, _none) == 5000


def _long_requests(n: int, rate: float) -> list[RequestSpec]:
    """ShareGPT-like lengths (prompts 1,500-3,200, outputs 200-700 tokens), Poisson arrivals."""
    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    tier = rng.choice(["interactive", "standard", "batch"], n, p=[0.2, 0.5, 0.3])
    return [RequestSpec(i, float(arrival[i]), int(rng.integers(1500, 3200)),
                        int(rng.integers(200, 700)), str(tier[i])) for i in range(n)]


def test_long_requests_run_with_fewer_preemptions_and_less_work() -> None:
    """At 9 req/s of long requests the default tiers' loose TPOT lets steps grow until the
    running set outgrows the H100's cache; the pacer keeps it inside (simulated)."""
    specs, tiers = _long_requests(600, 9.0), load_tiers(None)
    on = simulate(specs, tiers, "slidingserve", SimConfig()).stats
    off = simulate(specs, tiers, "slidingserve", SimConfig(),
                   policy_config={"kv_pacer": {"enabled": False}}).stats
    assert on["finished"] == off["finished"] == len(specs)
    assert off["preemptions"] >= 20
    assert on["preemptions"] <= off["preemptions"] // 4
    assert on["tokens_run"] < off["tokens_run"]  # less recomputed
    assert on["end_s"] < off["end_s"]


def test_the_policy_never_paces_below_the_prefill_a_memory_bound_step_runs_for_free() -> None:
    """160 decodes over 2,600-token contexts make the roofline step memory-bound: prefill up to
    where compute catches up costs it no time, so a cap far below that does not bind."""
    from policy_factories import decoding, roofline, state, waiting

    from slidingserve.policy import make_policy

    decs = [decoding(i, "batch", prompt=2600, generated=1) for i in range(160)]
    st = state(running=decs, waiting_=[waiting(500, "batch", prompt=4000)], now=0.0)
    free = make_policy("slidingserve", roofline())  # nothing caps it
    tight = make_policy("slidingserve", roofline(), kv_pacer={"free_tolerance": 0.0})
    loose = make_policy("slidingserve", roofline())
    for p in (tight, loose):
        for _ in range(40):  # pressure step after step: the cap falls to min_chunk (256)
            p.kv_pacer.observe(300, free_blocks=0, total_blocks=1000, waiting=True,
                               preempted=False)
        assert p.kv_pacer.cap == 256
    unpaced = free.schedule(st).stats["prefill_tokens"]
    at_floor = loose.schedule(st).stats["prefill_tokens"]
    strict = tight.schedule(st).stats["prefill_tokens"]
    assert strict == 256  # no tolerance: every prefill token lengthens the step a little
    assert 256 < at_floor < unpaced
