"""POST /tasks/execute/: Cloud Tasks pushes replayed through Django's test client.

Each test enqueues through the real backend (CreateTask on the gRPC fake), then plays Cloud
Tasks: `google_fake.task_push()` rebuilds the HTTP request Google would send for the created task
(same URL, body and headers, the X-CloudTasks-* headers, and an ID token minted by the test
issuer for the task's OIDC settings), and the view verifies that token with google-auth against
the issuer's certificates. Results are read the way users read them: `result.refresh()`.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connections
from django.forms.models import model_to_dict
from django.tasks import TaskResultStatus, task_backends
from django.test import Client
from django.test.utils import CaptureQueriesContext

from django_tasks_google.backends import CloudTasksBackend
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import push_tasks
from tests.django_tasks_google.cloud_tasks_setup import (
    ORIGIN,
    QUEUE,
    QUEUE_ID,
    SERVICE_ACCOUNT,
    cloud_tasks_entry,
    enqueue,
    enqueue_captured,
)
from tests.fakes.google_services import GoogleServicesFake, Push
from tests.fakes.oidc_issuer import OidcIssuer, strip_signature

EXECUTE_PATH = "/tasks/execute/"


@pytest.fixture
def configure(settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> Any:
    """Point an alias (default: "default") at CloudTasksBackend, on a queue of 3 attempts."""
    caches["default"].clear()
    if QUEUE not in google_fake.queues:
        google_fake.add_queue(QUEUE, max_attempts=3)

    def configure(alias: str = "default", **options: Any) -> CloudTasksBackend:
        entry = cloud_tasks_entry(google_fake.endpoint, oidc_issuer.certs_url, **options)
        settings.TASKS = {**settings.TASKS, alias: entry}
        return task_backends[alias]

    return configure


@pytest.fixture
def backend(configure: Any) -> CloudTasksBackend:
    return configure()


@pytest.fixture
def push_enqueued(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> Any:
    """Enqueue a task; return its TaskResult and a function building its push (as Cloud Tasks would)."""

    def push_enqueued(task: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        result, execution = enqueue_captured(django_capture_on_commit_callbacks, task, *args, **kwargs)

        def push(**attempt: Any) -> Push:
            return google_fake.task_push(execution.cloud_task_name, **attempt)

        return result, push

    return push_enqueued


def row_state(result_id: str) -> dict[str, Any]:
    return model_to_dict(TaskExecution.objects.get(pk=result_id))


def with_headers(push: Push, **headers: str | None) -> Push:
    """The push with headers replaced (None removes one)."""
    changed = {k: v for k, v in push.headers.items() if k not in headers}
    changed.update({k: v for k, v in headers.items() if v is not None})
    return Push(push.method, push.url, push.body, changed)


def with_token(push: Push, token: str) -> Push:
    return with_headers(push, Authorization=f"Bearer {token}")


def with_body(push: Push, body: bytes) -> Push:
    return Push(push.method, push.url, body, dict(push.headers))


# --- delivery and retries -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_push_runs_the_task_and_stores_the_result(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    delivered = push()

    response = delivered.send(client)

    assert response.status_code == 204
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    assert result.errors == []
    # What was replayed is what Cloud Tasks would send for the created task.
    assert delivered.url == f"{ORIGIN}{EXECUTE_PATH}"
    assert delivered.headers["X-CloudTasks-QueueName"] == QUEUE_ID
    assert delivered.body == f"execution_id={result.id}&backend=default".encode()


@pytest.mark.django_db
def test_a_push_costs_one_claim_and_one_outcome_statement(push_enqueued: Any, client: Client) -> None:
    """Issue 17: the lease is taken by one UPDATE ... RETURNING and the outcome recorded by one
    UPDATE under it. No read, no transaction or savepoint of our own, on SQLite and PostgreSQL."""
    result, push = push_enqueued(push_tasks.add, 2, 3)
    delivered = push()

    with CaptureQueriesContext(connections["default"]) as queries:
        response = delivered.send(client)

    assert response.status_code == 204
    statements = [query["sql"] for query in queries.captured_queries]
    assert [statement.split()[0].upper() for statement in statements] == ["UPDATE", "UPDATE"]
    claim, outcome = statements
    assert "RETURNING" in claim.upper()
    assert "SUCCESSFUL" in outcome and "RETURNING" not in outcome.upper()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db
def test_a_failure_asks_for_a_retry_until_the_queues_last_attempt(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.always_fails)  # the queue allows 3 attempts

    first = push().send(client)
    result.refresh()
    assert (first.status_code, result.status, len(result.errors)) == (500, TaskResultStatus.READY, 1)

    second = push(retry_count=1, previous_response=500).send(client)
    result.refresh()
    assert (second.status_code, result.status, len(result.errors)) == (500, TaskResultStatus.READY, 2)

    last = push(retry_count=2, previous_response=500).send(client)
    result.refresh()
    assert last.status_code == 204  # Cloud Tasks stops here anyway: acknowledge
    assert result.status == TaskResultStatus.FAILED
    assert result.finished_at is not None
    assert [error.exception_class_path for error in result.errors] == [
        "django_tasks_google.base.TaskError"
    ] * 3
    assert "this task always fails" in result.errors[-1].traceback


@pytest.mark.django_db
def test_a_retry_that_succeeds(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.fails_until_attempt, succeed_on=2)

    assert push().send(client).status_code == 500
    assert push(retry_count=1, previous_response=500).send(client).status_code == 204

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2  # the task saw the attempt number Cloud Tasks sent
    assert len(result.errors) == 1


@pytest.mark.django_db
def test_the_attempt_number_is_cloud_tasks_retry_count_plus_one(push_enqueued: Any, client: Client) -> None:
    # Earlier attempts may have been refused (401, 503) without running; they still count.
    result, push = push_enqueued(push_tasks.fails_until_attempt, succeed_on=3)

    assert push(retry_count=2, execution_count=1, previous_response=401).send(client).status_code == 204

    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 3)


@pytest.mark.django_db
def test_without_the_retry_count_header_the_execution_counts_attempts(
    push_enqueued: Any, client: Client
) -> None:
    result, push = push_enqueued(push_tasks.fails_until_attempt, succeed_on=2)
    bare = with_headers(push(), **{"X-CloudTasks-TaskRetryCount": None})

    assert bare.send(client).status_code == 500
    assert bare.send(client).status_code == 204
    result.refresh()
    assert result.return_value == 2


@pytest.mark.django_db(transaction=True)
def test_the_view_is_not_wrapped_in_a_request_transaction(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, client: Client, settings: Any
) -> None:
    # Even with ATOMIC_REQUESTS on: the lease must be committed before the task runs, so that a
    # duplicate delivery sees it.
    connections["default"].settings_dict["ATOMIC_REQUESTS"] = True
    try:
        result, execution = enqueue(push_tasks.reports_transaction)
        assert google_fake.task_push(execution.cloud_task_name).send(client).status_code == 204
    finally:
        connections["default"].settings_dict["ATOMIC_REQUESTS"] = False
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, False)


@pytest.mark.django_db
def test_googles_certificates_are_fetched_once(
    push_enqueued: Any, client: Client, oidc_issuer: OidcIssuer
) -> None:
    for _ in range(3):
        _, push = push_enqueued(push_tasks.add, 2, 3)
        assert push().send(client).status_code == 204

    assert oidc_issuer.fetch_count == 1  # cached for the max-age Google's response announces


@pytest.mark.django_db
def test_a_permanent_error_fails_at_once(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.fails_permanently)

    assert push().send(client).status_code == 204

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "django_tasks_google.base.PermanentTaskError"
    assert result.attempts == 1


@pytest.mark.django_db
def test_a_redelivery_of_a_finished_task_is_acknowledged_without_running(
    push_enqueued: Any, client: Client
) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    assert push().send(client).status_code == 204
    finished = row_state(result.id)

    assert push(retry_count=1, execution_count=1).send(client).status_code == 204
    assert row_state(result.id) == finished


@pytest.mark.django_db
def test_an_inflated_retry_count_does_not_fail_a_task_that_has_not_run(
    push_enqueued: Any, client: Client
) -> None:
    """Issue 11 defect 10: attempt 4 by Cloud Tasks' count, but the row never ran: it runs."""
    result, push = push_enqueued(push_tasks.add, 2, 3)

    assert push(retry_count=3, previous_response=503).send(client).status_code == 204

    result.refresh()
    assert (result.status, result.return_value, result.attempts) == (TaskResultStatus.SUCCESSFUL, 5, 1)


