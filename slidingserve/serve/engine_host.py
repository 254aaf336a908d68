"""One engine replica's work, free of Ray Serve: an ``AsyncLLM``, its load, admission.

``EngineHost`` owns the vLLM ``AsyncLLM`` (driven by the configured ``scheduler_cls``), keeps
the replica's load (requests waiting for their first token, per priority), predicts the TTFT
a new request would see, and admits, downgrades or refuses it. Every admitted request ends
with its last ``TokenDelta`` or an explicit ``StreamError``; nothing is dropped silently.

Cost estimates: with a latency model (the predictor's, applied live) the per-token prefill
cost and the decode step come from it; before one arrives they are running averages of what
the replica observes (TTFT per token processed, gaps between decode deltas).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidingserve.latency.base import LatencyModel
from slidingserve.latency.features import BatchShape
from slidingserve.metrics.records import RequestRecord
from slidingserve.serve.config import EngineConfig, ServeAppConfig
from slidingserve.serve.engine_request import EngineRequest
from slidingserve.serve.load import KVUsage, ReplicaLoad, StartPace, TTFTCorrection
from slidingserve.serve.messages import (
    Admitted,
    GenerateRequest,
    Rejected,
    StepLogprobs,
    StreamError,
    StreamEvent,
    TokenDelta,
)
from slidingserve.serve.metrics import EngineMetrics
from slidingserve.serve.slo_headers import RequestSLO
from slidingserve.slo.tiers import SLOTier, TierSet

log = logging.getLogger(__name__)

EMA = 0.2  # weight of a new observation in the running cost averages


def resolve_model(cfg: EngineConfig) -> str:
    """The model path: ``tiny`` builds (or reuses) the project's small CPU model."""
    if cfg.model != "tiny":
        return cfg.model
    from slidingserve.models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(Path(cfg.data_dir) if cfg.data_dir else None))


def data_dir(cfg: EngineConfig) -> Path:
    from slidingserve.models.tiny import default_data_dir

    return Path(cfg.data_dir) if cfg.data_dir else default_data_dir()


@dataclass(frozen=True, slots=True)
class ReplicaFiles:
    """Where one replica's engine reads its latency model and writes its measured steps."""

    root: Path

    @property
    def latency_model(self) -> Path:
        return self.root / "latency_model"

    @property
    def step_trace(self) -> Path:
        return self.root / "steps.parquet"

    @classmethod
    def for_replica(cls, cfg: EngineConfig, replica: str) -> ReplicaFiles:
        return cls(data_dir(cfg) / "serve" / replica)


def replica_hardware(cfg: EngineConfig) -> str:
    """The hardware a replica's steps are measured on (step-trace provenance, and the
    predictor models it accepts): ``cfg.hardware``, else the GPU's (or host's) name, with
    ``xN`` for N tensor-parallel GPUs."""
    if cfg.hardware is not None:
        return cfg.hardware
    from slidingserve.engine.steps import hardware_name

    tp = cfg.tensor_parallel_size
    return hardware_name() + (f" x{tp}" if tp > 1 else "")


def replica_provenance(cfg: EngineConfig) -> Any:
    """The ``predictor.steptrace.Provenance`` of the replica's steps: the installed vLLM build,
    the served model name and ``replica_hardware``. The predictor link sends it with every
    sample and accepts only models trained on steps of the same model and hardware."""
    from predictor.steptrace import Provenance
    from slidingserve.engine.versions import installed_vllm

    dist, version = installed_vllm()
    return Provenance(engine=dist, model=cfg.name, hardware=replica_hardware(cfg),
                      version=version)


