"""The tier sets shipped inside the package: found by name from any folder, one copy (deploy/
links to the package's files), and the CPU tiers follow the engine benchmark's calibration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slidingserve.slo import (
    BUILTIN_TIERS,
    TierConfigError,
    default_tiers_path,
    load_tiers,
    resolve_tiers_path,
    shipped_file,
)

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_names_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in BUILTIN_TIERS:
        tiers = load_tiers(name)
        assert set(tiers) == {"interactive", "standard", "batch"}, name
    assert load_tiers().source == str(default_tiers_path())
    assert default_tiers_path() == shipped_file("slo_tiers.yaml")
    assert "slidingserve/configs" in default_tiers_path().as_posix()


def test_builtin_tiers_load_beside_a_folder_named_slidingserve(tmp_path):
    """A folder ``slidingserve`` in the current directory (a simulation's output named after
    the policy) joins the package as a namespace portion; the shipped files are still found."""
    (tmp_path / "slidingserve").mkdir()
    code = "from slidingserve.slo import load_tiers; print(sorted(load_tiers('tight')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "interactive" in out.stdout


def test_an_unknown_name_or_missing_file_is_named_with_the_builtins():
    with pytest.raises(TierConfigError, match=r"no-such-tiers.*built-in tier sets: qoserve"):
        load_tiers("no-such-tiers")


@pytest.mark.parametrize("name", ["slo_tiers.yaml", "slo_tiers_tight.yaml", "local.yaml"])
def test_deploy_files_are_the_package_files(name):
    """deploy/ keeps its paths for `serve deploy` and the docs, without a second copy."""
    deploy = ROOT / "deploy" / name
    assert deploy.resolve() == shipped_file(name).resolve()


def test_serve_config_accepts_builtin_names_and_names_a_bad_one():
    from slidingserve.serve.config import ServeConfigError, load_serve_config

    assert load_serve_config({"tiers_path": "cpu-tiny"}).tiers_path == "cpu-tiny"
    with pytest.raises(ServeConfigError, match=r"tiers_path.*'gold'.*cpu-tiny"):
        load_serve_config({"tiers_path": "gold"})


def test_cpu_tiers_follow_the_engine_benchmark_calibration():
    """slo_tiers_cpu.yaml = bench engine's calibrated tiers for its recorded calibration
    (median prompt 250 tokens: TTFT 42 ms, decode step 7.6 ms), the embedded default's tiers."""
    pytest.importorskip("vllm")
    from slidingserve.engine.bench_config import DEFAULT_SCALES, Calibration

    calibrated = Calibration(0.042, 0.0076, 250).tiers(DEFAULT_SCALES)
    shipped = load_tiers("cpu-tiny")
    for name, tier in calibrated.items():
        got = shipped[name]
        assert got.ttft_s == pytest.approx(tier.ttft_s, rel=1e-3), name
        assert got.tpot_s == pytest.approx(tier.tpot_s, rel=1e-3), name
        assert (got.weight, got.priority, got.share) == (tier.weight, tier.priority, tier.share)
    gpu = load_tiers("qoserve")
    assert gpu["interactive"].tpot_s == 0.05  # QoServe's tiers stay for GPU deployments
    assert resolve_tiers_path("cpu-tiny") == shipped_file("slo_tiers_cpu.yaml")


def test_the_embedded_default_serves_the_cpu_tiers():
    from slidingserve.serve.cli import load_serve_file
    from slidingserve.serve.config import load_serve_config

    _, args = load_serve_file(shipped_file("local.yaml"))
    cfg = load_serve_config(args)
    assert cfg.tiers_path == "cpu-tiny" and cfg.engine.model == "tiny"
