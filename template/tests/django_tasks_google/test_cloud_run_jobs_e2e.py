"""Cloud Run Jobs end to end: enqueue → RunJob on the fake → the job's container as a real process.

The test plays Cloud Run: it starts the container the fake says the execution has (image from
the project's Dockerfile, args from the RunJob override, env with CLOUD_RUN_*) as a subprocess
in the project against the test database, starts retries with the next CLOUD_RUN_TASK_ATTEMPT,
and sends SIGTERM where Cloud Run would (cancel, timeout, shutdown).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.tasks import TaskResult, TaskResultStatus
from django.utils import timezone

from django_tasks_google.base import cancel_task
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import job_tasks
from tests.django_tasks_google.cloud_run_job import (
    CONTAINER_TIMEOUT,
    JOB,
    PROJECT_ROOT,
    container_argv,
    read_image,
    run_job_container,
    start_job_container,
    use_jobs_backend,
)
from tests.fakes.google_services import GoogleServicesFake, JobContainer
from tests.processes import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the container process reads committed rows
    pytest.mark.google_e2e,
]


@pytest.fixture
def jobs(settings: Any, google_api_endpoint: str, google_fake: GoogleServicesFake) -> GoogleServicesFake:
    """The "default" alias on CloudRunJobsBackend; the job allows 3 retries (4 attempts)."""
    use_jobs_backend(settings, google_api_endpoint)
    google_fake.add_run_job(JOB, max_retries=3)
    return google_fake


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for a started container to exit; (exit code, output)."""
    try:
        output, _ = process.communicate(timeout=CONTAINER_TIMEOUT)
    finally:
        process.kill()  # no-op once it exited; never leave a hung container behind
    return process.returncode, output


# --- the image and the args ---------------------------------------------------------------------


def test_dockerfile_has_no_entrypoint_so_the_args_are_the_whole_command(
    jobs: GoogleServicesFake, django_capture_on_commit_callbacks: Any
) -> None:
    image = read_image()
    assert image.entrypoint == [], "an ENTRYPOINT would be prepended to the job's args"
    assert image.cmd, "the service's command (CMD) is what job args replace"

    result = job_tasks.always_fails.enqueue()
    argv = container_argv(image, jobs.job_container())

    assert argv == ["python", "manage.py", "execute_task", result.id]
    # Runnable in the image: WORKDIR is the project root, the virtualenv's python first on PATH.
    assert (PROJECT_ROOT / argv[1]).is_file()
    assert shutil.which(argv[0], path=str(Path(sys.executable).parent)) is not None
    # Why the job must be deployed without --command: a job command replaces the entrypoint.
    with_command = JobContainer(["python"], list(jobs.job_container().args), {})
    assert container_argv(image, with_command)[:2] == ["python", "python"]


# --- running, retrying, failing -----------------------------------------------------------------


def find_sample_task(name: str) -> Any:
    """A sample task of the project's own app (its package name is the Copier project slug)."""
    for app in apps.get_app_configs():
        try:
            module = import_module(f"{app.name}.tasks")
        except ModuleNotFoundError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(f"no installed app has a task {name!r}")


def test_sample_recompute_analytics_runs_as_a_cloud_run_job(
    settings: Any, google_api_endpoint: str, google_fake: GoogleServicesFake
) -> None:
    task = find_sample_task("recompute_analytics")
    use_jobs_backend(settings, google_api_endpoint, alias=task.backend, queue=task.queue_name)
    google_fake.add_run_job(JOB, max_retries=3)

    result = task.enqueue()  # autocommit: RunJob is called before enqueue() returns

    (request,) = google_fake.requests("Jobs/RunJob")
    assert request.name == JOB
    assert google_fake.requests("Jobs/GetJob") == []  # enqueue() does not look up the limit
    run = run_job_container(google_fake)
    assert run.returncode == 0, run.stdout
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"ok": True}
    assert result.errors == []
    execution = TaskExecution.objects.get(pk=result.id)
    assert execution.cloud_run_job_execution_name == next(iter(google_fake.executions))
    assert execution.attempts == 1
    # The container's executor looked the job's limit up (max_retries + 1) when the attempt began.
    assert [request.name for request in google_fake.requests("Jobs/GetJob")] == [JOB]


def test_failed_attempt_exits_non_zero_and_the_retry_succeeds(jobs: GoogleServicesFake) -> None:
    result = job_tasks.fails_on_first_attempt.enqueue()

    first = run_job_container(jobs, attempt=0)

    assert first.returncode != 0, first.stdout  # Cloud Run retries the task
    result.refresh()
    assert result.status == TaskResultStatus.READY
    (error,) = result.errors
    assert error.exception_class_path == "django_tasks_google.base.TaskError"
    assert "the first attempt fails" in error.traceback

    second = run_job_container(jobs, attempt=1)

    assert second.returncode == 0, second.stdout
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 2}  # CLOUD_RUN_TASK_ATTEMPT=1 is our attempt 2
    assert len(result.errors) == 1


