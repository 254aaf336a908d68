"""Which served model and hardware a step trace or a latency model belongs to.

A latency model is only valid for the engine build, model and hardware its steps were measured
on: a model trained on a CPU replica's steps predicts nothing useful for a GPU replica. The
predictor keeps them apart by the *served key*, the provenance fields ``engine``, ``model`` and
``hardware`` (the engine version is recorded but not part of the key). A step trace must have
one served key; a model's key is that of the steps it was trained on (``ModelBundle.provenance``).
"""

from __future__ import annotations

from collections.abc import Mapping

from predictor.steptrace import PROVENANCE_COLUMNS, Provenance, StepTrace

SERVED_KEY: tuple[str, ...] = ("engine", "model", "hardware")


class ProvenanceMismatchError(ValueError):
    """Steps or a model of another served model or hardware than the one expected."""


def describe(prov: Provenance) -> str:
    return f"model {prov.model!r} on hardware {prov.hardware!r} (engine {prov.engine!r})"


def same_served(a: Provenance, b: Provenance) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in SERVED_KEY)


def trace_provenance(trace: StepTrace, what: str = "step trace") -> Provenance:
    """The one provenance of ``trace``'s rows; a trace mixing served keys is refused."""
    if len(trace) == 0:
        raise ProvenanceMismatchError(f"{what} is empty: it has no provenance")
    values = {}
    for col in PROVENANCE_COLUMNS:
        distinct = sorted({str(v) for v in trace.provenance[col]})
        if len(distinct) > 1 and col in SERVED_KEY:
            raise ProvenanceMismatchError(
                f"{what} mixes {col}s {distinct}: train one model per served model and hardware"
            )
        values[col] = distinct[0]
    return Provenance(**values)


def bundle_provenance(provenance: Mapping[str, str], what: str = "model") -> Provenance:
    """A model's provenance from ``ModelBundle.provenance``; refused when missing or mixed
    (``fit_bundle`` joins the distinct values of mixed steps with commas)."""
    missing = [c for c in PROVENANCE_COLUMNS if not provenance.get(c)]
    if missing:
        raise ProvenanceMismatchError(f"{what} records no {', '.join(missing)} provenance")
    mixed = [c for c in SERVED_KEY if "," in provenance[c]]
    if mixed:
        raise ProvenanceMismatchError(
            f"{what} was trained on steps of several {', '.join(mixed)}s "
            f"({', '.join(provenance[c] for c in mixed)})"
        )
    return Provenance(**{c: provenance[c] for c in PROVENANCE_COLUMNS})


def require_same(served: Provenance, got: Provenance, what: str, holder: str) -> None:
    """Raise ``ProvenanceMismatchError`` unless ``got`` has ``served``'s served key."""
    if not same_served(served, got):
        diff = ", ".join(f"{f} {getattr(got, f)!r} != {getattr(served, f)!r}"
                         for f in SERVED_KEY if getattr(got, f) != getattr(served, f))
        raise ProvenanceMismatchError(
            f"{what} measured on {describe(got)}, but {holder} {describe(served)} ({diff}): "
            "latency models are kept apart per served model and hardware"
        )
