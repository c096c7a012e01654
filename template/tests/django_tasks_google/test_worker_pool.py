"""The worker's pool of long-lived children, its batch claim and its PostgreSQL wakeup, as real processes.

A child runs many attempts (the tasks report the pid that ran them), is replaced when it is
killed, after `--recycle-after` attempts or past `--max-child-rss-mb`, and exits when idle (the
next task forks another); `claim_due` never hands one execution to two claimers; a claim waiting
for a busy child keeps its lease and is given back unstarted when the worker stops; on PostgreSQL
an enqueue wakes an idle worker before its poll.
"""

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections
from django.tasks import task_backends
from django.utils import timezone

from django_tasks_google.base import cancel_task
from django_tasks_google.models import TaskExecution
from tests.django_tasks_google import sample_tasks
from tests.processes import PROJECT_ROOT, finished, manage, manage_env, pid_exists, started, wait_for, worker

pytestmark = pytest.mark.django_db(transaction=True)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY and row locks: PostgreSQL"
)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    return directory


def run_pids(results: list, process: object) -> list[int]:
    rows = [finished(result.id, process) for result in results]  # type: ignore[arg-type]
    assert {row.status for row in rows} == {"SUCCESSFUL"}
    return [row.return_value for row in rows]


def test_one_child_runs_many_attempts(markers: Path, tmp_path: Path) -> None:
    with worker("--backend", "test-tasks", "--max-workers", "1", log_dir=tmp_path) as process:
        pids = run_pids([sample_tasks.record_run.enqueue(str(markers)) for _ in range(4)], process)
    assert len(set(pids)) == 1 and pids[0] != process.pid
    # Every attempt is recorded by the worker that claimed it (one entry per attempt).
    rows = TaskExecution.objects.filter(status="SUCCESSFUL")
    assert {len(row.worker_ids) for row in rows} == {1}


def test_a_child_is_replaced_after_recycle_after_attempts(markers: Path, tmp_path: Path) -> None:
    args = ("--backend", "test-tasks", "--max-workers", "1", "--recycle-after", "2")
    with worker(*args, log_dir=tmp_path) as process:
        pids = run_pids([sample_tasks.record_run.enqueue(str(markers)) for _ in range(5)], process)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert process.output().count("ran 2 attempts: replacing it") == 2


def test_a_child_past_the_memory_limit_is_replaced(markers: Path, tmp_path: Path) -> None:
    # Every Django process uses more than 1 MB: each child runs one attempt only.
    args = ("--backend", "test-tasks", "--max-workers", "1", "--max-child-rss-mb", "1")
    with worker(*args, log_dir=tmp_path) as process:
        pids = run_pids([sample_tasks.record_run.enqueue(str(markers)) for _ in range(3)], process)
    assert len(set(pids)) == 3
    assert "MB: replacing it" in process.output()


def test_a_killed_child_is_replaced_and_its_attempt_released(markers: Path, tmp_path: Path) -> None:
    result = sample_tasks.sleeps_on_first_attempt.enqueue(str(markers))
    with worker("--backend", "test-tasks", "--max-workers", "1", log_dir=tmp_path) as process:
        killed = started(markers, process)
        os.kill(killed, signal.SIGKILL)
        row = finished(result.id, process)
        assert (row.status, row.return_value, row.attempts) == ("SUCCESSFUL", 2, 2)
        assert row.errors[0]["exception_class_path"] == "django_tasks_google.base.TaskInterrupted"
        assert "exited with code -9" in row.errors[0]["traceback"]
        [replacement] = run_pids([sample_tasks.record_run.enqueue(str(markers))], process)
    assert replacement != killed and not pid_exists(killed)


