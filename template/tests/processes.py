"""Running the project's processes against the test database: `manage.py` commands (the worker,
execute_task, demo_tasks) and the service under gunicorn as Cloud Run runs it.

Tests that use them need committed data (`transactional_db`): the subprocesses read and write the
same database through their own connections.
"""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.db import connection

from django_tasks_google.models import TaskExecution

if TYPE_CHECKING:
    from tests.fakes.google_services import GoogleServicesFake, Push
    from tests.fakes.oidc_issuer import OidcIssuer

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


# --- the service as Cloud Run runs it ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Deployment:
    """The project deployed on Google Cloud as cloudbuild.yaml configures it, with two differences:
    its Google API endpoint is the test's fake (or emulator) and its OIDC certificates come from the
    test issuer. `settings_module` may name settings derived from `config.settings` (the chaos
    suite's shorter leases)."""

    project: str
    region: str
    service: str
    settings_module: str = "config.settings"

    @property
    def url(self) -> str:
        """The service's URL, shaped like the ones Cloud Run assigns."""
        return f"https://{self.service}-123456789.{self.region}.run.app"

    def env(self, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> dict[str, str]:
        """What the service and its jobs share: this process's environment, the variables the
        deployment sets, the two that select the fakes, and the test database."""
        return {
            **os.environ,
            "TASKS_TARGET": "google",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": f"{self.service}-secret-key-" * 3,  # strong enough for the Cloud Run check
            "TASKS_PUSH_SECRET": f"{self.service}-push-secret-" * 3,  # from Secret Manager when deployed
            "GCP_PROJECT_ID": self.project,
            "GCP_REGION": self.region,
            "SERVICE_NAME": self.service,
            "CLOUDRUN_SERVICE_URLS": self.url,
            "TASKS_GOOGLE_API_ENDPOINT": google_fake.endpoint,
            "TASKS_OIDC_CERTS_URL": oidc_issuer.certs_url,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
        }


def deployed_tasks(env: dict[str, str]) -> dict[str, Any]:
    """TASKS as `config/settings.py` builds it from `env` (to enqueue exactly as the service would)."""
    with mock.patch.dict(os.environ, env):
        tasks: dict[str, Any] = runpy.run_path(str(PROJECT_ROOT / "config" / "settings.py"))["TASKS"]
    return tasks


class Gunicorn:
    """`gunicorn config.wsgi:application` (with the project's gunicorn.conf.py, one worker process) in
    the environment Cloud Run gives a service's container: `env` (see `Deployment.env`), plus PORT,
    K_SERVICE, K_REVISION and K_CONFIGURATION
    (https://docs.cloud.google.com/run/docs/container-contract#services-env-vars)."""

    def __init__(self, env: dict[str, str], log: Path, *, threads: int = 2) -> None:
        self.port = free_port()
        self.log_path = log
        self._log = log.open("w")
        service = env["SERVICE_NAME"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application"],
            cwd=PROJECT_ROOT,
            env={
                **env,
                "PORT": str(self.port),
                "K_SERVICE": service,
                "K_REVISION": f"{service}-00001-abc",
                "K_CONFIGURATION": service,
                "WEB_CONCURRENCY": "1",
                "GUNICORN_THREADS": str(threads),
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait_until_ready(self) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
                return False

        # Django's start alone is slow on a loaded machine.
        wait_for(healthy, timeout=3 * WAIT_LIMIT, message="gunicorn to answer /healthz")

    def deliver(self, push: Push) -> requests.Response:
        """Send a push as Cloud Run's front end forwards it: to the container, TLS already ended."""
        url = urlsplit(push.url)
        headers = {**push.headers, "Host": url.netloc, "X-Forwarded-Proto": url.scheme}
        return requests.request(
            push.method,
            f"{self.url}{push.path}",
            data=push.body,
            headers=headers,
            timeout=WAIT_LIMIT,
            allow_redirects=False,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
            try:
                self.process.wait(WAIT_LIMIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextmanager
def cloud_run_service(env: dict[str, str], log: Path, *, threads: int = 2) -> Iterator[Gunicorn]:
    """The service answering /healthz for the duration of the block (stopped afterwards)."""
    server = Gunicorn(env, log, threads=threads)
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()
