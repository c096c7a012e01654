"""The executor in-process: leases, results, retries, run_once, history limits, signals.

SIGTERM, worker processes and crashes are covered with real subprocesses in test_worker.py and
test_execute_task_command.py.
"""

import os
import signal
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.tasks import TaskResultStatus, task_backends
from django.tasks.signals import task_finished, task_started
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tasks_google.executor import (
    AttemptOutcome,
    Claim,
    claim_execution,
    release_abandoned,
    run_execution,
)
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import sample_tasks

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"heartbeat_interval_seconds": 0.1, "heartbeat_timeout_seconds": 2, "max_attempts": 3}


def run(result_id: str, **kwargs: object) -> AttemptOutcome:
    kwargs.setdefault("backend_alias", None)
    return run_execution(result_id, **kwargs)


def row(result_id: str) -> TaskExecution:
    return TaskExecution.objects.get(pk=int(result_id))


def with_backend(alias: str, **options: object):
    """Settings with an extra ProcessBackend alias (a copy of test-tasks with other options)."""
    backend = {
        "BACKEND": "django_tasks_google.backends.ProcessBackend",
        "QUEUES": ["default"],
        "OPTIONS": {**FAST, **options},
    }
    return override_settings(TASKS={**task_backends.settings, alias: backend})


@pytest.fixture
def signals_received():
    received = []

    def on_started(sender, task_result, **kwargs):
        received.append(("started", sender.__name__, task_result.status))

    def on_finished(sender, task_result, **kwargs):
        received.append(("finished", sender.__name__, task_result.status))

    task_started.connect(on_started)
    task_finished.connect(on_finished)
    yield received
    task_started.disconnect(on_started)
    task_finished.disconnect(on_finished)


def test_success_records_the_result_and_sends_signals(signals_received: list) -> None:
    result = sample_tasks.add.enqueue(2, 3)
    outcome = run(result.id)
    assert outcome == AttemptOutcome(retry=False, status="SUCCESSFUL", reason="succeeded")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    assert result.started_at and result.finished_at and result.last_attempted_at
    assert len(result.worker_ids) == 1 and result.attempts == 1
    execution = row(result.id)
    assert execution.lease_worker_id is None and execution.lease_expires_at is None
    assert signals_received == [
        ("started", "ProcessBackend", TaskResultStatus.RUNNING),
        ("finished", "ProcessBackend", TaskResultStatus.SUCCESSFUL),
    ]


def test_async_task_runs() -> None:
    result = sample_tasks.add_async.enqueue(4, 5)
    assert run(result.id).status == "SUCCESSFUL"
    assert row(result.id).return_value == 9


def test_task_receives_json_round_tripped_arguments() -> None:
    result = sample_tasks.echo.enqueue((1, 2), {3: "c"}, key=(4,))
    run(result.id)
    assert row(result.id).return_value == {
        "args": [[1, 2], {"3": "c"}],
        "kwargs": {"key": [4]},
        "types": ["list", "dict"],
    }


@pytest.mark.parametrize("task_name", ["returns_datetime", "returns_decimal"])
def test_return_value_that_is_not_json_fails_cleanly(task_name: str, signals_received: list) -> None:
    result = getattr(sample_tasks, task_name).enqueue()
    outcome = run(result.id)
    assert outcome == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    execution = row(result.id)
    assert execution.status == "FAILED" and execution.lease_worker_id is None
    error = execution.errors[-1]
    assert error["exception_class_path"] == "django_tasks_google.base.PermanentTaskError"
    assert (
        f"The return value of tests.django_tasks_google.sample_tasks.{task_name} cannot be stored as JSON"
        in error["traceback"]
    )
    assert signals_received[-1] == ("finished", "ProcessBackend", TaskResultStatus.FAILED)


def test_retryable_failure_is_retried_until_max_attempts(signals_received: list) -> None:
    result = sample_tasks.fails.enqueue("boom")
    for attempt in (1, 2):
        assert run(result.id) == AttemptOutcome(retry=True, status="READY", reason="retry")
        assert row(result.id).attempts == attempt
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    result.refresh()
    assert [error.exception_class_path for error in result.errors] == [
        "django_tasks_google.base.TaskError"
    ] * 3
    assert "boom" in result.errors[0].traceback and "Traceback" in result.errors[0].traceback
    assert result.attempts == 3 and result.finished_at
    # task_started only for the first attempt; task_finished only for the final outcome.
    assert [name for name, *_ in signals_received] == ["started", "finished"]
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="finished")


