"""The policy interface and its registry.

A policy is a small class with a typed config. ``schedule`` is pure with respect to its input
except for per-request bookkeeping that the policy keys on ``RequestView.key`` and drops in
``forget``. Adding a policy is one file plus one ``@register_policy`` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from slidingserve.latency import LatencyModel
from slidingserve.policy.types import HostLimits, RequestView, SchedulerInput, StepPlan


class PolicyConfig(BaseModel):
    """Base of every policy config: frozen, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy(ABC):
    name: ClassVar[str]
    config_cls: ClassVar[type[PolicyConfig]] = PolicyConfig
    # True declares: when nothing waits, every running request is in decode and all of them
    # fit one more token (KV blocks, max_num_seqs, max_batch_tokens, max_model_len),
    # ``schedule`` returns every running request for one token, preempts nothing, and the call
    # changes no state that later steps depend on. Hosts may then run such a step without
    # calling ``schedule`` (the simulator does: ``SimConfig.skip_fixed_plans``; so does the vLLM
    # adapter). ``decodes_all_fit`` is that condition, shared by every host.
    fixed_decode_steps: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig, latency: LatencyModel):
        self.config = config
        self.latency = latency

    @abstractmethod
    def schedule(self, state: SchedulerInput) -> StepPlan:
        """Plan one engine step."""

    def forget(self, key: int) -> None:  # noqa: B027 - optional hook
        """The request with ``key`` finished or was aborted; drop any state kept for it."""

    @property
    def token_budget(self) -> int | None:
        """The fixed per-step token budget, for fixed-budget baselines (None otherwise)."""
        return None


def decodes_all_fit(running: Sequence[RequestView], num_waiting: int, free_blocks: int,
                    block_size: int, limits: HostLimits) -> bool:
    """The ``fixed_decode_steps`` condition: nothing waits, every running request is in decode
    and all of them fit one more token (KV blocks, max_num_seqs, max_batch_tokens,
    max_model_len)."""
    if num_waiting or not running or len(running) > min(limits.max_num_seqs,
                                                         limits.max_batch_tokens):
        return False
    need = 0
    for v in running:
        c = v.num_computed
        if v.prompt_len + v.num_generated - c != 1 or c >= limits.max_model_len:
            return False
        need += max(-(-(c + 1) // block_size) - v.num_blocks, 0)
    return need <= free_blocks


_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    def deco(cls: type[Policy]) -> type[Policy]:
        if name in _REGISTRY:
            raise ValueError(f"policy {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def policy_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def policy_config(name: str, **overrides: Any) -> PolicyConfig:
    """The config of registered policy ``name`` with ``overrides``; a ValueError names an
    unknown policy, or the first bad field and its value."""
    _load_builtin()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown policy {name!r} (known: {known})") from None
    try:
        return cls.config_cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ValueError(
            f"policy {name!r}: config field {field!r}: {err['msg']} (got {err.get('input')!r})"
        ) from None


def make_policy(name: str, latency: LatencyModel, **overrides: Any) -> Policy:
    """Build a registered policy, validating ``overrides`` against its config class."""
    config = policy_config(name, **overrides)
    return _REGISTRY[name](config, latency)


def _load_builtin() -> None:
    # Importing the package registers every built-in policy exactly once.
    import slidingserve.policy.builtin  # noqa: F401
