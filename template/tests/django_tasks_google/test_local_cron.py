"""The local worker's cron (LocalCron) with a frozen clock, and the sample schedule under run_tasks.

The clock is frozen by passing `now` (and the worker's start time) explicitly; nothing is mocked.
Schedules fire through the real enqueue pipeline of the test ProcessBackends.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import close_old_connections, connection
from django.utils import timezone

from django_tasks_google.backends import ProcessBackend
from django_tasks_google.models import ScheduledTask, ScheduledTaskFiring, TaskExecution
from django_tasks_google.scheduler import declared_scheduled_tasks, scheduled_task_backend
from django_tasks_google.scheduling.cron import slots_between
from django_tasks_google.scheduling.local_cron import MAX_CATCH_UP_SLOTS, CatchUp, LocalCron
from tests.django_tasks_google import sample_tasks
from tests.processes import manage

pytestmark = pytest.mark.django_db

SERVED = ["test-tasks"]


def at(text: str) -> datetime:
    """An aware UTC datetime from "YYYY-MM-DD HH:MM[:SS]"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def scheduled(
    schedule: str,
    *,
    since: datetime,
    name: str = "tick",
    time_zone: str = "UTC",
    task: Any = sample_tasks.add,
    **fields: Any,
) -> ScheduledTask:
    """A ScheduledTask whose definition last changed at `since` (the floor of catch-up)."""
    row = ScheduledTask.objects.create(
        name=name,
        schedule=schedule,
        time_zone=time_zone,
        module_path=task.module_path,
        args=[1, 2],
        **fields,
    )
    ScheduledTask.objects.filter(pk=row.pk).update(updated_at=since)
    row.refresh_from_db()
    return row


def cron(started_at: datetime, *, catch_up: CatchUp = CatchUp.NONE, aliases: list[str] = SERVED) -> LocalCron:
    return LocalCron(aliases, catch_up=catch_up, started_at=started_at)


def fired_slots(row: ScheduledTask) -> list[datetime]:
    return list(row.firings.order_by("scheduled_for").values_list("scheduled_for", flat=True))


# --- which slots fire -------------------------------------------------------------------------


def test_each_slot_after_the_worker_started_fires_once_through_the_enqueue_pipeline() -> None:
    row = scheduled("*/5 * * * *", since=at("2025-01-01 09:00"))
    worker = cron(started_at=at("2025-01-01 10:02"))

    assert worker.fire_due(at("2025-01-01 10:04:59")) == 0
    assert worker.fire_due(at("2025-01-01 10:05:00")) == 1
    assert worker.fire_due(at("2025-01-01 10:05:01")) == 0
    assert worker.fire_due(at("2025-01-01 10:09:30")) == 0
    assert worker.fire_due(at("2025-01-01 10:10:00.400")) == 1

    firings = list(row.firings.order_by("scheduled_for"))
    assert [firing.key for firing in firings] == [
        f"local:{row.pk}:2025-01-01T10:05:00+00:00",
        f"local:{row.pk}:2025-01-01T10:10:00+00:00",
    ]
    executions = TaskExecution.objects.filter(pk__in=[firing.task_execution_id for firing in firings])
    assert executions.count() == 2
    for execution in executions:
        assert execution.module_path == sample_tasks.add.module_path
        assert execution.backend_alias == "test-tasks"
        assert execution.args == [1, 2]
        assert execution.status == "READY"
    row.refresh_from_db()
    assert row.idempotency_key == firings[-1].key


def test_a_slot_that_elapsed_before_the_worker_started_is_not_fired_without_catch_up() -> None:
    row = scheduled("*/5 * * * *", since=at("2025-01-01 09:00"))
    worker = cron(started_at=at("2025-01-01 10:07"))

    assert worker.fire_due(at("2025-01-01 10:07")) == 0
    assert worker.fire_due(at("2025-01-01 10:09:59")) == 0
    assert worker.fire_due(at("2025-01-01 10:10")) == 1
    assert fired_slots(row) == [at("2025-01-01 10:10")]


def fired_by_hand(row: ScheduledTask, slot: datetime) -> None:
    """A firing recorded without a task, as an earlier worker would have left it."""
    ScheduledTaskFiring.objects.create(
        scheduled_task=row,
        key=f"local:{row.pk}:{slot.isoformat()}",
        source=ScheduledTaskFiring.Source.LOCAL,
        scheduled_for=slot,
    )


