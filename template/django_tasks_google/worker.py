"""The local worker behind `manage.py run_tasks`: runs ProcessBackend executions, one process each.

Each poll it recovers executions whose attempt died, fires due schedules, supervises running
attempts (forceful cancellation; timeouts where the backend `enforces_timeout`), then claims READY
executions (priority first, then oldest) and starts a child process per claim. The claim is the executor's
lease, so several workers (or a worker and a stray `execute_task`) never run one attempt twice.

Shutdown (SIGINT/SIGTERM): stop claiming, give running attempts `shutdown_timeout_seconds` to
finish, then SIGTERM them so the executor returns them to READY; SIGKILL after
`kill_grace_seconds`. A second signal skips the wait. Nothing is left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q
from django.tasks import TaskResultStatus
from django.utils import timezone

from .backends.process import ProcessBackend
from .errors import TaskInterrupted, TaskTimeout
from .executor import Claim, claim_execution, lease_expired_error, release_abandoned
from .models import TaskExecution
from .scheduling.local_cron import CatchUp, LocalCron
from .worker_child import CANCEL_SIGNAL, run_child, warm_up

logger = logging.getLogger("django_tasks_google.worker")

CHILD_MODULE = "django_tasks_google.worker_child"
# Why the worker sent SIGTERM to an attempt.
FORCE_CANCELLED = "force-cancelled"
TIMED_OUT = "timed out"
SHUTDOWN = "interrupted by the worker's shutdown"


@dataclass
class Child:
    """A running attempt: its process, its claim, and what the worker did to it."""

    process: BaseProcess
    claim: Claim
    backend: ProcessBackend
    timeout: timedelta | None
    claimed_at: datetime
    terminated_at: float | None = None  # monotonic time of our SIGTERM
    killed: bool = False
    told_cancelled: bool = False
    why_terminated: str = ""


@dataclass
class WorkerSettings:
    max_workers: int
    poll_interval: float
    batch_size: int
    shutdown_timeout: float
    kill_grace: float

    @classmethod
    def from_backends(
        cls,
        backends: list[ProcessBackend],
        *,
        max_workers: int | None = None,
        poll_interval: float | None = None,
        batch_size: int | None = None,
    ) -> WorkerSettings:
        """Command-line values win; otherwise the most generous value among the served backends."""
        return cls(
            max_workers=max_workers or max(b.max_workers for b in backends),
            poll_interval=poll_interval or min(b.poll_interval for b in backends),
            batch_size=batch_size or max(b.batch_size for b in backends),
            shutdown_timeout=max(b.shutdown_timeout for b in backends),
            kill_grace=max(b.kill_grace for b in backends),
        )


@dataclass
class Worker:
    backends: list[ProcessBackend]
    settings: WorkerSettings
    queues: list[str] = field(default_factory=list)
    catch_up: CatchUp = CatchUp.NONE
    children: dict[int, Child] = field(default_factory=dict)
    stop_signals: int = 0

    def __post_init__(self) -> None:
        self.by_alias = {backend.alias: backend for backend in self.backends}
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([CHILD_MODULE])
        self.local_cron: LocalCron | None = None

    # --- Main loop -------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        previous = self._install_signal_handlers(wakeup_w)
        self.wakeup_fd = wakeup_r
        try:
            # Start the fork server (it sets Django up) before claiming anything: a lease taken
            # now must not run out while the first child waits for it.
            ready = self.context.Process(target=warm_up, name="warm-up")
            ready.start()
            ready.join()
            logger.info(
                "Worker started: backends %s, queues %s, %s process(es) at most",
                ", ".join(sorted(self.by_alias)),
                ", ".join(self.queues) if self.queues else "all",
                self.settings.max_workers,
            )
            while not self.stop_signals:
                self.reap()
                self.poll()
                if once:
                    break
                self.wait(self.settings.poll_interval)
            self.drain(finish=once and not self.stop_signals)
        finally:
            self._restore_signal_handlers(previous)
            os.close(wakeup_r)
            os.close(wakeup_w)
        logger.info("Worker stopped")

    def poll(self) -> None:
        """One iteration; a database error is logged and retried at the next poll."""
        try:
            close_old_connections()
            now = timezone.now()
            self.recover_abandoned(now)
            self.fire_due_schedules(now)
            self.supervise(now)
            free = self.settings.max_workers - len(self.children)
            if free > 0:
                self.claim_and_start(min(free, self.settings.batch_size), now)
        except DatabaseError:
            logger.exception("Worker poll failed; retrying")

    def wait(self, seconds: float) -> None:
        """Sleep until the next poll, a child exiting, or a signal, whichever comes first."""
        sentinels = [child.process.sentinel for child in self.children.values()]
        wait([*sentinels, self.wakeup_fd], timeout=seconds)
        try:
            while os.read(self.wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass

    # --- Claiming and starting -------------------------------------------------------------------

    def claim_and_start(self, limit: int, now: datetime) -> None:
        candidates = (
            TaskExecution.objects.filter(status=TaskResultStatus.READY, backend_alias__in=list(self.by_alias))
            .filter(Q(run_after__isnull=True) | Q(run_after__lte=now))
            .order_by("-priority", "enqueued_at", "pk")
        )
        if self.queues:
            candidates = candidates.filter(queue_name__in=self.queues)
        claims: list[Claim] = []
        if connection.features.has_select_for_update_skip_locked:
            # PostgreSQL: rows another worker is claiming right now are skipped, not waited for.
            # The executor's conditional claim is what guarantees a single owner either way.
            with transaction.atomic():
                ids = list(
                    candidates.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit]
                )
                claims = self._claim(ids)
        else:
            claims = self._claim(list(candidates.values_list("pk", flat=True)[:limit]))
        for claim in claims:
            self.start(claim)

    def _claim(self, ids: list[int]) -> list[Claim]:
        claims = []
        for pk in ids:
            result = claim_execution(pk)
            if isinstance(result, Claim):
                claims.append(result)
        return claims

    def start(self, claim: Claim) -> None:
        row = TaskExecution.objects.only("backend_alias", "timeout", "last_attempted_at").get(
            pk=claim.execution_id
        )
        process = self.context.Process(target=run_child, args=(claim,), name=f"task-{claim.execution_id}")
        child = Child(
            process=process,
            claim=claim,
            backend=self.by_alias[row.backend_alias],
            timeout=row.timeout,
            claimed_at=row.last_attempted_at or timezone.now(),
        )
        try:
            process.start()
        except OSError as exc:
            logger.exception("Could not start a process for task %s", claim.execution_id)
            self._release(child, TaskInterrupted(f"The worker could not start a process: {exc}"))
            return
        self.children[claim.execution_id] = child

    # --- Supervision -----------------------------------------------------------------------------

    def supervise(self, now: datetime) -> None:
        """Forceful cancellation and timeouts (backends that enforce them): SIGTERM, then SIGKILL."""
        if not self.children:
            return
        cancelled = dict(
            TaskExecution.objects.filter(pk__in=list(self.children), cancelled_at__isnull=False).values_list(
                "pk", "force_cancel"
            )
        )
        for pk, child in self.children.items():
            if child.terminated_at is None:
                if cancelled.get(pk):
                    self.terminate(child, FORCE_CANCELLED)
                elif pk in cancelled and not child.told_cancelled:
                    # Graceful: the task stops when it checks is_task_cancelled().
                    child.told_cancelled = True
                    signal_process(child.process, CANCEL_SIGNAL)
                elif (
                    child.backend.enforces_timeout
                    and child.timeout is not None
                    and now >= child.claimed_at + child.timeout
                ):
                    self.terminate(child, TIMED_OUT)
        self.escalate()

    def terminate(self, child: Child, why: str) -> None:
        logger.warning("Task %s %s: sending SIGTERM", child.claim.execution_id, why)
        child.terminated_at = time.monotonic()
        child.why_terminated = why
        signal_process_group(child.process, signal.SIGTERM)

    def escalate(self) -> None:
        for child in self.children.values():
            if (
                child.terminated_at is not None
                and not child.killed
                and time.monotonic() - child.terminated_at >= child.backend.kill_grace
            ):
                logger.warning(
                    "Task %s still running %.0fs after SIGTERM: sending SIGKILL",
                    child.claim.execution_id,
                    child.backend.kill_grace,
                )
                child.killed = True
                signal_process_group(child.process, signal.SIGKILL)

    def reap(self) -> None:
        """Forget finished children; if one died without recording its outcome, record it now."""
        for pk, child in list(self.children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            exitcode = child.process.exitcode
            child.process.close()
            del self.children[pk]
            try:
                self._release_if_unrecorded(child, exitcode)
            except DatabaseError:
                # The lease expires by itself; recover_abandoned() finishes the job later.
                logger.exception("Task %s: could not check the outcome of its attempt", pk)

    def _release_if_unrecorded(self, child: Child, exitcode: int | None) -> None:
        row = TaskExecution.objects.filter(
            pk=child.claim.execution_id, lease_worker_id=child.claim.lease_id
        ).first()
        if row is None or row.status != TaskResultStatus.RUNNING:
            return
        how = "was killed" if child.killed else f"exited with code {exitcode}"
        logger.warning("Task %s: the process running it %s before recording an outcome", row.pk, how)
        error: Exception = TaskInterrupted(f"The process running attempt {row.attempts} {how}.")
        if child.why_terminated == TIMED_OUT:
            error = TaskTimeout(f"Attempt {row.attempts} ran past its timeout of {child.timeout} and {how}.")
        self._release(child, error, row=row, count_attempt=child.why_terminated != SHUTDOWN)

    def _release(
        self, child: Child, error: Exception, *, row: TaskExecution | None = None, count_attempt: bool = True
    ) -> None:
        row = row or TaskExecution.objects.filter(pk=child.claim.execution_id).first()
        if row is not None and row.lease_worker_id == child.claim.lease_id:
            status = release_abandoned(row, error, count_attempt=count_attempt)
            if status:
                logger.warning("Task %s is %s again", row.pk, status)

    def recover_abandoned(self, now: datetime) -> None:
        """RUNNING executions of our backends whose lease expired: their attempt died elsewhere."""
        expired = TaskExecution.objects.filter(
            Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True),
            status=TaskResultStatus.RUNNING,
            backend_alias__in=list(self.by_alias),
        ).exclude(pk__in=list(self.children))
        for row in expired:
            status = release_abandoned(row, lease_expired_error(row))
            if status:
                logger.warning("Task %s: its attempt's lease expired; it is %s now", row.pk, status)

    def fire_due_schedules(self, now: datetime) -> None:
        """Local stand-in for Cloud Scheduler: enqueue the due ScheduledTasks of our backends.

        See local_cron.py: each slot fires once across all workers; with --catch-up the slots
        missed while no worker ran fire too (the latest one, or each with --catch-up=all).
        """
        if self.local_cron is None:
            self.local_cron = LocalCron(self.by_alias, catch_up=self.catch_up, started_at=now)
        self.local_cron.fire_due(now)

    # --- Shutdown --------------------------------------------------------------------------------

    def drain(self, *, finish: bool) -> None:
        """Wait for running attempts: all of them (`finish`, for --once), or until the shutdown timeout."""
        if not self.children:
            return
        deadline = None if finish else time.monotonic() + self.settings.shutdown_timeout
        if deadline is not None:
            logger.info(
                "Stopping: waiting up to %.0fs for %d running task(s)",
                self.settings.shutdown_timeout,
                len(self.children),
            )
        while self.children:
            if deadline is None and self.stop_signals:
                deadline = time.monotonic() + self.settings.shutdown_timeout
            if deadline is not None and (time.monotonic() >= deadline or self.stop_signals > 1):
                break
            self.reap()
            try:
                close_old_connections()
                self.supervise(timezone.now())
            except DatabaseError:
                logger.exception("Worker supervision failed; retrying")
            self.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))
        if not self.children:
            return
        logger.warning("Interrupting %d running task(s); they will run again", len(self.children))
        for child in self.children.values():
            if child.terminated_at is None:
                self.terminate(child, SHUTDOWN)
        while self.children:
            self.escalate()
            self.wait(0.2)
            self.reap()

    # --- Signals ---------------------------------------------------------------------------------

    def _install_signal_handlers(self, wakeup_w: int) -> dict[int, object]:
        previous: dict[int, object] = {
            sig: signal.signal(sig, self._on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        previous[-1] = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, object]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))  # type: ignore[arg-type]
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signals += 1
        if self.stop_signals == 1:
            logger.info(
                "%s received: finishing running tasks (send it again to interrupt them)",
                signal.Signals(signum).name,
            )


def signal_process_group(process: BaseProcess, signum: int) -> None:
    """Signal the attempt's process group (the task's own subprocesses too), or the process alone
    if it has not made its group yet."""
    pid = process.pid
    if pid is None:
        return
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    except PermissionError:
        pass


def signal_process(process: BaseProcess, signum: int) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