def scheduler_kwargs(cfg: ServeAppConfig, files: ReplicaFiles) -> dict[str, Any]:
    """``scheduler_cls`` + ``additional_config`` for ``slidingserve.engine``'s scheduler.

    The engine polls ``files.latency_model`` for new versions (hot swap) and rewrites
    ``files.step_trace`` with its measured steps; the predictor link feeds both.
    """
    from slidingserve.engine.config import SCHEDULER_CLS, additional_config
    from slidingserve.engine.latency_source import (
        COLD_START_FILE,
        MANIFEST_FILE,
        write_cold_start_dir,
        write_roofline_dir,
    )

    model_dir = files.latency_model
    if not (model_dir / MANIFEST_FILE).is_file() or (model_dir / COLD_START_FILE).is_file():
        # start on the configured model until the predictor publishes one measured here (a
        # published model is kept across restarts; a cold start follows the config)
        if cfg.engine.cold_start_model is not None:
            write_cold_start_dir(model_dir, cfg.engine.cold_start_model)
        else:
            shutil.rmtree(model_dir, ignore_errors=True)
            write_roofline_dir(model_dir, cfg.engine.roofline, "cold-start")
    extra = additional_config(
        policy=cfg.engine.policy,
        policy_config=cfg.engine.policy_config,
        tiers_path=cfg.tiers_path,
        latency_model=str(files.latency_model),
        latency_check_every=cfg.engine.latency_check_every,
        step_trace=str(files.step_trace),
        step_trace_flush_every=cfg.engine.step_trace_flush_every,
        model_name=cfg.engine.name,
        hardware=replica_hardware(cfg.engine),
        roofline=cfg.engine.roofline.model_dump(),
    )
    return {"scheduler_cls": SCHEDULER_CLS, "additional_config": extra}


def engine_args(cfg: EngineConfig, scheduler: dict[str, Any] | None = None) -> Any:
    """vLLM ``AsyncEngineArgs`` from the config (extra args pass through unchanged)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = {
        "model": resolve_model(cfg),
        "tokenizer": cfg.tokenizer,
        "served_model_name": cfg.name,
        "max_num_batched_tokens": cfg.max_num_batched_tokens,
        "max_num_seqs": cfg.max_num_seqs,
        "max_model_len": cfg.max_model_len,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "dtype": cfg.dtype or ("float32" if cfg.model == "tiny" else "auto"),
        "enforce_eager": cfg.enforce_eager,
        "disable_log_stats": True,
        "enable_prefix_caching": cfg.prefix_caching,
        "async_scheduling": False,  # engine/README.md: why the SLO scheduler runs synchronously
    }
    if cfg.executor is not None and cfg.tensor_parallel_size == 1:
        kwargs["distributed_executor_backend"] = cfg.executor
    if cfg.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
    if cfg.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    kwargs.update(scheduler or {})
    kwargs.update(cfg.extra_engine_args)
    return AsyncEngineArgs(**kwargs)


def hold_limits(tiers: TierSet, max_held: int, lowest_share: float,
                top_reserve: int = 0) -> dict[int, int]:
    """Priority -> requests a replica may hold and still admit one of that tier.

    The top tier gets ``max_held`` plus ``top_reserve``, the lowest ``lowest_share`` of
    ``max_held``, tiers between them shares in proportion to their rank (``AdmissionConfig``)."""
    prios = sorted({t.priority for t in tiers.values()})
    if len(prios) == 1:
        return {prios[0]: max_held + top_reserve}
    step = (1.0 - lowest_share) / (len(prios) - 1)
    limits = {p: max(1, int(max_held * (1.0 - step * k))) for k, p in enumerate(prios)}
    limits[prios[0]] += top_reserve
    return limits


def best_effort_tier(tiers: TierSet, name: str | None) -> SLOTier:
    if name is not None:
        return tiers[name]
    return max(tiers.values(), key=lambda t: t.priority)


@dataclass(slots=True)
class _Live:
    """A request the replica holds. With ``n`` choices the times, ``n_first`` and ``ctx``
    follow choice 0 (each choice is one sequence of the same length schedule); ``n_out``
    counts every choice's tokens."""

    priority: int
    prompt_len: int  # prefill tokens: the prompt once per choice
    admitted_s: float
    tokens_ahead: int
    first_token_s: float | None = None
    last_token_s: float | None = None
    n_out: int = 0
    ctx: int = 0
    n: int = 1
    n_first: int = 0  # tokens of choice 0
    observed: bool = True  # its TTFT may feed the cost estimate
    modelled_ttft_s: float = 0.0  # the queue formula's TTFT when admitted (before correction)
    ttft_target_s: float = 0.0


@dataclass(slots=True)
class CostEstimate:
    """Running averages of the replica's costs (used until a latency model arrives)."""

    s_per_prefill_token: float = 2e-4
    step_s: float = 0.02
    samples: int = field(default=0)

    def observe_ttft(self, seconds: float, tokens: int) -> None:
        """A request's prefill took ``seconds`` for ``tokens`` (its own + those ahead of it)."""
        if tokens > 0 and seconds > 0:
            per_tok = _clamp(max(seconds - self.step_s, 0.0) / tokens, self.s_per_prefill_token)
            self.s_per_prefill_token += EMA * (per_tok - self.s_per_prefill_token)
            self.samples += 1

    def observe_step(self, seconds: float) -> None:
        if seconds > 0:
            self.step_s += EMA * (_clamp(seconds, self.step_s) - self.step_s)


