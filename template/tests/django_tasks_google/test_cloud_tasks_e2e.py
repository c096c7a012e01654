"""End to end: the project under real gunicorn, configured only by environment, receiving pushes.

The server runs `config.settings` (not the test settings) with `TASKS_TARGET=google`, the
variables a Cloud Run deployment sets and those Cloud Run gives a service's container, plus two
that point it at the fakes: the Google API endpoint and the certificates URL of the test OIDC
issuer (tests/processes.py: `Deployment`, `Gunicorn`). This test enqueues with the very same
TASKS (read by running the settings file with that environment), so the Cloud Task lands in the
gRPC fake; then it delivers the push the way Cloud Run's front end would (TLS terminated,
X-Forwarded-Proto: https, the service's Host) to gunicorn, over the test database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.tasks import TaskResultStatus

from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import push_tasks
from tests.django_tasks_google.cloud_tasks_setup import enqueue
from tests.fakes.google_services import GoogleServicesFake, Push
from tests.fakes.oidc_issuer import OidcIssuer
from tests.processes import Deployment, Gunicorn, cloud_run_service, deployed_tasks

pytestmark = pytest.mark.google_e2e

DEPLOYMENT = Deployment(project="e2e-project", region="europe-west1", service="e2e-service")
QUEUES = f"projects/{DEPLOYMENT.project}/locations/{DEPLOYMENT.region}/queues"


@pytest.fixture(scope="module")
def server_env(
    django_db_setup: None, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer
) -> dict[str, str]:
    # After the test database is set up: the environment names it.
    return DEPLOYMENT.env(google_fake, oidc_issuer)


@pytest.fixture(scope="module")
def gunicorn(
    django_db_setup: None, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """One server for the module (it boots in seconds); each test's data is its own."""
    with cloud_run_service(server_env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log") as server:
        yield server


@pytest.mark.django_db(transaction=True)
def test_a_push_to_gunicorn_runs_the_task(
    settings: Any,
    google_fake: GoogleServicesFake,
    server_env: dict[str, str],
    gunicorn: Gunicorn,
) -> None:
    tasks = deployed_tasks(server_env)
    entry = tasks["default"]
    if entry["BACKEND"] != "django_tasks_google.backends.CloudTasksBackend":
        pytest.skip("this project's default alias runs on Cloud Run Jobs")
    queue_id = entry["OPTIONS"]["queue_aliases"]["default"]
    google_fake.add_queue(f"{QUEUES}/{queue_id}", max_attempts=5)
    settings.TASKS = tasks  # enqueue exactly as the server is configured

    result, execution = enqueue(push_tasks.add, 20, 22)
    push = google_fake.task_push(execution.cloud_task_name)

    assert push.url == f"{DEPLOYMENT.url}/tasks/execute/"
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
    google_fake: GoogleServicesFake,
    server_env: dict[str, str],
    gunicorn: Gunicorn,
) -> None:
    tasks = deployed_tasks(server_env)
    if tasks["default"]["BACKEND"] != "django_tasks_google.backends.CloudTasksBackend":
        pytest.skip("this project's default alias runs on Cloud Run Jobs")
    queue_id = tasks["default"]["OPTIONS"]["queue_aliases"]["default"]
    google_fake.add_queue(f"{QUEUES}/{queue_id}", max_attempts=2)
    settings.TASKS = tasks

    result, execution = enqueue(push_tasks.fails_until_attempt, succeed_on=2)

    first = gunicorn.deliver(google_fake.task_push(execution.cloud_task_name))
    second = gunicorn.deliver(
        google_fake.task_push(execution.cloud_task_name, retry_count=1, previous_response=500)
    )

    assert (first.status_code, second.status_code) == (500, 204), gunicorn.output()
    result.refresh()
    assert (result.status, result.return_value, len(result.errors)) == (TaskResultStatus.SUCCESSFUL, 2, 1)
