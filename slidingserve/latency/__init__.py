"""Batch latency models: the protocol the policies plan with, batch features, and a roofline model.

The LightGBM predictor (``predictor/``) implements the same protocol.
"""

from slidingserve.latency.base import LatencyModel
from slidingserve.latency.features import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    BatchShape,
    features_of,
    features_of_many,
)
from slidingserve.latency.linear import QOSERVE_A100, BinnedLinearConfig, BinnedLinearModel
from slidingserve.latency.named import (
    DEFAULT_LATENCY_MODEL,
    describe_latency_model,
    latency_model_names,
    load_latency_model,
)
from slidingserve.latency.overhead import StepOverhead
from slidingserve.latency.roofline import RooflineConfig, RooflineModel
from slidingserve.latency.scaled import ScaledLatency

__all__ = [
    "DEFAULT_LATENCY_MODEL",
    "FEATURE_NAMES",
    "FEATURE_SCHEMA_VERSION",
    "QOSERVE_A100",
    "BatchShape",
    "BinnedLinearConfig",
    "BinnedLinearModel",
    "LatencyModel",
    "RooflineConfig",
    "RooflineModel",
    "ScaledLatency",
    "StepOverhead",
    "describe_latency_model",
    "features_of",
    "features_of_many",
    "latency_model_names",
    "load_latency_model",
]
