"""Admission control on one replica (no engine needed: admission runs before the engine)."""

from __future__ import annotations

import time

import pytest

from slidingserve.latency.roofline import RooflineConfig, RooflineModel
from slidingserve.serve.config import load_serve_config
from slidingserve.serve.engine_host import EngineHost
from slidingserve.serve.messages import Admitted, GenerateRequest, Rejected
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import load_tiers


@pytest.fixture(scope="module")
def tiers():
    return load_tiers()


def host(tiers, **admission) -> EngineHost:
    return EngineHost(load_serve_config({"admission": admission}), tiers, "r-test")


def request(tiers, tier="interactive", prompt_len=1000, waited_s=0.0, ttft_s=None):
    slo = RequestSLO.of_tier(tiers[tier])
    if ttft_s is not None:
        slo = RequestSLO(slo.tier, ttft_s, slo.tpot_s, slo.e2e_s, slo.priority)
    return GenerateRequest("r", [1] * prompt_len, slo, {"max_tokens": 4}, time.time() - waited_s)


def test_admits_what_it_can_serve_in_time(tiers):
    h = host(tiers)
    decision = h.admit(request(tiers))
    assert isinstance(decision, Admitted) and decision.downgraded_from is None
    assert 0 < decision.predicted_ttft_s < 6.0


def test_refuses_a_sure_miss_with_retry_after(tiers):
    h = host(tiers)
    h.costs.s_per_prefill_token = 0.01  # 1000 tokens -> 10 s > the 6 s interactive target
    decision = h.admit(request(tiers))
    assert isinstance(decision, Rejected)
    assert decision.target_s == 6.0 and decision.predicted_ttft_s > 10.0
    assert decision.retry_after_s >= 4
    # the batch tier's 1800 s target is met by the same replica
    assert isinstance(h.admit(request(tiers, "batch")), Admitted)


def test_time_already_waited_counts(tiers):
    h = host(tiers)
    assert isinstance(h.admit(request(tiers, prompt_len=10, waited_s=7.0)), Rejected)


def test_margin_and_disable(tiers):
    h = host(tiers, margin=2.0)
    h.costs.s_per_prefill_token = 0.01
    assert isinstance(h.admit(request(tiers)), Admitted)  # 10 s < 6 s x 2
    off = host(tiers, enabled=False)
    off.costs.s_per_prefill_token = 1.0
    assert isinstance(off.admit(request(tiers)), Admitted)


def test_downgrade_to_best_effort(tiers):
    h = host(tiers, on_reject="downgrade")
    h.costs.s_per_prefill_token = 0.01
    decision = h.admit(request(tiers))
    assert isinstance(decision, Admitted)
    assert decision.downgraded_from == "interactive" and decision.slo.tier == "batch"
    named = host(tiers, on_reject="downgrade", best_effort_tier="standard")
    named.costs.s_per_prefill_token = 0.01
    assert named.admit(request(tiers)).slo.tier == "standard"


def test_latency_model_replaces_running_averages(tiers):
    h = host(tiers)
    model = RooflineModel(RooflineConfig())
    h.set_latency_model(model, 7)
    load = h.load()
    assert load.model_version == 7
    budget = h.cfg.engine.max_num_batched_tokens
    from slidingserve.latency.features import BatchShape

    expected = model.predict(BatchShape(prefill=((budget, 0),))) / budget
    assert load.s_per_prefill_token == pytest.approx(expected)


def test_unknown_best_effort_tier_fails_at_start(tiers):
    with pytest.raises(ValueError, match="'gold'"):
        host(tiers, on_reject="downgrade", best_effort_tier="gold")


@pytest.mark.parametrize("keep", [False, True])
def test_replica_files_removed_at_shutdown_unless_kept(tiers, tmp_path, keep):
    cfg = load_serve_config({"engine": {"data_dir": str(tmp_path), "keep_replica_files": keep}})
    h = EngineHost(cfg, tiers, "r-files")
    h.files.latency_model.mkdir(parents=True)
    (h.files.root / "steps.parquet").write_bytes(b"x")
    h.shutdown()
    assert h.files.root.exists() == keep