def test_an_idle_child_exits_and_the_next_task_forks_another(markers: Path, tmp_path: Path) -> None:
    args = ("--backend", "test-tasks", "--max-workers", "1", "--idle-child-seconds", "0.5")
    with worker(*args, log_dir=tmp_path) as process:
        [first] = run_pids([sample_tasks.record_run.enqueue(str(markers))], process)
        wait_for(lambda: not pid_exists(first), message="the idle child to exit")
        [second] = run_pids([sample_tasks.record_run.enqueue(str(markers))], process)
    assert second not in (first, process.pid)
    assert f"Worker child {first} idle for" in process.output()


@postgres_only  # SQLite has one write lock: the worker claims nothing ahead there
def test_a_claim_waiting_for_a_busy_child_keeps_its_lease_and_is_given_back_at_shutdown(
    markers: Path, tmp_path: Path
) -> None:
    busy = sample_tasks.sleep.enqueue(str(markers), 60)
    waiting = sample_tasks.add.enqueue(1, 2)

    def row() -> TaskExecution:
        return TaskExecution.objects.get(pk=int(waiting.id))

    with worker("--backend", "test-tasks", "--max-workers", "1", log_dir=tmp_path) as process:
        started(markers, process)
        # Claimed ahead of the one child, which is busy: RUNNING, not started.
        claimed = wait_for(lambda: (r := row()).status == "RUNNING" and r, message="the claim ahead")
        # Renewed like a running attempt's (heartbeat every 0.2 s in the test settings).
        wait_for(lambda: row().lease_expires_at > claimed.lease_expires_at, message="a lease renewal")
        process.send(signal.SIGTERM)
        process.send(signal.SIGTERM)  # and do not wait for the busy one
        assert process.wait() == 0
    given_back = row()
    assert (given_back.status, given_back.attempts, given_back.worker_ids) == ("READY", 0, [])
    assert (given_back.errors, given_back.started_at, given_back.lease_worker_id) == ([], None, None)
    assert f"Task {waiting.id} (" in process.output() and "given back unstarted" in process.output()
    assert TaskExecution.objects.get(pk=int(busy.id)).status == "READY"


@postgres_only  # SQLite has one write lock: the worker claims nothing ahead there
def test_a_waiting_claim_whose_task_is_cancelled_never_starts(markers: Path, tmp_path: Path) -> None:
    busy_dir, ran_dir = markers / "busy", markers / "ran"
    busy_dir.mkdir()
    ran_dir.mkdir()
    sample_tasks.sleep.enqueue(str(busy_dir), 60)
    waiting = sample_tasks.record_run.enqueue(str(ran_dir))
    with worker("--backend", "test-tasks", "--max-workers", "1", log_dir=tmp_path) as process:
        started(busy_dir, process)
        wait_for(
            lambda: TaskExecution.objects.get(pk=int(waiting.id)).status == "RUNNING", message="the claim"
        )
        cancel_task(waiting.id)
        wait_for(lambda: f"Task {waiting.id} was cancelled before it started" in process.output())
        process.send(signal.SIGTERM)
        process.send(signal.SIGTERM)
        assert process.wait() == 0
    assert list(ran_dir.iterdir()) == []
    assert TaskExecution.objects.get(pk=int(waiting.id)).status == "FAILED"


def test_started_from_another_directory(markers: Path) -> None:
    """`python /abs/path/manage.py run_tasks` from `/`: the children need nothing from the directory."""
    result = sample_tasks.record_run.enqueue(str(markers))
    completed = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "manage.py"), "run_tasks", "--backend", "test-tasks", "--once"],
        cwd="/",
        env=manage_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert TaskExecution.objects.get(pk=int(result.id)).status == "SUCCESSFUL"


# Run in a process of its own: forking pytest's (multi-threaded) process could deadlock the child.
LEAVE_INHERITED = """
import os
from django.db import connection, connections
from django_tasks_google.worker_pool import _leave_inherited_connections

def backend_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]

before = backend_pid()
settings = connections.settings["default"]
own_options = settings["OPTIONS"]
settings["OPTIONS"] = {**own_options, "pool": True}  # as the worker's settings would say
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        _leave_inherited_connections()
        pooled = "pool" in connections.settings["default"]["OPTIONS"]
        os.write(write, f"{backend_pid()} {pooled}".encode())
        code = 0
    finally:
        os._exit(code)
settings["OPTIONS"] = own_options  # the worker's connection is not really from a pool
os.close(write)
_pid, status = os.waitpid(pid, 0)
print(before, backend_pid(), os.waitstatus_to_exitcode(status), os.read(read, 100).decode())
"""


