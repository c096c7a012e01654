"""Worker lifecycle as real subprocesses: --once/--queue, several workers, kills, SIGTERM, Ctrl-C, CLI errors.

Each test starts its own workers (test_worker.py shares one for everything else).
"""

import os
import signal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.tasks import task_backends
from django.test import override_settings

from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import sample_tasks
from tests.processes import finished, manage, started, worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    return directory


def test_queue_filter_and_once(markers: Path, tmp_path: Path) -> None:
    other = sample_tasks.add.using(queue_name="other").enqueue(1, 2)
    default = sample_tasks.add.enqueue(3, 4)
    completed = manage("run_tasks", "--backend", "test-tasks", "--queue", "other", "--once")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert TaskExecution.objects.get(pk=int(other.id)).status == "SUCCESSFUL"
    assert TaskExecution.objects.get(pk=int(default.id)).status == "READY"


def test_two_workers_run_every_task_exactly_once(markers: Path, tmp_path: Path) -> None:
    results = [sample_tasks.record_run_with_id.enqueue(str(markers)) for _ in range(24)]
    with (
        worker("--backend", "test-tasks", "--max-workers", "3", log_dir=tmp_path, name="a") as a,
        worker("--backend", "test-tasks", "--max-workers", "3", log_dir=tmp_path, name="b") as b,
    ):
        for result in results:
            finished(result.id, a)
    rows = TaskExecution.objects.filter(pk__in=[int(result.id) for result in results])
    assert {row.status for row in rows} == {"SUCCESSFUL"}
    assert {row.attempts for row in rows} == {1}
    runs = sorted(path.name.split("-")[0] for path in markers.iterdir())
    assert runs == sorted(result.id for result in results)  # each id exactly once
    logs = a.output() + b.output()
    assert logs.count("attempt 1/3 started") == len(results)


def test_a_killed_worker_leaves_nothing_stuck(markers: Path, tmp_path: Path) -> None:
    """Worker and task die together (e.g. the machine): the lease expires and another worker recovers it."""
    result = sample_tasks.sleeps_on_first_attempt.enqueue(str(markers))
    with worker("--backend", "test-tasks", log_dir=tmp_path, name="doomed") as doomed:
        task_pid = started(markers, doomed)
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its fork server
        os.kill(task_pid, signal.SIGKILL)  # the task runs in a process group of its own
        doomed.wait()
    assert TaskExecution.objects.get(pk=int(result.id)).status == "RUNNING"
    with worker("--backend", "test-tasks", log_dir=tmp_path, name="rescuer") as rescuer:
        row = finished(result.id, rescuer)
    assert (row.status, row.attempts, row.return_value) == ("SUCCESSFUL", 2, 2)
    assert "lease" in row.errors[0]["traceback"]


def test_sigterm_lets_short_tasks_finish_and_returns_long_ones(markers: Path, tmp_path: Path) -> None:
    long_dir, short_dir, stubborn_dir = markers / "long", markers / "short", markers / "stubborn"
    for directory in (long_dir, short_dir, stubborn_dir):
        directory.mkdir()
    long = sample_tasks.sleep.enqueue(str(long_dir), 60)
    # max_attempts=1 and it ignores SIGTERM: still READY afterwards, as the attempt is not its fault.
    stubborn = sample_tasks.job_sleep_ignoring_sigterm.enqueue(str(stubborn_dir))
    with worker("--backend", "test-tasks", "--backend", "test-jobs", log_dir=tmp_path) as process:
        started(long_dir, process)
        started(stubborn_dir, process)
        short = sample_tasks.sleep.enqueue(str(short_dir), 1.5)
        started(short_dir, process)
        process.send(signal.SIGTERM)
        assert process.wait() == 0
    assert "sending SIGKILL" in process.output()
    short_row = TaskExecution.objects.get(pk=int(short.id))
    assert short_row.status == "SUCCESSFUL"
    for result, directory in ((long, long_dir), (stubborn, stubborn_dir)):
        row = TaskExecution.objects.get(pk=int(result.id))
        assert row.status == "READY" and row.lease_worker_id is None
        assert row.attempts == 0  # a shutdown does not use up an attempt
        assert row.errors[0]["exception_class_path"] == "django_tasks_google.base.TaskInterrupted"
        assert (directory / "cleanup").exists()
    assert not TaskExecution.objects.filter(status="RUNNING").exists()


def test_ctrl_c_in_the_terminal_does_not_kill_running_tasks(markers: Path, tmp_path: Path) -> None:
    result = sample_tasks.sleep.enqueue(str(markers), 1.5)
    with worker("--backend", "test-tasks", log_dir=tmp_path) as process:
        started(markers, process)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends to the foreground job
        assert process.wait() == 0
    row = TaskExecution.objects.get(pk=int(result.id))
    assert row.status == "SUCCESSFUL" and not (markers / "cleanup").exists()


def test_backend_selection_errors() -> None:
    with pytest.raises(CommandError, match="Unknown task backend aliases: nope"):
        call_command("run_tasks", backends=["nope"], once=True)
    cloud = {
        "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
        "OPTIONS": {
            "project_id": "p",
            "location": "l",
            "base_url": "https://example.com/tasks/",
            "oidc_service_account": "a@p.iam.gserviceaccount.com",
        },
    }
    with (
        override_settings(TASKS={**task_backends.settings, "cloud": cloud}),
        pytest.raises(CommandError, match="Not ProcessBackend aliases: cloud"),
    ):
        call_command("run_tasks", backends=["test-tasks", "cloud"], once=True)
    with (
        override_settings(TASKS={"cloud": cloud}),
        pytest.raises(CommandError, match="No ProcessBackend is configured in TASKS"),
    ):
        call_command("run_tasks", once=True)