def test_plain_exceptions_are_retryable() -> None:
    result = sample_tasks.raises_value_error.enqueue()
    assert run(result.id).reason == "retry"
    assert row(result.id).errors[0]["exception_class_path"] == "builtins.ValueError"


def test_permanent_error_fails_at_once() -> None:
    result = sample_tasks.fails_permanently.enqueue()
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    assert row(result.id).attempts == 1


def test_run_once_fails_a_retryable_failure_instead_of_leaving_it_ready() -> None:
    result = sample_tasks.fails_once_only.enqueue()
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    assert row(result.id).finished_at is not None


def test_run_once_refuses_a_second_attempt() -> None:
    result = sample_tasks.fails_once_only.enqueue()
    # As if the first attempt's process died and its lease expired.
    TaskExecution.objects.filter(pk=int(result.id)).update(
        status="RUNNING",
        attempts=1,
        lease_worker_id="dead",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    errors = row(result.id).errors
    assert errors[0]["exception_class_path"] == "django_tasks_google.base.TaskInterrupted"
    assert "run_once" in errors[1]["traceback"]


def test_transport_attempt_numbers_decide_the_last_attempt() -> None:
    """Cloud Tasks / Cloud Run count deliveries themselves; their last attempt must not stay READY."""
    result = sample_tasks.fails_until_attempt.enqueue(succeed_on=99)
    assert run(result.id, attempt=3) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    again = sample_tasks.fails_until_attempt.enqueue(succeed_on=2)
    assert run(again.id, attempt=2).status == "SUCCESSFUL"
    assert row(again.id).return_value == 2  # context.attempt is the transport's number


def test_a_transport_count_never_fails_a_task_that_has_not_run() -> None:
    """Issue 11 defect 10: an inflated retry count must not mark a READY task FAILED unrun."""
    late = sample_tasks.add.enqueue(1, 1)
    assert run(late.id, attempt=4) == AttemptOutcome(retry=False, status="SUCCESSFUL", reason="succeeded")
    assert row(late.id).attempts == 1
    # Beyond the limit by the transport's count, the attempt that ran is the last one.
    failing = sample_tasks.fails.enqueue("boom")
    assert run(failing.id, attempt=9) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    assert row(failing.id).attempts == 1


def test_a_redispatch_does_not_restart_the_attempt_count() -> None:
    """Issue 11 defect 1: a re-dispatched task's transport count restarts at 1; the row's count wins."""
    result = sample_tasks.fails_until_attempt.enqueue(succeed_on=99)
    assert run(result.id, attempt=1).reason == "retry"
    assert run(result.id, attempt=2).reason == "retry"
    # Re-dispatched as a new Cloud Task: its count starts again, but this is attempt 3 of 3.
    assert run(result.id, attempt=1) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    execution = row(result.id)
    assert execution.attempts == 3 and "attempt 3 fails" in execution.errors[-1]["traceback"]
    # And nothing runs it again.
    assert run(result.id, attempt=1).reason == "finished"


def test_context_reports_attempt_and_running_result() -> None:
    result = sample_tasks.report_context.enqueue()
    run(result.id)
    value = row(result.id).return_value
    assert value["attempt"] == 1 and value["id"] == result.id and value["status"] == "RUNNING"


def test_history_is_clipped_but_attempts_are_counted() -> None:
    with with_backend("short-history", max_history_entries=2, max_attempts=5):
        result = sample_tasks.fails.using(backend="short-history").enqueue("again")
        outcomes = [run(result.id).reason for _ in range(5)]
    assert outcomes == ["retry", "retry", "retry", "retry", "failed"]
    execution = row(result.id)
    assert execution.attempts == 5 and execution.status == "FAILED"
    assert len(execution.errors) == 2 and len(execution.worker_ids) == 2


def test_duplicate_delivery_during_a_live_lease_asks_for_a_retry() -> None:
    result = sample_tasks.add.enqueue(1, 2)
    claim = claim_execution(result.id)
    assert isinstance(claim, Claim)
    assert run(result.id) == AttemptOutcome(retry=True, status="RUNNING", reason="lease-held")
    assert run(result.id, attempt=2) == AttemptOutcome(retry=True, status="RUNNING", reason="lease-held")
    assert row(result.id).attempts == 1


def test_lease_expires_even_with_heartbeats_disabled() -> None:
    with with_backend("no-heartbeat", heartbeat_enabled=False, heartbeat_timeout_seconds=30):
        result = sample_tasks.add.using(backend="no-heartbeat").enqueue(1, 2)
        before = timezone.now()
        claim = claim_execution(result.id)
        assert isinstance(claim, Claim)
        expires = row(result.id).lease_expires_at
        assert before + timedelta(seconds=30) <= expires <= timezone.now() + timedelta(seconds=30)
        # A second delivery is refused while the lease lasts ...
        assert run(result.id).reason == "lease-held"
        # ... and takes the task over once it has expired.
        TaskExecution.objects.filter(pk=int(result.id)).update(lease_expires_at=timezone.now())
        assert run(result.id).status == "SUCCESSFUL"
    execution = row(result.id)
    assert execution.attempts == 2 and execution.return_value == 3
    assert execution.errors[0]["exception_class_path"] == "django_tasks_google.base.TaskInterrupted"


def test_the_old_holder_cannot_write_after_a_takeover() -> None:
    from django_tasks_google.executor import run_claimed

    result = sample_tasks.add.enqueue(1, 2)
    stale = claim_execution(result.id)
    TaskExecution.objects.filter(pk=int(result.id)).update(lease_expires_at=timezone.now())
    fresh = claim_execution(result.id)
    assert isinstance(stale, Claim) and isinstance(fresh, Claim)
    assert run_claimed(stale) == AttemptOutcome(retry=False, status="RUNNING", reason="lease-lost")
    assert run_claimed(fresh).status == "SUCCESSFUL"


def test_backend_mismatch_not_found_and_finished() -> None:
    result = sample_tasks.add.enqueue(1, 2)
    assert run(result.id, backend_alias="test-jobs") == AttemptOutcome(
        retry=False, status="READY", reason="backend-mismatch"
    )
    assert run("987654").reason == "not-found" and not run("x").retry
    assert run(result.id, backend_alias="test-tasks").status == "SUCCESSFUL"
    assert run(result.id) == AttemptOutcome(retry=False, status="SUCCESSFUL", reason="finished")


def test_missing_task_function_is_a_recorded_failure() -> None:
    result = sample_tasks.add.enqueue(1, 2)
    TaskExecution.objects.filter(pk=int(result.id)).update(
        module_path="tests.django_tasks_google.sample_tasks.gone"
    )
    assert run(result.id).reason == "retry"
    error = row(result.id).errors[0]
    assert (
        error["exception_class_path"] == "builtins.ImportError"
        and "Cannot import the task" in error["traceback"]
    )


def test_cancel_while_running_discards_the_result() -> None:
    result = sample_tasks.cancel_itself.enqueue()
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="cancelled")
    execution = row(result.id)
    assert execution.status == "FAILED" and execution.cancelled_at is not None
    assert execution.return_value is None
    assert [error["exception_class_path"] for error in execution.errors] == [
        "django_tasks_google.base.TaskCancelled"
    ]