@postgres_only
def test_a_new_child_leaves_the_workers_connection_and_pool_alone() -> None:
    """The child opens a connection of its own, without the worker's pool, and the worker's session
    outlives the child (closing the inherited connection would have ended it)."""
    completed = manage("shell", "-c", LEAVE_INHERITED)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    before, after, child_exit, child_backend, child_pooled = completed.stdout.splitlines()[-1].split()
    assert (child_exit, child_pooled) == ("0", "False")
    assert child_backend != before
    assert after == before  # the worker's own session survived the child


def test_claim_due_order_limit_and_refusals() -> None:
    backend = task_backends["test-tasks"]
    once = task_backends["test-once"]
    low = sample_tasks.add.enqueue(1, 1)
    high = sample_tasks.add.enqueue(2, 2)
    TaskExecution.objects.filter(pk=int(high.id)).update(priority=10)  # rows may carry one
    later = sample_tasks.add.using(run_after=timedelta(hours=1)).enqueue(3, 3)
    other_queue = sample_tasks.add.using(queue_name="other").enqueue(4, 4)
    spent = sample_tasks.fails_once_only.enqueue()
    TaskExecution.objects.filter(pk=int(spent.id)).update(attempts=1)  # run_once, tried before

    first = TaskExecution.objects.claim_due([backend, once], queues=["default"], limit=1)
    assert [claimed.claim.execution_id for claimed in first] == [int(high.id)]
    rest = TaskExecution.objects.claim_due([backend, once], queues=["default"], limit=10)
    assert [claimed.claim.execution_id for claimed in rest] == [int(low.id)]
    claimed_row = rest[0].execution
    assert (claimed_row.status, claimed_row.attempts) == ("RUNNING", 1)
    assert claimed_row.lease_worker_id == rest[0].claim.lease_id
    assert TaskExecution.objects.get(pk=int(claimed_row.pk)).lease_expires_at > timezone.now()
    # Not due, another queue: left READY; no attempt left: FAILED at the claim, never handed out.
    states = dict(TaskExecution.objects.values_list("pk", "status"))
    assert states[int(later.id)] == states[int(other_queue.id)] == "READY"
    assert states[int(spent.id)] == "FAILED"


@postgres_only
def test_concurrent_batch_claims_never_share_an_execution() -> None:
    backend = task_backends["test-tasks"]
    ids = {int(sample_tasks.add.enqueue(i, i).id) for i in range(60)}
    claims: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        try:
            barrier.wait()
            while batch := TaskExecution.objects.claim_due([backend], queues=[], limit=4):
                claims[name] += [claimed.claim.execution_id for claimed in batch]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(name,)) for name in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims["a"] + claims["b"]) == sorted(ids)  # each exactly once
    assert claims["a"] and claims["b"]  # SKIP LOCKED: neither waited for the other's rows


@postgres_only
def test_an_enqueue_wakes_an_idle_worker_before_its_poll(markers: Path, tmp_path: Path) -> None:
    first = sample_tasks.record_run.enqueue(str(markers))
    # Polling every 60 s, while `finished` waits 30 s at most: only the notification can be in time.
    args = ("--backend", "test-tasks", "--poll-interval", "60")
    with worker(*args, log_dir=tmp_path) as process:
        polled = finished(first.id, process)  # claimed by the poll at start-up
        assert "woken by PostgreSQL notifications" in process.output()
        second = finished(sample_tasks.record_run.enqueue(str(markers)).id, process)
    assert second.last_attempted_at < polled.last_attempted_at + timedelta(seconds=60)