@pytest.mark.django_db
def test_a_delivery_after_the_last_attempt_fails_the_execution(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    # Three attempts started and were lost (e.g. their processes died); the queue allows 3.
    TaskExecution.objects.filter(pk=result.id).update(attempts=3)

    # A re-dispatched task counts from 0 again: the row's count decides.
    assert push(retry_count=0).send(client).status_code == 204

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert "No attempts left" in result.errors[-1].traceback


@pytest.mark.django_db
def test_a_push_before_run_after_is_not_run(push_enqueued: Any, client: Client) -> None:
    """Issue 11 defect 10: an early push is answered so Cloud Tasks comes back, not run."""
    result, push = push_enqueued(push_tasks.add.using(run_after=timedelta(hours=1)), 2, 3)

    response = push().send(client)

    assert response.status_code == 409 and int(response["Retry-After"]) > 0
    result.refresh()
    assert (result.status, result.attempts) == (TaskResultStatus.READY, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["X-CloudTasks-TaskRetryCount", "X-CloudTasks-TaskExecutionCount"])
@pytest.mark.parametrize("value", ["9" * 5000, "-1", "1e3", "\u0661", "1234567890"])
def test_count_headers_must_be_bounded_integers(
    push_enqueued: Any, client: Client, header: str, value: str
) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)

    response = with_headers(push(), **{header: value}).send(client)

    assert response.status_code == 400
    result.refresh()
    assert (result.status, result.attempts) == (TaskResultStatus.READY, 0)