def _clamp(observed: float, current: float, factor: float = 4.0) -> float:
    """One observation moves an estimate at most ``factor``-fold (robust to outliers)."""
    return min(max(observed, current / factor), current * factor)


class EngineHost:
    """An ``AsyncLLM`` plus the replica's load, admission control and metrics."""

    def __init__(self, cfg: ServeAppConfig, tiers: TierSet, replica: str):
        self.cfg = cfg
        self.files = ReplicaFiles.for_replica(cfg.engine, replica)
        self.provenance = replica_provenance(cfg.engine)  # of its steps and accepted models
        self.best_effort = best_effort_tier(tiers, cfg.admission.best_effort_tier)  # fail fast
        self.tiers = tiers
        self.replica = replica
        self.metrics = EngineMetrics(replica)
        self.costs = CostEstimate()
        self.ttft_error = TTFTCorrection()  # measured / predicted TTFT per tier
        self.start_pace = StartPace()  # time between starts while requests wait
        self.ready_s = 0.0  # when the engine came up: waiting before it is not this replica's load
        self.latency: LatencyModel | None = None
        self.model_version: int | None = None
        self._live: dict[str, _Live] = {}
        self._warmed_up: set[str] = set()  # logprob paths some request has used
        self._llm: Any = None
        self.kv = KVUsage()  # KV blocks in use, as of the engine's last step
        self.hold_limits = hold_limits(tiers, cfg.max_ongoing_requests,
                                       cfg.admission.lowest_tier_share,
                                       cfg.admission.top_tier_reserve)

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        for key, value in engine_env(self.cfg.engine, os.environ).items():
            os.environ[key] = value  # the engine core and worker processes inherit it

        sched = None
        if self.cfg.engine.scheduler == "slidingserve":
            sched = scheduler_kwargs(self.cfg, self.files)
        from slidingserve.serve.engine_stats import EngineStatLogger

        stats = EngineStatLogger.factory(
            self.kv, self.metrics.engine if self.cfg.engine.engine_metrics else None)
        self._llm = AsyncLLM.from_engine_args(engine_args(self.cfg.engine, sched),
                                              stat_loggers=[stats])
        self.ready_s = time.time()
        log.info("replica %s: engine up (model %s)", self.replica, self.cfg.engine.name)

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
        if not self.cfg.engine.keep_replica_files:  # its samples already went to the predictor
            shutil.rmtree(self.files.root, ignore_errors=True)

    async def check_health(self) -> None:
        if self._llm is None:
            raise RuntimeError(f"replica {self.replica}: engine not started")
        await self._llm.check_health()

    # ---- load ---------------------------------------------------------------------------
    def set_latency_model(self, model: LatencyModel, version: int) -> None:
        """Apply a new latency model live (the predictor link calls this)."""
        self.latency, self.model_version = model, version
        self.metrics.model_version.set(version, tags={"replica": self.replica})

    def load(self) -> ReplicaLoad:
        waiting: dict[int, int] = {}
        queued: dict[int, int] = {}
        heads: dict[int, _Live] = {}  # per tier, the request waiting longest for its first token
        oldest: dict[int, tuple[float, float]] = {}  # per tier, longest wait (s, share)
        now = time.time()
        for r in self._live.values():
            if r.first_token_s is None:
                waiting[r.priority] = waiting.get(r.priority, 0) + r.prompt_len
                queued[r.priority] = queued.get(r.priority, 0) + 1
                head = heads.get(r.priority)
                if r.observed and (head is None or r.admitted_s < head.admitted_s):
                    heads[r.priority] = r
                if r.ttft_target_s > 0:
                    wait = now - r.admitted_s
                    if wait > oldest.get(r.priority, (0.0, 0.0))[0]:
                        oldest[r.priority] = (wait, wait / r.ttft_target_s)
        per_tok, step = self._costs()
        load = ReplicaLoad(
            ts=now,
            replica=self.replica,
            queue_len=len(self._live),
            running=sum(1 for r in self._live.values() if r.first_token_s is not None),
            waiting_tokens=waiting,
            s_per_prefill_token=per_tok,
            step_s=step,
            model_version=self.model_version,
            hold_limits=self.hold_limits,
            kv_blocks_used=self.kv.used,
            kv_blocks_total=self.kv.total,
            ttft_scale=self._ttft_scale(heads) if self.cfg.admission.learn_ttft_error else {},
            waiting_requests=queued,
            s_per_start=self.start_pace.value,
            late_tiers=self._late_tiers(oldest),
        )
        for tier in self.tiers.values():
            self.metrics.predicted_ttft.set(
                load.predicted_ttft_s(tier.priority, 0),
                tags={"replica": self.replica, "tier": tier.name},
            )
        return load

    def _late_tiers(self, oldest: dict[int, tuple[float, float]]) -> dict[int, float]:
        """Tiers whose longest wait for a first token (``oldest``: seconds, share of the TTFT
        target) exceeds the admission's yield thresholds: lower tiers yield to them."""
        adm = self.cfg.admission
        if not adm.enabled or adm.yield_to_late_tier is None:
            return {}
        return {p: share for p, (wait, share) in oldest.items()
                if share > adm.yield_to_late_tier and wait > adm.yield_min_wait_s}

    def _ttft_scale(self, heads: dict[int, _Live]) -> dict[int, float]:
        """Per tier, the learned measured/predicted TTFT ratio, raised to what the oldest
        request still waiting for its first token (``heads``) already shows (its age over its
        prediction): a queue the engine drains slower than predicted shows at once, not only
        when its requests' first tokens arrive, by which time many more were admitted."""
        now = time.time()
        return self.ttft_error.scales(
            {p: (h.modelled_ttft_s, now - h.admitted_s, h.ttft_target_s)
             for p, h in heads.items()})

    def _costs(self) -> tuple[float, float]:
        if self.latency is None:
            return self.costs.s_per_prefill_token, self.costs.step_s
        ctxs = tuple(r.ctx for r in self._live.values() if r.first_token_s is not None
                     for _ in range(r.n))
        budget = self.cfg.engine.max_num_batched_tokens
        chunk = BatchShape(prefill=((budget, 0),), decode_ctx=ctxs)
        step = float(self.latency.predict(BatchShape(decode_ctx=ctxs))) if ctxs else 0.0
        return float(self.latency.predict(chunk)) / budget, step

    # ---- requests -----------------------------------------------------------------------
    def admit(self, req: GenerateRequest) -> Admitted | Rejected:
        """Admit, downgrade or refuse ``req`` by its predicted TTFT on this replica, and refuse
        it when its tier's share of the replica is full (the lowest tier first). A resend
        (admitted elsewhere, whose replica failed before its first token) is admitted at its
        own tier: the service accepted it once, and refusing it now would turn a replica's
        failure into an error the client never caused."""
        return self._decide(req, self.load())

    def _decide(self, req: GenerateRequest, load: ReplicaLoad) -> Admitted | Rejected:
        adm = self.cfg.admission
        # a request that arrived while the engine started waited for start-up, not for load
        waited = 0.0 if req.arrival_s < self.ready_s else max(time.time() - req.arrival_s, 0.0)
        predicted = waited + load.predicted_ttft_s(req.slo.priority, req.prefill_tokens)
        target = req.slo.ttft_s * adm.margin
        if req.is_resend:
            return Admitted(self.replica, req.slo, None, predicted)
        if adm.enabled and load.is_full_for(req.slo.priority):
            retry = max(adm.min_retry_after_s, int(predicted + 0.999))
            limit = self.hold_limits[req.slo.priority]
            why = (f"replica holds {load.queue_len} requests, the most it takes while admitting "
                   f"tier {req.slo.tier!r} is {limit} (higher tiers keep the rest)")
            return Rejected(self.replica, predicted, req.slo.ttft_s, retry, why, tier_wide=True)
        late = load.late_tier_above(req.slo.priority) if adm.enabled else None
        if late is not None:
            priority, share = late
            name = next((t.name for t in self.tiers.values() if t.priority == priority),
                        str(priority))
            why = (f"replica is behind on tier {name!r}: a request has waited {share:.0%} of "
                   f"its TTFT target for a first token (more than "
                   f"{adm.yield_to_late_tier:.0%}); lower tiers wait until it catches up")
            retry = max(adm.min_retry_after_s, int(predicted + 0.999))
            return Rejected(self.replica, predicted, req.slo.ttft_s, retry, why, tier_wide=True)
        if not adm.enabled or predicted <= target:
            return Admitted(self.replica, req.slo, None, predicted)
        if adm.on_reject == "reject":
            retry = max(adm.min_retry_after_s, int(predicted - req.slo.ttft_s + 0.999))
            return Rejected(self.replica, predicted, req.slo.ttft_s, retry)
        fallback = RequestSLO.of_tier(self.best_effort)
        return Admitted(self.replica, fallback, req.slo.tier, predicted)

    async def generate(self, req: GenerateRequest) -> AsyncIterator[StreamEvent]:
        """``Rejected``; or the engine's refusal of the parameters (a 400 ``StreamError``); or
        ``Admitted``, the request's ``TokenDelta``s and, should it fail, a ``StreamError``.
        The engine takes the request before the admission is sent, so that vLLM's input checks
        refuse bad parameters before the ingress answers (a stream's 200 goes out with the
        admission)."""
        load = self.load()
        decision = self._decide(req, load)
        if isinstance(decision, Rejected):
            yield decision
            return
        slo = decision.slo
        # the engine's first use of a logprobs path costs seconds of set-up: not a prefill cost
        first_use = bool(req.logprob_paths - self._warmed_up)
        live = _Live(slo.priority, req.prefill_tokens, time.time(), 0, ctx=req.prompt_len,
                     n=req.n, observed=not first_use, ttft_target_s=slo.ttft_s)
        live.tokens_ahead = load.tokens_ahead(slo.priority)
        live.modelled_ttft_s = load.modelled_ttft_s(slo.priority, req.prefill_tokens)
        self._live[req.request_id] = live  # in the load from the decision on
        outcome: str | None = None  # None: never admitted (refused, or gone before it was)
        run: EngineRequest | None = None
        ended: BaseException | None = None
        try:
            failed: Exception | None = None
            try:
                run = await self._add(req, slo)
            except Exception as exc:
                refused = _client_error(exc)
                if refused is not None:  # vLLM's input checks refused the parameters: a 400
                    yield refused
                    return
                failed = exc  # reported after the admission, as an engine error
            outcome = "error"
            if run is not None:
                self._warmed_up |= req.logprob_paths
            yield decision
            if failed is not None:
                raise failed
            assert run is not None
            async for delta in self._run(req, live, run):
                yield delta
            outcome = "downgraded" if decision.downgraded_from else "ok"
        except Exception as exc:  # the stream ends with an explicit error, never silently
            ended = exc
            refused = _client_error(exc) if live.n_out == 0 else None
            if refused is not None:  # vLLM refused the parameters later: a 400 all the same
                outcome = None
                yield refused
            else:
                log.warning("replica %s: request %s failed: %s", self.replica, req.request_id,
                            exc)
                yield StreamError(f"engine error: {type(exc).__name__}: {exc}",
                                  {"n_out": live.n_out})
        except BaseException as exc:  # cancelled, or the stream closed: the client went away
            ended = exc
            raise
        finally:
            if run is not None:
                await run.end(ended)
            self._live.pop(req.request_id, None)
            if outcome is not None:  # a 400 is not a served request, as the ingress's own
                self._finish(req, slo, live, outcome)

    async def _add(self, req: GenerateRequest, slo: RequestSLO) -> EngineRequest:
        """Hand ``req`` to the engine (vLLM's input processor checks its parameters here)."""
        if self._llm is None:
            raise RuntimeError("engine not started")
        params = engine_params(req.sampling, slo.extra_args())
        prompt = {"prompt_token_ids": list(req.prompt_token_ids)}
        return await EngineRequest.add(self._llm, req.request_id, prompt, params)

    async def _run(
        self, req: GenerateRequest, live: _Live, run: EngineRequest
    ) -> AsyncIterator[TokenDelta]:
        counts = [0] * live.n
        first = True
        async for out in run.outputs():
            prompt_lp = plain_logprobs(out.prompt_logprobs) if first else None
            first = False
            for comp in out.outputs:
                now = time.time()
                n_new = len(comp.token_ids)
                if n_new:
                    self._observe(live, comp.index, n_new, now)
                counts[comp.index] += n_new
                if comp.finish_reason in ("error", "abort"):  # refused or aborted in the engine
                    raise RuntimeError(f"engine finished the request with {comp.finish_reason!r}"
                                       f" (reason: {comp.stop_reason!r})")
                yield TokenDelta(comp.text, list(comp.token_ids), comp.finish_reason,
                                 req.prompt_len, counts[comp.index], comp.index,
                                 plain_logprobs(comp.logprobs), prompt_lp, comp.stop_reason)
                prompt_lp = None

    def _observe(self, live: _Live, index: int, n_new: int, now: float) -> None:
        """Costs and times from a delta of ``n_new`` tokens of choice ``index``."""
        live.n_out += n_new
        if index != 0:
            return
        if live.first_token_s is None:
            live.first_token_s = now
            self.start_pace.started(
                now, sum(1 for r in self._live.values() if r.first_token_s is None))
            if live.tokens_ahead == 0 and live.observed:  # head of the line: its own prefill
                self.costs.observe_ttft(now - live.admitted_s, live.prompt_len)
            if live.observed:
                self.ttft_error.observe(live.priority, live.modelled_ttft_s,
                                        now - live.admitted_s, live.ttft_target_s)
        elif live.last_token_s is not None:
            self.costs.observe_step((now - live.last_token_s) / n_new)
        live.last_token_s = now
        live.n_first += n_new
        live.ctx += n_new

    def _finish(self, req: GenerateRequest, slo: RequestSLO, live: _Live, outcome: str) -> None:
        record = RequestRecord(
            arrival_s=req.arrival_s,
            tier=slo.tier,
            first_token_s=live.first_token_s,
            last_token_s=live.last_token_s,
            n_out=live.n_first,  # per sequence: TPOT is one choice's pace
            finished=outcome in ("ok", "downgraded"),
        )
        tier = self.tiers[slo.tier]
        bound = SLOTier(tier.name, slo.ttft_s, slo.tpot_s, tier.e2e_s, tier.weight,
                        tier.priority, tier.share)
        self.metrics.finished(
            slo.tier, outcome, record.ttft_s, record.tpot_s, live.n_out, record.meets_slo(bound)
        )


