"""Which Cloud Scheduler push may fire which slot: the rules behind ``/tasks/schedule/``.

The view authenticates a push and reads its body; this module reads the slot from the push's
headers and decides. A slot is keyed by its parsed UTC instant, never by the header's spelling,
so ``2026-01-01T09:00:00Z``, ``2026-01-01T09:00:00.000Z`` and ``2026-01-01T10:00:00+01:00`` are one
slot that fires once. Slots far from now are refused (a replayed or forged header), as are pushes
from a job the task no longer uses and tasks that run on another backend.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.tasks import TaskResultStatus
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from ..models import ScheduledTask, ScheduledTaskFiring, TaskExecution
from .definitions import scheduled_task_backend
from .firing import fire_scheduled_task

logger = logging.getLogger(__name__)

# How far a slot may lie from now and still fire. Cloud Scheduler pushes a slot at its time and
# retries a failed push with backoff, at most retry_count (<= 5) times, each after at most
# max_backoff_duration (<= 1 h) plus attempt_deadline (<= 30 min), and never past the next slot:
# https://cloud.google.com/scheduler/docs/configuring/retry-jobs
# So a genuine push is at most ~7.5 hours late (ours: minutes, see cloud_scheduler.RETRY_COUNT);
# two days leaves room for a Google incident that delays deliveries, and still refuses a replayed
# header from weeks ago, 1970 or 9999. A slot is never pushed before its time: a few minutes ahead
# covers clock skew between Google and this service, nothing more.
MAX_SLOT_AGE = timedelta(days=2)
MAX_SLOT_LEAD = timedelta(minutes=5)


class PushRefused(Exception):
    """The push must not fire anything: ``status`` (4xx/5xx) and a short ``message`` for the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SchedulerDelivery:
    """The slot one Cloud Scheduler push is for (headers trusted only after authentication).

    Cloud Scheduler sends ``X-CloudScheduler-JobName`` and ``X-CloudScheduler-ScheduleTime`` (the
    slot, RFC 3339 UTC "Zulu"; a forced run sends the time of the run):
    https://firebase.google.com/docs/reference/functions/2nd-gen/node/firebase-functions.scheduler.scheduledevent
    """

    job_name: str  # the job's id, or (to be safe) its full resource name
    schedule_time: str  # the header verbatim, for messages (the key is built from `slot`)
    slot: datetime  # aware, UTC

    @property
    def key(self) -> str:
        """The slot's firing key: ``<job id>:<slot in UTC, RFC 3339 "Z">``.

        The published package's format (job name, colon, schedule time) for the spelling Google
        sends, but built from the parsed instant, so every spelling of one slot gives one key.
        """
        job_id = self.job_name.rsplit("/", 1)[-1]
        return f"{job_id}:{self.slot.isoformat().replace('+00:00', 'Z')}"

    def is_from(self, job_name: str | None) -> bool:
        """Whether the push comes from the job the scheduled task records."""
        return bool(job_name) and self.job_name in {job_name, (job_name or "").rsplit("/", 1)[-1]}

    def refuse_if_far_from_now(self) -> None:
        """PushRefused(400) for a slot outside [now - MAX_SLOT_AGE, now + MAX_SLOT_LEAD]."""
        now = timezone.now()
        if not now - MAX_SLOT_AGE <= self.slot <= now + MAX_SLOT_LEAD:
            raise PushRefused(
                400,
                f"X-CloudScheduler-ScheduleTime {self.schedule_time!r} is too far from now to be a "
                f"slot Cloud Scheduler still delivers (accepted: {MAX_SLOT_AGE} before to "
                f"{MAX_SLOT_LEAD} after).",
            )

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> SchedulerDelivery:
        """The delivery the headers describe; PushRefused(400) if they are missing or malformed."""
        job_name = headers.get("X-CloudScheduler-JobName", "").strip()
        schedule_time = headers.get("X-CloudScheduler-ScheduleTime", "").strip()
        if not job_name or not schedule_time:
            missing = "X-CloudScheduler-JobName" if not job_name else "X-CloudScheduler-ScheduleTime"
            raise PushRefused(400, f"Missing header: {missing} (Cloud Scheduler sends it with every push).")
        try:
            parsed = datetime.fromisoformat(schedule_time)
            slot = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
        except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:00:00-01:00 and the like
            slot = None
        if slot is None:
            raise PushRefused(400, f"Malformed header: X-CloudScheduler-ScheduleTime {schedule_time!r}.")
        return cls(job_name=job_name, schedule_time=schedule_time, slot=slot)


def fire_pushed_slot(task_id: int, backend_alias: str, delivery: SchedulerDelivery) -> None:
    """Fire the slot once, unless it must not be; PushRefused says why not.

    404: no such task, or one that runs on another backend; 409: the push comes from a job other
    than the task's own (left over from a rename: ``sync_scheduled_tasks --prune``); 422: the
    definition cannot be enqueued with the current settings; 503: the execution could not be
    handed to its backend (the slot is released, so Cloud Scheduler's retry fires it).
    A repeat of a fired slot and a disabled task return normally, having fired nothing.
    400: a slot far from now (checked here, after the view's checks of who sent the push, its
    ID token and push MAC, so a caller without credentials learns nothing from it).
    """
    delivery.refuse_if_far_from_now()
    scheduled = ScheduledTask.objects.filter(pk=task_id).first()
    if scheduled is None:
        raise PushRefused(404, f"No scheduled task {task_id}.")
    if not delivery.is_from(scheduled.cloud_scheduler_job_name):
        # A job the task no longer uses must never fire it: that would enqueue it twice per slot.
        raise PushRefused(409, f"Job {delivery.job_name!r} is not the job of scheduled task {task_id}.")
    try:
        own_backend = scheduled_task_backend(scheduled)
    except ValidationError as exc:
        reason = "; ".join(exc.messages)
        raise PushRefused(422, f"Scheduled task {task_id} cannot be enqueued: {reason}") from None
    if own_backend.alias != backend_alias:
        raise PushRefused(404, f"Scheduled task {task_id} does not run on backend {backend_alias!r}.")
    try:
        outcome = fire_scheduled_task(
            task_id,
            key=delivery.key,
            source=ScheduledTaskFiring.Source.CLOUD_SCHEDULER,
            scheduled_for=delivery.slot,
        )
    except (InvalidTask, ImproperlyConfigured, TypeError, ValueError) as exc:
        logger.exception("Scheduled task %s could not be enqueued", task_id)
        raise PushRefused(422, f"Scheduled task {task_id} cannot be enqueued: {exc}") from None
    if outcome.reason == "not-found":
        raise PushRefused(404, f"No scheduled task {task_id}.")
    result, firing = outcome.result, outcome.firing
    if result is None or firing is None:  # a repeat of a fired slot, or a disabled task
        logger.info("Scheduled task %s: slot %s not fired (%s)", task_id, delivery.key, outcome.reason)
        return
    # The backend delivered the execution when the firing committed. If that failed, release the
    # slot so Cloud Scheduler's retry fires it again (the failed execution stays on record).
    undelivered = TaskExecution.objects.filter(
        pk=int(result.id),
        status=TaskResultStatus.FAILED,
        started_at__isnull=True,
        cancelled_at__isnull=True,
    )
    if undelivered.exists():
        ScheduledTaskFiring.objects.filter(pk=firing.pk).delete()
        raise PushRefused(503, "The scheduled task could not be handed to its backend; retry later.")
