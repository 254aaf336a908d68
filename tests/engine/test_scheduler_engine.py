"""SlidingServeScheduler driving a real vLLM-CPU engine (one in-process engine for the module).

The engine is small on purpose: 64 tokens per step (so prompts are chunked) and a KV cache of
11 blocks of 128 tokens (vLLM-CPU's block size), so that a handful of requests runs it out and
forces preemption.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from predictor.steptrace import read_steptrace  # noqa: E402
from slidingserve.engine import SCHEDULER_CLS, additional_config, slo_extra_args  # noqa: E402
from slidingserve.engine.latency_source import write_roofline_dir  # noqa: E402
from slidingserve.latency import RooflineConfig  # noqa: E402
from slidingserve.models import cpu_engine_kwargs, ensure_tiny_model, in_process_engine  # noqa: E402
from slidingserve.policy.base import make_policy  # noqa: E402

KV_BYTES = 12 * 1024 * 1024  # 1536 tokens of the tiny model in float32: 11 blocks of 128 + null
BUDGET = 64


class Harness:
    """An in-process LLMEngine plus helpers to add requests and step it to completion."""

    def __init__(self, engine: Any, trace: Path, model_dir: Path):
        from vllm import SamplingParams

        self.engine = engine
        self.sched = engine.engine_core.engine_core.scheduler
        self.trace = trace
        self.model_dir = model_dir
        self._params = SamplingParams
        self._ids = itertools.count()

    def add(self, prompt_len: int, max_tokens: int, tier: str = "standard") -> str:
        rid = f"r{next(self._ids)}"
        params = self._params(
            max_tokens=max_tokens, ignore_eos=True, temperature=0.0,
            extra_args=slo_extra_args(tier),
        )
        prompt = {"prompt_token_ids": [10 + (i * 7) % 4000 for i in range(prompt_len)]}
        self.engine.add_request(rid, prompt, params)
        return rid

    def request(self, rid: str) -> Any:
        """The scheduler's ``Request`` for our id (vLLM appends a suffix to request ids)."""
        for internal_id, req in self.sched.requests.items():
            if internal_id == rid or internal_id.startswith(f"{rid}-"):
                return req
        return None

    def step(self) -> list[Any]:
        return list(self.engine.step())

    def run(self, max_steps: int = 2000) -> dict[str, Any]:
        """Step until idle; returns the final output of every request that finished."""
        done: dict[str, Any] = {}
        for _ in range(max_steps):
            if not self.engine.has_unfinished_requests():
                return done
            done.update((o.request_id, o) for o in self.step() if o.finished)
        state = self.sched._snapshot()
        plan = self.sched.ss_policy.schedule(state)
        raise AssertionError(f"engine not idle after {max_steps} steps: {state} -> {plan}")

    def free_blocks(self) -> int:
        return self.sched.kv_cache_manager.block_pool.get_num_free_blocks()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("engine")
    model = ensure_tiny_model(Path(os.environ.get("SLIDINGSERVE_DATA_DIR", root)))
    latency_dir = write_roofline_dir(root / "latency", RooflineConfig(), "v1")
    trace = root / "steps.csv"
    kwargs = cpu_engine_kwargs(
        model,
        kv_cache_memory_bytes=KV_BYTES,
        max_model_len=512,
        max_num_seqs=8,
        max_num_batched_tokens=BUDGET,
        scheduler_cls=SCHEDULER_CLS,
        additional_config=additional_config(
            policy="slidingserve",
            latency_model=str(latency_dir),
            latency_check_every=1,
            step_trace=str(trace),
            step_trace_flush_every=8,
            model_name="tiny-llama",
        ),
    )
    engine = in_process_engine(kwargs)  # the tests reach into the scheduler
    yield Harness(engine, trace, latency_dir)
    engine.engine_core.shutdown()


