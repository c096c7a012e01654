"""The local worker behind `manage.py run_tasks`: runs ProcessBackend executions in a pool of children.

It claims READY executions in batches (priority first, then oldest; `TaskExecution.objects.claim_due`)
and hands each to a long-lived child of its pool (worker_pool.py), which runs many attempts, one
at a time. The claim is the executor's lease, so several workers (or a worker and a stray
`execute_task`) never run one attempt twice. Except on SQLite, it keeps up to one claimed execution
per child waiting (`ahead`), so a child that finishes starts its next attempt at once instead of
waiting for a claim; a waiting claim's lease is renewed like a running one's, and the ones still
waiting when the worker stops are given back unstarted (`unclaim`: no attempt used). It claims
again when the last batch was full, when PostgreSQL notifies it of an enqueue (notify.py), and
every poll interval. It supervises running attempts every poll interval, `UPKEEP_INTERVAL` apart at
most (forceful cancellation; timeouts where the backend `enforces_timeout`), and recovers
executions whose attempt died elsewhere and fires due schedules every `UPKEEP_INTERVAL`: none of it
after every attempt.

Isolation is per attempt: a cancel or a timeout SIGTERMs only the child running it (SIGKILL after
`kill_grace_seconds`), and that child is replaced. A child that dies mid-attempt has its attempt
released as abandoned (READY again, or FAILED when no attempt may follow).

Shutdown (SIGINT/SIGTERM): stop claiming, give running attempts `shutdown_timeout_seconds` to
finish, then SIGTERM them so the executor returns them to READY; SIGKILL after
`kill_grace_seconds`. A second signal skips the wait. Nothing is left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import wait
from types import FrameType

from django.db import DatabaseError, connections, router
from django.db.models import Q
from django.tasks import TaskResultStatus
from django.utils import timezone

from .backends.process import ProcessBackend
from .errors import TaskInterrupted, TaskTimeout
from .executor import Claim, lease_expired_error, release_abandoned
from .models import TaskExecution
from .notify import Listener
from .outcomes import Claimed
from .scheduling.local_cron import CatchUp, LocalCron
from .worker_child import CANCEL_SIGNAL, drop_broken_connections
from .worker_pool import ChildEvent, Pool, PoolChild, signal_process, signal_process_group
from .worker_settings import WorkerSettings

logger = logging.getLogger("django_tasks_google.worker")

# Why the worker sent SIGTERM to an attempt.
FORCE_CANCELLED = "force-cancelled"
TIMED_OUT = "timed out"
SHUTDOWN = "interrupted by the worker's shutdown"
# Seconds between recoveries of abandoned leases and firings of due schedules, and at most between
# two looks at the running attempts (cancellations, timeouts: every poll interval if shorter).
UPKEEP_INTERVAL = 1.0


@dataclass(eq=False)
class Running:
    """An attempt running in a child: its claim, and what the worker did to it."""

    child: PoolChild
    claim: Claim
    backend: ProcessBackend
    timeout: timedelta | None
    started_at: datetime
    terminated_at: float | None = None  # monotonic time of our SIGTERM
    killed: bool = False
    told_cancelled: bool = False
    why_terminated: str = ""


@dataclass(eq=False)
class Waiting:
    """A claimed execution waiting for a free child, and when its lease was last extended."""

    claimed: Claimed
    backend: ProcessBackend
    renewed_at: float  # monotonic

    def renew_due(self) -> float:
        interval: timedelta = self.backend.heartbeat_interval
        return self.renewed_at + interval.total_seconds()

    def startable(self) -> bool:
        """Whether its lease outlasts the first heartbeat of the child that would run it."""
        timeout: timedelta = self.backend.heartbeat_timeout
        interval: timedelta = self.backend.heartbeat_interval
        expires = self.renewed_at + timeout.total_seconds()
        return time.monotonic() + interval.total_seconds() < expires


@dataclass
class Worker:
    backends: list[ProcessBackend]
    settings: WorkerSettings
    queues: list[str] = field(default_factory=list)
    catch_up: CatchUp = CatchUp.NONE
    # Running attempts by the pid of their child.
    running: dict[int, Running] = field(default_factory=dict)
    stop_signals: int = 0

    def __post_init__(self) -> None:
        self.by_alias = {backend.alias: backend for backend in self.backends}
        self.local_cron: LocalCron | None = None
        rss = self.settings.max_child_rss_mb
        self.pool = Pool(
            recycle_after=self.settings.recycle_after,
            max_rss_bytes=None if rss is None else int(rss * 2**20),
            idle_seconds=self.settings.idle_child_seconds,
            after_fork=self._in_child,
        )
        self.listener: Listener | None = None
        self.wakeup_fds: tuple[int, int] = (-1, -1)
        # Whether READY executions may be waiting: the last batch was full, or an enqueue was notified.
        self.more = True
        # Claimed executions waiting for a free child, at most `ahead` beyond the free children.
        self.waiting: deque[Waiting] = deque()
        # No claim ahead on SQLite: it has one write lock, so a claim made while a child runs would
        # compete with that child's outcome for it (and SQLite's busy handler sleeps whole milliseconds).
        single_writer = connections[router.db_for_write(TaskExecution)].vendor == "sqlite"
        self.ahead = 0 if single_writer else self.settings.max_workers

    # --- Main loop -------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> None:
        self.wakeup_fds = wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        previous = self._install_signal_handlers(wakeup_w)
        try:
            self.pool.prepare()
            if once:
                self.ahead = 0  # claim for the free children only, run those, and stop
            else:
                self.listen()
            logger.info(
                "Worker started: backends %s, queues %s, %s process(es) at most%s",
                ", ".join(sorted(self.by_alias)),
                ", ".join(self.queues) if self.queues else "all",
                self.settings.max_workers,
                ", woken by PostgreSQL notifications" if self.listener else "",
            )
            next_poll = next_upkeep = next_look = time.monotonic()
            while not self.stop_signals:
                now = time.monotonic()
                try:
                    if now >= next_upkeep:
                        next_upkeep = now + UPKEEP_INTERVAL
                        self.upkeep(timezone.now())
                    if now >= next_look:
                        next_look = now + min(self.settings.poll_interval, UPKEEP_INTERVAL)
                        self.supervise(timezone.now())
                    if now >= next_poll:
                        next_poll = now + self.settings.poll_interval
                        self.more = True
                    self.renew_waiting()
                    self.claim_and_start()
                except DatabaseError:
                    logger.exception("Worker poll failed; retrying")
                    drop_broken_connections()
                if once:
                    break
                deadlines = [next_poll, next_upkeep, *([next_look] if self.running else [])]
                deadlines += [waiting.renew_due() for waiting in self.waiting]
                if (next_retirement := self.pool.retire_idle()) is not None:
                    deadlines.append(next_retirement)
                self.wait(min(deadlines) - time.monotonic())
            self.give_back_waiting()
            self.drain(finish=once and not self.stop_signals)
        finally:
            self.pool.close()
            if self.listener is not None:
                self.listener.close()
            self._restore_signal_handlers(previous)
            os.close(wakeup_r)
            os.close(wakeup_w)
        logger.info("Worker stopped")

    def upkeep(self, now: datetime) -> None:
        """The work that does not follow each task: recovery of abandoned leases, schedules."""
        if self.listener is not None and self.listener.closed:
            self.listen()
        self.recover_abandoned(now)
        self.fire_due_schedules(now)

    def wait(self, seconds: float) -> None:
        """Until a child answers or exits, an enqueue is notified, a signal comes, or `seconds` pass."""
        listening = [self.listener.fileno()] if self.listener is not None and not self.listener.closed else []
        ready = wait([*self.pool.waitables(), self.wakeup_fds[0], *listening], timeout=max(0.0, seconds))
        for event in self.pool.collect(ready):
            self.child_event(event)
        if self.listener is not None and not self.listener.closed and self.listener.fileno() in ready:
            self.more = self.listener.heard() or self.more
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_fds[0], 512):
                pass

    def listen(self) -> None:
        """LISTEN for enqueues (PostgreSQL), so an idle worker picks a task up without waiting to poll."""
        self.listener = Listener.open(router.db_for_write(TaskExecution))

    def _in_child(self) -> None:
        """In a freshly forked child: drop the worker's signal plumbing."""
        signal.set_wakeup_fd(-1)
        for fd in self.wakeup_fds:
            os.close(fd)

    # --- Claiming and starting -------------------------------------------------------------------

    def claim_and_start(self) -> None:
        """Start waiting executions on the free children, then claim to keep `ahead` more waiting."""
        self.start_waiting()
        while self.more:
            wanted = self.settings.max_workers - len(self.running) + self.ahead - len(self.waiting)
            if wanted <= 0:
                return
            limit = min(wanted, self.settings.batch_size)
            claimed = TaskExecution.objects.claim_due(self.backends, queues=self.queues, limit=limit)
            # Fewer than asked: nothing more is due now; claim again at the next poll or notification.
            self.more = len(claimed) == limit
            renewed_at = time.monotonic()
            for one in claimed:
                self.waiting.append(Waiting(one, self.by_alias[one.execution.backend_alias], renewed_at))
            self.start_waiting()

    def start_waiting(self) -> None:
        while self.waiting and len(self.running) < self.settings.max_workers:
            waiting = self.waiting.popleft()
            if waiting.startable():
                self.start(waiting.claimed)
            else:
                # Its lease could not be renewed (database unreachable) and is about to lapse:
                # recover_abandoned() returns the execution once it has.
                logger.warning(
                    "Task %s: its claim expired before a child was free", waiting.claimed.claim.execution_id
                )

    def renew_waiting(self) -> None:
        """Extend the leases of the waiting claims that are due, as the heartbeat does a running one's."""
        now = time.monotonic()
        due = [waiting for waiting in self.waiting if waiting.renew_due() <= now]
        for waiting in due:
            until = timezone.now() + waiting.backend.heartbeat_timeout
            claim = waiting.claimed.claim
            if TaskExecution.objects.renew([(claim.execution_id, claim.lease_id)], until=until):
                waiting.renewed_at = now
                waiting.claimed.execution.lease_expires_at = until
            else:
                self.drop_cancelled(waiting)

    def drop_cancelled(self, waiting: Waiting) -> None:
        """A waiting claim whose execution was cancelled: dropped, it never starts."""
        logger.info("Task %s was cancelled before it started", waiting.claimed.claim.execution_id)
        self.waiting.remove(waiting)

    def give_back_waiting(self) -> None:
        """The worker stops: return the claims no child started (no attempt used)."""
        while self.waiting:
            claimed = self.waiting.popleft().claimed
            try:
                TaskExecution.objects.unclaim(claimed.claim, claimed.execution)
            except DatabaseError:
                # Its lease expires and recover_abandoned() (ours or another worker's) returns it.
                logger.exception("Task %s: could not give back its claim", claimed.claim.execution_id)
                drop_broken_connections()

    def start(self, claimed: Claimed) -> None:
        execution = claimed.execution
        try:
            child = self.pool.run(claimed)
        except OSError as exc:
            logger.exception("Could not start a process for task %s", execution.pk)
            self._release(claimed.claim, TaskInterrupted(f"The worker could not start a process: {exc}"))
            return
        self.running[child.pid] = Running(
            child=child,
            claim=claimed.claim,
            backend=self.by_alias[execution.backend_alias],
            timeout=execution.timeout,
            # Not the claim's time (`last_attempted_at`): a claim may wait for a child first.
            started_at=timezone.now(),
        )

    def child_event(self, event: ChildEvent) -> None:
        """A child answered (its attempt's outcome is recorded) or exited."""
        attempt = self.running.pop(event.child.pid, None)
        if attempt is None:
            return  # an idle child exited
        if event.answered:
            if attempt.terminated_at is not None:
                # Signalled for a cancel, a timeout or the shutdown: never reused.
                self.pool.retire(event.child)
            return
        try:
            self._release_if_unrecorded(attempt, event.child.exitcode)
        except DatabaseError:
            # The lease expires by itself; recover_abandoned() finishes the job later.
            logger.exception(
                "Task %s: could not check the outcome of its attempt", attempt.claim.execution_id
            )
            drop_broken_connections()

    # --- Supervision -----------------------------------------------------------------------------

    def supervise(self, now: datetime) -> None:
        """Forceful cancellation and timeouts (backends that enforce them): SIGTERM, then SIGKILL.

        A waiting claim whose execution was cancelled is dropped: it never starts.
        """
        if not self.running:
            return
        by_execution = {attempt.claim.execution_id: attempt for attempt in self.running.values()}
        waiting = {waiting.claimed.claim.execution_id: waiting for waiting in self.waiting}
        cancelled = dict(
            TaskExecution.objects.filter(
                pk__in=[*by_execution, *waiting], cancelled_at__isnull=False
            ).values_list("pk", "force_cancel")
        )
        for pk in cancelled.keys() & waiting.keys():
            self.drop_cancelled(waiting[pk])
        for pk, attempt in by_execution.items():
            if attempt.terminated_at is None:
                if cancelled.get(pk):
                    self.terminate(attempt, FORCE_CANCELLED)
                elif pk in cancelled and not attempt.told_cancelled:
                    # Graceful: the task stops when it checks is_task_cancelled().
                    attempt.told_cancelled = True
                    signal_process(attempt.child.pid, CANCEL_SIGNAL)
                elif (
                    attempt.backend.enforces_timeout
                    and attempt.timeout is not None
                    and now >= attempt.started_at + attempt.timeout
                ):
                    self.terminate(attempt, TIMED_OUT)
        self.escalate()

    def terminate(self, attempt: Running, why: str) -> None:
        logger.warning("Task %s %s: sending SIGTERM", attempt.claim.execution_id, why)
        attempt.terminated_at = time.monotonic()
        attempt.why_terminated = why
        signal_process_group(attempt.child.pid, signal.SIGTERM)

    def escalate(self) -> None:
        for attempt in self.running.values():
            if (
                attempt.terminated_at is not None
                and not attempt.killed
                and time.monotonic() - attempt.terminated_at >= attempt.backend.kill_grace
            ):
                logger.warning(
                    "Task %s still running %.0fs after SIGTERM: sending SIGKILL",
                    attempt.claim.execution_id,
                    attempt.backend.kill_grace,
                )
                attempt.killed = True
                signal_process_group(attempt.child.pid, signal.SIGKILL)

    def _release_if_unrecorded(self, attempt: Running, exitcode: int | None) -> None:
        claim = attempt.claim
        execution = TaskExecution.objects.filter(
            pk=claim.execution_id, lease_worker_id=claim.lease_id
        ).first()
        if execution is None or execution.status != TaskResultStatus.RUNNING:
            return
        how = "was killed" if attempt.killed else f"exited with code {exitcode}"
        error: Exception = TaskInterrupted(f"The process running attempt {execution.attempts} {how}.")
        if attempt.why_terminated == TIMED_OUT:
            error = TaskTimeout(
                f"Attempt {execution.attempts} ran past its timeout of {attempt.timeout} and {how}."
            )
        self._release(claim, error, execution=execution, count_attempt=attempt.why_terminated != SHUTDOWN)

    def _release(
        self,
        claim: Claim,
        error: Exception,
        *,
        execution: TaskExecution | None = None,
        count_attempt: bool = True,
    ) -> None:
        """Give the attempt back or fail it (release_abandoned logs the one line saying which and why)."""
        execution = execution or TaskExecution.objects.filter(pk=claim.execution_id).first()
        if execution is not None and execution.lease_worker_id == claim.lease_id:
            release_abandoned(execution, error, count_attempt=count_attempt)

    def recover_abandoned(self, now: datetime) -> None:
        """RUNNING executions of our backends whose lease expired: their attempt died elsewhere."""
        expired = TaskExecution.objects.filter(
            Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True),
            status=TaskResultStatus.RUNNING,
            backend_alias__in=list(self.by_alias),
        ).exclude(
            pk__in=[attempt.claim.execution_id for attempt in self.running.values()]
            + [waiting.claimed.claim.execution_id for waiting in self.waiting]
        )
        for execution in expired:
            release_abandoned(execution, lease_expired_error(execution))

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
        if not self.running:
            return
        deadline = None if finish else time.monotonic() + self.settings.shutdown_timeout
        if deadline is not None:
            logger.info(
                "Stopping: waiting up to %.0fs for %d running task(s)",
                self.settings.shutdown_timeout,
                len(self.running),
            )
        while self.running:
            if deadline is None and self.stop_signals:
                deadline = time.monotonic() + self.settings.shutdown_timeout
            if deadline is not None and (time.monotonic() >= deadline or self.stop_signals > 1):
                break
            try:
                self.supervise(timezone.now())
            except DatabaseError:
                logger.exception("Worker supervision failed; retrying")
                drop_broken_connections()
            self.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))
        if not self.running:
            return
        logger.warning("Interrupting %d running task(s); they will run again", len(self.running))
        for attempt in self.running.values():
            if attempt.terminated_at is None:
                self.terminate(attempt, SHUTDOWN)
        while self.running:
            self.escalate()
            self.wait(0.2)

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
