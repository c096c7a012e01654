"""Running `manage.py` subprocesses (the worker, execute_task, demo_tasks) against the test database.

Tests that use them need committed data (`transactional_db`): the subprocesses read and write the
same database through their own connections.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from django_tasks_google.models import TaskExecution

PROJECT_ROOT = Path(settings.BASE_DIR)
# Upper bound for anything a test waits for; reaching it means the test failed.
WAIT_LIMIT = 30.0


def database_url() -> str:
    """A DATABASE_URL naming the test database this test runs against."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        credentials = ""
        if db["USER"]:
            credentials = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'] or '', safe='')}@"
        return f"postgres://{credentials}{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise NotImplementedError(f"no DATABASE_URL for {db['ENGINE']}")


def manage_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def manage(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `manage.py <args>` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=env or manage_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ManagedProcess:
    """A running `manage.py` command in its own session (process group), like a terminal job."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path) -> None:
        self.log_path = log
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_ROOT,
            env=env or manage_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT_LIMIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"manage.py did not exit in {timeout}s; output:\n{self.output()}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the whole session if it does not exit (test cleanup)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(WAIT_LIMIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@contextmanager
def worker(*args: str, log_dir: Path, name: str = "worker") -> Iterator[ManagedProcess]:
    """`manage.py run_tasks <args>` running for the duration of the block (stopped afterwards)."""
    process = ManagedProcess("run_tasks", *args, log=log_dir / f"{name}.log")
    try:
        yield process
    finally:
        process.stop()


def wait_for(condition: Callable[[], Any], *, timeout: float = WAIT_LIMIT, message: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(0.05)


def finished(result_id: str, process: ManagedProcess, *statuses: str) -> TaskExecution:
    """Wait until the execution is in one of `statuses` (default: finished), showing the worker log if not."""
    wanted = statuses or ("SUCCESSFUL", "FAILED")

    def reached() -> TaskExecution | None:
        row = TaskExecution.objects.get(pk=int(result_id))
        return row if row.status in wanted else None

    try:
        return wait_for(reached, message=f"task {result_id} to be {'/'.join(wanted)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker output ---\n{process.output()}") from None


def started(directory: Path, process: ManagedProcess) -> int:
    """Wait for a task's "started" marker; returns the pid it wrote."""
    marker = directory / "started"

    def written() -> str:
        return marker.read_text().strip() if marker.exists() else ""

    try:
        return int(wait_for(written, message=f"{marker} to be written"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker output ---\n{process.output()}") from None


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
