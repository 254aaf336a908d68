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
from slidingserve.latency.roofline import RooflineConfig, RooflineModel

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SCHEMA_VERSION",
    "BatchShape",
    "LatencyModel",
    "RooflineConfig",
    "RooflineModel",
    "features_of",
    "features_of_many",
]
