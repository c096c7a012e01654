"""`manage.py prune_task_executions` over 10,000 rows: old finished executions and superseded old
firings go, everything else stays, and --dry-run changes nothing. Runs on the project's database
(PostgreSQL in the PostgreSQL variant of the generated project's CI).
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_tasks_google.models import ScheduledTask, ScheduledTaskFiring, TaskExecution
from tests.django_tasks_google import sample_tasks

pytestmark = pytest.mark.django_db

# (label, count, status, finished days ago or None, cancelled)
LAYOUT = (
    ("old-successful", 2500, "SUCCESSFUL", 40, False),
    ("old-failed", 2500, "FAILED", 40, False),
    ("old-cancelled", 1000, "FAILED", 40, True),
    ("recent-finished", 2000, "SUCCESSFUL", 1, False),
    ("old-ready", 1000, "READY", None, False),
    ("old-running", 1000, "RUNNING", None, False),
)
OLD_FINISHED = {"old-successful", "old-failed", "old-cancelled"}


def execution(label: str, status: str, finished_days: int | None, cancelled: bool) -> TaskExecution:
    now = timezone.now()
    finished = None if finished_days is None else now - timedelta(days=finished_days)
    return TaskExecution(
        module_path=sample_tasks.add.module_path,
        backend_alias="test-tasks",
        queue_name=label,  # tells the groups apart afterwards
        status=status,
        finished_at=finished,
        cancelled_at=finished if cancelled else None,
        started_at=now - timedelta(days=40) if status == "RUNNING" else None,
    )


@pytest.fixture
def rows(settings: Any) -> dict[str, Any]:
    settings.TASKS_RETENTION_DAYS = 30
    TaskExecution.objects.bulk_create(
        [
            execution(label, status, days, cancelled)
            for label, n, status, days, cancelled in LAYOUT
            for _ in range(n)
        ],
        batch_size=2000,
    )
    TaskExecution.objects.update(enqueued_at=timezone.now() - timedelta(days=41))
    scheduled = ScheduledTask.objects.create(name="nightly", schedule="0 3 * * *", module_path="x.y")
    old = timezone.now() - timedelta(days=40)

    def firing(key: str, source: str, days_ago: int, execution: TaskExecution | None = None) -> Any:
        return ScheduledTaskFiring.objects.create(
            scheduled_task=scheduled,
            key=key,
            source=source,
            scheduled_for=old + timedelta(days=40 - days_ago),
            fired_at=old + timedelta(days=40 - days_ago),
            task_execution=execution,
        )

    kept_recent = TaskExecution.objects.filter(queue_name="recent-finished").first()
    pruned = TaskExecution.objects.filter(queue_name="old-failed").first()
    TaskExecution.objects.filter(pk=kept_recent.pk).update(retry_of=pruned)
    return {
        "superseded": [firing("l1", "local", 45, pruned), firing("l2", "local", 44)],
        "latest_local": firing("l3", "local", 43),  # old, but the local worker resumes from it
        "only_cloud": firing("c1", "cloud_scheduler", 42),
        "retry": kept_recent,
    }


def counts() -> dict[str, int]:
    return {label: TaskExecution.objects.filter(queue_name=label).count() for label, *_ in LAYOUT}


def prune(*args: str) -> str:
    out = StringIO()
    call_command("prune_task_executions", *args, stdout=out)
    return out.getvalue()


def test_dry_run_counts_and_changes_nothing(rows: dict[str, Any]) -> None:
    before = counts()
    output = prune("--dry-run")
    assert output.startswith("Would delete 6000 finished task execution(s) and 2 schedule firing(s)")
    assert counts() == before
    assert ScheduledTaskFiring.objects.count() == 4


def test_prune_removes_old_finished_executions_and_superseded_firings(rows: dict[str, Any]) -> None:
    output = prune()

    assert output.startswith("Deleted 6000 finished task execution(s) and 2 schedule firing(s)")
    assert counts() == {label: 0 if label in OLD_FINISHED else n for label, n, *_ in LAYOUT}
    assert set(ScheduledTaskFiring.objects.values_list("key", flat=True)) == {"l3", "c1"}
    retry = TaskExecution.objects.get(pk=rows["retry"].pk)
    assert retry.retry_of_id is None  # its original went; the copy stays
    assert prune().startswith("Deleted 0 ")


def test_status_and_older_than_narrow_it(rows: dict[str, Any]) -> None:
    assert prune("--status", "cancelled").startswith("Deleted 1000 ")
    assert counts()["old-cancelled"] == 0 and counts()["old-failed"] == 2500
    assert prune("--older-than", "50d").startswith("Deleted 0 ")
    assert prune("--older-than", "12h", "--status", "successful").startswith("Deleted 4500 ")
    assert counts()["old-failed"] == 2500 and counts()["old-ready"] == 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30"], "--older-than takes a number and a unit"),
        (["--older-than", "0d"], "--older-than takes a number and a unit"),
        (["--status", "running"], "invalid choice: 'running'"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        prune(*args)


def test_a_bad_retention_setting_is_refused(settings: Any) -> None:
    settings.TASKS_RETENTION_DAYS = "30"
    with pytest.raises(CommandError, match="TASKS_RETENTION_DAYS must be a whole number"):
        prune()
