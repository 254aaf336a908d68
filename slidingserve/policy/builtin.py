"""Imports every built-in policy so that it registers itself."""

from slidingserve.policy import edf, sarathi, vllm_fcfs, vllm_priority  # noqa: F401
