"""A non-editable install works from another folder: the wheel carries the tier sets and the
embedded serve config as package data, and an installed copy (not this checkout) loads them.

Builds the wheel without build isolation (the venv's setuptools: offline, ~10 s) and installs it
with ``--no-deps`` into a target folder put first on ``PYTHONPATH``, so the dependencies come
from this venv while ``slidingserve`` itself comes from the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CHECK = r"""
import sys
from pathlib import Path
import slidingserve
from slidingserve.serve.cli import load_serve_file
from slidingserve.serve.config import load_serve_config
from slidingserve.slo import BUILTIN_TIERS, default_tiers_path, load_tiers, shipped_file

here = Path(slidingserve.__file__).resolve()
assert here.is_relative_to(Path(sys.argv[1]).resolve()), here  # the installed copy
assert load_tiers()["interactive"].tpot_s == 0.05, default_tiers_path()
for name in BUILTIN_TIERS:
    load_tiers(name)
_, args = load_serve_file(shipped_file("local.yaml"))
cfg = load_serve_config(args)
assert load_tiers(cfg.tiers_path)["interactive"].ttft_s < 1.0
print("ok", here)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, timeout=300)
    (whl,) = out.glob("slidingserve-*.whl")
    return whl


def test_wheel_carries_the_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("slo_tiers.yaml", "slo_tiers_tight.yaml", "slo_tiers_cpu.yaml", "local.yaml"):
        assert f"slidingserve/configs/{name}" in names, sorted(n for n in names if "yaml" in n)
    assert "slidingserve/py.typed" in names


def test_installed_copy_finds_its_configs_from_another_folder(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", CHECK, str(target)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok"), run.stdout
    main = "import sys; from slidingserve.cli import app; sys.argv[0] = 'slidingserve'; app()"
    cli = subprocess.run([sys.executable, "-c", main, "serve", "--help"], cwd=elsewhere,
                         env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0 and "configs/local.yaml" in cli.stdout, cli.stdout + cli.stderr