def test_heartbeat_notices_cancellation() -> None:
    with with_backend("heartbeat", heartbeat_interval_seconds=0.05):
        result = sample_tasks.cancel_itself_then_wait.using(backend="heartbeat").enqueue()
        assert run(result.id).reason == "cancelled"


def test_sigterm_handler_only_when_asked_and_in_the_main_thread() -> None:
    default = repr(signal.getsignal(signal.SIGTERM))
    plain = sample_tasks.report_context.enqueue()
    run(plain.id)
    assert row(plain.id).return_value["sigterm_handler"] == default

    installed = sample_tasks.report_context.enqueue()
    run(installed.id, install_sigterm_handler=True)
    assert "SigtermGuard._raise" in row(installed.id).return_value["sigterm_handler"]
    assert repr(signal.getsignal(signal.SIGTERM)) == default  # restored

    in_thread = sample_tasks.report_context.enqueue()

    def run_in_thread() -> None:
        try:
            run(in_thread.id, install_sigterm_handler=True)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    thread.join()
    assert row(in_thread.id).return_value["sigterm_handler"] == default


# --- values a database cannot store (issue 11 defect 5) --------------------------------------------


def test_a_return_value_with_a_nul_fails_the_attempt_with_a_clean_error() -> None:
    result = sample_tasks.returns_nul.enqueue()
    assert run(result.id) == AttemptOutcome(retry=False, status="FAILED", reason="failed")
    execution = row(result.id)
    assert execution.lease_worker_id is None and execution.return_value is None
    assert "NUL character" in execution.errors[-1]["traceback"]