def test_a_failure_on_the_jobs_last_attempt_fails_the_task(
    settings: Any, google_api_endpoint: str, google_fake: GoogleServicesFake
) -> None:
    use_jobs_backend(settings, google_api_endpoint)
    google_fake.add_run_job(JOB, max_retries=1)
    result = job_tasks.always_fails.enqueue()
    assert TaskExecution.objects.get(pk=result.id).max_attempts is None  # looked up when it runs
    # Cloud Run starts its last retry (say the first attempt's container was lost): the attempt
    # number comes from CLOUD_RUN_TASK_ATTEMPT, not from the row's count.

    last = run_job_container(google_fake, attempt=1)

    assert last.returncode == 0, last.stdout  # nothing is left to retry
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class_path == "django_tasks_google.base.TaskError"
    assert result.finished_at is not None


# --- SIGTERM: cancel, timeout, shutdown ----------------------------------------------------------


def start_waiting_task(
    jobs: GoogleServicesFake, tmp_path: Path, task: Any
) -> tuple[TaskResult, subprocess.Popen[str], Path]:
    """Enqueue `wait_for_sigterm`, start its container and wait until the task runs."""
    started, cleanup = tmp_path / "started", tmp_path / "cleanup"
    result = task.enqueue(started_marker=str(started), cleanup_marker=str(cleanup))
    process = start_job_container(jobs, attempt=0)
    wait_for(
        lambda: started.exists() or process.poll() is not None,
        timeout=CONTAINER_TIMEOUT,
        message="the task to run",
    )
    assert started.exists(), stop(process)[1]
    return result, process, cleanup


def test_force_cancel_stops_the_running_container(jobs: GoogleServicesFake, tmp_path: Path) -> None:
    result, process, cleanup = start_waiting_task(jobs, tmp_path, job_tasks.wait_for_sigterm)

    cancel_task(result.id, force=True)
    (cancel,) = jobs.requests("CancelExecution")
    assert cancel.name == TaskExecution.objects.get(pk=result.id).cloud_run_job_execution_name
    process.send_signal(signal.SIGTERM)  # what Cloud Run does to the cancelled execution's container
    code, output = stop(process)

    assert code == 0, output  # a cancelled task is not retried
    assert cleanup.read_text() == "cleaned up"  # the task's `except TaskCancelledError` ran
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    execution = TaskExecution.objects.get(pk=result.id)
    assert execution.cancelled_at is not None
    assert execution.force_cancel is True
    assert execution.return_value is None


def test_sigterm_without_cancel_is_a_retryable_interruption(jobs: GoogleServicesFake, tmp_path: Path) -> None:
    # E.g. Cloud Run stopping the instance: the attempt is retried, the task is not failed.
    result, process, cleanup = start_waiting_task(jobs, tmp_path, job_tasks.wait_for_sigterm)

    process.send_signal(signal.SIGTERM)
    code, output = stop(process)

    assert code != 0, output
    assert cleanup.exists()
    result.refresh()
    assert result.status == TaskResultStatus.READY
    (error,) = result.errors
    assert error.exception_class_path == "django_tasks_google.base.TaskInterrupted"


def test_sigterm_at_the_tasks_timeout_is_recorded_as_a_timeout(
    jobs: GoogleServicesFake, tmp_path: Path
) -> None:
    task = job_tasks.wait_for_sigterm.using(timeout=timedelta(seconds=1))
    result, process, _cleanup = start_waiting_task(jobs, tmp_path, task)
    (request,) = jobs.requests("Jobs/RunJob")
    assert request.overrides.timeout == timedelta(seconds=1)  # Cloud Run enforces it per attempt
    execution = TaskExecution.objects.get(pk=result.id)
    assert execution.last_attempted_at is not None
    started = execution.last_attempted_at
    wait_for(lambda: timezone.now() >= started + timedelta(seconds=1), message="the timeout to pass")

    process.send_signal(signal.SIGTERM)  # Cloud Run, at the timeout
    code, output = stop(process)

    assert code != 0, output  # retried while attempts remain
    result.refresh()
    assert result.status == TaskResultStatus.READY
    (error,) = result.errors
    assert error.exception_class_path == "django_tasks_google.base.TaskTimeout"


def test_a_retry_after_a_killed_container_waits_out_its_lease_and_runs(
    jobs: GoogleServicesFake, tmp_path: Path
) -> None:
    result, process, cleanup = start_waiting_task(jobs, tmp_path, job_tasks.wait_for_sigterm)
    process.kill()  # e.g. out of memory: nothing is recorded, the lease lives on until it expires
    stop(process)
    result.refresh()
    assert result.status == TaskResultStatus.RUNNING

    # Cloud Run retries at once, while the dead attempt's lease still holds the task (up to
    # heartbeat_timeout_seconds). The retry waits for it instead of giving up at once, which
    # would use up the retries and leave the task RUNNING for ever.
    retry = start_job_container(jobs, attempt=1)
    assert retry.stdout is not None
    output = ""
    while "lease holds it" not in output and (line := retry.stdout.readline()):
        output += line
    assert "lease holds it" in output, output
    # Time passes: the lease expires (without waiting the test for it).
    TaskExecution.objects.filter(pk=result.id).update(lease_expires_at=timezone.now())
    code, rest = stop(retry)

    assert code == 0, output + rest
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "attempt 2 finished"
    (error,) = result.errors  # the killed attempt, recorded by the one that took over
    assert error.exception_class_path == "django_tasks_google.base.TaskInterrupted"
    assert not cleanup.exists()
