"""The repository's tracked text files: no unresolved merge left behind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^(<{7} |={7}$|>{7} )", re.MULTILINE)
TEXT = (".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".json", ".sh")


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.splitlines() if p.endswith(TEXT)]


def test_no_tracked_file_holds_merge_conflict_markers() -> None:
    bad = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
           for p in _tracked() if p.is_file()
           for text in [p.read_text(errors="replace")]
           for m in MARKER.finditer(text)]
    assert not bad, f"merge-conflict markers left in: {bad}"