def test_an_error_text_with_a_nul_or_a_lone_surrogate_is_stored_cleaned() -> None:
    result = sample_tasks.raises_nul.enqueue()
    assert run(result.id).reason == "retry"
    execution = row(result.id)
    assert execution.status == "READY" and execution.lease_worker_id is None
    traceback = execution.errors[-1]["traceback"]
    assert "a NUL \\x00 and a lone surrogate \\ud800" in traceback and "\x00" not in traceback


@pytest.mark.parametrize("text", ["a\x00b", "\ud800", {"key\x00": 1}])
def test_enqueue_refuses_arguments_a_database_cannot_store(text: object) -> None:
    with pytest.raises(ValueError, match=r"NUL character|lone surrogate"):
        sample_tasks.echo.enqueue(text)
    assert not TaskExecution.objects.exists()


def test_saving_the_outcome_survives_one_dropped_connection() -> None:
    """Issue 11 defect 6: the connection dies while the task runs; the outcome is still saved."""
    if connections["default"].vendor != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    result = sample_tasks.drops_its_connection.enqueue()
    assert run(result.id) == AttemptOutcome(retry=False, status="SUCCESSFUL", reason="succeeded")
    execution = row(result.id)
    assert (execution.return_value, execution.attempts) == ("saved", 1)


# --- Django's contract (issue 16) -------------------------------------------------------------------


def test_worker_ids_record_the_worker_and_the_lease_is_kept_apart() -> None:
    result = sample_tasks.report_context.enqueue()
    claim = claim_execution(result.id)
    assert isinstance(claim, Claim)
    execution = row(result.id)
    assert execution.worker_ids == [f"{socket.gethostname()}:{os.getpid()}"]
    assert execution.lease_worker_id == claim.lease_id != execution.worker_ids[0]


def test_an_attempt_given_back_is_not_counted_by_the_task_result() -> None:
    result = sample_tasks.add.enqueue(1, 2)
    claim = claim_execution(result.id)
    assert isinstance(claim, Claim)
    assert release_abandoned(row(result.id), RuntimeError("shutdown"), count_attempt=False) == "READY"
    result.refresh()
    assert result.attempts == row(result.id).attempts == 0
    assert run(result.id).reason == "succeeded"
    result.refresh()
    assert result.attempts == row(result.id).attempts == 1


# --- the shared heartbeat (issue 17; issue 11 defect 7) ---------------------------------------------


def test_one_heartbeat_thread_renews_every_lease_the_process_holds(tmp_path) -> None:
    with with_backend("heartbeat", heartbeat_interval_seconds=0.05, heartbeat_timeout_seconds=5):
        directories = [tmp_path / "first", tmp_path / "second"]
        results = []
        for directory in directories:
            directory.mkdir()
            results.append(sample_tasks.sleep.using(backend="heartbeat").enqueue(str(directory), 3))

        def deliver(result_id: str) -> None:
            try:
                run(result_id)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=deliver, args=(result.id,)) for result in results]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + sample_tasks.WAIT_LIMIT
            while not all((directory / "started").exists() for directory in directories):
                assert time.monotonic() < deadline, "the tasks did not start"
                time.sleep(0.02)
            first = {result.id: row(result.id).lease_expires_at for result in results}
            # Both leases move forward while the tasks run ...
            while not all(row(result.id).lease_expires_at > first[result.id] for result in results):
                assert all(row(result.id).status == "RUNNING" for result in results), "renewed too late"
                time.sleep(0.02)
            # ... renewed by one thread for the whole process.
            heartbeats = [thread for thread in threading.enumerate() if "heartbeat" in thread.name]
            assert len(heartbeats) == 1
        finally:
            for thread in threads:
                thread.join(sample_tasks.WAIT_LIMIT)
    assert [row(result.id).status for result in results] == ["SUCCESSFUL", "SUCCESSFUL"]


def test_a_delivery_claims_with_one_statement_and_records_with_one() -> None:
    """Issue 17: no read-then-write on the push path (PostgreSQL and SQLite >= 3.35)."""
    result = sample_tasks.add.enqueue(2, 3)
    with CaptureQueriesContext(connections["default"]) as queries:
        outcome = run(result.id, backend_alias="test-tasks")
    assert outcome.reason == "succeeded"
    statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
    assert statements == ["UPDATE", "UPDATE"]
    assert "RETURNING" in queries.captured_queries[0]["sql"].upper()
