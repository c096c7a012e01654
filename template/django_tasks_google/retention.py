"""Retention: delete finished task executions and old schedule firings, a batch at a time.

Nothing else removes rows: every enqueue adds a TaskExecution and every fired slot a
ScheduledTaskFiring, so without this the tables only grow. ``manage.py prune_task_executions``
calls ``prune`` (the deploy runs it daily as a Cloud Run job).

- Only finished executions go (Successful, Failed, Cancelled; see execution_states), once they
  finished more than the retention period ago; READY and RUNNING rows are never touched.
- A firing goes once it is older than the period *and* a later firing of the same schedule and
  source exists: the local worker reads the latest fired slot per schedule to know where to
  resume, so that one is kept. A repeated Cloud Scheduler delivery of a slot that old is refused
  by the push view's slot window, so its firing record is no longer needed to stop it.
- Rows are selected by primary key in ascending batches (a walk along the primary key index, not
  a scan per batch) and each batch is deleted in its own short transaction, so no lock is held on
  the table for long and workers keep claiming and finishing tasks meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from .execution_states import ExecutionState, in_states
from .models import ScheduledTaskFiring, TaskExecution

FINISHED_STATES = (ExecutionState.SUCCESSFUL, ExecutionState.FAILED, ExecutionState.CANCELLED)
DEFAULT_RETENTION_DAYS = 30
BATCH_SIZE = 1000


def retention_period() -> timedelta:
    """settings.TASKS_RETENTION_DAYS (default 30): how long finished executions are kept."""
    days = getattr(settings, "TASKS_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValueError(f"TASKS_RETENTION_DAYS must be a whole number of days, 1 or more, not {days!r}")
    return timedelta(days=days)


@dataclass(frozen=True)
class PruneReport:
    executions: int
    firings: int
    cutoff: datetime
    dry_run: bool

    def __str__(self) -> str:
        verb = "Would delete" if self.dry_run else "Deleted"
        return (
            f"{verb} {self.executions} finished task execution(s) and {self.firings} schedule firing(s) "
            f"from before {self.cutoff.isoformat(timespec='seconds')}"
        )


def prunable_executions(cutoff: datetime, states: list[ExecutionState]) -> QuerySet[TaskExecution]:
    # Rows from before finished_at was recorded fall back to when they were enqueued.
    old = Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, enqueued_at__lt=cutoff)
    return in_states(TaskExecution.objects.filter(old), states)


def prunable_firings(cutoff: datetime) -> QuerySet[ScheduledTaskFiring]:
    later = ScheduledTaskFiring.objects.filter(
        scheduled_task=OuterRef("scheduled_task"),
        source=OuterRef("source"),
        scheduled_for__gt=OuterRef("scheduled_for"),
    )
    return ScheduledTaskFiring.objects.filter(Exists(later), fired_at__lt=cutoff)


def prune(
    older_than: timedelta,
    states: list[ExecutionState] | None = None,
    *,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
) -> PruneReport:
    unfinished = set(states or ()) - set(FINISHED_STATES)
    if unfinished:
        raise ValueError(f"Only finished executions can be pruned, not {sorted(unfinished)}")
    cutoff = timezone.now() - older_than
    executions = prunable_executions(cutoff, list(states or FINISHED_STATES))
    firings = prunable_firings(cutoff)
    if dry_run:
        return PruneReport(executions.count(), firings.count(), cutoff, dry_run=True)
    return PruneReport(
        _delete_in_batches(executions, batch_size),
        _delete_in_batches(firings, batch_size),
        cutoff,
        dry_run=False,
    )


def _delete_in_batches(queryset: QuerySet[TaskExecution] | QuerySet[ScheduledTaskFiring], size: int) -> int:
    label = queryset.model._meta.label
    deleted, after = 0, 0
    while True:
        batch = list(queryset.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:size])
        if not batch:
            return deleted
        with transaction.atomic():
            # The same conditions again: a row that changed since it was selected stays.
            _total, by_model = queryset.filter(pk__in=batch).delete()
        deleted += by_model.get(label, 0)
        after = batch[-1]
