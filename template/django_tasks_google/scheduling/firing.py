"""Firing a scheduled task: enqueue it once per slot, however often the slot is delivered.

Cloud Scheduler's pushes (``/tasks/schedule/``), the local worker's cron and the admin's "Run now"
all come through ``fire_scheduled_task``. In one transaction it locks the ScheduledTask, checks it
is enabled, inserts a ``ScheduledTaskFiring`` with the slot's unique key and enqueues the task
through its backend exactly as ``.enqueue()`` would. A second delivery of the same slot (a retry,
a duplicate push, a second local worker) finds the key taken and enqueues nothing. The backend
delivers the execution only after this transaction commits.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.tasks import TaskResult
from django.utils import timezone

from ..models import ScheduledTask, ScheduledTaskFiring

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FiringOutcome:
    """What happened to one delivery of a slot.

    ``reason``: "enqueued", "duplicate" (the slot was fired before), "disabled", "not-found".
    """

    reason: str
    result: TaskResult[Any, Any] | None = None
    firing: ScheduledTaskFiring | None = None

    @property
    def enqueued(self) -> bool:
        return self.reason == "enqueued"


def fire_scheduled_task(
    scheduled_task_id: int,
    *,
    key: str,
    source: ScheduledTaskFiring.Source,
    scheduled_for: datetime,
    even_if_disabled: bool = False,
) -> FiringOutcome:
    """Enqueue the scheduled task for the slot ``key`` unless that slot was fired already.

    Errors of the enqueue itself (an InvalidTask after settings changed, a database error)
    propagate, and roll the firing back so a later delivery of the slot can still fire it.
    """
    with transaction.atomic():
        scheduled = ScheduledTask.objects.select_for_update().filter(pk=scheduled_task_id).first()
        if scheduled is None:
            return FiringOutcome("not-found")
        if scheduled.state != ScheduledTask.State.ENABLED and not even_if_disabled:
            return FiringOutcome("disabled")
        try:
            with transaction.atomic():
                firing = ScheduledTaskFiring.objects.create(
                    scheduled_task=scheduled, key=key, source=source, scheduled_for=scheduled_for
                )
        except IntegrityError:
            return FiringOutcome("duplicate")
        result = scheduled.enqueue()
        firing.task_execution_id = int(result.id)
        firing.save(update_fields=["task_execution"])
        scheduled.idempotency_key = key
        scheduled.save(update_fields=["idempotency_key"])
    logger.info("Scheduled task %r fired for %s: task %s", scheduled.name, key, result.id)
    return FiringOutcome("enqueued", result, firing)


def run_now(scheduled_task_id: int) -> FiringOutcome:
    """Fire the task at once, outside its schedule (the admin's "Run now"; also when disabled)."""
    now = timezone.now()
    return fire_scheduled_task(
        scheduled_task_id,
        key=f"manual:{scheduled_task_id}:{uuid.uuid4()}",
        source=ScheduledTaskFiring.Source.MANUAL,
        scheduled_for=now,
        even_if_disabled=True,
    )
