"""The states an operator tells executions apart by, derived from the stored status.

Django's TaskResultStatus has no "cancelled" and no "waiting for run_after": a cancelled execution
is stored as FAILED with ``cancelled_at`` set, and a READY one whose ``run_after`` is in the future
is not late but scheduled. The admin's badge and filter and the prune command's ``--status`` read
the same conditions, defined once here as query expressions (so they filter in the database and
annotate a whole page of rows without a query per row).
"""

from __future__ import annotations

from django.db.models import Case, Q, QuerySet, TextChoices, TextField, Value, When
from django.db.models.functions import Now
from django.tasks import TaskResultStatus

from .models import TaskExecution


class ExecutionState(TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    READY = "ready", "Ready"
    RUNNING = "running", "Running"
    SUCCESSFUL = "successful", "Successful"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


_NOT_CANCELLED = Q(cancelled_at__isnull=True)
_WAITING = Q(run_after__gt=Now())

# Mutually exclusive: every row matches exactly one.
CONDITIONS: dict[ExecutionState, Q] = {
    ExecutionState.SCHEDULED: _NOT_CANCELLED & Q(status=TaskResultStatus.READY) & _WAITING,
    ExecutionState.READY: _NOT_CANCELLED & Q(status=TaskResultStatus.READY) & ~_WAITING,
    ExecutionState.RUNNING: _NOT_CANCELLED & Q(status=TaskResultStatus.RUNNING),
    ExecutionState.SUCCESSFUL: _NOT_CANCELLED & Q(status=TaskResultStatus.SUCCESSFUL),
    ExecutionState.FAILED: _NOT_CANCELLED & Q(status=TaskResultStatus.FAILED),
    ExecutionState.CANCELLED: ~_NOT_CANCELLED,
}


def with_state(queryset: QuerySet[TaskExecution]) -> QuerySet[TaskExecution]:
    """The queryset with each row's ExecutionState value as ``state``."""
    return queryset.annotate(
        state=Case(
            *(When(condition, then=Value(state.value)) for state, condition in CONDITIONS.items()),
            output_field=TextField(),
        )
    )


def in_states(queryset: QuerySet[TaskExecution], states: list[ExecutionState]) -> QuerySet[TaskExecution]:
    condition = Q()
    for state in states:
        condition |= CONDITIONS[state]
    return queryset.filter(condition)
