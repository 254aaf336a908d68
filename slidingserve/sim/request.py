"""A request inside the simulator: the view a policy sees plus what only the host knows."""

from __future__ import annotations

from dataclasses import dataclass, field

from slidingserve.metrics import RequestRecord
from slidingserve.policy import RequestView
from slidingserve.workload import RequestSpec


@dataclass(slots=True, eq=False)
class SimRequest:
    spec: RequestSpec  # carries output_len, which never reaches the policy
    view: RequestView  # the policy's view, updated in place by the replica
    replica: int = -1
    tokens_run: int = 0  # tokens of forward passes spent on this request
    tokens_discarded: int = 0  # computed tokens thrown away by preemption (recomputed later)
    late_tokens: int = 0  # output tokens emitted after their token-level deadline
    last_token_s: float | None = None
    finished: bool = False
    lost: bool = False  # started on a replica that failed: never finishes (a violation)
    reroutes: int = 0  # times routed again after its replica failed before it started
    token_times: list[float] | None = field(default=None)
    # token-level deadline of token i (1-based): min(due0 + (i - 1) * tpot, cap)
    due0: float = 0.0
    tpot: float = 0.0
    cap: float = float("inf")

    @property
    def remaining_output(self) -> int:
        return self.spec.output_len - self.view.num_generated

    def record(self) -> RequestRecord:
        v = self.view
        return RequestRecord(
            arrival_s=self.spec.arrival_s,
            tier=self.spec.tier,
            first_token_s=v.first_token_s,
            last_token_s=self.last_token_s,
            n_out=v.num_generated,
            finished=self.finished,
            token_times=self.token_times,
            late_tokens=self.late_tokens,
            expected_tokens=self.spec.output_len,
            key=self.spec.key,
            num_preemptions=v.num_preemptions,
        )
