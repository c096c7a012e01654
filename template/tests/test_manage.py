"""`manage.py` and a database it cannot reach: one line saying which and what to do, no traceback."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.processes import PROJECT_ROOT


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A PostgreSQL URL whose port is bound but never listens: every connection is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"postgres://orders:s3cret-pw@127.0.0.1:{bound.getsockname()[1]}/orders"


@pytest.mark.parametrize("command", [["migrate"], ["run_tasks"], ["createsuperuser", "--noinput"]])
def test_an_unreachable_database_is_one_clear_line(refused_url: str, command: list[str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings", "DATABASE_URL": refused_url}
    completed = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    line = lines[0]
    assert line.startswith(f"Cannot reach the database {refused_url.replace(':s3cret-pw@', ':***@')} (")
    assert "s3cret-pw" not in completed.stderr
    assert "Connection refused" in line
    assert "set DATABASE_URL" in line
    # The compose hint only where the project has a compose.yaml (PostgreSQL projects).
    assert ("docker compose up -d --wait db" in line) == (PROJECT_ROOT / "compose.yaml").is_file()