@pytest.mark.django_db
def test_an_unknown_execution_is_acknowledged(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    TaskExecution.objects.filter(pk=result.id).delete()

    assert push().send(client).status_code == 204
    assert not TaskExecution.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_delivery_while_the_lease_is_held_asks_to_come_back(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    # Real concurrency: the first delivery runs in a thread and holds the lease until released.
    result, execution = enqueue(push_tasks.blocks, "duplicate")
    responses: list[int] = []

    def deliver_first() -> None:
        try:
            responses.append(google_fake.task_push(execution.cloud_task_name).send(Client()).status_code)
        finally:
            connections.close_all()

    first = threading.Thread(target=deliver_first)
    first.start()
    try:
        assert push_tasks.gate("duplicate:started").wait(push_tasks.WAIT_LIMIT)
        held = row_state(result.id)
        assert held["status"] == TaskResultStatus.RUNNING

        # Cloud Tasks delivered again (its dispatch deadline passed, or at-least-once delivery).
        duplicate = google_fake.task_push(execution.cloud_task_name, retry_count=1).send(Client())

        # Not 2xx (if the holder dies, the task is retried), and not 429/503, on which Cloud Tasks
        # slows down the whole queue (issue 11 defect 2).
        assert duplicate.status_code == 409
        assert duplicate["Retry-After"] == str(int(backend.heartbeat_timeout.total_seconds()))
        assert row_state(result.id) == held  # the duplicate changed nothing
    finally:
        push_tasks.gate("duplicate:release").set()
        first.join(push_tasks.WAIT_LIMIT)
    assert responses == [204]
    result.refresh()
    assert (result.status, result.return_value, result.attempts) == (
        TaskResultStatus.SUCCESSFUL,
        "released",
        1,
    )


# --- authentication: before anything else, and nothing changes ------------------------------------


def token_cases(issuer: OidcIssuer) -> dict[str, tuple[str | None, int]]:
    """Authorization header values Cloud Tasks would never send, with the expected status."""
    good = {"audience": ORIGIN, "email": SERVICE_ACCOUNT}
    return {
        "no token": (None, 401),
        "not a bearer token": ("Basic c2VydmljZTpwYXNz", 401),
        "garbage": ("Bearer not.a.token", 401),
        "bad signature": (
            f"Bearer {issuer.mint(**good, signing_key=issuer.wrong_key, kid=issuer.key.kid)}",
            401,
        ),
        "expired": (f"Bearer {issuer.mint(**good, issued_at=1_700_000_000)}", 401),
        "wrong audience": (f"Bearer {issuer.mint('https://other-service.a.run.app', SERVICE_ACCOUNT)}", 401),
        "audience with the path (Cloud Tasks' default)": (
            f"Bearer {issuer.mint(f'{ORIGIN}{EXECUTE_PATH}', SERVICE_ACCOUNT)}",
            401,
        ),
        "not Google's issuer": (f"Bearer {issuer.mint(**good, issuer='https://evil.example.com')}", 401),
        "signature removed (public service)": (f"Bearer {strip_signature(issuer.mint(**good))}", 401),
        "wrong email": (f"Bearer {issuer.mint(ORIGIN, 'someone@test-project.iam.gserviceaccount.com')}", 403),
        "unverified email": (f"Bearer {issuer.mint(**good, email_verified=False)}", 403),
    }


AUTH_CASES = [
    "no token",
    "not a bearer token",
    "garbage",
    "bad signature",
    "expired",
    "wrong audience",
    "audience with the path (Cloud Tasks' default)",
    "not Google's issuer",
    "signature removed (public service)",
    "wrong email",
    "unverified email",
]


@pytest.mark.django_db
@pytest.mark.parametrize("case", AUTH_CASES)
def test_unauthenticated_pushes_are_refused_and_change_nothing(
    push_enqueued: Any, client: Client, oidc_issuer: OidcIssuer, case: str
) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    before = row_state(result.id)
    authorization, expected = token_cases(oidc_issuer)[case]
    refused = with_headers(push(), Authorization=authorization)

    response = refused.send(client)

    assert response.status_code == expected
    if expected == 401:
        assert response["WWW-Authenticate"] == "Bearer"
    assert row_state(result.id) == before
    # The same push with Google's real token goes through.
    assert push().send(client).status_code == 204


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["no token", "bad signature", "wrong email"])
def test_authentication_comes_before_the_body(
    push_enqueued: Any, client: Client, oidc_issuer: OidcIssuer, settings: Any, case: str
) -> None:
    # Unknown aliases and garbage bodies get the same answer as a real one: nothing is revealed.
    settings.TASKS = {**settings.TASKS, "local": {"BACKEND": "django_tasks_google.backends.ProcessBackend"}}
    _, push = push_enqueued(push_tasks.add, 2, 3)
    authorization, expected = token_cases(oidc_issuer)[case]
    for body in [b"execution_id=1&backend=nope", b"execution_id=1&backend=local", b"\xff\x00garbage", b""]:
        response = with_headers(with_body(push(), body), Authorization=authorization).send(client)
        assert response.status_code == expected, body


@pytest.mark.django_db
def test_certificates_outage_is_a_503_and_changes_nothing(
    push_enqueued: Any, client: Client, oidc_issuer: OidcIssuer
) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    before = row_state(result.id)
    oidc_issuer.error_status = 500

    response = push().send(client)

    assert response.status_code == 503  # our outage, not the caller's fault: Cloud Tasks retries
    assert row_state(result.id) == before


@pytest.mark.django_db
def test_a_private_service_can_trust_cloud_runs_verification(
    configure: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    client: Client,
    django_capture_on_commit_callbacks: Any,
) -> None:
    configure(oidc_trust_platform_signature=True)
    result, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 2, 3)
    push = google_fake.task_push(execution.cloud_task_name)
    # What a private Cloud Run service hands the container after checking the token itself.
    stripped = strip_signature(push.headers["Authorization"].removeprefix("Bearer "))
    other_account = strip_signature(oidc_issuer.mint(ORIGIN, "someone@test-project.iam.gserviceaccount.com"))

    assert with_token(push, other_account).send(client).status_code == 403  # claims are still checked
    assert with_token(push, stripped).send(client).status_code == 204
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db
def test_a_token_of_another_backend_is_refused(
    configure: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    client: Client,
    django_capture_on_commit_callbacks: Any,
) -> None:
    configure()
    configure("second", oidc_service_account="second-invoker@test-project.iam.gserviceaccount.com")
    result, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 2, 3)
    push = google_fake.task_push(execution.cloud_task_name)
    before = row_state(result.id)
    # Authentic, but issued for the "second" backend's identity while the body names "default".
    second_token = oidc_issuer.mint(ORIGIN, "second-invoker@test-project.iam.gserviceaccount.com")

    assert with_token(push, second_token).send(client).status_code == 403
    assert row_state(result.id) == before


