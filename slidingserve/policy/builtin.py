"""Imports every built-in policy so that it registers itself."""

from slidingserve.policy import vllm_fcfs  # noqa: F401