@pytest.fixture(autouse=True)
def idle_engine(harness: Harness) -> Iterator[None]:
    """Every test starts and ends with an idle engine and the slidingserve policy."""
    assert not harness.engine.has_unfinished_requests()
    yield
    harness.run()
    harness.sched.ss_policy = make_policy("slidingserve", harness.sched.latency)


def test_our_scheduler_is_the_one_running(harness: Harness) -> None:
    from slidingserve.engine.scheduler import SlidingServeScheduler

    sched = harness.sched
    assert type(sched) is SlidingServeScheduler
    assert sched.ss_policy.name == "slidingserve"
    steps_before = sched.counters["steps"]
    rid = harness.add(20, 6)
    out = harness.run()[rid]
    assert len(out.outputs[0].token_ids) == 6
    assert sched.counters["steps"] - steps_before >= 6  # every step went through our _apply


def test_fixed_decode_steps_skip_the_policy_with_the_plan_it_would_return(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decode-only steps with nothing waiting are built without calling the policy
    (``Policy.fixed_decode_steps``); asked anyway, the policy returns the same plan."""
    sched = harness.sched
    built = sched._fixed_decode_plan
    checked = []

    def checking(state: Any) -> Any:
        plan = built(state)
        asked = sched.ss_policy.schedule(state)
        assert asked.preempt == []
        assert sorted(asked.scheduled) == sorted(plan.scheduled)
        assert plan.predicted_s > 0
        checked.append(len(plan.scheduled))
        return plan

    monkeypatch.setattr(sched, "_fixed_decode_plan", checking)
    before = sched.counters["fixed_plans"]
    ids = [harness.add(20, 8) for _ in range(3)]
    done = harness.run()
    assert all(len(done[r].outputs[0].token_ids) == 8 for r in ids)
    assert sched.counters["fixed_plans"] - before == len(checked) >= 5
    assert max(checked) == 3


def test_chunked_prefill_completes_with_exact_token_counts(harness: Harness) -> None:
    lengths = [(300, 5), (150, 12), (40, 20)]
    ids = [harness.add(p, m) for p, m in lengths]
    done = harness.run()
    for rid, (_, max_tokens) in zip(ids, lengths, strict=True):
        assert len(done[rid].outputs[0].token_ids) == max_tokens
        assert done[rid].outputs[0].finish_reason == "length"
    harness.sched.step_log.flush()
    trace = read_steptrace(harness.trace)
    prefill = trace.X[:, 0]
    assert prefill.max() <= BUDGET
    assert (prefill > 0).sum() >= 300 // BUDGET  # the long prompt took several chunks
    assert (trace.latency_s > 0).all()
    assert set(trace.provenance["engine"]) == {"vllm-cpu"}
    # online correction: the trace records the scale in use; it starts at 1 and, being an EMA of
    # log(measured / uncorrected prediction), stays within the range of those ratios (and 1)
    scales = np.asarray(trace.extra["latency_scale"], dtype=float)
    predicted = np.asarray(trace.extra["predicted_s"], dtype=float)
    assert scales[0] == 1.0 and len(set(scales.tolist())) > 1
    live = harness.sched.latency
    ok = (predicted > 0) & (np.asarray(trace.extra["cut"]) == 0)
    ratios = np.clip(trace.latency_s[ok] * scales[ok] / predicted[ok], 1 / live.max_scale,
                     live.max_scale)
    assert min(1.0, ratios.min()) - 1e-9 <= live.scale <= max(1.0, ratios.max()) + 1e-9


def test_kv_pressure_preempts_and_every_request_completes(harness: Harness) -> None:
    sched = harness.sched
    total = sched.total_blocks
    before = sched.counters["preemptions"]
    logged = sum(sched.step_log.extra.get("preempted", []))
    # 6 x (200 prompt + 60 output) tokens = 6 x 3 blocks, well over the cache's blocks.
    ids = [harness.add(200, 60) for _ in range(6)]
    assert 6 * -(-260 // sched.block_size) > total
    done = harness.run()
    assert sched.counters["preemptions"] > before
    # the step trace records each preemption and the computed tokens it discarded
    extra = sched.step_log.extra
    assert sum(extra["preempted"]) - logged == sched.counters["preemptions"] - before
    assert sum(extra["preempted_tokens"]) > 0
    assert sched.counters["liveness_preemptions"] == 0  # the policy itself kept the engine live
    for rid in ids:
        assert len(done[rid].outputs[0].token_ids) == 60
    assert harness.free_blocks() == total
    assert not sched.book.by_id


def _first_token_steps(harness: Harness, ids: list[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for step in itertools.count():
        if not harness.engine.has_unfinished_requests():
            return first
        for o in harness.step():
            if o.request_id in ids and o.outputs[0].token_ids and o.request_id not in first:
                first[o.request_id] = step
        if step > 2000:
            raise AssertionError("engine not idle after 2000 steps")
    return first


@pytest.mark.parametrize(("policy", "interactive_first"), [("slidingserve", True),
                                                         ("vllm-fcfs", False)])
def test_interactive_overtakes_a_batch_queue(harness: Harness, policy: str,
                                             interactive_first: bool) -> None:
    harness.sched.ss_policy = make_policy(policy, harness.sched.latency)
    batch = [harness.add(BUDGET, 4, tier="batch") for _ in range(8)]
    harness.step()  # the queue forms and starts
    queued = [r for r in batch if harness.request(r).num_output_tokens == 0]
    interactive = harness.add(16, 4, tier="interactive")
    first = _first_token_steps(harness, [*queued, interactive])
    behind = [r for r in queued if first[r] > 1]  # batch requests still queued when it arrived
    assert len(behind) >= 4
    overtaken = all(first[interactive] < first[r] for r in behind)
    assert overtaken is interactive_first  # FCFS is the control: there it waits its turn


def test_abort_frees_blocks(harness: Harness) -> None:
    sched = harness.sched
    total = sched.total_blocks
    rid = harness.add(200, 50)
    while harness.request(rid).num_computed_tokens < 200:
        harness.step()
    held = total - harness.free_blocks()
    assert held >= -(-200 // sched.block_size)
    harness.engine.abort_request([rid])
    harness.run()
    assert harness.free_blocks() == total
    assert harness.request(rid) is None and not sched.book.by_id


def test_new_latency_model_version_is_picked_up_between_steps(harness: Harness) -> None:
    sched = harness.sched
    assert sched.latency.version == "roofline-v1"
    rid = harness.add(30, 40)
    for _ in range(5):
        harness.step()
    slower = RooflineConfig(overhead_s=0.5)
    write_roofline_dir(harness.model_dir, slower, "v2")
    harness.step()
    harness.step()
    assert sched.latency.version == "roofline-v2"
    assert sched.latency.current.config.overhead_s == 0.5  # type: ignore[attr-defined]
    out = harness.run()[rid]
    assert len(out.outputs[0].token_ids) == 40  # served straight through the swap
    sched.step_log.flush()
    versions = list(read_steptrace(harness.trace).extra["latency_version"])
    assert "roofline-v1" in versions and versions[-1] == "roofline-v2"


def test_unknown_tier_is_refused_with_a_clear_error(harness: Harness) -> None:
    from vllm import SamplingParams

    good = harness.add(10, 3)
    harness.engine.add_request(
        "bad", {"prompt_token_ids": [5, 6, 7]},
        SamplingParams(max_tokens=3, extra_args={"slo_tier": "platinum"}),
    )
    done = harness.run()
    bad = done["bad"].outputs[0]
    assert bad.finish_reason == "error"
    assert bad.token_ids == []
    assert "unknown SLO tier 'platinum'" in str(bad.stop_reason)
    assert len(done[good].outputs[0].token_ids) == 3
    assert not harness.sched.book.refused