def test_catch_up_coalesces_the_missed_slots_into_the_latest() -> None:
    row = scheduled("*/5 * * * *", since=at("2025-01-01 09:00"))
    fired_by_hand(row, at("2025-01-01 09:50"))
    worker = cron(started_at=at("2025-01-01 10:07"), catch_up=CatchUp.LATEST)

    assert worker.fire_due(at("2025-01-01 10:07")) == 1
    assert worker.fire_due(at("2025-01-01 10:07:30")) == 0
    assert worker.fire_due(at("2025-01-01 10:10")) == 1
    assert fired_slots(row) == [at(f"2025-01-01 {t}") for t in ("09:50", "10:05", "10:10")]
    assert TaskExecution.objects.count() == 2


def test_catch_up_all_fires_each_missed_slot_once_oldest_first() -> None:
    row = scheduled("*/5 * * * *", since=at("2025-01-01 09:00"))
    fired_by_hand(row, at("2025-01-01 09:50"))
    worker = cron(started_at=at("2025-01-01 10:07"), catch_up=CatchUp.ALL)

    assert worker.fire_due(at("2025-01-01 10:07")) == 3
    assert worker.fire_due(at("2025-01-01 10:07:30")) == 0
    assert fired_slots(row) == [at(f"2025-01-01 {t}") for t in ("09:50", "09:55", "10:00", "10:05")]
    executions = TaskExecution.objects.order_by("pk")
    assert executions.count() == 3  # the 09:50 firing above was recorded by hand, without a task


def test_catch_up_all_is_bounded_to_the_most_recent_slots() -> None:
    row = scheduled("* * * * *", since=at("2024-12-31 10:00"))
    worker = cron(started_at=at("2025-01-01 10:00:30"), catch_up=CatchUp.ALL)

    assert worker.fire_due(at("2025-01-01 10:00:30")) == MAX_CATCH_UP_SLOTS
    slots = fired_slots(row)
    assert slots[-1] == at("2025-01-01 10:00")
    assert slots[0] == at("2025-01-01 10:00") - timedelta(minutes=MAX_CATCH_UP_SLOTS - 1)


@pytest.mark.parametrize("catch_up", [CatchUp.LATEST, CatchUp.ALL])
def test_catch_up_never_fires_slots_from_before_the_definition_changed(catch_up: CatchUp) -> None:
    row = scheduled("*/5 * * * *", since=at("2025-01-01 10:11"))  # edited after the 10:10 slot
    worker = cron(started_at=at("2025-01-01 10:12"), catch_up=catch_up)

    assert worker.fire_due(at("2025-01-01 10:12")) == 0
    assert worker.fire_due(at("2025-01-01 10:15")) == 1
    assert fired_slots(row) == [at("2025-01-01 10:15")]


def test_without_catch_up_a_long_pause_of_the_worker_fires_only_the_latest_slot() -> None:
    row = scheduled("* * * * *", since=at("2025-01-01 09:00"))
    worker = cron(started_at=at("2025-01-01 10:00:30"))

    worker.fire_due(at("2025-01-01 10:01:00"))
    worker.fire_due(at("2025-01-01 10:30:10"))  # e.g. the laptop slept for half an hour
    assert fired_slots(row) == [at("2025-01-01 10:01"), at("2025-01-01 10:30")]


def test_disabled_tasks_and_tasks_of_other_backends_do_not_fire() -> None:
    scheduled("* * * * *", since=at("2025-01-01 09:00"), name="off", state=ScheduledTask.State.DISABLED)
    scheduled("* * * * *", since=at("2025-01-01 09:00"), name="jobs", backend_alias="test-jobs")
    scheduled("* * * * *", since=at("2025-01-01 09:00"), name="own-backend", task=sample_tasks.echo)
    worker = cron(started_at=at("2025-01-01 10:00:30"))

    assert worker.fire_due(at("2025-01-01 10:01")) == 1
    assert list(ScheduledTaskFiring.objects.values_list("scheduled_task__name", flat=True)) == ["own-backend"]
    assert cron(at("2025-01-01 10:00:30"), aliases=["test-jobs"]).fire_due(at("2025-01-01 10:01")) == 1
    assert TaskExecution.objects.filter(backend_alias="test-jobs").count() == 1


def test_a_broken_definition_is_logged_once_and_does_not_stop_the_others(caplog: Any) -> None:
    scheduled("* * * * *", since=at("2025-01-01 09:00"), name="fine")
    broken = scheduled("* * * * *", since=at("2025-01-01 09:00"), name="broken", queue_name="no-such-queue")
    worker = cron(started_at=at("2025-01-01 10:00:30"))

    with caplog.at_level(logging.ERROR, logger="django_tasks_google.scheduling.local_cron"):
        assert worker.fire_due(at("2025-01-01 10:01")) == 1
        assert worker.fire_due(at("2025-01-01 10:01:01")) == 0
    assert not broken.firings.exists()  # rolled back: a fixed definition can still fire the slot
    failures = [record for record in caplog.records if "broken" in record.getMessage()]
    assert len(failures) == 1
    assert "no-such-queue" in failures[0].exc_text


