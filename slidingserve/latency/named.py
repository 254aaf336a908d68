"""Latency models by name: the CLI's ``--latency-model`` and the capacity configs.

A spec is a registered name (``roofline-h100``, ``qoserve-a100``) or the directory of a trained
predictor bundle (``python -m predictor.train --out DIR``). ``None`` means the default roofline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slidingserve.latency.base import LatencyModel
from slidingserve.latency.linear import QOSERVE_A100, BinnedLinearModel
from slidingserve.latency.roofline import RooflineModel

DEFAULT_LATENCY_MODEL = "roofline-h100"

# predictor models shipped with the project, by name: the LightGBM model of the tiny CPU
# model's measured steps (predictor/data/cpu_tiny/README.md)
SHIPPED_MODEL_DIRS: dict[str, Path] = {
    "cpu-tiny": Path(__file__).resolve().parents[2] / "predictor" / "data" / "cpu_tiny" / "model",
}

_NAMED: dict[str, Callable[[], LatencyModel]] = {
    "roofline-h100": RooflineModel,
    "qoserve-a100": lambda: BinnedLinearModel(QOSERVE_A100),
}


def latency_model_names() -> list[str]:
    return sorted(_NAMED)


def load_latency_model(spec: str | Path | None) -> LatencyModel:
    """The model a spec names (module docstring); errors name the bad spec."""
    if spec is None:
        return _NAMED[DEFAULT_LATENCY_MODEL]()
    text = str(spec)
    if text in _NAMED:
        return _NAMED[text]()
    path = Path(text)
    if not path.is_dir():
        raise ValueError(
            f"latency model {text!r} is neither a known name ({', '.join(latency_model_names())}) "
            "nor a predictor model directory"
        )
    from predictor.model import LightGBMLatencyModel  # the predictor package is optional here

    return LightGBMLatencyModel.load(path)


def describe_latency_model(spec: str | Path | None) -> str:
    """A label for tables and summaries."""
    return DEFAULT_LATENCY_MODEL if spec is None else str(spec)
