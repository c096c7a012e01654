"""The one place an attempt of a task runs, whatever delivered it (Cloud Tasks, Cloud Run Jobs, worker).

Every transport delivers *at least once*, so an attempt first takes a **lease** on its row with a
conditional UPDATE (atomic on every database). Only the lease holder may write the row, and the
lease always expires (after `heartbeat_timeout_seconds`, renewed by a heartbeat thread while the
task runs), so a crashed holder never blocks the task for good: the next delivery, or the local
worker's recovery, takes it over.

The task itself runs like Django's ImmediateBackend runs it: signals with the backend class as
sender, a TaskContext when `takes_context`, arguments and return value through a real JSON round
trip (a value that cannot be stored fails the attempt instead of leaving it RUNNING), and errors
stored with their traceback.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from django.db import DatabaseError, close_old_connections, connections
from django.db.models import QuerySet
from django.tasks import TaskResultStatus
from django.tasks.exceptions import InvalidTaskBackend
from django.tasks.signals import task_finished, task_started
from django.utils import timezone

from .backends.base import DjangoTasksGoogleBackend, clip_history
from .base import PermanentTaskError, TaskCancelledError, TaskContext, TaskInterrupted, TaskTimeout
from .models import TaskExecution, error_entry
from .serialization import json_round_trip
from .signals import send_task_signal

logger = logging.getLogger("django_tasks_google")

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
FAILED = TaskResultStatus.FAILED
SUCCESSFUL = TaskResultStatus.SUCCESSFUL


@dataclass(frozen=True)
class AttemptOutcome:
    """What happened to a delivery, and whether the transport should deliver it again.

    `retry=True` asks the platform to redeliver (Cloud Tasks: a 5xx answer; Cloud Run Jobs: a
    non-zero exit). It is also the answer while another attempt holds a live lease, so that a
    holder that crashed is retried once its lease expires instead of being forgotten.
    """

    retry: bool
    status: str | None
    reason: str


@dataclass(frozen=True)
class Claim:
    """A lease taken on an execution; picklable, so a worker can claim and a child process run."""

    execution_id: int
    lease_id: str
    # The attempt number as the transport counts it (1 = first delivery).
    attempt: int
    # True when the row's own count numbered the attempt (local worker, or no transport count):
    # then an attempt interrupted by a shutdown is given back instead of being used up.
    counted_by_row: bool
    first_start: bool


def run_execution(
    execution_id: str | int,
    *,
    backend_alias: str | None,
    attempt: int | None = None,
    install_sigterm_handler: bool = False,
) -> AttemptOutcome:
    """Claim the execution and run one attempt of it.

    `backend_alias` (when given) must match the row's; `attempt` is the transport's 1-based attempt
    number (None: the row's attempt count + 1). `install_sigterm_handler` turns SIGTERM into
    TaskCancelledError inside the task; only for a process that runs nothing but this attempt
    (`execute_task`, a worker's child), never inside a web server.
    """
    claim = claim_execution(execution_id, backend_alias=backend_alias, attempt=attempt)
    if isinstance(claim, AttemptOutcome):
        return claim
    return run_claimed(claim, install_sigterm_handler=install_sigterm_handler)


# --- Claiming -------------------------------------------------------------------------------------


def claim_execution(
    execution_id: str | int, *, backend_alias: str | None = None, attempt: int | None = None
) -> Claim | AttemptOutcome:
    """Take the lease of a READY execution, or of a RUNNING one whose lease expired.

    Refusals are returned as an AttemptOutcome. An execution that may not run again (run_once, or
    no attempts left) is marked FAILED here, so it never stays READY with nobody to deliver it.
    """
    try:
        pk = int(str(execution_id))
    except ValueError:
        return AttemptOutcome(retry=False, status=None, reason="not-found")
    row = TaskExecution.objects.filter(pk=pk).first()
    if row is None:
        return AttemptOutcome(retry=False, status=None, reason="not-found")
    if backend_alias is not None and row.backend_alias != backend_alias:
        return AttemptOutcome(retry=False, status=row.status, reason="backend-mismatch")
    if row.is_finished:
        return AttemptOutcome(retry=False, status=row.status, reason="finished")
    now = timezone.now()
    if row.status == RUNNING and row.lease_expires_at is not None and row.lease_expires_at > now:
        # A live attempt holds it (a duplicate delivery): ask for redelivery later.
        return AttemptOutcome(retry=True, status=RUNNING, reason="lease-held")

    errors = list(row.errors)
    if row.status == RUNNING:
        # The holder stopped renewing its lease (crash, kill, lost database): record that attempt.
        errors.append(error_entry(lease_expired_error(row)))
    try:
        backend = row.backend
    except (InvalidTaskBackend, TypeError) as exc:
        return _fail_unstartable(row, errors, exc, now, history=100)

    counted_by_row = attempt is None
    number = row.attempts + 1 if counted_by_row else attempt
    limit = attempt_limit(row, backend)
    refusal: Exception | None = None
    if backend.run_once and row.attempts > 0:
        refusal = PermanentTaskError(
            f"run_once: attempt {row.attempts} did not finish, and the task must not run twice."
        )
    elif limit is not None and number > limit:
        refusal = PermanentTaskError(f"No attempts left: this delivery would be attempt {number} of {limit}.")
    if refusal is not None:
        return _fail_unstartable(row, errors, refusal, now, history=backend.max_history_entries)

    lease_id = uuid.uuid4().hex
    claimed = _unchanged(row).update(
        status=RUNNING,
        lease_worker_id=lease_id,
        # Always set, heartbeat or not: an attempt that dies must not keep the task forever.
        lease_expires_at=now + backend.heartbeat_timeout,
        last_attempted_at=now,
        started_at=row.started_at or now,
        attempts=row.attempts + 1,
        worker_ids=clip_history([*row.worker_ids, lease_id], backend.max_history_entries),
        errors=clip_history(errors, backend.max_history_entries),
    )
    if not claimed:
        # Someone else changed the row between our read and our write; they own it now.
        return AttemptOutcome(retry=True, status=None, reason="lease-held")
    return Claim(
        execution_id=pk,
        lease_id=lease_id,
        attempt=number,
        counted_by_row=counted_by_row,
        first_start=row.started_at is None,
    )


def _unchanged(row: TaskExecution) -> QuerySet[TaskExecution]:
    """The row, only if no one wrote it since it was read: a compare-and-set guard.

    Every claim changes attempts/last_attempted_at/lease, every heartbeat the lease expiry and every
    transition the status, so matching all of them proves the row is as we read it (no locks
    needed, SQLite included).
    """
    return TaskExecution.objects.filter(
        pk=row.pk,
        status=row.status,
        attempts=row.attempts,
        lease_worker_id=row.lease_worker_id,
        lease_expires_at=row.lease_expires_at,
        last_attempted_at=row.last_attempted_at,
    )


def _fail_unstartable(
    row: TaskExecution, errors: list[dict[str, str]], exc: Exception, now: datetime, *, history: int
) -> AttemptOutcome:
    errors = clip_history([*errors, error_entry(exc)], history)
    failed = _unchanged(row).update(
        status=FAILED, finished_at=now, errors=errors, lease_worker_id=None, lease_expires_at=None
    )
    if not failed:
        return AttemptOutcome(retry=True, status=None, reason="lease-held")
    logger.warning("Task %s (%s) failed without running: %s", row.pk, row.module_path, exc)
    row.refresh_from_db()
    _send_finished(row)
    return AttemptOutcome(retry=False, status=FAILED, reason="failed")


def release_abandoned(row: TaskExecution, error: Exception, *, count_attempt: bool = True) -> str | None:
    """End a RUNNING attempt that will never record its outcome (its process died, its lease expired).

    The execution becomes READY for another attempt, or FAILED if none may follow. With
    `count_attempt=False` (the worker stopped it for a shutdown) the attempt is given back.
    Returns the new status, or None if the row changed meanwhile (e.g. the holder renewed its
    lease after all).
    """
    try:
        backend = row.backend
    except (InvalidTaskBackend, TypeError) as exc:
        return (
            None
            if _fail_unstartable(row, list(row.errors), exc, timezone.now(), history=100).retry
            else FAILED
        )
    limit = attempt_limit(row, backend)
    last = backend.run_once or (count_attempt and limit is not None and row.attempts >= limit)
    changes: dict[str, Any] = {
        "errors": clip_history([*row.errors, error_entry(error)], backend.max_history_entries),
        "lease_worker_id": None,
        "lease_expires_at": None,
    }
    if last:
        changes.update(status=FAILED, finished_at=timezone.now())
    else:
        changes.update(status=READY)
        if not count_attempt:
            changes["attempts"] = max(row.attempts - 1, 0)
    if not _unchanged(row).update(**changes):
        return None
    if last:
        row.refresh_from_db()
        _send_finished(row)
    return changes["status"]


def attempt_limit(row: TaskExecution, backend: DjangoTasksGoogleBackend) -> int | None:
    """Total attempts allowed: fixed on the row at dispatch, else the backend's (cached) value."""
    if row.max_attempts is not None:
        return row.max_attempts
    return backend.max_attempts_for(row.queue_name)


def lease_expired_error(row: TaskExecution) -> TaskInterrupted:
    return TaskInterrupted(
        f"Attempt {row.attempts} stopped renewing its lease (expired at {row.lease_expires_at}): "
        "the process running it died or lost the database."
    )


def _send_finished(row: TaskExecution) -> None:
    try:
        backend = row.backend
    except (InvalidTaskBackend, TypeError):
        return
    send_task_signal(task_finished, type(backend), row.task_result)


# --- Running --------------------------------------------------------------------------------------


def run_claimed(
    claim: Claim, *, install_sigterm_handler: bool = False, cancel_signal: int | None = None
) -> AttemptOutcome:
    """Run the attempt `claim` holds the lease for, and record its result while still holding it.

    `cancel_signal` (with `install_sigterm_handler`): a signal that tells the task it was cancelled
    gracefully, without waiting for the next heartbeat (the local worker sends SIGUSR1).
    """
    execution = TaskExecution.objects.filter(
        pk=claim.execution_id, lease_worker_id=claim.lease_id, status=RUNNING
    ).first()
    if execution is None:
        # Cancelled (or taken over) between the claim and the start.
        return _lost(claim)
    return _Attempt(claim, execution).run(install_sigterm_handler, cancel_signal)


class _Attempt:
    """One attempt of one execution, from the claimed row to the recorded outcome."""

    def __init__(self, claim: Claim, execution: TaskExecution) -> None:
        self.claim = claim
        self.execution = execution
        self.backend = execution.backend
        self.task = execution.task
        self.cancel_event = threading.Event()

    def run(self, install_sigterm_handler: bool, cancel_signal: int | None) -> AttemptOutcome:
        execution, claim = self.execution, self.claim
        task_result = execution.to_task_result(self.task)
        sender = type(self.backend)
        limit = attempt_limit(execution, self.backend)
        of_limit = f"/{limit}" if limit is not None else ""
        logger.info(
            "Task %s (%s) attempt %s%s started", execution.pk, execution.module_path, claim.attempt, of_limit
        )
        started = time.monotonic()
        if claim.first_start:
            send_task_signal(task_started, sender, task_result)
        heartbeat = Heartbeat(claim, self.backend, self.cancel_event)
        heartbeat.start()
        guard = SigtermGuard(install_sigterm_handler, self.cancel_event, cancel_signal)
        try:
            try:
                with guard.raising():
                    value = self._call(task_result)
            except TaskCancelledError as exc:
                heartbeat.stop()
                outcome = self._stopped(exc)
            except KeyboardInterrupt as exc:
                heartbeat.stop()
                self._finish_failure(
                    self._interruption("Interrupted (KeyboardInterrupt)", exc),
                    give_back_attempt=self.claim.counted_by_row,
                )
                raise
            except BaseException as exc:
                heartbeat.stop()
                # Inside the except block, so task_finished receivers see the exception.
                outcome = self._finish_failure(exc)
            else:
                heartbeat.stop()
                outcome = self._finish_success(value)
        except DatabaseError:
            # The result could not be written. The lease expires and the task is taken over.
            logger.exception("Task %s: could not record the attempt's outcome", execution.pk)
            outcome = AttemptOutcome(retry=True, status=None, reason="save-failed")
        finally:
            heartbeat.stop()
            guard.restore()
        logger.log(
            logging.INFO if outcome.reason == "succeeded" else logging.WARNING,
            "Task %s (%s) attempt %s%s finished: %s%s (%.2fs)",
            execution.pk,
            execution.module_path,
            claim.attempt,
            of_limit,
            outcome.reason,
            f", status {outcome.status}" if outcome.status else "",
            time.monotonic() - started,
        )
        return outcome

    def _call(self, task_result: Any) -> Any:
        execution = self.execution
        # The arguments as JSON delivers them (what Cloud Tasks and Cloud Run would hand over).
        args = json_round_trip(execution.args)
        kwargs = json_round_trip(execution.kwargs)
        if execution.takes_context:
            context = TaskContext(
                task_result=task_result, _cancel_event=self.cancel_event, _attempt=self.claim.attempt
            )
            args = [context, *args]
        raw = self.task.call(*args, **kwargs)
        try:
            return json_round_trip(raw)
        except (TypeError, ValueError) as exc:
            raise PermanentTaskError(
                f"The return value of {execution.module_path} cannot be stored as JSON: {exc}"
            ) from exc

    # -- outcomes --

    def _save(self, **changes: Any) -> bool:
        """Write the row only while our lease still holds it."""
        updated = TaskExecution.objects.filter(
            pk=self.execution.pk, lease_worker_id=self.claim.lease_id, status=RUNNING
        ).update(lease_worker_id=None, lease_expires_at=None, **changes)
        return bool(updated)

    def _errors_with(self, exc: BaseException) -> list[dict[str, str]]:
        return clip_history([*self.execution.errors, error_entry(exc)], self.backend.max_history_entries)

    def _finish_success(self, value: Any) -> AttemptOutcome:
        now = timezone.now()
        if not self._save(status=SUCCESSFUL, finished_at=now, return_value=value):
            return _lost(self.claim)
        self.execution.refresh_from_db()
        send_task_signal(task_finished, type(self.backend), self.execution.to_task_result(self.task))
        return AttemptOutcome(retry=False, status=SUCCESSFUL, reason="succeeded")

    def _finish_failure(self, exc: BaseException, *, give_back_attempt: bool = False) -> AttemptOutcome:
        """Record a failed attempt: FAILED when it was the last one, else READY for a retry."""
        retryable = getattr(exc, "retryable", True) is not False
        limit = attempt_limit(self.execution, self.backend)
        last = self.backend.run_once or not retryable or (limit is not None and self.claim.attempt >= limit)
        if give_back_attempt and not self.backend.run_once:
            last = False
        changes: dict[str, Any] = {"errors": self._errors_with(exc)}
        if last:
            changes.update(status=FAILED, finished_at=timezone.now())
        else:
            changes.update(status=READY)
            if give_back_attempt:
                changes["attempts"] = self.execution.attempts - 1
        if not self._save(**changes):
            return _lost(self.claim)
        if not last:
            return AttemptOutcome(retry=True, status=READY, reason="retry")
        self.execution.refresh_from_db()
        send_task_signal(task_finished, type(self.backend), self.execution.to_task_result(self.task))
        return AttemptOutcome(retry=False, status=FAILED, reason="failed")

    def _stopped(self, exc: TaskCancelledError) -> AttemptOutcome:
        """SIGTERM reached the task: a cancellation, a timeout, or a shutdown of the process."""
        row = TaskExecution.objects.filter(pk=self.execution.pk).first()
        if row is None or row.lease_worker_id != self.claim.lease_id or row.status != RUNNING:
            return _lost(self.claim)
        timeout = self.execution.timeout
        started = self.execution.last_attempted_at
        if timeout is not None and started is not None and timezone.now() - started >= timeout:
            timed_out = TaskTimeout(f"Attempt {self.claim.attempt} ran past its timeout of {timeout}.")
            timed_out.__cause__ = exc
            return self._finish_failure(timed_out)
        return self._finish_failure(
            self._interruption("Interrupted by SIGTERM (shutdown)", exc),
            # A shutdown is not the task's fault: when we count attempts, it does not use one.
            give_back_attempt=self.claim.counted_by_row,
        )

    def _interruption(self, message: str, cause: BaseException) -> TaskInterrupted:
        interrupted = TaskInterrupted(f"Attempt {self.claim.attempt}: {message}.")
        interrupted.__cause__ = cause
        return interrupted


def _lost(claim: Claim) -> AttemptOutcome:
    """Our lease is gone: cancelled (nothing more to do) or taken over by another attempt."""
    row = TaskExecution.objects.filter(pk=claim.execution_id).first()
    if row is not None and row.cancelled_at is not None:
        return AttemptOutcome(retry=False, status=row.status, reason="cancelled")
    return AttemptOutcome(retry=False, status=row.status if row else None, reason="lease-lost")


# --- Heartbeat ------------------------------------------------------------------------------------


class Heartbeat:
    """Renews the lease every `heartbeat_interval` from a thread the task cannot block.

    When a renewal updates no row the lease is gone (cancelled, or taken over after it expired):
    the cancel event is set, which `is_task_cancelled()` reports. If the database stays
    unreachable for a whole lease period, the lease must be presumed lost as well.
    """

    def __init__(self, claim: Claim, backend: DjangoTasksGoogleBackend, lost: threading.Event) -> None:
        self.claim = claim
        self.interval = backend.heartbeat_interval.total_seconds()
        self.lease = backend.heartbeat_timeout
        self.join_timeout = backend.heartbeat_join_timeout.total_seconds()
        self.lost = lost
        self.stopping = threading.Event()
        self.thread = (
            threading.Thread(target=self._run, name=f"heartbeat-{claim.execution_id}", daemon=True)
            if backend.heartbeat_enabled
            else None
        )

    def start(self) -> None:
        if self.thread is not None:
            self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if (
            self.thread is not None
            and self.thread.is_alive()
            and self.thread is not threading.current_thread()
        ):
            self.thread.join(self.join_timeout)
            if self.thread.is_alive():
                logger.error("Task %s: the heartbeat thread did not stop in time", self.claim.execution_id)

    def _run(self) -> None:
        last_renewal = time.monotonic()
        try:
            while not self.stopping.wait(self.interval):
                try:
                    close_old_connections()
                    renewed = TaskExecution.objects.filter(
                        pk=self.claim.execution_id, lease_worker_id=self.claim.lease_id, status=RUNNING
                    ).update(lease_expires_at=timezone.now() + self.lease)
                except DatabaseError:
                    logger.warning("Task %s: heartbeat failed", self.claim.execution_id, exc_info=True)
                    if time.monotonic() - last_renewal >= self.lease.total_seconds():
                        self.lost.set()
                        return
                    continue
                if not renewed:
                    self.lost.set()
                    return
                last_renewal = time.monotonic()
        finally:
            connections.close_all()


# --- SIGTERM --------------------------------------------------------------------------------------


class SigtermGuard:
    """Turns SIGTERM into TaskCancelledError while the task runs, and defers it afterwards.

    Only in the main thread of a process dedicated to this attempt: inside a web server the
    server's own SIGTERM handling must stay in charge. After the task returns, a SIGTERM no longer
    interrupts anything, so the outcome is always recorded before the process ends.
    """

    def __init__(self, enabled: bool, cancel_event: threading.Event, cancel_signal: int | None) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.cancel_event = cancel_event
        self.cancel_signal = cancel_signal
        self.previous: dict[int, Any] = {}

    @contextmanager
    def raising(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._raise)
        if self.cancel_signal is not None:
            self.previous[self.cancel_signal] = signal.signal(self.cancel_signal, self._cancelled)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, self._defer)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        logger.warning("SIGTERM received: stopping the task")
        raise TaskCancelledError("SIGTERM received")

    @staticmethod
    def _defer(signum: int, frame: FrameType | None) -> None:
        logger.warning("SIGTERM received while recording the outcome: finishing that first")

    def _cancelled(self, signum: int, frame: FrameType | None) -> None:
        self.cancel_event.set()