# --- malformed pushes: 400 once authenticated, and nothing changes --------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"backend=default",
        b"execution_id=ID",
        b"execution_id=&backend=default",
        b"execution_id=abc&backend=default",
        b"execution_id=-1&backend=default",
        b"execution_id=0&backend=default",
        b"execution_id=1.5&backend=default",
        b"execution_id=%EF%BC%91&backend=default",  # a full-width digit one
        b"execution_id=99999999999999999999&backend=default",
        b"execution_id=ID&execution_id=ID&backend=default",
        b"execution_id=ID&backend=default&backend=default",
        b'{"execution_id": "ID", "backend": "default"}',
        b"\xff\xfe\x00\x01",
    ],
)
def test_malformed_bodies_are_400(push_enqueued: Any, client: Client, body: bytes) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    before = row_state(result.id)

    response = with_body(push(), body.replace(b"ID", result.id.encode())).send(client)

    assert response.status_code == 400
    assert row_state(result.id) == before


@pytest.mark.django_db
def test_an_unknown_backend_is_400(push_enqueued: Any, client: Client) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    before = row_state(result.id)

    response = with_body(push(), f"execution_id={result.id}&backend=nope".encode()).send(client)

    assert response.status_code == 400
    assert b"Unknown backend 'nope'" in response.content
    assert row_state(result.id) == before


