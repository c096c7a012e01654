"""Measured inside one subject's interpreter (see ../compare.py): one round of every local figure.

The subject is "ours" (the rendered service), "published" (django-tasks-google 0.6.0) or
"dbtasks" (django-tasks-db); DJANGO_SETTINGS_MODULE and DATABASE_URL are set by the caller. The
same code measures all three through Django's public task API; only the worker command and the
model that holds the rows differ. Prints one JSON line.

Worker CPU and memory are read from /proc for the worker processes and all their descendants
(utime + stime of the live ones, cutime + cstime for the ones already reaped), so a fork
server, a pool or a process per task are all counted.
"""

# ruff: noqa: E402  (the apps' modules are imported once django.setup() has run)

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import django

django.setup()

import bench_tasks
from django.db import connection, transaction
from django.db.models import Count, Model, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
POLL = 0.025  # how often the drain looks at the table; also the resolution of its clock
POLL_INTERVAL = "0.1"  # the workers' own poll interval, the same for all three
MIN_MEASURED = 4  # tasks done after the first one, at least, however long they take


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subject", choices=["ours", "published", "dbtasks"], required=True)
    parser.add_argument("--manage", type=Path, required=True)
    parser.add_argument("--enqueues", type=int, required=True)
    parser.add_argument("--tasks", type=int, required=True, help="tasks enqueued per drain")
    parser.add_argument("--window", type=float, required=True, help="seconds of draining measured")
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--probes", type=int, required=True, help="e2e latency probes")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds an idle worker gets first")
    args = parser.parse_args()
    subject = Subject(args.subject, args.manage)
    results: dict[str, object] = {"enqueue": measure_enqueue(subject, args.enqueues)}
    drains: dict[str, dict[str, dict[str, float]]] = {}
    for kind in ("noop", "sleep_50ms"):
        drains[kind] = {}
        for concurrency in [int(value) for value in args.concurrency.split(",")]:
            drains[kind][str(concurrency)] = measure_drain(
                subject, getattr(bench_tasks, kind), concurrency, args.tasks, args.window
            )
    results["drain"] = drains
    results["idle"] = measure_idle(subject, args.probes, args.settle)
    print(json.dumps(results))


class Subject:
    """What differs between the three: the model holding task rows and the worker command."""

    def __init__(self, name: str, manage: Path) -> None:
        self.name = name
        self.manage = manage
        if name == "dbtasks":
            from django_tasks_db.models import DBTaskResult

            self.model: type[Model] = DBTaskResult
        else:
            from django_tasks_google.models import TaskExecution

            self.model = TaskExecution

    def start_workers(self, concurrency: int) -> list[subprocess.Popen]:
        python = sys.executable
        if self.name == "dbtasks":  # one task at a time per process: N processes for concurrency N
            argv = [python, str(self.manage), "db_worker", "--interval", POLL_INTERVAL, "--no-startup-delay"]
            commands = [argv] * concurrency
        else:
            argv = [python, str(self.manage), "run_tasks", "--backend", "default"]
            commands = [[*argv, "--max-workers", str(concurrency), "--poll-interval", POLL_INTERVAL]]
        return [
            subprocess.Popen(
                command,
                cwd=self.manage.parent,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as a whole below
            )
            for command in commands
        ]

    def finished(self, ids: list[str]) -> tuple[int, int]:
        """(successful, failed or otherwise finished) among `ids`."""
        counts = self.model.objects.filter(pk__in=ids, finished_at__isnull=False).aggregate(
            done=Count("pk"), successful=Count("pk", filter=Q(status="SUCCESSFUL"))
        )  # one query: a task finishing between two counts would skew them
        return counts["successful"], counts["done"] - counts["successful"]

    def clear(self) -> None:
        self.model.objects.all().delete()


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    for worker in workers:  # what a worker left behind (a fork server's stragglers)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)


def process_tree(roots: list[int]) -> list[tuple[int, list[str]]]:
    """(pid, /proc/pid/stat fields after the command name) of `roots` and all their descendants."""
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = text.rsplit(")", 1)[1].split()
    tree, frontier = [], [pid for pid in roots if pid in stats]
    while frontier:
        pid = frontier.pop()
        tree.append((pid, stats[pid]))
        frontier += [child for child, fields in stats.items() if int(fields[1]) == pid]
    return tree


def tree_cpu(workers: list[subprocess.Popen]) -> float:
    """CPU seconds used so far by the workers and everything they started."""
    # Fields after the name: state ppid ... utime(11) stime(12) cutime(13) cstime(14).
    tree = process_tree([worker.pid for worker in workers])
    return (
        sum(int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14]) for _, fields in tree)
        / TICK
    )