def hold(h: EngineHost, n: int, priority: int = 2) -> None:
    """Make ``h`` hold ``n`` requests of ``priority`` that have not produced a token yet."""
    from slidingserve.serve.engine_host import _Live

    for _ in range(n):
        h._live[f"held-{priority}-{len(h._live)}"] = _Live(priority, 10, time.time(), 0)


def test_hold_limits_give_the_lowest_tier_the_smallest_share(tiers):
    from slidingserve.serve.engine_host import hold_limits

    assert hold_limits(tiers, 64, 0.5) == {0: 64, 1: 48, 2: 32}
    assert hold_limits(tiers, 64, 1.0) == {0: 64, 1: 64, 2: 64}
    assert hold_limits(tiers, 64, 0.5, 64) == {0: 128, 1: 48, 2: 32}


def test_the_top_tier_has_slots_beyond_every_tiers_limit(tiers):
    """Lower tiers fill ``max_ongoing_requests``; the top tier still finds its reserve on the
    replica, and Ray Serve's own limit per replica is their sum (so top-tier requests do not
    queue in Ray Serve behind lower-tier work the engine holds)."""
    from slidingserve.serve.app import engine_options

    h = host(tiers)  # max_ongoing_requests 64, top_tier_reserve 64
    hold(h, 32, priority=2)
    hold(h, 32, priority=1)  # 64 held: every tier's share is full
    assert isinstance(h.admit(request(tiers, "standard", prompt_len=10)), Rejected)
    hold(h, 63, priority=0)  # 127 held
    assert isinstance(h.admit(request(tiers, "interactive", prompt_len=10)), Admitted)
    hold(h, 1, priority=0)  # 128 held: the reserve too is full
    refused = h.admit(request(tiers, "interactive", prompt_len=10))
    assert isinstance(refused, Rejected) and "'interactive' is 128" in refused.reason
    assert engine_options(load_serve_config({}))["max_ongoing_requests"] == 128
    no_reserve = load_serve_config({"admission": {"top_tier_reserve": 0}})
    assert engine_options(no_reserve)["max_ongoing_requests"] == 64
    off = load_serve_config({"admission": {"enabled": False}})  # nobody decides: no reserve
    assert engine_options(off)["max_ongoing_requests"] == 64


def test_a_full_replica_refuses_the_lowest_tier_first(tiers):
    h = host(tiers)  # max_ongoing_requests 64: batch up to 32 held, standard 48
    hold(h, 32)
    refused = h.admit(request(tiers, "batch", prompt_len=10))
    assert isinstance(refused, Rejected) and refused.retry_after_s >= 1
    assert "holds 32 requests" in refused.reason and "'batch' is 32" in refused.reason
    assert isinstance(h.admit(request(tiers, "standard", prompt_len=10)), Admitted)
    assert isinstance(h.admit(request(tiers, "interactive", prompt_len=10)), Admitted)
    hold(h, 16, priority=1)  # 48 held
    assert isinstance(h.admit(request(tiers, "standard", prompt_len=10)), Rejected)
    assert isinstance(h.admit(request(tiers, "interactive", prompt_len=10)), Admitted)
    load = h.load()
    assert load.is_full_for(2) and load.is_full_for(1) and not load.is_full_for(0)


def test_a_resend_after_a_replica_failure_is_never_refused(tiers):
    """The service accepted it once; its replica died before the first token. The survivor
    takes it even when full for its tier or too slow for its TTFT."""
    from dataclasses import replace

    h = host(tiers)
    hold(h, 32)
    fresh = request(tiers, "batch", prompt_len=10)
    assert isinstance(h.admit(fresh), Rejected)
    resend = replace(fresh, avoid=("dead-replica",))
    decision = h.admit(resend)
    assert isinstance(decision, Admitted) and decision.slo.tier == "batch"
    assert decision.downgraded_from is None
    slow = host(tiers)
    slow.costs.s_per_prefill_token = 0.01  # 10 s predicted against interactive's 6 s
    late = request(tiers)
    assert isinstance(slow.admit(late), Rejected)
    assert isinstance(slow.admit(replace(late, avoid=("dead-replica",))), Admitted)


