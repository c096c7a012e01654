"""The local worker (`manage.py run_tasks`) as real subprocesses against the test database.

Most tests share one worker serving the test backends (starting one costs a second or two);
tests that kill, stop or duplicate workers start their own.
"""

import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from django_tasks_google.base import cancel_task
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import sample_tasks
from tests.processes import ManagedProcess, finished, pid_exists, started, wait_for, worker

pytestmark = pytest.mark.django_db(transaction=True)

SERVED = ("--backend", "test-tasks", "--backend", "test-jobs", "--backend", "test-once")


@pytest.fixture(scope="module")
def shared_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[ManagedProcess]:
    with django_db_blocker.unblock(), worker(*SERVED, log_dir=tmp_path_factory.mktemp("worker")) as process:
        yield process


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    return directory


def test_tasks_run_and_results_are_stored(shared_worker: ManagedProcess) -> None:
    result = sample_tasks.add.enqueue(20, 22)
    row = finished(result.id, shared_worker)
    assert (row.status, row.return_value, row.attempts) == ("SUCCESSFUL", 42, 1)
    result.refresh()
    assert result.return_value == 42


def test_retries_until_success_or_max_attempts(shared_worker: ManagedProcess) -> None:
    succeeds = sample_tasks.fails_until_attempt.enqueue(succeed_on=3)
    never = sample_tasks.fails.enqueue("never works")
    ok = finished(succeeds.id, shared_worker)
    assert (ok.status, ok.return_value, ok.attempts, len(ok.errors)) == ("SUCCESSFUL", 3, 3, 2)
    failed = finished(never.id, shared_worker)
    assert (failed.status, failed.attempts, len(failed.errors)) == ("FAILED", 3, 3)


def test_non_json_return_value_fails_the_task(shared_worker: ManagedProcess) -> None:
    row = finished(sample_tasks.returns_datetime.enqueue().id, shared_worker)
    assert row.status == "FAILED" and row.attempts == 1
    assert "cannot be stored as JSON" in row.errors[0]["traceback"]


def test_run_once_failure_is_final(shared_worker: ManagedProcess) -> None:
    row = finished(sample_tasks.fails_once_only.enqueue().id, shared_worker)
    assert (row.status, row.attempts) == ("FAILED", 1)


def test_run_after_is_respected(shared_worker: ManagedProcess) -> None:
    delayed = sample_tasks.add.using(run_after=timedelta(seconds=1.5)).enqueue(1, 1)
    immediate = sample_tasks.add.enqueue(2, 2)
    first = finished(immediate.id, shared_worker)
    later = finished(delayed.id, shared_worker)
    assert later.status == "SUCCESSFUL"
    assert later.started_at >= later.run_after
    assert first.started_at < later.started_at


def test_graceful_cancel_reaches_the_running_task(shared_worker: ManagedProcess, markers: Path) -> None:
    result = sample_tasks.wait_until_cancelled.enqueue(str(markers))
    started(markers, shared_worker)
    cancel_task(result.id)
    wait_for((markers / "noticed").exists, message="the task to notice its cancellation")
    row = TaskExecution.objects.get(pk=int(result.id))
    assert row.status == "FAILED" and row.cancelled_at is not None
    assert row.return_value is None and [error["exception_class_path"] for error in row.errors] == [
        "django_tasks_google.base.TaskCancelled"
    ]


def test_force_cancel_raises_task_cancelled_error_in_the_task(
    shared_worker: ManagedProcess, markers: Path
) -> None:
    result = sample_tasks.job_sleep.enqueue(str(markers))
    started(markers, shared_worker)
    cancel_task(result.id, force=True)
    wait_for((markers / "cleanup").exists, message="the task's except TaskCancelledError block")
    assert (markers / "cleanup").read_text() == "TaskCancelledError"
    row = TaskExecution.objects.get(pk=int(result.id))
    assert (row.status, row.force_cancel) == ("FAILED", True) and row.cancelled_at
    # The worker carries on.
    assert finished(sample_tasks.add.enqueue(1, 1).id, shared_worker).status == "SUCCESSFUL"


def test_a_task_ignoring_sigterm_is_killed(shared_worker: ManagedProcess, markers: Path) -> None:
    result = sample_tasks.job_sleep_ignoring_sigterm.enqueue(str(markers))
    pid = started(markers, shared_worker)
    cancel_task(result.id, force=True)
    wait_for((markers / "cleanup").exists, message="the SIGTERM to reach the task")
    wait_for(lambda: not pid_exists(pid), message="SIGKILL after the grace period")
    assert not (markers / "finished").exists()
    assert TaskExecution.objects.get(pk=int(result.id)).status == "FAILED"
    assert "sending SIGKILL" in shared_worker.output()


def test_timeout_in_cloud_run_jobs_mode(shared_worker: ManagedProcess, markers: Path) -> None:
    result = sample_tasks.job_sleep.using(timeout=timedelta(seconds=1)).enqueue(str(markers))
    row = finished(result.id, shared_worker)
    assert row.status == "FAILED" and row.cancelled_at is None
    assert row.errors[-1]["exception_class_path"] == "django_tasks_google.base.TaskTimeout"
    assert "ran past its timeout of 0:00:01" in row.errors[-1]["traceback"]
    assert (markers / "cleanup").exists()


def test_timeout_escalates_to_sigkill(shared_worker: ManagedProcess, markers: Path) -> None:
    result = sample_tasks.job_sleep_ignoring_sigterm.using(timeout=timedelta(seconds=1)).enqueue(str(markers))
    row = finished(result.id, shared_worker)
    assert row.status == "FAILED" and (markers / "cleanup").exists() and not (markers / "finished").exists()
    assert row.errors[-1]["exception_class_path"] == "django_tasks_google.base.TaskTimeout"
    assert "was killed" in row.errors[-1]["traceback"]


def test_a_killed_task_process_is_recovered(shared_worker: ManagedProcess, markers: Path) -> None:
    result = sample_tasks.sleeps_on_first_attempt.enqueue(str(markers))
    os.kill(started(markers, shared_worker), signal.SIGKILL)
    row = finished(result.id, shared_worker)
    assert (row.status, row.return_value, row.attempts) == ("SUCCESSFUL", 2, 2)
    assert row.errors[0]["exception_class_path"] == "django_tasks_google.base.TaskInterrupted"