def tree_memory_mb(workers: list[subprocess.Popen]) -> tuple[float, float, int]:
    """(resident MB, proportional MB, number of processes) of the workers and their descendants.

    RSS counts a page shared by a forked child and its parent once per process, so a worker that
    forks from a warm parent looks twice its real size; PSS (/proc/PID/smaps_rollup) splits each
    shared page between the processes sharing it, and sums to what the tree costs the machine.
    """
    rss_kb = pss_kb = processes = 0
    for pid, _ in process_tree([worker.pid for worker in workers]):
        # Both figures from one read: a process that exits meanwhile (a retired child) counts for neither.
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                lines = [line.split() for line in rollup if line.startswith(("Rss:", "Pss:"))]
                sizes = {fields[0].rstrip(":"): int(fields[1]) for fields in lines}
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(sizes) < 2:  # a zombie: no memory left
            continue
        rss_kb, pss_kb, processes = rss_kb + sizes["Rss"], pss_kb + sizes["Pss"], processes + 1
    return rss_kb / 1024, pss_kb / 1024, processes


def measure_enqueue(subject: Subject, count: int) -> dict[str, float]:
    subject.clear()
    for _ in range(5):  # warm-up: connections, caches, the first query's compilation
        bench_tasks.noop.enqueue()
    with CaptureQueriesContext(connection) as queries:
        bench_tasks.noop.enqueue()
    started = time.perf_counter()
    for _ in range(count):
        bench_tasks.noop.enqueue()
    elapsed = time.perf_counter() - started
    subject.clear()
    return {"rate": count / elapsed, "statements": len(queries.captured_queries)}


def measure_drain(
    subject: Subject, task: object, concurrency: int, count: int, window: float
) -> dict[str, float]:
    """Throughput and CPU per task between the first task done and the end of the window."""
    subject.clear()
    with transaction.atomic():
        ids = [str(task.enqueue().id) for _ in range(count)]  # type: ignore[attr-defined]
    workers = subject.start_workers(concurrency)
    started = time.monotonic()
    try:
        first = None
        while True:
            time.sleep(POLL)
            now = time.monotonic()
            successful, failed = subject.finished(ids)
            if failed:
                sys.exit(f"{subject.name}: {failed} {task} tasks did not succeed")
            if first is None and successful:
                first = (now, successful, tree_cpu(workers))
            if first is not None and (
                successful == count or (now - first[0] >= window and successful - first[1] >= MIN_MEASURED)
            ):
                last = (now, successful, tree_cpu(workers))
                break
            if now - started > 120:
                sys.exit(f"{subject.name}: no {task} task finished in 120 s")
            if any(worker.poll() is not None for worker in workers):
                sys.exit(f"{subject.name}: a worker exited early")
    finally:
        stop(workers)
    done = last[1] - first[1]
    if done < 1:
        sys.exit(f"{subject.name}: all tasks finished within one look ({POLL} s); raise --tasks")
    # Throughput from the rows' own clock: finished tasks between the first and the last one seen.
    times = sorted(
        subject.model.objects.filter(pk__in=ids, status="SUCCESSFUL").values_list("finished_at", flat=True)
    )
    times = times[: last[1]]
    return {
        "rate": (len(times) - 1) / (times[-1] - times[0]).total_seconds(),
        "cpu_ms_per_task": 1000 * (last[2] - first[2]) / done,
        "startup_s": first[0] - started,
        "measured_tasks": done,
    }


def measure_idle(subject: Subject, probes: int, settle: float) -> dict[str, float]:
    """A worker at concurrency 1 left idle: its memory, then enqueue-to-finish latency."""
    subject.clear()
    workers = subject.start_workers(1)
    try:
        bench_tasks.noop.enqueue()  # the worker is up once this is done
        deadline = time.monotonic() + 120
        while subject.finished([str(row.pk) for row in subject.model.objects.all()])[0] == 0:
            if time.monotonic() > deadline:
                sys.exit(f"{subject.name}: the idle worker ran nothing in 120 s")
            time.sleep(POLL)
        time.sleep(settle)
        rss, pss, processes = tree_memory_mb(workers)
        latencies = []  # the first one on a worker idle for `settle` seconds
        for _ in range(probes):
            time.sleep(random.uniform(0.2, 0.4))  # arrivals not in step with the poll interval
            enqueued = timezone.now()
            result = bench_tasks.noop.enqueue()
            while True:
                time.sleep(0.005)
                result.refresh()
                if result.finished_at is not None:
                    break
                if timezone.now() - enqueued > timedelta(seconds=30):
                    sys.exit(f"{subject.name}: a latency probe did not finish in 30 s")
            latencies.append((result.finished_at - enqueued).total_seconds() * 1000)
    finally:
        stop(workers)
    return {
        "rss_mb": rss,
        "pss_mb": pss,
        "processes": processes,
        "latency_ms": statistics.median(latencies),
        "first_latency_ms": latencies[0],
    }


if __name__ == "__main__":
    main()
