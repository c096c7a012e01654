"""The local worker's stand-in for Cloud Scheduler: fire due scheduled tasks of ProcessBackends.

``run_tasks`` calls ``LocalCron.fire_due(now)`` on every poll. For each enabled ScheduledTask
whose backend is one the worker serves, the slots due since the last firing are computed with
croniter in the task's own time zone (see ``cron.py`` for daylight saving time), and each is
fired through ``fire_scheduled_task`` under the key ``local:<pk>:<slot in the task's time zone>``.

Which slots fire (``CatchUp``):

* By default, like cron: only slots that come due while a worker runs, at most the latest one per
  poll (a laptop waking from sleep fires a missed schedule once, not once per missed slot).
* ``--catch-up``: also the slots missed while no worker ran, coalesced into one run: the latest
  missed slot fires, the older ones are skipped. The published package does the same (it fires
  only croniter's previous slot), as do Kubernetes CronJobs (one Job however many schedules were
  missed) and APScheduler's default ``coalesce=True``; see ``CatchUp``.
* ``--catch-up=all``: each missed slot once, oldest first, at most ``MAX_CATCH_UP_SLOTS`` per task.

Slots from before the task's definition last changed (``updated_at``: created, edited,
re-enabled) are never caught up.

Several workers may run at once: the unique firing key makes the first one to reach a slot fire
it and the others skip it. No per-worker "first sight" state decides anything, so a worker that
starts later never swallows a slot another worker has yet to fire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from django.db import DatabaseError
from django.db.models import Max
from django.tasks import Task as DjangoTask
from django.utils.module_loading import import_string

from ..models import ScheduledTask, ScheduledTaskFiring
from .cron import slots_between
from .firing import fire_scheduled_task

logger = logging.getLogger(__name__)

MAX_CATCH_UP_SLOTS = 10


class CatchUp(StrEnum):
    """What to do with the slots missed while no worker ran (``run_tasks --catch-up[=all]``).

    ``LATEST`` coalesces them into one run, as Kubernetes CronJob does after missed schedules
    (https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/) and APScheduler does
    by default (``coalesce``: https://apscheduler.readthedocs.io/en/3.x/userguide.html).
    """

    NONE = "none"  # only slots that come due while the worker runs
    LATEST = "latest"  # also the latest missed slot
    ALL = "all"  # each missed slot, oldest first, MAX_CATCH_UP_SLOTS at most


def local_firing_key(scheduled: ScheduledTask, slot: datetime) -> str:
    """The published package's local key: the slot in the task's time zone, offset included."""
    return f"local:{scheduled.pk}:{slot.astimezone(ZoneInfo(scheduled.time_zone)).isoformat()}"


class LocalCron:
    """Fires the scheduled tasks of ``backend_aliases``; one instance per worker process."""

    def __init__(self, backend_aliases: Iterable[str], *, catch_up: CatchUp, started_at: datetime) -> None:
        self.backend_aliases = frozenset(backend_aliases)
        self.catch_up = catch_up
        self.started_at = started_at
        # module_path -> the task's own backend alias (None: not importable), imported once.
        self._task_backends: dict[str, str | None] = {}
        # Slots whose firing failed, so a broken definition is logged once per slot, not per poll.
        self._failed: set[str] = set()

    def fire_due(self, now: datetime) -> int:
        """Fire every due slot; returns how many were enqueued. Database errors propagate."""
        due = [
            scheduled
            for scheduled in ScheduledTask.objects.filter(state=ScheduledTask.State.ENABLED).only(
                "pk", "name", "schedule", "time_zone", "module_path", "backend_alias", "updated_at"
            )
            if self._served(scheduled)
        ]
        if not due:
            return 0
        latest = dict(
            ScheduledTaskFiring.objects.filter(
                scheduled_task__in=[scheduled.pk for scheduled in due],
                source=ScheduledTaskFiring.Source.LOCAL,
            )
            .values("scheduled_task")
            .annotate(latest=Max("scheduled_for"))
            .values_list("scheduled_task", "latest")
        )
        fired = 0
        for scheduled in due:
            after = max(scheduled.updated_at, latest.get(scheduled.pk) or scheduled.updated_at)
            if self.catch_up == CatchUp.NONE:
                after = max(after, self.started_at)
            try:
                slots = slots_between(
                    scheduled.schedule,
                    scheduled.time_zone,
                    after,
                    now,
                    limit=MAX_CATCH_UP_SLOTS if self.catch_up == CatchUp.ALL else 1,
                )
            except Exception:  # a definition saved around validation; report it once
                self._log_once(f"schedule:{scheduled.pk}:{scheduled.schedule}", scheduled, "its schedule")
                continue
            for slot in slots:
                fired += self._fire(scheduled, slot)
        return fired

    def _fire(self, scheduled: ScheduledTask, slot: datetime) -> int:
        key = f"local:{scheduled.pk}:{slot.isoformat()}"  # for the log, should the real key fail
        try:
            key = local_firing_key(scheduled, slot)
            outcome = fire_scheduled_task(
                scheduled.pk, key=key, source=ScheduledTaskFiring.Source.LOCAL, scheduled_for=slot
            )
        except DatabaseError:
            raise
        except Exception:  # e.g. InvalidTask after settings changed: keep the worker running
            self._log_once(key, scheduled, f"slot {slot.isoformat()}")
            return 0
        return int(outcome.enqueued)

    def _served(self, scheduled: ScheduledTask) -> bool:
        alias = scheduled.backend_alias or self._task_backend(scheduled.module_path)
        return alias in self.backend_aliases

    def _task_backend(self, module_path: str) -> str | None:
        if module_path not in self._task_backends:
            try:
                task = import_string(module_path)
            except Exception:  # ImportError, or anything the module raised while importing
                task = None
            if not isinstance(task, DjangoTask):
                logger.error(
                    "Scheduled task %s: cannot import a task at %r; not firing it", module_path, module_path
                )
            self._task_backends[module_path] = task.backend if isinstance(task, DjangoTask) else None
        return self._task_backends[module_path]

    def _log_once(self, key: str, scheduled: ScheduledTask, what: str) -> None:
        if key not in self._failed:
            self._failed.add(key)
            logger.exception("Scheduled task %r: could not fire %s", scheduled.name, what)
