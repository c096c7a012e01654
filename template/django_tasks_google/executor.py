"""The one place an attempt of a task runs, whatever delivered it (Cloud Tasks, Cloud Run Jobs, worker).

Every transport delivers *at least once*, so an attempt first takes a **lease** on its row
(`TaskExecution.objects.claim`, one conditional statement). Only the lease holder may write the
row, and the lease always expires (after `heartbeat_timeout_seconds`, renewed by the process's
heartbeat thread while the task runs), so a crashed holder never blocks the task for good: the
next delivery, or the local worker's recovery, takes it over.

The task itself runs like Django's ImmediateBackend runs it: signals with the backend class as
sender, a TaskContext when `takes_context`, arguments and return value through a real JSON round
trip (a value that cannot be stored fails the attempt instead of leaving it RUNNING), and errors
stored with their traceback. The state changes themselves are claiming.py's and transitions.py's.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from django.db import DatabaseError
from django.tasks import task_backends
from django.tasks.signals import task_started
from django.utils import timezone

from .attempts import attempt_limit
from .backends.base import DjangoTasksGoogleBackend, google_backend
from .claiming import lease_expired_error
from .errors import PermanentTaskError, TaskCancelledError, TaskInterrupted, TaskTimeout
from .heartbeat import heartbeat
from .log_context import task_attempt
from .models import TaskExecution
from .outcomes import AttemptOutcome, Claim, Claimed, Outcome
from .serialization import json_round_trip
from .signals import send_task_signal
from .task import TaskContext

__all__ = [
    "AttemptOutcome",
    "Claim",
    "Outcome",
    "SigtermGuard",
    "attempt_limit",
    "claim_execution",
    "lease_expired_error",
    "release_abandoned",
    "run_claimed",
    "run_execution",
]

logger = logging.getLogger(__name__)


def run_execution(
    execution_id: str | int,
    *,
    backend_alias: str | None,
    attempt: int | None = None,
    install_sigterm_handler: bool = False,
) -> AttemptOutcome:
    """Claim the execution and run one attempt of it.

    `backend_alias` (when given) must match the row's; `attempt` is the transport's 1-based attempt
    number (None: the row counts). `install_sigterm_handler` turns SIGTERM into TaskCancelledError
    inside the task; only for a process that runs nothing but this attempt (`execute_task`, a
    worker's child), never inside a web server.
    """
    claimed = _claim(execution_id, backend_alias, attempt)
    if isinstance(claimed, AttemptOutcome):
        return claimed
    return _Attempt(claimed.claim, claimed.execution).run(install_sigterm_handler, None)


def claim_execution(
    execution_id: str | int, *, backend_alias: str | None = None, attempt: int | None = None
) -> Claim | AttemptOutcome:
    """Take the lease of a READY execution, or of a RUNNING one whose lease expired (see `claim`)."""
    claimed = _claim(execution_id, backend_alias, attempt)
    return claimed if isinstance(claimed, AttemptOutcome) else claimed.claim


def _claim(
    execution_id: str | int, backend_alias: str | None, attempt: int | None
) -> Claimed | AttemptOutcome:
    try:
        pk = int(str(execution_id))
    except ValueError:
        return AttemptOutcome(retry=False, status=None, reason=Outcome.NOT_FOUND)
    backend = None
    if backend_alias is not None:
        loaded = task_backends[backend_alias]
        if isinstance(loaded, DjangoTasksGoogleBackend):
            backend = loaded
    return TaskExecution.objects.claim(pk, backend=backend, transport_attempt=attempt)


def release_abandoned(
    execution: TaskExecution, error: Exception, *, count_attempt: bool = True
) -> str | None:
    """End a RUNNING attempt that will never record its outcome (see `ExecutionQuerySet.release`)."""
    return TaskExecution.objects.release(execution, error, count_attempt=count_attempt)


# --- Running --------------------------------------------------------------------------------------


def run_claimed(
    claim: Claim | Claimed, *, install_sigterm_handler: bool = False, cancel_signal: int | None = None
) -> AttemptOutcome:
    """Run the attempt `claim` holds the lease for, and record its result while still holding it.

    A `Claimed` carries the row as the claim left it (the local worker hands it to its child), so
    the attempt starts without reading the row again. `cancel_signal` (with
    `install_sigterm_handler`): a signal that tells the task it was cancelled gracefully, without
    waiting for the next heartbeat (the local worker sends SIGUSR1).
    """
    if isinstance(claim, Claimed):
        return _Attempt(claim.claim, claim.execution).run(install_sigterm_handler, cancel_signal)
    execution = TaskExecution.objects.filter(pk=claim.execution_id, lease_worker_id=claim.lease_id).first()
    if execution is None or execution.is_finished or execution.lease_worker_id != claim.lease_id:
        # Cancelled (or taken over) between the claim and the start.
        return TaskExecution.objects.lost(claim)
    return _Attempt(claim, execution).run(install_sigterm_handler, cancel_signal)


class _Attempt:
    """One attempt of one execution, from the claimed row to the recorded outcome."""

    def __init__(self, claim: Claim, execution: TaskExecution) -> None:
        self.claim = claim
        self.execution = execution
        self.backend = google_backend(execution.backend_alias)
        self.task = execution.task
        self.cancel_event = threading.Event()

    def run(self, install_sigterm_handler: bool, cancel_signal: int | None) -> AttemptOutcome:
        # Every record logged during the attempt carries its labels (execution, task, attempt).
        with task_attempt(self.execution.pk, self.execution.module_path, self.claim.attempt):
            return self._run(install_sigterm_handler, cancel_signal)

    def _run(self, install_sigterm_handler: bool, cancel_signal: int | None) -> AttemptOutcome:
        execution, claim, backend = self.execution, self.claim, self.backend
        task_result = execution.to_task_result(self.task)
        logger.info(
            "Task %s (%s) attempt %s%s started",
            execution.pk,
            execution.module_path,
            claim.attempt,
            "" if claim.limit is None else f"/{claim.limit}",
        )
        if claim.first_start:
            send_task_signal(task_started, type(backend), task_result)
        guard = SigtermGuard(install_sigterm_handler, self.cancel_event, cancel_signal)
        try:
            with self._renewing():
                try:
                    with guard.raising():
                        value = self._call(task_result)
                except TaskCancelledError as exc:
                    outcome = self._stopped(exc)
                except KeyboardInterrupt as exc:
                    self._finish_failure(
                        self._interruption("Interrupted (KeyboardInterrupt)", exc),
                        give_back=self.claim.counted_by_row,
                    )
                    raise
                except BaseException as exc:
                    # Inside the except block, so task_finished receivers see the exception.
                    outcome = self._finish_failure(exc)
                else:
                    outcome = TaskExecution.objects.finish_success(claim, execution, value, task=self.task)
        except DatabaseError:
            # The result could not be written. The lease expires and the task is taken over.
            logger.exception("Task %s: could not record the attempt's outcome", execution.pk)
            outcome = AttemptOutcome(retry=True, status=None, reason=Outcome.SAVE_FAILED)
        finally:
            guard.restore()
        return outcome

    @contextmanager
    def _renewing(self) -> Iterator[None]:
        backend = self.backend
        if not backend.heartbeat_enabled:
            yield
            return
        with heartbeat.holding(
            self.claim.execution_id,
            self.claim.lease_id,
            duration=backend.heartbeat_timeout,
            interval=backend.heartbeat_interval,
            lost=self.cancel_event,
        ):
            yield

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

    def _finish_failure(self, exc: BaseException, *, give_back: bool = False) -> AttemptOutcome:
        return TaskExecution.objects.finish_failure(
            self.claim, self.execution, exc, give_back=give_back, task=self.task
        )

    def _stopped(self, exc: TaskCancelledError) -> AttemptOutcome:
        """SIGTERM reached the task: a cancellation, a timeout, or a shutdown of the process."""
        now = TaskExecution.objects.filter(pk=self.execution.pk).only("status", "lease_worker_id").first()
        if now is None or now.lease_worker_id != self.claim.lease_id or now.is_finished:
            return TaskExecution.objects.lost(self.claim)
        timeout = self.execution.timeout
        started = self.execution.last_attempted_at
        if timeout is not None and started is not None and timezone.now() - started >= timeout:
            timed_out = TaskTimeout(f"Attempt {self.claim.attempt} ran past its timeout of {timeout}.")
            timed_out.__cause__ = exc
            return self._finish_failure(timed_out)
        return self._finish_failure(
            self._interruption("Interrupted by SIGTERM (shutdown)", exc),
            # A shutdown is not the task's fault: when we count attempts, it does not use one.
            give_back=self.claim.counted_by_row,
        )

    def _interruption(self, message: str, cause: BaseException) -> TaskInterrupted:
        interrupted = TaskInterrupted(f"Attempt {self.claim.attempt}: {message}.")
        interrupted.__cause__ = cause
        return interrupted


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