def test_share_one_turns_tier_shedding_off(tiers):
    h = host(tiers, lowest_tier_share=1.0)
    hold(h, 40)
    assert isinstance(h.admit(request(tiers, "batch", prompt_len=10)), Admitted)


def test_router_puts_replicas_full_for_the_tier_last(tiers):
    from slidingserve.serve.router import RouteQuery, rank_by_slack

    full, empty = host(tiers), host(tiers)
    hold(full, 32, priority=2)
    hold(empty, 20, priority=0)  # less slack for interactive, but room for batch
    loads = [("full", full.load()), ("other", empty.load())]
    batch = RouteQuery(2, 1800.0, 10)
    assert rank_by_slack(loads, batch) == ["other", "full"]
    interactive = RouteQuery(0, 6.0, 10)
    assert rank_by_slack(loads, interactive)[0] == "full"  # interactive waits for no batch
    both_full = rank_by_slack(loads, batch, routed_requests={"other": 12})
    assert set(both_full) == {"full", "other"}  # both full: slack decides


def test_router_balances_end_to_end_tiers_among_replicas_that_meet_their_ttft(tiers):
    from slidingserve.serve.engine_host import _Live
    from slidingserve.serve.router import RouteQuery, rank_by_slack

    many, few = host(tiers), host(tiers)
    hold(many, 3, priority=0)  # three short prompts: more slack, longer queue
    few._live["long"] = _Live(0, 20_000, time.time(), 0)  # one long prompt
    loads = [("many", many.load()), ("few", few.load())]
    assert rank_by_slack(loads, RouteQuery(0, 6.0, 10)) == ["many", "few"]
    assert rank_by_slack(loads, RouteQuery(1, 600.0, 10)) == ["many", "few"]
    assert rank_by_slack(loads, RouteQuery(1, 600.0, 10, end_to_end=True)) == ["few", "many"]
    # routed since the snapshot: the queue counts it
    assert rank_by_slack(loads, RouteQuery(1, 600.0, 10, end_to_end=True),
                         routed_requests={"few": 3}) == ["many", "few"]
    # a TTFT target the long prompt's replica misses: the one that meets it first
    on_many, on_few = (load.predicted_ttft_s(1, 10) for _, load in loads)
    assert on_many < on_few
    tight = RouteQuery(1, (on_many + on_few) / 2, 10, end_to_end=True)
    assert rank_by_slack(loads, tight) == ["many", "few"]


def waiting_since(h: EngineHost, tiers, tier: str, waited_s: float, key: str = "w"):
    """Make ``h`` hold a request of ``tier`` waiting ``waited_s`` for its first token."""
    from slidingserve.serve.engine_host import _Live

    t = tiers[tier]
    live = _Live(t.priority, 100, time.time() - waited_s, 0, ttft_target_s=t.ttft_s)
    h._live[key] = live
    return live


def test_lower_tiers_wait_while_a_higher_tier_falls_behind(tiers):
    h = host(tiers)  # yield_to_late_tier 0.25 by default
    late = waiting_since(h, tiers, "interactive", 2.0)  # a third of its 6 s target
    for tier in ("batch", "standard"):
        refused = h.admit(request(tiers, tier, prompt_len=10))
        assert isinstance(refused, Rejected) and refused.retry_after_s >= 1
        assert "behind on tier 'interactive'" in refused.reason and "33%" in refused.reason
    assert isinstance(h.admit(request(tiers, "interactive", prompt_len=10)), Admitted)
    late.first_token_s = time.time()  # it started: the replica caught up
    assert isinstance(h.admit(request(tiers, "batch", prompt_len=10)), Admitted)
    # a short wait (10% of the target) is not falling behind
    waiting_since(h, tiers, "interactive", 0.6, key="recent")
    assert isinstance(h.admit(request(tiers, "batch", prompt_len=10)), Admitted)
    # a standard request 5 minutes into its 600 s holds batch back, not interactive
    waiting_since(h, tiers, "standard", 300.0, key="old-standard")
    assert isinstance(h.admit(request(tiers, "batch", prompt_len=10)), Rejected)
    assert isinstance(h.admit(request(tiers, "interactive", prompt_len=10)), Admitted)
    off = host(tiers, yield_to_late_tier=None)
    waiting_since(off, tiers, "interactive", 5.0)
    assert isinstance(off.admit(request(tiers, "batch", prompt_len=10)), Admitted)


