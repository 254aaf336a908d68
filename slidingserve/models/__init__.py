"""Small models the project builds locally (no downloads) and engine arguments to serve them."""

from slidingserve.models.engine_args import (
    cpu_engine_args,
    cpu_engine_kwargs,
    in_process_engine,
)
from slidingserve.models.tiny import TinyDims, default_data_dir, ensure_tiny_model, pseudo_text

__all__ = [
    "TinyDims",
    "cpu_engine_args",
    "cpu_engine_kwargs",
    "default_data_dir",
    "ensure_tiny_model",
    "in_process_engine",
    "pseudo_text",
]
