"""`manage.py execute_task <id>` (the Cloud Run Jobs entry point): exit codes and SIGTERM handling.

Exit status 1 means "retry me" (Cloud Run then starts the next attempt); everything else exits 0.
"""

import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_tasks_google.base import cancel_task
from django_tasks_google.executor import Claim, claim_execution
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import sample_tasks
from tests.processes import ManagedProcess, manage, manage_env, started, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def row(result_id: str) -> TaskExecution:
    return TaskExecution.objects.get(pk=int(result_id))


def test_retryable_failure_exits_one() -> None:
    result = sample_tasks.fails.enqueue()
    completed = manage("execute_task", result.id, env=manage_env(CLOUD_RUN_TASK_ATTEMPT="0"))
    assert completed.returncode == 1
    assert f"Task id={result.id} retry requested (retry)" in completed.stderr
    assert row(result.id).status == "READY"


def test_success(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "0")
    result = sample_tasks.add.enqueue(1, 2)
    call_command("execute_task", result.id)
    assert f"Task id={result.id}: succeeded" in capsys.readouterr().out
    assert row(result.id).return_value == 3


def test_last_attempt_failure_exits_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    result = sample_tasks.fails.enqueue()
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "2")  # the third and last of 3 attempts
    call_command("execute_task", result.id)
    assert row(result.id).status == "FAILED"


def test_invalid_attempt_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    result = sample_tasks.add.enqueue(1, 2)
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "first")
    with pytest.raises(CommandError, match="CLOUD_RUN_TASK_ATTEMPT must be a non-negative integer"):
        call_command("execute_task", result.id)
    assert row(result.id).status == "READY"


def test_without_the_variable_the_row_counts_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUD_RUN_TASK_ATTEMPT", raising=False)
    result = sample_tasks.fails_until_attempt.enqueue(succeed_on=2)
    with pytest.raises(CommandError, match="retry requested"):
        call_command("execute_task", result.id)
    call_command("execute_task", result.id)
    assert row(result.id).return_value == 2


def test_lease_held_asks_for_a_retry_and_unknown_ids_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "0")  # a duplicate first delivery
    result = sample_tasks.add.enqueue(1, 2)
    assert isinstance(claim_execution(result.id), Claim)
    with pytest.raises(CommandError, match=r"retry requested \(lease-held\)"):
        call_command("execute_task", result.id)
    call_command("execute_task", "123456789")  # nothing to run, nothing to retry


def start_execute_task(result_id: str, tmp_path: Path, attempt: str = "0") -> ManagedProcess:
    return ManagedProcess(
        "execute_task",
        result_id,
        env=manage_env(CLOUD_RUN_TASK_ATTEMPT=attempt),
        log=tmp_path / "execute.log",
    )


def test_sigterm_on_shutdown_is_recorded_and_retried(tmp_path: Path) -> None:
    result = sample_tasks.sleep.enqueue(str(tmp_path))
    process = start_execute_task(result.id, tmp_path)
    try:
        started(tmp_path, process)
        process.send(signal.SIGTERM)
        assert process.wait() == 1, process.output()
    finally:
        process.stop()
    assert (tmp_path / "cleanup").read_text() == "TaskCancelledError"
    execution = row(result.id)
    assert execution.status == "READY" and execution.lease_worker_id is None
    assert execution.errors[0]["exception_class_path"] == "django_tasks_google.base.TaskInterrupted"
    assert "SIGTERM" in execution.errors[0]["traceback"]


def test_sigterm_after_the_timeout_is_a_timeout(tmp_path: Path) -> None:
    result = sample_tasks.job_sleep.using(timeout=timedelta(seconds=1)).enqueue(str(tmp_path))
    process = start_execute_task(result.id, tmp_path)
    try:
        started(tmp_path, process)
        wait_for(lambda: row(result.id).attempts == 1)
        last_attempted_at = row(result.id).last_attempted_at
        wait_for(lambda: timezone.now() >= last_attempted_at + timedelta(seconds=1.2), message="the timeout")
        process.send(signal.SIGTERM)  # what Cloud Run does when the task timeout passes
        assert process.wait() == 0, process.output()  # max_attempts is 1: nothing to retry
    finally:
        process.stop()
    execution = row(result.id)
    assert execution.status == "FAILED"
    assert execution.errors[0]["exception_class_path"] == "django_tasks_google.base.TaskTimeout"


def test_sigterm_of_a_forced_cancel_ends_quietly(tmp_path: Path) -> None:
    result = sample_tasks.job_sleep.enqueue(str(tmp_path))
    process = start_execute_task(result.id, tmp_path)
    try:
        started(tmp_path, process)
        cancel_task(result.id, force=True)
        process.send(signal.SIGTERM)  # Cloud Run's answer to CancelExecution
        assert process.wait() == 0, process.output()
        assert f"Task id={result.id}: cancelled" in process.output()
    finally:
        process.stop()
    assert (tmp_path / "cleanup").exists()
    execution = row(result.id)
    assert execution.status == "FAILED" and execution.cancelled_at is not None
    assert [error["exception_class_path"] for error in execution.errors] == [
        "django_tasks_google.base.TaskCancelled"
    ]