def test_a_tight_target_yields_only_past_the_minimum_wait(tiers):
    """A 0.4 s TTFT target: 0.3 s waited is 75% of it, but one busy step on a CPU engine,
    not a replica falling behind; past ``yield_min_wait_s`` (1 s) lower tiers yield."""
    from slidingserve.serve.engine_host import _Live

    h = host(tiers)
    h._live["tight"] = _Live(0, 100, time.time() - 0.3, 0, ttft_target_s=0.4)
    assert isinstance(h.admit(request(tiers, "batch", prompt_len=10)), Admitted)
    h._live["tight-late"] = _Live(0, 100, time.time() - 1.2, 0, ttft_target_s=0.4)
    refused = h.admit(request(tiers, "batch", prompt_len=10))
    assert isinstance(refused, Rejected) and "300%" in refused.reason


def test_router_puts_replicas_behind_on_a_higher_tier_last_for_lower_tiers(tiers):
    from slidingserve.serve.router import RouteQuery, rank_by_slack

    behind, busy = host(tiers), host(tiers)
    waiting_since(behind, tiers, "interactive", 3.0)
    hold(busy, 20, priority=1)  # less slack for standard, but takes it
    loads = [("behind", behind.load()), ("busy", busy.load())]
    assert rank_by_slack(loads, RouteQuery(1, 600.0, 10)) == ["busy", "behind"]
    assert not behind.load().refuses(0) and behind.load().refuses(1)


def admit_and_answer(h: EngineHost, tiers, tier: str, measured_over_predicted: float) -> None:
    """Admit one ``tier`` request behind the replica's queue and give it its first token
    ``measured_over_predicted`` times the queue formula's TTFT after its admission."""
    from slidingserve.serve.engine_host import _Live

    slo = RequestSLO.of_tier(tiers[tier])
    load = h.load()
    live = _Live(slo.priority, 1000, 0.0, load.tokens_ahead(slo.priority),
                 ttft_target_s=slo.ttft_s, modelled_ttft_s=load.modelled_ttft_s(slo.priority, 1000))
    h._observe(live, 0, 1, live.modelled_ttft_s * measured_over_predicted)


def test_admission_learns_a_tiers_measured_ttft_error(tiers):
    """Requests that meet their first token three times later than predicted raise that
    tier's predictions three-fold (routing and admission read the same scaled figure), and a
    request the formula alone would admit is refused; other tiers keep their own scale."""
    h = host(tiers)
    h.costs.s_per_prefill_token = 0.004  # 1000 tokens -> ~4 s: admitted against 6 s
    assert isinstance(h.admit(request(tiers)), Admitted)
    hold(h, 1, priority=0)
    for _ in range(30):
        admit_and_answer(h, tiers, "interactive", 3.0)
    load = h.load()
    assert load.ttft_scale[0] == pytest.approx(3.0, rel=0.01)
    assert 2 not in load.ttft_scale
    assert load.predicted_ttft_s(0, 1000) == pytest.approx(
        load.ttft_scale[0] * load.modelled_ttft_s(0, 1000))
    refused = h.admit(request(tiers))
    assert isinstance(refused, Rejected) and refused.predicted_ttft_s > 6.0
    for _ in range(30):  # the engine catches up: predictions come back down
        admit_and_answer(h, tiers, "interactive", 1.0)
    assert isinstance(h.admit(request(tiers)), Admitted)
    off = host(tiers, learn_ttft_error=False)
    off.costs.s_per_prefill_token = 0.004
    hold(off, 1, priority=0)
    for _ in range(30):
        admit_and_answer(off, tiers, "interactive", 3.0)
    assert off.load().ttft_scale == {} and isinstance(off.admit(request(tiers)), Admitted)


