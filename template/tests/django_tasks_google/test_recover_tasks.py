"""`manage.py recover_tasks` against the gRPC fakes of Cloud Tasks and Cloud Run (real clients).

Each stuck state the platform can leave behind, recovered: (a) an expired lease after the
platform's last retry, (b) a READY row whose Cloud Task / Cloud Run execution is gone, (c) a READY
row never dispatched; and what must be left alone: a delivery still pending, a dry run, a fresh row.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from io import StringIO
from typing import Any

import grpc
import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.tasks import TaskResultStatus, task_backends
from django.utils import timezone

from django_tasks_google.backends import CloudRunJobsBackend, CloudTasksBackend
from django_tasks_google.backends.delivery import DispatchResult
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import job_tasks, push_tasks
from tests.django_tasks_google.cloud_run_job import JOB, use_jobs_backend
from tests.django_tasks_google.cloud_tasks_setup import QUEUE, cloud_tasks_entry, enqueue_captured
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer

ADD = "tests.django_tasks_google.push_tasks.add"

LONG_AGO = timedelta(hours=1)


@pytest.fixture
def cloud_tasks(settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> CloudTasksBackend:
    caches["default"].clear()  # max_attempts is cached per alias/project/location/queue
    google_fake.add_queue(QUEUE, max_attempts=3)
    entry = cloud_tasks_entry(google_fake.endpoint, oidc_issuer.certs_url)
    settings.TASKS = {**settings.TASKS, "default": entry}
    return task_backends["default"]


@pytest.fixture
def cloud_run_jobs(settings: Any, google_fake: GoogleServicesFake) -> CloudRunJobsBackend:
    google_fake.add_run_job(JOB, max_retries=2)
    use_jobs_backend(settings, google_fake.endpoint)
    return task_backends["default"]


def age(execution: TaskExecution, **changes: Any) -> TaskExecution:
    """Make the row look enqueued (and last attempted, if it was) an hour ago, plus `changes`."""
    ago = timezone.now() - LONG_AGO
    fields = {"enqueued_at": ago, **changes}
    if execution.last_attempted_at is not None or "attempts" in changes:
        fields.setdefault("last_attempted_at", ago)
    TaskExecution.objects.filter(pk=execution.pk).update(**fields)
    return TaskExecution.objects.get(pk=execution.pk)


def give_up(google_fake: GoogleServicesFake, name: str) -> None:
    """What Cloud Tasks does after the last retry: the task is deleted (its name stays taken)."""
    del google_fake.tasks[name]
    google_fake.tombstones.add(name)


def recover_tasks(*args: str) -> str:
    out = StringIO()
    call_command("recover_tasks", *args, stdout=out)
    return out.getvalue()


# --- Cloud Tasks ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_expired_lease_after_the_last_retry_is_released_and_redispatched(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    first_name = execution.cloud_task_name
    give_up(google_fake, first_name)
    # Attempt 1 crashed an hour ago; Cloud Tasks has given up on the task meanwhile.
    execution = age(
        execution,
        status=TaskResultStatus.RUNNING,
        attempts=1,
        lease_worker_id="dead-worker",
        lease_expires_at=timezone.now() - LONG_AGO,
    )

    output = recover_tasks()

    row = TaskExecution.objects.get(pk=execution.pk)
    assert row.status == TaskResultStatus.READY
    assert row.lease_worker_id is None
    assert "stopped renewing its lease" in row.errors[-1]["traceback"]
    # A fresh Cloud Task (a deleted name cannot be reused), pushing the same execution.
    assert row.cloud_task_name not in {None, first_name}
    assert list(google_fake.tasks) == [row.cloud_task_name]
    assert "1 released, 1 redispatched, 0 failed" in output


@pytest.mark.django_db
def test_a_released_lease_is_logged_in_one_line(
    cloud_tasks: CloudTasksBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    give_up(google_fake, execution.cloud_task_name)
    execution = age(
        execution,
        status=TaskResultStatus.RUNNING,
        attempts=2,
        lease_worker_id="dead-worker",
        lease_expires_at=timezone.now() - LONG_AGO,
    )

    with caplog.at_level(logging.INFO, logger="django_tasks_google"):
        recover_tasks()

    lines = [record.getMessage() for record in caplog.records]
    released, redispatched = [line for line in lines if line.startswith(f"Task {execution.pk} ")]
    assert released.startswith(f"Task {execution.pk} ({ADD}, backend 'default') attempt 2 released")
    assert "stopped renewing its lease" in released  # why
    assert released.endswith("; READY for attempt 3 of 3")  # what next
    assert "re-dispatched" in redispatched


@pytest.mark.django_db
def test_ready_row_whose_cloud_task_is_gone_is_redispatched_once(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    # Cloud Tasks gave up (e.g. max_retry_duration, or attempts spent on 503s): attempts stay 0.
    give_up(google_fake, execution.cloud_task_name)
    age(execution)

    output = recover_tasks()

    row = TaskExecution.objects.get(pk=execution.pk)
    assert row.status == TaskResultStatus.READY
    (created,) = google_fake.tasks.values()
    assert created.name == row.cloud_task_name != execution.cloud_task_name
    assert "1 redispatched" in output
    # Idempotent: the new task is pending, so a second run leaves it alone.
    assert "0 redispatched, 0 failed, 1 pending" in recover_tasks()
    assert len(google_fake.created_tasks) == 2


@pytest.mark.django_db
def test_ready_row_never_dispatched_is_dispatched(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    # A row stored without a task name (enqueued by an older version that named the task after
    # CreateTask, whose process died in between).
    execution = age(TaskExecution.objects.create(module_path=ADD, args=[1, 2]))

    output = recover_tasks()

    row = TaskExecution.objects.get(pk=execution.pk)
    assert row.status == TaskResultStatus.READY
    assert row.cloud_task_name and list(google_fake.tasks) == [row.cloud_task_name]
    assert "1 redispatched" in output


@pytest.mark.django_db
def test_a_dispatch_that_met_an_outage_is_redispatched_under_a_new_name(
    settings: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    django_capture_on_commit_callbacks: Any,
) -> None:
    google_fake.add_queue(QUEUE, max_attempts=3)
    entry = cloud_tasks_entry(google_fake.endpoint, oidc_issuer.certs_url, create_task_timeout_seconds=0.3)
    settings.TASKS = {**settings.TASKS, "default": entry}
    google_fake.fail_next("CreateTask", grpc.StatusCode.UNAVAILABLE, times=10_000)
    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    assert execution.status == TaskResultStatus.READY  # not failed by the outage
    google_fake._faults.clear()  # Cloud Tasks is back (the fake has no public call for this)
    execution = age(execution)

    output = recover_tasks()

    # GetTask said NOT_FOUND (never created, or gone: the same to recovery); a new name, since
    # the first one may have been taken.
    row = TaskExecution.objects.get(pk=execution.pk)
    assert row.status == TaskResultStatus.READY
    assert row.cloud_task_name not in {None, execution.cloud_task_name}
    assert list(google_fake.tasks) == [row.cloud_task_name]
    assert "1 redispatched" in output


@pytest.mark.django_db(transaction=True)
def test_concurrent_recovery_runs_redispatch_once(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake
) -> None:
    result = push_tasks.add.enqueue(1, 2)
    execution = TaskExecution.objects.get(pk=result.id)
    give_up(google_fake, execution.cloud_task_name)
    execution = age(execution)
    stale = TaskExecution.objects.get(pk=execution.pk)  # what a second, concurrent run read

    assert cloud_tasks.redispatch(execution) == DispatchResult.DISPATCHED
    assert cloud_tasks.redispatch(stale) is None  # its claim matches nothing any more

    assert len(google_fake.tasks) == 1


@pytest.mark.django_db
def test_pending_cloud_task_and_fresh_rows_are_left_alone(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, pending = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    pending = age(pending)  # old, but its Cloud Task still exists (Cloud Tasks is still retrying)
    # Enqueued just now and not dispatched yet: may still be in flight.
    fresh = TaskExecution.objects.create(module_path=ADD, args=[3, 4])

    output = recover_tasks()

    assert TaskExecution.objects.get(pk=pending.pk).cloud_task_name == pending.cloud_task_name
    assert TaskExecution.objects.get(pk=fresh.pk).cloud_task_name is None
    assert len(google_fake.created_tasks) == 1
    assert "0 released, 0 redispatched, 0 failed, 1 pending" in output


@pytest.mark.django_db
def test_dry_run_changes_nothing(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, gone = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    give_up(google_fake, gone.cloud_task_name)
    gone = age(gone)
    never = age(TaskExecution.objects.create(module_path=ADD, args=[1, 2]))
    crashed = age(
        TaskExecution.objects.create(module_path=ADD, args=[1, 2]),
        status=TaskResultStatus.RUNNING,
        attempts=1,
        lease_worker_id="dead-worker",
        lease_expires_at=timezone.now() - LONG_AGO,
    )
    before = {row.pk: row for row in TaskExecution.objects.all()}

    output = recover_tasks("--dry-run")

    for pk, row in before.items():
        now = TaskExecution.objects.get(pk=pk)
        assert (now.status, now.cloud_task_name, now.attempts, now.lease_worker_id, now.errors) == (
            row.status,
            row.cloud_task_name,
            row.attempts,
            row.lease_worker_id,
            row.errors,
        )
    assert len(google_fake.requests("CreateTask")) == 1  # the original dispatch only
    assert set(before) == {never.pk, crashed.pk, gone.pk}
    assert "1 released, 2 redispatched" in output and "dry run" in output


@pytest.mark.django_db
def test_no_attempts_left_fails_the_task(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, released = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    _, crashed = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 3, 4)
    for execution in (released, crashed):
        give_up(google_fake, execution.cloud_task_name)
    # All 3 attempts of the queue were used: one READY, one whose last attempt crashed.
    age(released, attempts=3)
    age(
        crashed,
        status=TaskResultStatus.RUNNING,
        attempts=3,
        lease_worker_id="dead-worker",
        lease_expires_at=timezone.now() - LONG_AGO,
    )

    output = recover_tasks()

    for execution in (released, crashed):
        row = TaskExecution.objects.get(pk=execution.pk)
        assert row.status == TaskResultStatus.FAILED
        assert row.finished_at is not None
    assert "attempts were used" in TaskExecution.objects.get(pk=released.pk).errors[-1]["traceback"]
    assert len(google_fake.created_tasks) == 2  # nothing re-dispatched
    assert "0 redispatched, 2 failed" in output


@pytest.mark.django_db
def test_backend_option_must_name_a_google_backend(cloud_tasks: CloudTasksBackend) -> None:
    with pytest.raises(CommandError, match="Not a Cloud Tasks or Cloud Run Jobs backend: nope"):
        recover_tasks("--backend", "nope")
    assert "0 released" in recover_tasks("--backend", "default")


# --- Cloud Run Jobs ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_ready_row_whose_cloud_run_execution_completed_is_redispatched(
    cloud_run_jobs: CloudRunJobsBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = job_tasks.always_fails.enqueue()
    execution = TaskExecution.objects.get(pk=result.id)
    running = execution.cloud_run_job_execution_name
    assert running
    execution = age(execution)

    # Still running at Cloud Run: left alone.
    assert "1 pending" in recover_tasks()
    assert len(google_fake.requests("Jobs/RunJob")) == 1

    # Cloud Run finished it without the row moving on (e.g. every container died before claiming).
    google_fake.complete_execution(running, succeeded=False)
    output = recover_tasks()

    row = TaskExecution.objects.get(pk=execution.pk)
    assert row.status == TaskResultStatus.READY
    assert len(google_fake.requests("Jobs/RunJob")) == 2
    assert row.cloud_run_job_execution_name not in {None, running}
    assert row.cloud_run_job_execution_name in google_fake.executions
    assert "1 redispatched" in output


@pytest.mark.django_db
def test_a_run_job_that_met_an_outage_is_dispatched_by_recovery(
    cloud_run_jobs: CloudRunJobsBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
) -> None:
    google_fake.fail_next("Jobs/RunJob", grpc.StatusCode.UNAVAILABLE)
    with django_capture_on_commit_callbacks(execute=True):
        result = job_tasks.always_fails.enqueue()
    execution = age(TaskExecution.objects.get(pk=result.id))
    assert (execution.status, execution.cloud_run_job_execution_name) == (TaskResultStatus.READY, None)

    output = recover_tasks()

    row = TaskExecution.objects.get(pk=execution.pk)
    assert row.status == TaskResultStatus.READY
    assert len(google_fake.requests("Jobs/RunJob")) == 2
    assert row.cloud_run_job_execution_name in google_fake.executions
    assert "1 redispatched" in output


@pytest.mark.django_db
def test_a_platform_that_cannot_be_asked_leaves_the_row_for_the_next_pass(
    cloud_tasks: CloudTasksBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    _, execution = enqueue_captured(django_capture_on_commit_callbacks, push_tasks.add, 1, 2)
    give_up(google_fake, execution.cloud_task_name)
    execution = age(execution)
    google_fake.fail_next("GetTask", grpc.StatusCode.PERMISSION_DENIED, "cloudtasks.tasks.get denied")

    output = recover_tasks()

    assert "0 redispatched" in output and "1 errors" in output
    row = TaskExecution.objects.get(pk=execution.pk)
    assert (row.status, row.cloud_task_name) == (TaskResultStatus.READY, execution.cloud_task_name)
    assert "1 redispatched" in recover_tasks()  # asked again on the next pass
