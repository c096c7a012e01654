"""CloudRunJobsBackend against the gRPC fake of Cloud Run v2 (real client library, real wire).

Delivery (RunJob request, execution name, attempt limit, failures), forceful cancellation
(CancelExecution) and the `command` option's checks. The job container itself is exercised in
test_cloud_run_jobs_e2e.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import grpc
import pytest
from django.core import checks
from django.tasks import TaskResultStatus, task_backends
from django.tasks.checks import check_tasks
from django.tasks.exceptions import InvalidTask
from django.test import override_settings
from google.api_core import exceptions

from django_tasks_google.backends import CloudRunJobsBackend
from django_tasks_google.backends.delivery import DeliveryState
from django_tasks_google.base import cancel_task
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import job_tasks
from tests.django_tasks_google.cloud_run_job import JOB, LOCATION, jobs_backend, use_jobs_backend
from tests.fakes.google_services import GoogleServicesFake


@pytest.fixture
def configure_jobs(settings: Any, google_api_endpoint: str) -> Any:
    """Point the "default" alias at CloudRunJobsBackend (queue "default" → job JOB)."""

    def configure(**options: Any) -> CloudRunJobsBackend:
        use_jobs_backend(settings, google_api_endpoint, **options)
        return task_backends["default"]

    return configure


@pytest.fixture
def jobs(configure_jobs: Any) -> CloudRunJobsBackend:
    return configure_jobs()


def enqueue(django_capture_on_commit_callbacks: Any, task: Any, *args: Any, **kwargs: Any) -> TaskExecution:
    """Enqueue and run the on-commit dispatch, as a committing transaction would."""
    with django_capture_on_commit_callbacks(execute=True):
        result = task.enqueue(*args, **kwargs)
    return TaskExecution.objects.get(pk=result.id)


# --- dispatch ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dispatch_runs_the_queues_job_with_the_execution_id_as_args(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    google_fake.add_run_job(JOB, max_retries=2, env={"JOB_SECRET": "kept"})

    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)

    (call,) = google_fake.calls_to("Jobs/RunJob")
    request = call.request
    assert request.name == JOB
    (override,) = request.overrides.container_overrides
    assert list(override.args) == ["python", "manage.py", "execute_task", str(execution.pk)]
    assert not override.name  # the job's only container
    assert list(override.env) == []  # the job's own env stays as deployed
    assert request.overrides.task_count == 1
    assert "timeout" not in request.overrides  # the job's task timeout applies
    assert call.metadata["x-goog-request-params"] == f"location={LOCATION}"
    # The execution name comes from the operation's metadata, without waiting for it to finish.
    (run,) = google_fake.executions.values()
    assert execution.cloud_run_job_execution_name == run.name
    assert run.name.startswith(f"{JOB}/executions/service-tasks-")
    assert "completion_time" not in run
    assert execution.status == TaskResultStatus.READY
    # The job's max_retries is not looked up on the enqueue path (the executor asks when it runs).
    assert execution.max_attempts is None
    assert google_fake.requests("Jobs/GetJob") == []
    # The container: the override args, the job's env.
    container = google_fake.job_container()
    assert container.args == ["python", "manage.py", "execute_task", str(execution.pk)]
    assert container.env["JOB_SECRET"] == "kept"


@pytest.mark.django_db
def test_command_option_replaces_the_start_of_the_args(
    configure_jobs: Any, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    configure_jobs(command=["/app/.venv/bin/python", "-X", "faulthandler", "manage.py", "execute_task"])
    google_fake.add_run_job(JOB)

    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)

    (request,) = google_fake.requests("Jobs/RunJob")
    assert list(request.overrides.container_overrides[0].args) == [
        "/app/.venv/bin/python",
        "-X",
        "faulthandler",
        "manage.py",
        "execute_task",
        str(execution.pk),
    ]


@pytest.mark.django_db
def test_task_timeout_becomes_the_execution_timeout(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    google_fake.add_run_job(JOB, timeout=timedelta(minutes=10))
    task = job_tasks.always_fails.using(timeout=timedelta(hours=30))

    execution = enqueue(django_capture_on_commit_callbacks, task)

    (request,) = google_fake.requests("Jobs/RunJob")
    assert request.overrides.timeout == timedelta(hours=30)
    assert google_fake.executions[execution.cloud_run_job_execution_name].template.timeout == timedelta(
        hours=30
    )
    assert execution.timeout == timedelta(hours=30)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "timeout", [timedelta(0), timedelta(milliseconds=999), timedelta(hours=168, seconds=1)], ids=str
)
def test_timeout_outside_cloud_run_limits_is_refused(jobs: CloudRunJobsBackend, timeout: timedelta) -> None:
    with pytest.raises(InvalidTask, match="Task timeout must be between 0:00:01 and 7 days"):
        job_tasks.always_fails.using(timeout=timeout)


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", [timedelta(seconds=1), timedelta(hours=168)], ids=str)
def test_timeout_limits_are_inclusive(jobs: CloudRunJobsBackend, timeout: timedelta) -> None:
    assert job_tasks.always_fails.using(timeout=timeout).timeout == timeout


@pytest.mark.django_db
def test_run_after_is_not_supported(jobs: CloudRunJobsBackend) -> None:
    with pytest.raises(InvalidTask, match="run_after"):
        job_tasks.always_fails.using(run_after=timedelta(minutes=5))


# --- attempt limit ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("max_retries", "max_attempts"),
    [(0, 1), (5, 6), (10, 11), (None, 4)],
    ids=["no-retries", "five", "ten", "unset-means-cloud-runs-default-3"],
)
def test_max_attempts_is_the_jobs_max_retries_plus_one(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, max_retries: int | None, max_attempts: int
) -> None:
    google_fake.add_run_job(JOB, max_retries=max_retries)

    assert jobs.max_attempts_for("default") == max_attempts
    assert {request.name for request in google_fake.requests("Jobs/GetJob")} == {JOB}


@pytest.mark.django_db
def test_max_attempts_is_cached(configure_jobs: Any, google_fake: GoogleServicesFake) -> None:
    jobs = configure_jobs(cache_ttl_max_attempts=600)
    google_fake.add_run_job(JOB, max_retries=1)

    first = jobs.max_attempts_for("default")
    google_fake.run_jobs[JOB].template.template.max_retries = 7  # not seen until the cache expires
    second = jobs.max_attempts_for("default")

    assert len(google_fake.requests("Jobs/GetJob")) == 1
    assert first == second == 2


@pytest.mark.django_db
def test_max_attempts_cache_can_be_disabled(configure_jobs: Any, google_fake: GoogleServicesFake) -> None:
    jobs = configure_jobs(cache_ttl_max_attempts=0)
    google_fake.add_run_job(JOB, max_retries=1)

    first = jobs.max_attempts_for("default")
    google_fake.run_jobs[JOB].template.template.max_retries = 7
    second = jobs.max_attempts_for("default")

    assert len(google_fake.requests("Jobs/GetJob")) == 2
    assert (first, second) == (2, 8)


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_failed_run_job_marks_the_execution_failed_with_the_error(
    jobs: CloudRunJobsBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    google_fake.add_run_job(JOB)
    google_fake.fail_next(
        "Jobs/RunJob", grpc.StatusCode.PERMISSION_DENIED, "run.jobs.runWithOverrides denied"
    )

    with (
        caplog.at_level(logging.ERROR, logger="django_tasks_google"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        result = job_tasks.always_fails.enqueue()  # the failure is recorded, not raised

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class_path == "google.api_core.exceptions.PermissionDenied"
    assert "run.jobs.runWithOverrides denied" in error.traceback
    execution = TaskExecution.objects.get(pk=result.id)
    assert execution.cloud_run_job_execution_name is None
    assert execution.finished_at is not None
    assert google_fake.executions == {}
    assert "Could not dispatch task" in caplog.text


@pytest.mark.django_db
def test_unknown_job_fails_the_execution(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)  # no job added

    assert execution.status == TaskResultStatus.FAILED
    assert execution.errors[0]["exception_class_path"] == "google.api_core.exceptions.NotFound"
    assert len(google_fake.requests("Jobs/RunJob")) == 1
    assert google_fake.executions == {}


@pytest.mark.django_db
def test_transient_error_leaves_the_execution_ready_for_recovery(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    # Not retried here (a retried RunJob could start the task twice): recover_tasks dispatches it.
    google_fake.add_run_job(JOB)
    google_fake.fail_next("Jobs/RunJob", grpc.StatusCode.UNAVAILABLE)

    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)

    assert len(google_fake.requests("Jobs/RunJob")) == 1
    assert execution.status == TaskResultStatus.READY
    assert (execution.errors, execution.cloud_run_job_execution_name) == ([], None)
    assert jobs.delivery_state(execution) == DeliveryState.NEVER_DISPATCHED


@pytest.mark.django_db
def test_rolled_back_enqueue_runs_no_job(jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake) -> None:
    google_fake.add_run_job(JOB)

    result = job_tasks.always_fails.enqueue()  # the test's transaction is rolled back, never committed

    assert google_fake.calls_to("Jobs/RunJob") == []
    assert TaskExecution.objects.get(pk=result.id).cloud_run_job_execution_name is None


# --- cancellation -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_force_cancel_cancels_the_cloud_run_execution(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    google_fake.add_run_job(JOB)
    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)

    cancel_task(str(execution.pk), force=True)

    (call,) = google_fake.calls_to("CancelExecution")
    assert call.request.name == execution.cloud_run_job_execution_name
    assert google_fake.executions[execution.cloud_run_job_execution_name].cancelled_count == 1
    execution.refresh_from_db()
    assert execution.status == TaskResultStatus.FAILED
    assert execution.cancelled_at is not None
    assert execution.force_cancel is True


@pytest.mark.django_db
def test_graceful_cancel_leaves_the_execution_running(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    google_fake.add_run_job(JOB)
    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)

    cancel_task(str(execution.pk))

    assert google_fake.calls_to("CancelExecution") == []
    execution.refresh_from_db()
    assert execution.status == TaskResultStatus.FAILED
    assert execution.cancelled_at is not None
    assert execution.force_cancel is False


@pytest.mark.django_db
@pytest.mark.parametrize("gone", ["finished", "deleted"])
def test_force_cancel_of_an_execution_that_already_ended_is_harmless(
    jobs: CloudRunJobsBackend,
    google_fake: GoogleServicesFake,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
    gone: str,
) -> None:
    google_fake.add_run_job(JOB)
    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)
    name = execution.cloud_run_job_execution_name
    if gone == "finished":
        google_fake.complete_execution(name, succeeded=False)  # FAILED_PRECONDITION on cancel
    else:
        del google_fake.executions[name]  # NOT_FOUND on cancel

    with caplog.at_level(logging.WARNING, logger="django_tasks_google"):
        cancel_task(str(execution.pk), force=True)

    assert len(google_fake.calls_to("CancelExecution")) == 1
    assert f"Cloud Run execution {name} of task {execution.pk} was not cancelled" in caplog.text
    execution.refresh_from_db()
    assert execution.status == TaskResultStatus.FAILED
    assert execution.cancelled_at is not None


@pytest.mark.django_db
def test_force_cancel_reports_other_api_errors_after_cancelling_the_row(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    google_fake.add_run_job(JOB)
    execution = enqueue(django_capture_on_commit_callbacks, job_tasks.always_fails)
    google_fake.fail_next("CancelExecution", grpc.StatusCode.PERMISSION_DENIED)

    with pytest.raises(exceptions.PermissionDenied):
        cancel_task(str(execution.pk), force=True)

    execution.refresh_from_db()  # cancelled all the same: the task stops at its next heartbeat
    assert execution.status == TaskResultStatus.FAILED
    assert execution.cancelled_at is not None


@pytest.mark.django_db
def test_force_cancel_before_the_execution_started_calls_nothing(
    jobs: CloudRunJobsBackend, google_fake: GoogleServicesFake
) -> None:
    google_fake.add_run_job(JOB)
    result = job_tasks.always_fails.enqueue()  # not committed: never dispatched

    cancel_task(result, force=True)

    assert google_fake.calls_to("CancelExecution") == []
    result.refresh()
    assert result.status == TaskResultStatus.FAILED


# --- the `command` option ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    ["python manage.py execute_task", [], ["python", 3], ["python", ""], None, ("python", ["manage.py"])],
    ids=["string", "empty", "number", "empty-string", "none", "nested"],
)
def test_check_reports_a_bad_command_option(google_api_endpoint: str, command: Any) -> None:
    config = jobs_backend(google_api_endpoint, {"default": "service-tasks"}, command=command)

    with override_settings(TASKS={"default": config}):
        messages = list(check_tasks())  # what `manage.py check` runs for TASKS

    errors = [m for m in messages if isinstance(m.obj, CloudRunJobsBackend) and m.level >= checks.ERROR]
    assert len(errors) == 1
    assert "TASKS['default']['OPTIONS']: command must be a non-empty list of strings" in errors[0].msg
    assert "'command'" in errors[0].hint


def test_default_command_passes_the_checks(google_api_endpoint: str) -> None:
    config = jobs_backend(google_api_endpoint, {"default": "service-tasks"})

    with override_settings(TASKS={"default": config}):
        messages = list(check_tasks())  # what `manage.py check` runs for TASKS

    assert [m for m in messages if isinstance(m.obj, CloudRunJobsBackend)] == []
    backend = CloudRunJobsBackend("default", config)
    assert backend.command == ("python", "manage.py", "execute_task")
    assert backend.container_args(42) == ["python", "manage.py", "execute_task", "42"]


@pytest.mark.parametrize(
    ("queues", "aliases"),
    [
        (["Batch_Jobs"], {}),
        (["batch"], {"batch": "-batch"}),
        (["batch"], {"batch": "batch-"}),
        (["batch"], {"batch": "9-batch"}),
        (["batch"], {"batch": "b" * 64}),
    ],
    ids=["queue-name-not-a-job-name", "leading-hyphen", "trailing-hyphen", "leading-digit", "too-long"],
)
def test_check_reports_a_queue_that_is_no_cloud_run_job_name(
    google_api_endpoint: str, queues: list[str], aliases: dict[str, str]
) -> None:
    config = jobs_backend(google_api_endpoint, {}, queue_aliases=aliases)
    config["QUEUES"] = queues

    with override_settings(TASKS={"default": config}):
        messages = list(check_tasks())

    (error,) = [m for m in messages if isinstance(m.obj, CloudRunJobsBackend)]
    assert error.id == "django_tasks_google.E020"
    assert f"queue {queues[0]!r} names the Cloud Run job" in error.msg
    assert "'queue_aliases'" in error.hint


def test_a_queue_mapped_to_a_valid_job_name_passes(google_api_endpoint: str) -> None:
    config = jobs_backend(google_api_endpoint, {"Batch_Jobs": "batch-jobs", "x": "b" * 63})

    with override_settings(TASKS={"default": config}):
        assert [m for m in check_tasks() if isinstance(m.obj, CloudRunJobsBackend)] == []
