"""End to end: the project under real gunicorn, configured only by environment, receiving pushes.

The server runs `config.settings` (not the test settings) with `TASKS_TARGET=google` and the
variables a Cloud Run deployment sets, plus two that point it at the fakes: the Google API
endpoint and the certificates URL of the test OIDC issuer. This test enqueues with the very same
TASKS (read by running the settings file with that environment), so the Cloud Task lands in the
gRPC fake; then it delivers the push the way Cloud Run's front end would (TLS terminated,
X-Forwarded-Proto: https, the service's Host) to gunicorn, over the test database.
"""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.tasks import TaskResultStatus

from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import push_tasks
from tests.django_tasks_google.cloud_tasks_setup import enqueue
from tests.fakes.google_services import GoogleServicesFake, Push
from tests.fakes.oidc_issuer import OidcIssuer
from tests.processes import PROJECT_ROOT, WAIT_LIMIT, database_url, wait_for

SERVICE_URL = "https://e2e-service-123456789.europe-west1.run.app"
PROJECT = "e2e-project"
REGION = "europe-west1"
SERVICE = "e2e-service"


def production_env(google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> dict[str, str]:
    """What the deployment sets (cloudbuild.yaml), and the two variables that select the fakes."""
    return {
        "TASKS_TARGET": "google",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "e2e-test-secret-key-" * 3,  # strong enough for the Cloud Run check
        "TASKS_PUSH_SECRET": "e2e-push-secret-from-secret-manager-e2e",
        "GCP_PROJECT_ID": PROJECT,
        "GCP_REGION": REGION,
        "SERVICE_NAME": SERVICE,
        "CLOUDRUN_SERVICE_URLS": SERVICE_URL,
        "TASKS_GOOGLE_API_ENDPOINT": google_fake.endpoint,
        "TASKS_OIDC_CERTS_URL": oidc_issuer.certs_url,
    }


def production_tasks(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """TASKS as `config/settings.py` builds it from `env`."""
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        return runpy.run_path(str(PROJECT_ROOT / "config" / "settings.py"))["TASKS"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """`gunicorn config.wsgi:application` in the project directory (its gunicorn.conf.py applies)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application"],
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                **env,
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": database_url(),
                "PORT": str(self.port),
                "WEB_CONCURRENCY": "1",
                "GUNICORN_THREADS": "2",
                "PYTHONUNBUFFERED": "1",
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait_until_ready(self) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
                return False

        wait_for(healthy, message="gunicorn to answer /healthz")

    def deliver(self, push: Push) -> requests.Response:
        """Send a push as Cloud Run's front end forwards it: to the container, TLS already ended."""
        url = urlsplit(push.url)
        headers = {**push.headers, "Host": url.netloc, "X-Forwarded-Proto": url.scheme}
        return requests.request(
            push.method,
            f"http://127.0.0.1:{self.port}{push.path}",
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


@pytest.fixture(scope="module")
def server_env(google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> dict[str, str]:
    return production_env(google_fake, oidc_issuer)


@pytest.fixture(scope="module")
def gunicorn(
    django_db_setup: None, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """One server for the module (it boots in seconds); each test's data is its own."""
    server = Gunicorn(server_env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_push_to_gunicorn_runs_the_task(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    server_env: dict[str, str],
    gunicorn: Gunicorn,
) -> None:
    tasks = production_tasks(server_env, monkeypatch)
    entry = tasks["default"]
    if entry["BACKEND"] != "django_tasks_google.backends.CloudTasksBackend":
        pytest.skip("this project's default alias runs on Cloud Run Jobs")
    queue_id = entry["OPTIONS"]["queue_aliases"]["default"]
    google_fake.add_queue(f"projects/{PROJECT}/locations/{REGION}/queues/{queue_id}", max_attempts=5)
    settings.TASKS = tasks  # enqueue exactly as the server is configured

    result, execution = enqueue(push_tasks.add, 20, 22)
    push = google_fake.task_push(execution.cloud_task_name)

    assert push.url == f"{SERVICE_URL}/tasks/execute/"
    unauthenticated = Push(
        push.method, push.url, push.body, {**push.headers, "Authorization": "Bearer x.y.z"}
    )
    refused = gunicorn.deliver(unauthenticated)
    assert refused.status_code == 401, gunicorn.output()
    assert TaskExecution.objects.get(pk=execution.pk).status == TaskResultStatus.READY

    response = gunicorn.deliver(push)

    assert response.status_code == 204, gunicorn.output()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42
    assert result.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_gunicorn_asks_cloud_tasks_to_retry_a_failed_attempt(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    google_fake: GoogleServicesFake,
    server_env: dict[str, str],
    gunicorn: Gunicorn,
) -> None:
    tasks = production_tasks(server_env, monkeypatch)
    if tasks["default"]["BACKEND"] != "django_tasks_google.backends.CloudTasksBackend":
        pytest.skip("this project's default alias runs on Cloud Run Jobs")
    queue_id = tasks["default"]["OPTIONS"]["queue_aliases"]["default"]
    google_fake.add_queue(f"projects/{PROJECT}/locations/{REGION}/queues/{queue_id}", max_attempts=2)
    settings.TASKS = tasks

    result, execution = enqueue(push_tasks.fails_until_attempt, succeed_on=2)

    first = gunicorn.deliver(google_fake.task_push(execution.cloud_task_name))
    second = gunicorn.deliver(
        google_fake.task_push(execution.cloud_task_name, retry_count=1, previous_response=500)
    )

    assert (first.status_code, second.status_code) == (500, 204), gunicorn.output()
    result.refresh()
    assert (result.status, result.return_value, len(result.errors)) == (TaskResultStatus.SUCCESSFUL, 2, 1)
