"""scripts/demo.py, the README's first command: it never overwrites a directory unasked.

Its real work (render, install, migrate, `manage.py demo_tasks`) is what the slow tier checks in
every variant: the generated suite runs `demo_tasks` itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_refuses_to_overwrite_an_existing_directory(tmp_path: Path) -> None:
    keep = tmp_path / "demo-service" / "precious.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "demo.py", keep.parent],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "already exists: pass --force to replace it" in result.stderr
    assert keep.read_text() == "mine"