def test_ttft_correction_ignores_short_predictions_and_clamps_outliers():
    from slidingserve.serve.load import TTFTCorrection

    c = TTFTCorrection()
    c.observe(0, predicted_s=0.1, measured_s=5.0, target_s=6.0)  # 0.1 < 10% of 6 s: jitter
    assert c.scale == {}
    c.observe(0, predicted_s=1.0, measured_s=100.0, target_s=6.0)  # one stall: clamped at 8x
    assert c.scale[0] == pytest.approx(1 + 0.2 * (8 - 1))


def test_a_late_head_of_queue_raises_the_scale_before_its_first_token(tiers):
    """The oldest interactive request has waited 4x its prediction and has no token yet:
    predictions for its tier are at least 4x at once; other tiers are not touched."""
    from slidingserve.serve.engine_host import _Live

    h = host(tiers)
    h.costs.s_per_prefill_token = 0.004
    slo = RequestSLO.of_tier(tiers["interactive"])
    late = _Live(0, 1000, time.time() - 16.0, 0, ttft_target_s=slo.ttft_s, modelled_ttft_s=4.0)
    fresh = _Live(0, 1000, time.time(), 0, ttft_target_s=slo.ttft_s, modelled_ttft_s=4.0)
    h._live.update({"late": late, "fresh": fresh})
    scale = h.load().ttft_scale
    assert scale[0] == pytest.approx(4.0, rel=0.01) and 2 not in scale
    assert isinstance(h.admit(request(tiers, prompt_len=10)), Rejected)
    late.first_token_s = time.time()  # it started: the bound goes with it
    assert h.load().ttft_scale == {}


def test_start_pace_counts_only_gaps_opened_with_a_queue():
    from slidingserve.serve.load import StartPace

    pace = StartPace()
    pace.started(0.0, still_waiting=0)
    pace.started(10.0, still_waiting=2)  # a lull before it: not the engine's pace
    assert pace.value == 0.0 and pace.gaps == 0
    for t in (11.0, 12.0, 13.0):
        pace.started(t, still_waiting=2)
    assert pace.gaps == 3 and pace.value == pytest.approx(1.0)


def test_a_replica_that_starts_requests_slowly_predicts_the_wait_for_a_start(tiers):
    """Little prefill work waits, but the engine starts one request a second (its running set
    is full): the fifth interactive request waiting predicts ~5 s; admission refuses the
    interactive request that would be seventh in line, and the router ranks an idle replica
    first."""
    from slidingserve.serve.router import RouteQuery, rank_by_slack

    h = host(tiers)
    for t in range(4):
        h.start_pace.started(float(t), still_waiting=3)
    assert h.start_pace.value == pytest.approx(1.0)
    hold(h, 5, priority=0)
    load = h.load()
    assert load.requests_ahead(0) == 5 and load.requests_ahead(2) == 5
    assert load.modelled_ttft_s(0, 10) == pytest.approx(
        load.step_s + 5.0 + 10 * load.s_per_prefill_token)
    assert isinstance(h.admit(request(tiers, prompt_len=10)), Admitted)
    hold(h, 2, priority=1)  # lower tiers do not delay the top tier's start
    assert h.load().requests_ahead(0) == 5
    hold(h, 7, priority=0)  # 7 interactive requests waiting
    assert isinstance(h.admit(request(tiers, prompt_len=10)), Rejected)
    idle = host(tiers)
    ranked = rank_by_slack([("slow", h.load()), ("idle", idle.load())], RouteQuery(0, 6.0, 10))
    assert ranked[0] == "idle"