def engine_env(engine: EngineConfig, current: Mapping[str, str]) -> dict[str, str]:
    """Environment variables to set for the engine's processes, given the ``current`` ones
    (a variable the deployment already sets is left as it is)."""
    env: dict[str, str] = {}
    if engine.onednn_primitive_cache is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(engine.onednn_primitive_cache)
    if engine.cpu_threads_bind is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = engine.cpu_threads_bind
    return {k: v for k, v in env.items() if k not in current}


def _client_error(exc: Exception) -> StreamError | None:
    """A 400 for an error vLLM raises for the request's own parameters (its input processor's
    checks: ``VLLMClientError``, as vLLM's server answers them), else None."""
    from vllm.exceptions import VLLMClientError

    from slidingserve.serve.openai_api import clean_message

    if not isinstance(exc, VLLMClientError):
        return None
    return StreamError(clean_message(exc), {"n_out": 0}, status=400,
                       param=getattr(exc, "parameter", None))


def engine_params(sampling: Any, slo_args: dict[str, object]) -> Any:
    """The ``SamplingParams`` the engine runs: the ingress's (or a dict of fields), streamed
    as deltas, with the SLO the scheduler reads in ``extra_args`` (the SLO's keys win over a
    client's ``vllm_xargs``)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    if isinstance(sampling, dict):
        return SamplingParams(**sampling, output_kind=RequestOutputKind.DELTA,
                              extra_args=dict(slo_args))
    params = sampling.clone()
    params.output_kind = RequestOutputKind.DELTA
    params.extra_args = {**(params.extra_args or {}), **slo_args}
    return params


def plain_logprobs(steps: Any) -> list[Any] | None:
    """vLLM's per-position logprobs (a list of ``{id: Logprob}`` or ``FlatLogprobs``) as plain
    ``{id: (logprob, decoded)}`` dicts that pickle small; ``None`` positions stay ``None``."""
    if steps is None:
        return None
    out: list[StepLogprobs | None] = []
    for step in steps:
        out.append(None if step is None else
                   {int(t): (float(lp.logprob), lp.decoded_token) for t, lp in step.items()})
    return out
