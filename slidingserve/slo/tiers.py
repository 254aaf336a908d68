"""SLO tiers.

A tier sets a TTFT target, a TPOT target, an optional end-to-end deadline (time to last
token) and a weight. A request attains its SLO when it meets every target its tier judges
(``judge``; by default every target it sets), with TPOT = (time to last token - TTFT) /
(output tokens - 1). The stricter token-level form puts token i (1-based) due at
``arrival + ttft_s + (i - 1) * tpot_s``.

``decode_deadlines`` says how planners pace decodes (``slidingserve.policy.deadlines``):
``paced`` puts output token i due at ``first token + (i - 1) * tpot_s``; ``banked`` (QoServe's
rule) puts the token after the g-th due at ``max(first token, arrival + ttft_s) + (g + 1) *
tpot_s``, so a first token earlier than its target banks the difference for the decodes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class TierConfigError(ValueError):
    """A tier file (or a tier name) is invalid; the message names file, field and value."""


@dataclass(frozen=True, slots=True)
class SLOTier:
    name: str
    ttft_s: float  # time-to-first-token target, from arrival
    tpot_s: float  # time-per-output-token target
    e2e_s: float | None  # optional deadline for the last token, from arrival
    weight: float  # value of keeping one request of this tier on time
    priority: int  # 0 = most important
    share: float  # default fraction of traffic
    # Targets that decide attainment: a subset of ("ttft", "tpot", "e2e"); None: all set.
    judge: tuple[str, ...] | None = None
    decode_deadlines: Literal["paced", "banked"] = "paced"  # module docstring

    def judges(self, target: str) -> bool:
        """Whether ``target`` ("ttft", "tpot" or "e2e") decides this tier's attainment."""
        return self.judge is None or target in self.judge

    def token_deadline(self, arrival_s: float, token_index: int) -> float:
        """Time token ``token_index`` (1-based) is due under the token-level SLO."""
        return arrival_s + self.ttft_s + (token_index - 1) * self.tpot_s


class _TierModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    ttft_s: float = Field(gt=0)
    tpot_s: float = Field(gt=0)
    e2e_s: float | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)
    priority: int | None = Field(default=None, ge=0)
    share: float = Field(default=0.0, ge=0)
    judge: list[Literal["ttft", "tpot", "e2e"]] | None = Field(default=None, min_length=1)
    decode_deadlines: Literal["paced", "banked"] = "paced"

    @model_validator(mode="after")
    def _judged_targets_set(self) -> _TierModel:
        if self.judge is not None and "e2e" in self.judge and self.e2e_s is None:
            raise ValueError("judge lists 'e2e' but the tier sets no e2e_s")
        return self


class _TierFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_tier: str | None = None
    tiers: list[_TierModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> _TierFileModel:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tier name(s): {dupes}")
        if self.default_tier is not None and self.default_tier not in names:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of {names}")
        return self


class TierSet(Mapping[str, SLOTier]):
    """An ordered, immutable set of tiers, looked up by name."""

    def __init__(self, tiers: list[SLOTier], default: str | None = None, source: str = "<memory>"):
        if not tiers:
            raise TierConfigError(f"{source}: tiers: at least one tier is required")
        self._tiers = {t.name: t for t in tiers}
        self.default_name = default if default is not None else tiers[0].name
        self.source = source

    def __getitem__(self, name: str) -> SLOTier:
        try:
            return self._tiers[name]
        except KeyError:
            raise TierConfigError(
                f"unknown SLO tier {name!r} (known: {', '.join(self._tiers)}; from {self.source})"
            ) from None

    def __contains__(self, name: object) -> bool:
        # Mapping's default goes through __getitem__, whose error is not a KeyError.
        return name in self._tiers

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)

    @property
    def default(self) -> SLOTier:
        return self._tiers[self.default_name]

    def mix(self) -> dict[str, float]:
        """Default traffic shares, normalised; uniform when the file gives none."""
        total = sum(t.share for t in self._tiers.values())
        if total <= 0:
            return {n: 1.0 / len(self._tiers) for n in self._tiers}
        return {n: t.share / total for n, t in self._tiers.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_tier": self.default_name,
            "tiers": [
                {k: getattr(t, k) for k in SLOTier.__slots__}  # type: ignore[attr-defined]
                for t in self._tiers.values()
            ],
        }


