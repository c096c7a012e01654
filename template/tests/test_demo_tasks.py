"""`manage.py demo_tasks`, the README's first command, runs green against a real worker."""

import pytest

from django_tasks_google.models import TaskExecution
from tests.processes import manage

pytestmark = pytest.mark.django_db(transaction=True)


def test_demo_tasks_runs_the_samples_and_reports_them() -> None:
    completed = manage("demo_tasks", "--timeout", "90", timeout=180)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "All sample tasks behaved as expected." in completed.stdout
    for name in ("send_notification", "recompute_analytics", "batch_process"):
        assert name in completed.stdout
    statuses = sorted(TaskExecution.objects.values_list("status", flat=True))
    assert statuses == ["FAILED", "SUCCESSFUL", "SUCCESSFUL", "SUCCESSFUL"]
    assert TaskExecution.objects.get(status="FAILED").cancelled_at is not None
    assert not TaskExecution.objects.filter(status__in=["READY", "RUNNING"]).exists()
