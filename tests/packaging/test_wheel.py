"""A non-editable install works from another folder: the wheel carries the tier sets and the
embedded serve config as package data, and an installed copy (not this checkout) loads them
and serves.

Builds the wheel without build isolation (the venv's setuptools: offline, ~10 s). The first
check installs it with ``--no-deps`` into a target folder put first on ``PYTHONPATH``. The
second makes a fresh virtual environment, runs ``pip install --no-deps`` of the checkout into
it, and starts its own ``slidingserve serve`` console script from an empty folder. The fresh
environment reaches the dependencies (vLLM, Ray, torch: gigabytes, and no network here) through
a ``.pth`` line naming this venv's site-packages, which adds that folder to ``sys.path`` after
its own without running the ``.pth`` files in it, so this checkout's editable install stays
out of the fresh environment and ``slidingserve`` comes from the install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
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
cfg = load_serve_config(args)  # (its cold-start model must be there: validated at load)
assert load_tiers(cfg.tiers_path)["interactive"].ttft_s < 1.0
assert cfg.engine.cold_start_model == "cpu-tiny"
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
    # the embedded config's cold-start latency model (``engine.cold_start_model: cpu-tiny``)
    for name in ("model.json", "mean.txt", "p90.txt"):
        assert f"predictor/data/cpu_tiny/model/{name}" in names


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


def _fresh_venv(where: Path) -> Path:
    """A new venv whose imports fall back to this venv's site-packages; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True,
                   timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], check=True, capture_output=True, text=True).stdout
    (Path(site.strip()) / "zz_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_pip_install_into_a_fresh_venv_then_serve_from_another_folder(tmp_path):
    import httpx

    pytest.importorskip("vllm")
    python = _fresh_venv(tmp_path / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "-q", str(ROOT)], check=True, timeout=600, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import slidingserve; print(slidingserve.__file__)"],
                           cwd=elsewhere, check=True, capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(tmp_path / "venv"), where  # not this checkout
    port, log = 8791, elsewhere / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with log.open("w") as out:
        proc = subprocess.Popen([str(tmp_path / "venv" / "bin" / "slidingserve"), "serve",
                                 "--port", str(port), "--num-cpus", "2"], cwd=elsewhere,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        url, deadline, code = f"http://127.0.0.1:{port}", time.time() + 400, 0
        while time.time() < deadline and proc.poll() is None and code != 200:
            try:
                code = httpx.get(f"{url}/health", timeout=5).status_code
            except httpx.HTTPError:
                code = 0
            time.sleep(1)
        assert code == 200, log.read_text()[-3000:]
        r = httpx.post(f"{url}/v1/completions", timeout=120,
                       json={"prompt": "ka ko ri su", "max_tokens": 4},
                       headers={"x-slo-tier": "standard"})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-2000:]