def test_a_task_that_cannot_be_imported_is_skipped(caplog: Any) -> None:
    row = scheduled("* * * * *", since=at("2025-01-01 09:00"), name="gone")
    ScheduledTask.objects.filter(pk=row.pk).update(module_path="tests.no_such_module.task")
    worker = cron(started_at=at("2025-01-01 10:00:30"))

    with caplog.at_level(logging.ERROR, logger="django_tasks_google.scheduling.local_cron"):
        assert worker.fire_due(at("2025-01-01 10:01")) == 0
    assert "tests.no_such_module.task" in caplog.text
    assert not ScheduledTaskFiring.objects.exists()


# --- time zones and daylight saving time ------------------------------------------------------


def test_schedules_are_read_in_the_task_time_zone() -> None:
    row = scheduled("0 9 * * *", since=at("2025-01-01 00:00"), time_zone="Europe/Amsterdam")
    worker = cron(started_at=at("2025-01-01 07:00"))

    assert worker.fire_due(at("2025-01-01 08:00")) == 1  # 09:00 CET
    assert row.firings.get().key == f"local:{row.pk}:2025-01-01T09:00:00+01:00"
    summer = cron(started_at=at("2025-07-01 06:00"))
    assert summer.fire_due(at("2025-07-01 07:00")) == 1  # 09:00 CEST
    assert fired_slots(row)[-1] == at("2025-07-01 07:00")


def test_fall_back_fires_a_fixed_time_once_and_an_interval_through_both_passes() -> None:
    # 2025-11-02 in New York: 01:00-01:59 happens twice (EDT 05:00-05:59 UTC, then EST 06:00-06:59 UTC).
    daily = scheduled("30 1 * * *", since=at("2025-11-01 00:00"), name="daily", time_zone="America/New_York")
    every_30 = scheduled(
        "*/30 * * * *", since=at("2025-11-01 00:00"), name="every-30", time_zone="America/New_York"
    )
    worker = cron(started_at=at("2025-11-02 04:50"))
    minute = at("2025-11-02 04:50")
    while minute <= at("2025-11-02 07:10"):
        worker.fire_due(minute)
        minute += timedelta(minutes=1)

    assert fired_slots(daily) == [at("2025-11-02 05:30")]
    assert fired_slots(every_30) == [
        at(f"2025-11-02 {t}") for t in ("05:00", "05:30", "06:00", "06:30", "07:00")
    ]
    assert daily.firings.get().key == f"local:{daily.pk}:2025-11-02T01:30:00-04:00"


def test_spring_forward_fires_a_skipped_time_once_at_the_jump() -> None:
    # 2025-03-09 in New York: 02:00-02:59 does not exist; 02:30 fires when the clock jumps to 03:00.
    row = scheduled("30 2 * * *", since=at("2025-03-08 00:00"), time_zone="America/New_York")
    worker = cron(started_at=at("2025-03-09 06:00"))
    for minute in range(0, 150, 5):
        worker.fire_due(at("2025-03-09 06:00") + timedelta(minutes=minute))

    assert fired_slots(row) == [at("2025-03-09 07:00")]


# --- several workers --------------------------------------------------------------------------


