"""Imports every built-in policy so that it registers itself."""

from slidingserve.policy import edf, qoserve, sarathi, vllm_fcfs, vllm_priority  # noqa: F401