@pytest.mark.django_db
def test_a_backend_that_is_not_cloud_tasks_is_refused(
    push_enqueued: Any, client: Client, settings: Any
) -> None:
    # A local backend configured in the same deployment: pushes must never run its executions.
    settings.TASKS = {**settings.TASKS, "local": {"BACKEND": "django_tasks_google.backends.ProcessBackend"}}
    result, push = push_enqueued(push_tasks.add, 2, 3)
    before = row_state(result.id)

    response = with_body(push(), f"execution_id={result.id}&backend=local".encode()).send(client)

    assert response.status_code == 400
    assert b"'local' is not a Cloud Tasks backend" in response.content
    assert row_state(result.id) == before


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["", "one", "-1", "1.0", "²"])
def test_a_malformed_retry_count_is_400(push_enqueued: Any, client: Client, value: str) -> None:
    result, push = push_enqueued(push_tasks.add, 2, 3)
    before = row_state(result.id)

    response = with_headers(push(), **{"X-CloudTasks-TaskRetryCount": value}).send(client)

    assert response.status_code == 400
    assert row_state(result.id) == before


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_only_post_is_allowed(backend: CloudTasksBackend, client: Client, method: str) -> None:
    assert getattr(client, method)(EXECUTE_PATH).status_code == 405


@pytest.mark.django_db
def test_without_a_cloud_tasks_backend_the_endpoint_is_404(
    client: Client, oidc_issuer: OidcIssuer, settings: Any
) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks_google.backends.ProcessBackend"}}
    token = oidc_issuer.mint(ORIGIN, SERVICE_ACCOUNT)
    response = client.post(
        EXECUTE_PATH,
        data=b"execution_id=1&backend=default",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 404
