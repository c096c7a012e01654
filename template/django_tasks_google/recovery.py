"""Unstick tasks that Google Cloud stopped delivering (run by `manage.py recover_tasks`).

Cloud Tasks and Cloud Run Jobs retry an attempt only a limited number of times, so an execution
can be left with nobody to deliver it:

* RUNNING with an expired lease: its process crashed after the platform had used up its retries.
* READY, but its Cloud Task no longer exists (Cloud Tasks gave up: max_retry_duration reached, or
  the attempts were consumed by 503s that never reached the executor) or its Cloud Run execution
  completed.
* READY and never delivered: the platform was unavailable when it was dispatched (a transient
  error leaves the execution READY, see `DispatchResult.DEFERRED`), or the process died between
  the commit and the API call.

The local worker recovers expired leases itself; on Google Cloud nothing runs continuously, so
this pass is meant to run every few minutes (e.g. a Cloud Scheduler job starting a Cloud Run job
with `python manage.py recover_tasks`).

What the platform holds is asked of the backend (`delivery_state`), and the backend delivers
again (`redispatch`): this module knows no platform. No row lock is held during an RPC. Every
write is a conditional UPDATE on the row as it was read (the executor's compare-and-set style),
so concurrent runs, and deliveries arriving meanwhile, never both act on one state: the loser
skips the row.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.tasks import TaskResultStatus, task_backends
from django.utils import timezone

from . import attempts
from .backends.base import DjangoTasksGoogleBackend
from .backends.delivery import DeliveryState, DeliveryUnknown, DispatchResult
from .errors import PermanentTaskError
from .executor import lease_expired_error, release_abandoned
from .models import TaskExecution

logger = logging.getLogger(__name__)


@dataclass
class RecoverySummary:
    """Counts of what one pass did (or, with dry_run, would do)."""

    dry_run: bool
    counts: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        order = ["released", "redispatched", "failed", "pending", "skipped", "errors"]
        parts = ", ".join(f"{self.counts[key]} {key}" for key in order)
        return f"recover_tasks: {parts}" + (" (dry run: nothing changed)" if self.dry_run else "")


def google_backends(aliases: list[str] | None = None) -> dict[str, DjangoTasksGoogleBackend]:
    """The backends whose deliveries can be lost (`needs_recovery`: Cloud Tasks, Cloud Run Jobs)
    by alias; `aliases` must all name one of them."""
    found = {
        alias: backend
        for alias in task_backends.settings
        if isinstance(backend := task_backends[alias], DjangoTasksGoogleBackend) and backend.needs_recovery
    }
    if aliases is None:
        return found
    unknown = [alias for alias in aliases if alias not in found]
    if unknown:
        raise ValueError(
            f"Not a Cloud Tasks or Cloud Run Jobs backend: {', '.join(unknown)} "
            f"(configured: {', '.join(sorted(found)) or 'none'})"
        )
    return {alias: found[alias] for alias in aliases}


def recover(
    *, older_than: timedelta, aliases: list[str] | None = None, dry_run: bool = False
) -> RecoverySummary:
    """One recovery pass over the Google backends' unfinished executions."""
    backends = google_backends(aliases)
    summary = RecoverySummary(dry_run=dry_run)
    if not backends:
        return summary
    now = timezone.now()
    _release_expired_leases(backends, now, summary)
    # After the releases: a row just made READY whose delivery is gone is re-dispatched at once.
    for execution in _quiet_ready_rows(backends, now - older_than):
        _recover_ready(execution, backends[execution.backend_alias], summary)
    return summary


# --- (a) expired leases ---------------------------------------------------------------------------


def _release_expired_leases(
    backends: dict[str, DjangoTasksGoogleBackend], now: datetime, summary: RecoverySummary
) -> None:
    expired = TaskExecution.objects.filter(
        Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True),
        status=TaskResultStatus.RUNNING,
        backend_alias__in=list(backends),
    ).order_by("pk")
    for execution in expired:
        if summary.dry_run:
            _log(execution, "would release its expired lease")
            summary.counts["released"] += 1
            continue
        # READY if attempts remain, else FAILED; None if the holder renewed or finished meanwhile.
        # The release logs its one line (transitions.py).
        status = release_abandoned(execution, lease_expired_error(execution))
        if status is None:
            summary.counts["skipped"] += 1
        elif status == TaskResultStatus.FAILED:
            summary.counts["failed"] += 1
        else:
            summary.counts["released"] += 1


# --- (b)/(c) READY rows nobody delivers -----------------------------------------------------------


def _quiet_ready_rows(
    backends: dict[str, DjangoTasksGoogleBackend], quiet_since: datetime
) -> QuerySet[TaskExecution]:
    """READY rows neither enqueued nor attempted after `quiet_since` (fresh ones are still in flight)."""
    return TaskExecution.objects.filter(
        Q(last_attempted_at__isnull=True) | Q(last_attempted_at__lte=quiet_since),
        status=TaskResultStatus.READY,
        backend_alias__in=list(backends),
        enqueued_at__lte=quiet_since,
    ).order_by("pk")


def _recover_ready(
    execution: TaskExecution, backend: DjangoTasksGoogleBackend, summary: RecoverySummary
) -> None:
    try:
        delivery = backend.delivery_state(execution)
    except DeliveryUnknown as exc:
        logger.error("Task %s: could not ask the platform about its delivery: %s", execution.pk, exc)
        summary.counts["errors"] += 1
        return
    if delivery == DeliveryState.PENDING:
        summary.counts["pending"] += 1
        return
    why = "never dispatched" if delivery == DeliveryState.NEVER_DISPATCHED else "its delivery is gone"
    refusal = attempts.refusal(execution, backend, attempts.attempt_limit(execution, backend))
    if summary.dry_run:
        _log(execution, f"{why}: would {'fail' if refusal else 're-dispatch'} it")
        summary.counts["failed" if refusal else "redispatched"] += 1
        return
    if refusal is not None:
        _fail(execution, backend, refusal, why, summary)
        return
    outcome = backend.redispatch(execution)
    if outcome is None:
        summary.counts["skipped"] += 1
    elif outcome == DispatchResult.DISPATCHED:
        _log(execution, f"{why}: re-dispatched")
        summary.counts["redispatched"] += 1
    else:
        # The backend logged the API error (and, if permanent, recorded it on the row: FAILED).
        summary.counts["errors"] += 1


def _fail(
    execution: TaskExecution,
    backend: DjangoTasksGoogleBackend,
    refusal: PermanentTaskError,
    why: str,
    summary: RecoverySummary,
) -> None:
    why = f"Not delivered again ({why}) and no attempt left for"
    if not TaskExecution.objects.fail_undelivered(execution, refusal, why):
        summary.counts["skipped"] += 1
        return
    summary.counts["failed"] += 1


def _log(execution: TaskExecution, what: str) -> None:
    logger.warning(
        "Task %s (%s, backend %r): %s", execution.pk, execution.module_path, execution.backend_alias, what
    )
