"""CloudTasksBackend against the gRPC fake of Cloud Tasks (real client library, real wire).

Delivery (the CreateTask request the fake received), when it happens (only after the enqueueing
transaction commits), failures of the API, the attempt limit read from the queue and its cache,
and the configuration checks. The push side is tested in test_execute_view.py.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import grpc
import pytest
from django.core.cache import caches
from django.db import connection, transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.checks import check_tasks
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_enqueued
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from google.cloud import tasks_v2

from django_tasks_google.backends import CloudTasksBackend, TaskDispatchError, push_mac
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import push_tasks
from tests.django_tasks_google.cloud_tasks_setup import (
    BASE_URL,
    EXECUTE_URL,
    LOCATION,
    ORIGIN,
    PROJECT,
    QUEUE,
    SERVICE_ACCOUNT,
    cloud_tasks_entry,
    enqueue_captured,
)
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer

OTHER_QUEUE = f"projects/{PROJECT}/locations/{LOCATION}/queues/other-default"


@pytest.fixture
def configure(settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> Any:
    """Point an alias (default: "default") at CloudTasksBackend; returns the backend."""
    caches["default"].clear()  # max_attempts is cached per alias/project/location/queue

    def configure(alias: str = "default", queues: dict[str, str] | None = None, **options: Any) -> Any:
        entry = cloud_tasks_entry(google_fake.endpoint, oidc_issuer.certs_url, queues, **options)
        settings.TASKS = {**settings.TASKS, alias: entry}
        return task_backends[alias]

    return configure


@pytest.fixture
def backend(configure: Any, google_fake: GoogleServicesFake) -> CloudTasksBackend:
    google_fake.add_queue(QUEUE, max_attempts=3)
    return configure()


@pytest.fixture
def enqueued_signals() -> Any:
    received: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        received.append(task_result)

    task_enqueued.connect(receiver)
    yield received
    task_enqueued.disconnect(receiver)


# --- the task Cloud Tasks is asked to create ----------------------------------------------------


@pytest.mark.django_db
def test_enqueue_creates_an_http_task_for_the_execute_endpoint(
    backend: CloudTasksBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    enqueued_signals: list[Any],
) -> None:
    result, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 2, 3)

    (call,) = google_fake.calls_to("CreateTask")
    request = call.request
    assert request.parent == QUEUE  # "default" through queue_aliases
    assert call.metadata["x-goog-request-params"] == f"parent={QUEUE}"
    task = request.task
    assert task.name.startswith(f"{QUEUE}/tasks/")
    http = task.http_request
    assert http.http_method == tasks_v2.HttpMethod.POST
    assert http.url == EXECUTE_URL == f"{BASE_URL}execute/"
    assert http.body == f"execution_id={execution.pk}&backend=default".encode()
    assert dict(http.headers) == {
        "Content-Type": "application/x-www-form-urlencoded",
        push_mac.HEADER: push_mac.for_execution(backend, execution.pk),  # test_push_security.py
    }
    assert http.oidc_token.service_account_email == SERVICE_ACCOUNT
    assert http.oidc_token.audience == ORIGIN  # the origin of base_url, always explicit
    assert "schedule_time" not in task
    # Not Cloud Tasks' 10 minutes: the backend's dispatch_deadline_seconds (30 minutes).
    assert task.dispatch_deadline == timedelta(minutes=30)
    # What the backend stored (by the INSERT), and told the world. The queue's max_attempts is
    # not looked up on the enqueue path: the executor reads it when the push arrives.
    assert execution.cloud_task_name == task.name
    assert execution.max_attempts is None
    assert google_fake.requests("GetQueue") == []
    assert execution.status == TaskResultStatus.READY
    assert result.status == TaskResultStatus.READY
    assert [r.id for r in enqueued_signals] == [result.id]
    assert google_fake.tasks[task.name].http_request.body == http.body


@pytest.mark.django_db
def test_task_names_are_random_distinct_and_stored_by_the_insert(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, first = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 1)
    _, second = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 1)

    ids = [name.rsplit("/", 1)[1] for name in (first.cloud_task_name, second.cloud_task_name)]
    assert ids[0] != ids[1]
    # Random (Google advises against sequential ids), so known before the row exists.
    assert all(re.fullmatch(r"[0-9a-f]{32}", task_id) for task_id in ids)
    assert [request.task.name for request in google_fake.requests("CreateTask")] == [
        first.cloud_task_name,
        second.cloud_task_name,
    ]


@pytest.mark.django_db(transaction=True)
def test_enqueue_is_one_insert_and_one_create_task(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    with CaptureQueriesContext(connection) as queries:
        result = push_tasks.add.enqueue(1, 2)

    # The task name is chosen before the INSERT, which stores it: no UPDATE after CreateTask.
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["INSERT"]
    (request,) = google_fake.requests("CreateTask")
    assert TaskExecution.objects.get(pk=result.id).cloud_task_name == request.task.name
    # And one API call: no GetQueue (the executor reads max_attempts when the push arrives).
    assert [call.method.rsplit("/", 1)[1] for call in google_fake.calls] == ["CreateTask"]


@pytest.mark.django_db
@pytest.mark.parametrize("seconds", [15, 600, 1800])
def test_dispatch_deadline_option_applies_to_tasks_without_a_timeout(
    configure: Any, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any, seconds: int
) -> None:
    google_fake.add_queue(QUEUE)
    configure(dispatch_deadline_seconds=seconds)

    enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    enqueue_captured(
        django_capture_on_commit_callbacks, push_tasks.add.using(timeout=timedelta(minutes=1)), 1, 2
    )

    without, with_timeout = google_fake.requests("CreateTask")
    assert without.task.dispatch_deadline == timedelta(seconds=seconds)
    assert with_timeout.task.dispatch_deadline == timedelta(minutes=1)  # the task's own wins


@pytest.mark.django_db
def test_run_after_becomes_the_schedule_time(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    when = timezone.now().replace(microsecond=500000) + timedelta(days=2)

    _, execution = enqueue_captured(
        django_capture_on_commit_callbacks, push_tasks.add.using(run_after=when), 1, 2
    )

    (request,) = google_fake.requests("CreateTask")
    assert request.task.schedule_time == when
    assert execution.run_after == when


@pytest.mark.django_db
def test_a_timedelta_run_after_is_relative_to_the_enqueue(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    before = timezone.now()
    _, execution = enqueue_captured(
        django_capture_on_commit_callbacks, push_tasks.add.using(run_after=timedelta(hours=2)), 1, 2
    )
    after = timezone.now()

    (request,) = google_fake.requests("CreateTask")
    schedule_time = request.task.schedule_time
    assert before + timedelta(hours=2) <= schedule_time <= after + timedelta(hours=2)
    assert execution.run_after == schedule_time


@pytest.mark.django_db
@pytest.mark.parametrize(
    "run_after",
    [timedelta(days=30, seconds=1), "datetime"],
    ids=["timedelta", "datetime"],
)
def test_run_after_beyond_30_days_is_refused(backend: CloudTasksBackend, run_after: Any) -> None:
    if run_after == "datetime":
        run_after = timezone.now() + timedelta(days=31)
    with pytest.raises(InvalidTask, match="more than 30 days ahead"):
        push_tasks.add.using(run_after=run_after)
    assert not TaskExecution.objects.exists()


@pytest.mark.django_db
def test_timeout_becomes_the_dispatch_deadline(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    task = push_tasks.add.using(timeout=timedelta(minutes=20))

    _, execution = enqueue_captured(django_capture_on_commit_callbacks, task, 1, 2)

    (request,) = google_fake.requests("CreateTask")
    assert request.task.dispatch_deadline == timedelta(minutes=20)
    assert execution.timeout == timedelta(minutes=20)


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", [timedelta(seconds=14), timedelta(minutes=30, seconds=1)], ids=str)
def test_timeout_outside_the_dispatch_deadline_range_is_refused(
    backend: CloudTasksBackend, timeout: timedelta
) -> None:
    with pytest.raises(InvalidTask, match="Task timeout must be between 0:00:15 and 0:30:00"):
        push_tasks.add.using(timeout=timeout)


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", [timedelta(seconds=15), timedelta(minutes=30)], ids=str)
def test_dispatch_deadline_limits_are_inclusive(
    backend: CloudTasksBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    timeout: timedelta,
) -> None:
    enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add.using(timeout=timeout), 1, 2)

    (request,) = google_fake.requests("CreateTask")
    assert request.task.dispatch_deadline == timeout


@pytest.mark.django_db
def test_explicit_options_shape_the_task(
    configure: Any, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    google_fake.add_queue(QUEUE)
    configure(
        execute_url="https://tasks.example.com/hooks/run/",
        oidc_audience="https://tasks.example.com",
    )

    enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    (request,) = google_fake.requests("CreateTask")
    assert request.task.http_request.url == "https://tasks.example.com/hooks/run/"
    assert request.task.http_request.oidc_token.audience == "https://tasks.example.com"


# --- only after the enqueueing transaction commits -------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_task_is_created_only_once_the_transaction_commits(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    with transaction.atomic():
        result = push_tasks.add.enqueue(1, 2)
        assert google_fake.requests("CreateTask") == []
        assert TaskExecution.objects.filter(pk=result.id).exists()

    (request,) = google_fake.requests("CreateTask")
    assert request.task.http_request.body == f"execution_id={result.id}&backend=default".encode()
    assert TaskExecution.objects.get(pk=result.id).cloud_task_name == request.task.name


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_enqueue_creates_no_task(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        push_tasks.add.enqueue(1, 2)
        raise Abort

    assert google_fake.calls_to("CreateTask") == []
    assert google_fake.calls_to("GetQueue") == []
    assert not TaskExecution.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_without_a_transaction_the_task_is_created_before_enqueue_returns(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    result = push_tasks.add.enqueue(1, 2)

    assert len(google_fake.requests("CreateTask")) == 1
    assert TaskExecution.objects.get(pk=result.id).cloud_task_name


# --- API failures -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
    ids=lambda code: code.name,
)
def test_an_unavailable_api_leaves_the_execution_ready_for_recovery(
    configure: Any,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    enqueued_signals: list[Any],
    caplog: pytest.LogCaptureFixture,
    code: grpc.StatusCode,
) -> None:
    google_fake.add_queue(QUEUE)
    configure(create_task_timeout_seconds=0.5)
    google_fake.fail_next("CreateTask", code, "the service is down", times=10_000)

    with caplog.at_level(logging.WARNING, logger="django_tasks_google"):
        result, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    # Retried within create_task_timeout_seconds (how often depends on the machine's speed),
    # always under the name the INSERT stored, then given up: the execution is not failed, it
    # waits for recover_tasks.
    requests = google_fake.requests("CreateTask")
    assert {request.task.name for request in requests} == {execution.cloud_task_name}
    assert google_fake.tasks == {}
    assert execution.status == TaskResultStatus.READY
    assert (execution.finished_at, execution.errors) == (None, [])
    assert result.status == TaskResultStatus.READY
    assert [r.id for r in enqueued_signals] == [result.id]
    assert any(
        record.levelno == logging.WARNING
        and f"Could not dispatch task {execution.pk}" in record.getMessage()
        and "recover_tasks" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.django_db
def test_a_transient_error_is_retried_under_the_same_name(
    backend: CloudTasksBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    enqueued_signals: list[Any],
) -> None:
    google_fake.fail_next("CreateTask", grpc.StatusCode.DEADLINE_EXCEEDED, times=2)

    result, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    first, second, third = google_fake.requests("CreateTask")
    assert first.task.name == second.task.name == third.task.name == execution.cloud_task_name
    assert execution.status == TaskResultStatus.READY
    assert list(google_fake.tasks) == [execution.cloud_task_name]
    assert [r.id for r in enqueued_signals] == [result.id]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied"),
        (grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument"),
        (grpc.StatusCode.FAILED_PRECONDITION, "FailedPrecondition"),
    ],
    ids=lambda value: getattr(value, "name", value),
)
def test_a_permanent_api_error_fails_at_once(
    backend: CloudTasksBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    enqueued_signals: list[Any],
    caplog: pytest.LogCaptureFixture,
    code: grpc.StatusCode,
    error_class: str,
) -> None:
    google_fake.fail_next("CreateTask", code, "cloudtasks.tasks.create denied")

    with caplog.at_level(logging.ERROR, logger="django_tasks_google"):
        result, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    assert len(google_fake.requests("CreateTask")) == 1
    assert execution.status == TaskResultStatus.FAILED
    assert execution.finished_at is not None
    assert execution.errors[0]["exception_class_path"] == f"google.api_core.exceptions.{error_class}"
    assert "cloudtasks.tasks.create denied" in execution.errors[0]["traceback"]
    # Inside a transaction the dispatch happens at commit, after enqueue() returned: logged.
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert enqueued_signals == []
    assert any(
        record.levelno == logging.ERROR and f"Could not dispatch task {execution.pk}" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_permanent_error_raises(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, enqueued_signals: list[Any]
) -> None:
    google_fake.fail_next("CreateTask", grpc.StatusCode.PERMISSION_DENIED, "cloudtasks.tasks.create denied")

    with pytest.raises(TaskDispatchError, match="refused by backend 'default' and will not run") as raised:
        push_tasks.add.enqueue(1, 2)

    result = raised.value.task_result
    assert result.status == TaskResultStatus.FAILED
    assert "PermissionDenied" in str(raised.value)
    execution = TaskExecution.objects.get(pk=result.id)
    assert execution.status == TaskResultStatus.FAILED
    assert execution.errors[0]["exception_class_path"] == "google.api_core.exceptions.PermissionDenied"
    assert enqueued_signals == []


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_transient_error_returns_a_ready_result(
    configure: Any, google_fake: GoogleServicesFake
) -> None:
    google_fake.add_queue(QUEUE)
    configure(create_task_timeout_seconds=0.3)
    google_fake.fail_next("CreateTask", grpc.StatusCode.UNAVAILABLE, times=10_000)

    result = push_tasks.add.enqueue(1, 2)

    assert result.status == TaskResultStatus.READY
    assert TaskExecution.objects.get(pk=result.id).status == TaskResultStatus.READY


@pytest.mark.django_db
def test_an_unknown_queue_fails_the_execution(
    configure: Any, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    configure()  # the queue was never created

    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    assert execution.status == TaskResultStatus.FAILED
    assert execution.errors[0]["exception_class_path"] == "google.api_core.exceptions.NotFound"
    assert len(google_fake.requests("CreateTask")) == 1  # CreateTask said so; no GetQueue
    assert google_fake.requests("GetQueue") == []


@pytest.mark.django_db
def test_dispatching_an_execution_twice_creates_one_task(
    backend: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    backend.dispatch(TaskExecution.objects.get(pk=execution.pk))

    first, second = google_fake.requests("CreateTask")
    assert first.task.name == second.task.name
    assert list(google_fake.tasks) == [execution.cloud_task_name]  # ALREADY_EXISTS the second time
    execution.refresh_from_db()
    assert execution.status == TaskResultStatus.READY
    assert execution.cloud_task_name == first.task.name


# --- the attempt limit: the queue's max_attempts, looked up when needed and cached ------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("queue_value", "expected"), [(1, 1), (7, 7), (-1, None)], ids=["one", "seven", "unlimited"]
)
def test_max_attempts_is_the_queues_and_never_looked_up_by_enqueue(
    configure: Any,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    queue_value: int,
    expected: int | None,
) -> None:
    google_fake.add_queue(QUEUE, max_attempts=queue_value)
    backend = configure()

    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)

    assert google_fake.requests("GetQueue") == []  # enqueue() makes one API call: CreateTask
    assert execution.max_attempts is None  # the executor asks max_attempts_for when a push arrives
    assert backend.max_attempts_for("default") == expected
    assert {request.name for request in google_fake.requests("GetQueue")} == {QUEUE}


@pytest.mark.django_db
@pytest.mark.parametrize("queue_value", [5, -1], ids=["limited", "unlimited"])
def test_max_attempts_is_cached(configure: Any, google_fake: GoogleServicesFake, queue_value: int) -> None:
    google_fake.add_queue(QUEUE, max_attempts=queue_value)
    backend = configure()

    first = backend.max_attempts_for("default")
    google_fake.queues[QUEUE].retry_config.max_attempts = 9  # not seen until the cache expires
    second = backend.max_attempts_for("default")

    assert len(google_fake.requests("GetQueue")) == 1
    expected = queue_value if queue_value > 0 else None
    assert first == second == expected


@pytest.mark.django_db
def test_max_attempts_cache_can_be_disabled(configure: Any, google_fake: GoogleServicesFake) -> None:
    google_fake.add_queue(QUEUE, max_attempts=5)
    backend = configure(cache_ttl_max_attempts=0)

    first = backend.max_attempts_for("default")
    google_fake.queues[QUEUE].retry_config.max_attempts = 9
    second = backend.max_attempts_for("default")

    assert len(google_fake.requests("GetQueue")) == 2
    assert (first, second) == (5, 9)


@pytest.mark.django_db
def test_max_attempts_cache_keys_are_separate_per_alias(
    configure: Any, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    # Two aliases with the same logical queue name "default", on different Cloud Tasks queues.
    google_fake.add_queue(QUEUE, max_attempts=3)
    google_fake.add_queue(OTHER_QUEUE, max_attempts=8)
    first_backend = configure()
    second_backend = configure("second", {"default": "other-default"})

    limits = [
        backend.max_attempts_for("default") for backend in (first_backend, second_backend, second_backend)
    ]

    assert limits == [3, 8, 8]
    assert [request.name for request in google_fake.requests("GetQueue")] == [QUEUE, OTHER_QUEUE]
    _, second = enqueue_captured(
        django_capture_on_commit_callbacks, push_tasks.add.using(backend="second"), 1, 2
    )
    (request,) = google_fake.requests("CreateTask")
    assert request.parent == OTHER_QUEUE
    assert second.backend_alias == "second"
    assert request.task.http_request.body == f"execution_id={second.pk}&backend=second".encode()


# --- configuration checks ---------------------------------------------------------------------


def check_messages(entry: dict[str, Any]) -> list[Any]:
    with override_settings(TASKS={"default": entry}):
        return list(check_tasks())  # what `manage.py check` runs for TASKS


def errors_of(entry: dict[str, Any]) -> list[str]:
    return [message.msg for message in check_messages(entry) if message.is_serious()]


def test_a_complete_configuration_passes_the_checks() -> None:
    assert check_messages(cloud_tasks_entry("127.0.0.1:1", "http://127.0.0.1:2/certs")) == []


def test_the_published_readme_configuration_passes_the_checks() -> None:
    entry = {
        "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
        "QUEUES": ["default"],
        "OPTIONS": {
            "project_id": "your-project-id",
            "location": "us-central1",
            "base_url": "https://your-app.run.app/tasks/",
            "oidc_service_account": "task-invoker@your-project-id.iam.gserviceaccount.com",
        },
    }
    assert check_messages(entry) == []


@pytest.mark.parametrize("option", ["project_id", "location", "base_url", "oidc_service_account"])
def test_each_missing_required_option_is_named(option: str) -> None:
    entry = cloud_tasks_entry("127.0.0.1:1", "http://127.0.0.1:2/certs")
    del entry["OPTIONS"][option]

    (error,) = errors_of(entry)

    assert error == f"TASKS['default']['OPTIONS']: {option} is required."


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("project_id", "projects/oops", "project_id 'projects/oops' is not a Google Cloud project id"),
        ("project_id", "My Project", "project_id 'My Project' is not a Google Cloud project id"),
        ("location", "us central", "location 'us central' is not a Google Cloud region"),
        ("base_url", "my-app.run.app/tasks/", "base_url must be an http(s) URL"),
        ("oidc_service_account", "task-invoker", "oidc_service_account must be a service account email"),
        ("execute_url", "/tasks/execute/", "execute_url must be an http(s) URL without a fragment"),
        ("execute_url", "https://x.run.app/tasks/execute/#top", "execute_url must be an http(s) URL"),
        (
            "oidc_audience",
            "https://x.run.app/?a=1",
            "oidc_audience 'https://x.run.app/?a=1' must be a URL without",
        ),
        ("oidc_certs_url", "certs.json", "oidc_certs_url must be an http(s) URL"),
        ("oidc_trust_platform_signature", "yes", "oidc_trust_platform_signature must be True or False"),
        ("queue_aliases", {"default": ""}, "queue_aliases must map queue names to non-empty strings"),
        ("cache_ttl_max_attempts", "600", "cache_ttl_max_attempts must be a number"),
    ],
)
def test_invalid_options_are_named(option: str, value: Any, expected: str) -> None:
    entry = cloud_tasks_entry("127.0.0.1:1", "http://127.0.0.1:2/certs")
    entry["OPTIONS"][option] = value

    (error,) = errors_of(entry)

    assert error.startswith(f"TASKS['default']['OPTIONS']: {expected}")


@pytest.mark.parametrize("queue_id", ["has space", "under_score", "x" * 101])
def test_an_invalid_cloud_tasks_queue_id_is_named(queue_id: str) -> None:
    entry = cloud_tasks_entry("127.0.0.1:1", "http://127.0.0.1:2/certs", {"default": queue_id})

    (error,) = errors_of(entry)

    assert "queue 'default'" in error
    assert repr(queue_id) in error


@pytest.mark.django_db
def test_enqueue_with_a_broken_configuration_raises(settings: Any) -> None:
    entry = cloud_tasks_entry("127.0.0.1:1", "http://127.0.0.1:2/certs")
    del entry["OPTIONS"]["project_id"]
    settings.TASKS = {**settings.TASKS, "default": entry}

    with pytest.raises(Exception, match="project_id is required"):
        push_tasks.add.enqueue(1, 2)
    assert not TaskExecution.objects.exists()