def test_two_workers_fire_a_slot_once() -> None:
    row = scheduled("*/5 * * * *", since=at("2025-01-01 09:00"))
    first = cron(started_at=at("2025-01-01 10:01"))
    late = cron(started_at=at("2025-01-01 10:04"))  # started later: must not swallow the next slot

    assert late.fire_due(at("2025-01-01 10:05")) == 1
    assert first.fire_due(at("2025-01-01 10:05:01")) == 0
    assert first.fire_due(at("2025-01-01 10:10")) == 1
    assert late.fire_due(at("2025-01-01 10:10:01")) == 0
    assert TaskExecution.objects.count() == 2
    assert fired_slots(row) == [at("2025-01-01 10:05"), at("2025-01-01 10:10")]


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_fire_a_slot_once() -> None:
    """Real concurrency: threads with their own connections race for the same slots."""
    if connection.vendor == "sqlite":
        pytest.skip("row locks and concurrent writers: PostgreSQL")
    rows = [scheduled("*/5 * * * *", since=at("2025-01-01 09:00"), name=f"race-{n}") for n in range(5)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker = cron(started_at=at("2025-01-01 10:01"))
            barrier.wait()
            worker.fire_due(at("2025-01-01 10:05"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert ScheduledTaskFiring.objects.count() == len(rows)
    assert TaskExecution.objects.count() == len(rows)


# --- run_tasks: catch-up and declared schedules, under the real worker ----------------------------


@pytest.mark.django_db(transaction=True)
def test_run_tasks_catch_up_fires_only_the_latest_missed_slot() -> None:
    """`--catch-up` coalesces: after five missed hourly slots, one run, for the latest of them."""
    row = ScheduledTask.objects.create(
        name="hourly", schedule="0 * * * *", module_path=sample_tasks.add.module_path, args=[1, 2]
    )
    ScheduledTask.objects.filter(pk=row.pk).update(updated_at=timezone.now() - timedelta(hours=5, minutes=30))
    latest_before = slots_between(
        row.schedule, "UTC", timezone.now() - timedelta(days=1), timezone.now(), limit=1
    )

    worker = manage("run_tasks", "--once", "--catch-up", "--backend", "test-tasks")

    assert worker.returncode == 0, worker.stdout + worker.stderr
    now = timezone.now()
    latest_after = slots_between(row.schedule, "UTC", now - timedelta(days=1), now, limit=1)
    firing = row.firings.get()  # one firing, not one per missed slot
    assert latest_before[0] <= firing.scheduled_for <= latest_after[0]
    assert TaskExecution.objects.get(pk=firing.task_execution_id).status == "SUCCESSFUL"


@pytest.mark.django_db(transaction=True)
def test_run_tasks_upserts_its_declared_schedules_when_it_starts() -> None:
    """No `sync_scheduled_tasks` first: the worker upserts what it fires, and says so."""
    if not settings.SCHEDULED_TASKS:
        pytest.skip("this service declares no schedule (Cloud Scheduler was not chosen)")
    assert not ScheduledTask.objects.exists()
    local = sorted(
        name
        for name, definition in declared_scheduled_tasks().items()
        if isinstance(scheduled_task_backend(definition), ProcessBackend)
    )
    assert local  # the sample schedule runs on the local worker in the tests

    worker = manage("run_tasks", "--once")

    assert worker.returncode == 0, worker.stdout + worker.stderr
    rows = ScheduledTask.objects.order_by("name")
    assert [row.name for row in rows] == sorted(local)
    for row in rows:
        assert row.declared
        assert row.cloud_scheduler_job_name is None
    assert f"Scheduled tasks: {len(local)} declared schedule(s) upserted ({', '.join(local)})" in (
        worker.stdout + worker.stderr
    )
    assert not TaskExecution.objects.exists()  # upserted now: no slot of theirs is due yet
    # A second start changes nothing: the definitions, and so what catch-up would fire, stay.
    updated = {row.name: row.updated_at for row in rows}
    assert manage("run_tasks", "--once").returncode == 0
    assert {row.name: row.updated_at for row in ScheduledTask.objects.all()} == updated


# --- the rendered service's own schedule, under the real worker --------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sample_schedule_fires_under_run_tasks_once_per_slot() -> None:
    """SCHEDULED_TASKS → sync_scheduled_tasks → a real `run_tasks --once --catch-up` runs the task once."""
    if not settings.SCHEDULED_TASKS:
        pytest.skip("this service declares no schedule (Cloud Scheduler was not chosen)")
    name, declaration = next(iter(settings.SCHEDULED_TASKS.items()))

    call_command("sync_scheduled_tasks", stdout=StringIO())
    row = ScheduledTask.objects.get(name=name)
    assert row.declared
    assert row.module_path == declaration["task"]
    assert row.cloud_scheduler_job_name is None  # local backend: no Cloud Scheduler job
    # As if the schedule had been declared just before its latest slot, with no worker running since.
    now = timezone.now()
    latest_slot = slots_between(row.schedule, row.time_zone, now - timedelta(days=1), now, limit=1)[0]
    ScheduledTask.objects.filter(pk=row.pk).update(updated_at=latest_slot - timedelta(seconds=1))

    worker = manage("run_tasks", "--once", "--catch-up")
    assert worker.returncode == 0, worker.stdout + worker.stderr
    firing = row.firings.get()
    assert firing.scheduled_for == latest_slot
    execution = TaskExecution.objects.get(pk=firing.task_execution_id)
    assert execution.status == "SUCCESSFUL", execution.errors
    assert execution.module_path == declaration["task"]
    assert execution.args == declaration.get("args", [])

    # Another worker (this process) with --catch-up does not fire that slot again.
    assert cron(started_at=now, catch_up=CatchUp.ALL, aliases=[execution.backend_alias]).fire_due(now) == 0
    assert TaskExecution.objects.count() == 1
