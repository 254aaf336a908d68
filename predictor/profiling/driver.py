"""Drives a real in-process vLLM engine through a designed sweep and collects its step timings."""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from predictor.profiling.sweep import Scenario, SweepConfig, design_sweep

if TYPE_CHECKING:
    from predictor.profiling.scheduler import StepRecord

log = logging.getLogger(__name__)

SCHEDULER_CLS = "predictor.profiling.scheduler.ProfilingScheduler"


class SweepDriver:
    """Runs scenario groups on ``engine`` (a ``vllm.v1.engine.llm_engine.LLMEngine`` whose
    scheduler is a ``ProfilingScheduler``, in-process) until the sweep or the deadline ends."""

    def __init__(self, engine: Any, config: SweepConfig, vocab_size: int):
        from vllm import SamplingParams

        self.engine = engine
        self.config = config
        self.sched = engine.engine_core.engine_core.scheduler
        if not hasattr(self.sched, "records"):
            raise TypeError(f"engine scheduler is {type(self.sched).__name__}, not {SCHEDULER_CLS}")
        self._rng = random.Random(config.seed)
        self._vocab = vocab_size
        self._ids = itertools.count()
        self._sampling = SamplingParams
        self._decodes: list[str] = []

    # -- engine helpers -------------------------------------------------------------------
    def _prompt(self, n: int) -> dict[str, list[int]]:
        return {"prompt_token_ids": [self._rng.randrange(10, self._vocab) for _ in range(n)]}

    def _add(self, prompt_len: int, max_tokens: int) -> str:
        rid = f"p{next(self._ids)}"
        params = self._sampling(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
        self.engine.add_request(rid, self._prompt(prompt_len), params)
        return rid

    def _step(self) -> list[Any]:
        return list(self.engine.step())

    def _abort(self, ids: list[str]) -> None:
        if ids:
            self.engine.abort_request(ids)
        while self.engine.has_unfinished_requests():
            self._step()

    def _set(self, budget: int | None, cap: int) -> None:
        self.sched.step_token_budget = budget
        self.sched.step_chunk_cap = cap

    # -- phases ---------------------------------------------------------------------------
    def _start_decodes(self, n: int, ctx: int) -> None:
        self._abort(self._decodes)
        self._set(None, 0)
        max_tokens = self.config.max_model_len - ctx - 1
        self._decodes = [self._add(ctx, max_tokens) for _ in range(n)]
        while any(r.num_computed_tokens < r.num_prompt_tokens for r in self._live()):
            self._step()

    def _live(self) -> list[Any]:
        return list(self.sched.requests.values())

    def _decodes_alive(self, n: int) -> bool:
        return sum(1 for r in self._live() if not r.is_finished()) >= n

    def _run_scenario(self, sc: Scenario) -> None:
        if sc.n_prefill:
            for _ in range(sc.n_prefill):
                self._add(sc.prompt_len, max_tokens=1)
            self._set(sc.n_decode + sc.n_prefill * sc.chunk, sc.chunk)
            while len(self._live()) > sc.n_decode:
                self._step()
        self._set(None, 0)
        for _ in range(self.config.decode_only_steps if sc.n_decode else 0):
            self._step()

    def run(
        self,
        deadline_s: float,
        max_scenarios: int | None = None,
        on_group: Callable[[int], None] | None = None,
    ) -> int:
        """Run the sweep from its start until it ends, ``max_scenarios`` have run, or
        ``time.monotonic() >= deadline_s``; returns the number of scenarios run. The sweep is
        deterministic, so two runs of the same number of scenarios schedule the same steps."""
        done = 0
        for group in design_sweep(self.config):
            self._start_decodes(group[0].n_decode, group[0].decode_ctx)
            for sc in group:
                if time.monotonic() >= deadline_s or done == max_scenarios:
                    self._abort(self._decodes)
                    return done
                if not self._decodes_alive(sc.n_decode):
                    self._start_decodes(sc.n_decode, sc.decode_ctx)
                self._run_scenario(sc)
                done += 1
            if on_group is not None:
                on_group(done)
        self._abort(self._decodes)
        return done

    def records(self) -> list[StepRecord]:
        return list(self.sched.records)
