"""Imports every built-in policy so that it registers itself."""

from slidingserve.policy import (  # noqa: F401
    decodes_first,
    edf,
    qoserve,
    sarathi,
    slidingserve,
    vllm_fcfs,
    vllm_priority,
)
