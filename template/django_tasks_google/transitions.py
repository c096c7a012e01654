"""Every change of an execution's state after the claim, as methods of `TaskExecution.objects`.

Lease renewal, success, failure (READY again or FAILED), release of an abandoned attempt,
cancellation and a failed dispatch happen here and nowhere else (the claim and the guard they
share are claiming.py's), so that every write is conditional, every terminal transition sends
Django's `task_finished` (sender: the backend class), every state change logs one line, and the
attempt policy (attempts.py) applies the same way on every path. An outcome is recorded by one
UPDATE under the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import DataError, InterfaceError, OperationalError, connections
from django.db.models import Q
from django.utils import timezone

from . import attempts
from .claiming import (
    FAILED,
    FALLBACK_HISTORY,
    READY,
    RUNNING,
    SUCCESSFUL,
    ClaimingQuerySet,
    backend_of,
    send_finished,
)
from .errors import PermanentTaskError, TaskCancelled
from .outcomes import AttemptOutcome, Claim, Outcome, answer
from .serialization import storable_text

if TYPE_CHECKING:
    from .backend_rules import BackendRules
    from .models import TaskExecution
    from .task import AnyTask

logger = logging.getLogger(__name__)


def _with_reconnect[T](using: str, write: Callable[[], T]) -> T:
    """Run `write`; if the connection was lost (database restart, idle cut), reconnect and retry once.

    Only outside a transaction: inside one, the retry could not see what the lost one did.
    """
    try:
        return write()
    except (OperationalError, InterfaceError):
        connection = connections[using]
        if connection.in_atomic_block:
            raise
        logger.warning(
            "Lost the database connection while saving an outcome; reconnecting once", exc_info=True
        )
        connection.close()
        return write()


class ExecutionQuerySet(ClaimingQuerySet):
    """`TaskExecution.objects`: every state transition (the claim is ClaimingQuerySet's)."""

    # --- heartbeat -------------------------------------------------------------------------------

    def renew(self, leases: Iterable[tuple[int, str]], until: datetime) -> set[int]:
        """Extend the given (execution id, lease id) leases in one UPDATE; the ids still held."""
        leases = list(leases)
        if not leases:
            return set()
        held = Q()
        for pk, lease_id in leases:
            held |= Q(pk=pk, lease_worker_id=lease_id)
        running = self.filter(held, status=RUNNING)
        if running.update(lease_expires_at=until) == len(leases):
            return {pk for pk, _lease_id in leases}
        # Some lease is gone (cancelled, or taken over after it expired): find which.
        return set(running.values_list("pk", flat=True))

    # --- outcome of a running attempt --------------------------------------------------------------

    def _finish(self, claim: Claim, execution: TaskExecution, changes: dict[str, Any]) -> bool:
        """Write the outcome in one UPDATE, only while `claim`'s lease still holds the row."""
        changes = {**changes, "lease_worker_id": None, "lease_expires_at": None}
        if not _with_reconnect(
            self._write_db(), lambda: self._update_held(claim.execution_id, claim.lease_id, changes)
        ):
            return False
        for name, value in changes.items():
            setattr(execution, name, value)
        return True

    def finish_success(
        self, claim: Claim, execution: TaskExecution, value: Any, *, task: AnyTask | None = None
    ) -> AttemptOutcome:
        try:
            saved = self._finish(
                claim, execution, {"status": SUCCESSFUL, "finished_at": timezone.now(), "return_value": value}
            )
        except DataError as exc:
            # The database refused the value (e.g. a number beyond its range): the attempt fails
            # with a storable error instead of leaving the execution RUNNING.
            error = PermanentTaskError(
                f"The return value of {execution.module_path} cannot be stored: {storable_text(str(exc))}"
            )
            return self.finish_failure(claim, execution, error, task=task)
        if not saved:
            return self.lost(claim)
        logger.info("Task %s (%s) attempt %s SUCCESSFUL", execution.pk, execution.module_path, claim.attempt)
        send_finished(execution, task)
        return answer(Outcome.SUCCEEDED, SUCCESSFUL)

    def finish_failure(
        self,
        claim: Claim,
        execution: TaskExecution,
        error: BaseException,
        *,
        give_back: bool = False,
        task: AnyTask | None = None,
    ) -> AttemptOutcome:
        """Record a failed attempt: FAILED when it was the last one, else READY for a retry.

        `give_back`: the attempt was stopped from outside (a shutdown) and, when the row counts the
        attempts, does not use one up. Call it inside the `except` block, so `task_finished`
        receivers see the exception.
        """
        backend = execution.backend
        last = attempts.is_last_attempt(execution, backend, claim.attempt, error)
        if give_back and not backend.run_once:
            last = False
        changes: dict[str, Any] = {
            "errors": attempts.with_error(execution.errors, error, backend.max_history_entries)
        }
        if last:
            changes.update(status=FAILED, finished_at=timezone.now())
        else:
            changes.update(status=READY)
            if give_back:
                changes.update(attempts=execution.attempts - 1, worker_ids=execution.worker_ids[:-1])
        if not self._finish(claim, execution, changes):
            return self.lost(claim)
        logger.warning(
            "Task %s (%s) attempt %s failed with %s: %s; %s",
            execution.pk,
            execution.module_path,
            claim.attempt,
            type(error).__qualname__,
            storable_text(str(error)),
            "FAILED" if last else ("READY again (attempt given back)" if give_back else "READY for a retry"),
        )
        if not last:
            return answer(Outcome.RETRY, READY, retry=True)
        send_finished(execution, task)
        return answer(Outcome.FAILED, FAILED)

    def lost(self, claim: Claim) -> AttemptOutcome:
        """Our lease is gone: cancelled (nothing more to do) or taken over by another attempt."""
        execution = self.filter(pk=claim.execution_id).only("status", "cancelled_at").first()
        if execution is not None and execution.cancelled_at is not None:
            return answer(Outcome.CANCELLED, execution.status)
        logger.warning(
            "Task %s attempt %s lost its lease: its outcome is not recorded",
            claim.execution_id,
            claim.attempt,
        )
        return answer(Outcome.LEASE_LOST, execution.status if execution else None)

    # --- abandoned attempts, cancellation, dispatch ------------------------------------------------

    def release(
        self, execution: TaskExecution, error: Exception, *, count_attempt: bool = True
    ) -> str | None:
        """End a RUNNING attempt that will never record its outcome (its process died, its lease expired).

        The execution becomes READY for another attempt, or FAILED if none may follow. With
        `count_attempt=False` (the worker stopped it for a shutdown) the attempt is given back.
        Returns the new status, or None if the row changed meanwhile (e.g. the holder renewed its
        lease after all).
        """
        backend = backend_of(execution)
        if backend is None:
            outcome = self._fail_unrun(execution, list(execution.errors), error, FALLBACK_HISTORY)
            return None if outcome.retry else FAILED
        last = attempts.is_last_abandoned(execution, backend, counted=count_attempt)
        changes: dict[str, Any] = {
            "errors": attempts.with_error(execution.errors, error, backend.max_history_entries),
            "lease_worker_id": None,
            "lease_expires_at": None,
        }
        if last:
            changes.update(status=FAILED, finished_at=timezone.now())
        else:
            changes.update(status=READY)
            if not count_attempt:
                changes.update(attempts=max(execution.attempts - 1, 0), worker_ids=execution.worker_ids[:-1])
        if not self._set_as_read(execution, **changes):
            return None
        # One line: which attempt of which execution, why it is released, and what happens next.
        number = execution.attempts + (0 if count_attempt else 1)
        logger.warning(
            "Task %s (%s, backend %r) attempt %s released without an outcome: %s; %s",
            execution.pk,
            execution.module_path,
            execution.backend_alias,
            number,
            storable_text(str(error)).rstrip("."),
            _after_release(execution, backend, number, last=last, counted=count_attempt),
        )
        if last:
            send_finished(execution)
        return FAILED if last else READY

    def unclaim(self, claim: Claim, execution: TaskExecution) -> bool:
        """Undo a claim whose attempt never started, under its lease: READY again, as before the claim.

        The local worker claims a few executions ahead of its free children; those it still holds
        when it stops go back without an attempt used or an error recorded. False: the lease is
        gone (cancelled meanwhile).
        """
        changes: dict[str, Any] = {
            "status": READY,
            **self._claim_undone(execution),
            "started_at": None if claim.first_start else execution.started_at,
        }
        if not self._held(claim.execution_id, claim.lease_id).update(**changes):
            return False
        logger.info("Task %s (%s) given back unstarted: READY", execution.pk, execution.module_path)
        return True

    def fail_undelivered(self, execution: TaskExecution, error: BaseException, why: str) -> bool:
        """FAILED, with `error` recorded, for a READY execution nobody will deliver.

        Its dispatch failed for good, or `recover_tasks` found its delivery gone and no attempt
        left. `why` starts the log line: "<why> task <id> (...): FAILED".
        """
        backend = backend_of(execution)
        history = backend.max_history_entries if backend is not None else FALLBACK_HISTORY
        changed = self._set_as_read(
            execution,
            status=FAILED,
            finished_at=timezone.now(),
            errors=attempts.with_error(execution.errors, error, history),
        )
        if changed:
            logger.error(
                "%s task %s (%s) of backend %r: FAILED",
                why,
                execution.pk,
                execution.module_path,
                execution.backend_alias,
                exc_info=error,
            )
            send_finished(execution)
        return changed

    def cancel(self, execution: TaskExecution, *, force: bool = False) -> bool:
        """FAILED with `cancelled_at` set (and a TaskCancelled error) unless it already finished.

        The attempt holding the lease loses it: its heartbeat and result write are refused from
        then on. Returns whether it was cancelled.
        """
        backend = execution.backend
        if force and not backend.supports_force_cancel:
            raise NotImplementedError("This backend does not support forceful cancellation")
        error = TaskCancelled("Cancelled" + (" forcefully" if force else "") + " before it finished.")
        while not execution.is_finished:
            now = timezone.now()
            changes: dict[str, Any] = {
                "status": FAILED,
                "cancelled_at": now,
                "finished_at": now,
                "lease_worker_id": None,
                "lease_expires_at": None,
                "errors": attempts.with_error(execution.errors, error, backend.max_history_entries),
            }
            if force:
                changes["force_cancel"] = True
            if self._set_as_read(execution, **changes):
                logger.warning(
                    "Task %s (%s) cancelled%s: FAILED",
                    execution.pk,
                    execution.module_path,
                    " (force)" if force else "",
                )
                send_finished(execution)
                return True
            # A heartbeat or a transition wrote the row meanwhile: look again.
            execution.refresh_from_db()
        return False


def _after_release(
    execution: TaskExecution, backend: BackendRules, number: int, *, last: bool, counted: bool
) -> str:
    """What follows a released attempt, as the end of its log line."""
    limit = attempts.attempt_limit(execution, backend)
    if last and backend.run_once:
        return "FAILED: run_once allows no other attempt"
    if last:
        return f"FAILED: all {limit} attempts used"
    if not counted:
        return f"READY again: attempt {number} is given back (a shutdown, not a failure)"
    return f"READY for attempt {number + 1}" + (f" of {limit}" if limit is not None else "")