# Tier sets shipped inside the package (``slidingserve/configs/``; ``deploy/`` links to them),
# usable by name wherever a tier file path is taken.
BUILTIN_TIERS: dict[str, str] = {
    "qoserve": "slo_tiers.yaml",  # QoServe's published tiers: the default, for GPU deployments
    "tight": "slo_tiers_tight.yaml",  # chat-style interactive targets, shorter batch window
    "cpu-tiny": "slo_tiers_cpu.yaml",  # what the CPU engine of the tiny model can meet
    # QoServe's published capacity experiment (judged and paced as published)
    "qoserve-protocol": "slo_tiers_qoserve_protocol.yaml",
}
DEFAULT_TIERS = "qoserve"


def shipped_file(name: str) -> Path:
    """A config file shipped inside the package (``slidingserve/configs/NAME``). Resolved from
    this module's location, not ``importlib.resources``: a folder named ``slidingserve`` in the
    current directory (say, a simulation's output) would otherwise join the package as a
    namespace portion and hide the shipped files."""
    return Path(__file__).resolve().parent.parent / "configs" / name


def default_tiers_path() -> Path:
    """The shipped default tier file (QoServe's tiers; ``deploy/slo_tiers.yaml`` links to it)."""
    return shipped_file(BUILTIN_TIERS[DEFAULT_TIERS])


def resolve_tiers_path(spec: str | Path | None) -> Path:
    """A tier file from a path, a built-in name (``BUILTIN_TIERS``) or None (the default)."""
    if spec is None:
        return default_tiers_path()
    if str(spec) in BUILTIN_TIERS:
        return shipped_file(BUILTIN_TIERS[str(spec)])
    return Path(spec)


def tiers_from_dict(data: Any, source: str = "<memory>") -> TierSet:
    try:
        model = _TierFileModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _format_loc(data, err["loc"])
        value = err.get("input")
        raise TierConfigError(f"{source}: field {loc}: {err['msg']} (got {value!r})") from None
    tiers = [
        SLOTier(
            name=t.name,
            ttft_s=t.ttft_s,
            tpot_s=t.tpot_s,
            e2e_s=t.e2e_s,
            weight=t.weight,
            priority=t.priority if t.priority is not None else i,
            share=t.share,
            judge=tuple(dict.fromkeys(t.judge)) if t.judge is not None else None,
            decode_deadlines=t.decode_deadlines,
        )
        for i, t in enumerate(model.tiers)
    ]
    return TierSet(tiers, model.default_tier, source)


def load_tiers(path: str | Path | None = None) -> TierSet:
    """Load and validate a tier file (a path or a built-in name, ``resolve_tiers_path``);
    errors name the file, the field and the bad value."""
    p = resolve_tiers_path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise TierConfigError(f"{p}: tier file not found (built-in tier sets: "
                              f"{', '.join(BUILTIN_TIERS)})") from None
    except yaml.YAMLError as exc:
        raise TierConfigError(f"{p}: not valid YAML: {exc}") from None
    return tiers_from_dict(data, source=str(p))


def scale_tiers(tiers: TierSet, factor: float) -> TierSet:
    """``tiers`` with every latency target (TTFT, TPOT, end-to-end) multiplied by ``factor``
    (DistServe's SLO scale: < 1 tightens, > 1 relaxes); weights, shares and judging kept."""
    if not (math.isfinite(factor) and factor > 0):
        raise TierConfigError(f"SLO scale must be a positive number (got {factor!r})")
    if factor == 1.0:
        return tiers
    scaled = [
        replace(
            t,
            ttft_s=t.ttft_s * factor,
            tpot_s=t.tpot_s * factor,
            e2e_s=None if t.e2e_s is None else t.e2e_s * factor,
        )
        for t in tiers.values()
    ]
    return TierSet(scaled, tiers.default_name, f"{tiers.source} x{factor:g}")


def _format_loc(data: Any, loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location, naming tiers by name: ``tiers[interactive].ttft_s``."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            entry = node[item] if isinstance(node, list) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            parts[-1] += f"[{name or item}]"
            node = node[item] if isinstance(node, list) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "<root>"
