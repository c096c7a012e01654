"""Lease renewal: one thread per process renews every lease the process holds, in one UPDATE.

A lease must be renewed while its task runs, from a thread the task cannot block. One shared
thread instead of one per attempt means a request whose task is shorter than the heartbeat
interval starts no thread and writes nothing more, and the heartbeats of a process never need
more than one database connection (a pool that runs out of connections, e.g. 25 on the smallest
Cloud SQL tier, must not starve the renewals and let leases lapse under running tasks).

The thread starts with the first lease the process holds and then stays, idle while no lease is
held. When a renewal finds a lease gone (cancelled, or taken over after it expired) the
attempt's `lost` event is set, which `is_task_cancelled()` reports; if the database stays
unreachable for a whole lease period, the lease is presumed lost as well.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from .models import TaskExecution

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Lease:
    execution_id: int
    lease_id: str
    duration: timedelta
    interval: float
    lost: threading.Event
    renewed_at: float = field(default_factory=time.monotonic)
    due_at: float = 0.0

    def __post_init__(self) -> None:
        self.due_at = self.renewed_at + self.interval


class Heartbeat:
    """The process's lease keeper; use the module-level `heartbeat`."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._leases: set[_Lease] = set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # When the thread next wakes by itself (monotonic; inf: only when notified). A lease due
        # later needs no wake-up, so a run of short attempts does not ping the thread each time.
        self._wake_at = math.inf

    @contextmanager
    def holding(
        self,
        execution_id: int,
        lease_id: str,
        *,
        duration: timedelta,
        interval: timedelta,
        lost: threading.Event,
    ) -> Iterator[None]:
        """Renew the lease while the block runs (every `interval`, by `duration` each time)."""
        lease = _Lease(execution_id, lease_id, duration, interval.total_seconds(), lost)
        with self._changed:
            self._leases.add(lease)
            if self._ensure_thread() or lease.due_at < self._wake_at:
                self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                # No wake-up: the thread closes its connection when it next wakes and finds no lease.
                self._leases.discard(lease)

    def _ensure_thread(self) -> bool:
        """Start the thread if this process has none; whether it did."""
        if self._pid != os.getpid():
            # A forked child inherits the object but not the thread.
            self._pid, self._thread, self._wake_at = os.getpid(), None, math.inf
        if self._thread is not None and self._thread.is_alive():
            return False
        self._thread = threading.Thread(target=self._run, name="django-tasks-google-heartbeat", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        connected = False
        while True:
            with self._changed:
                while True:
                    now = time.monotonic()
                    due = min((lease.due_at for lease in self._leases), default=None)
                    if due is not None and due <= now:
                        leases = list(self._leases)
                        break
                    if due is None and connected:
                        # Idle: hold no database connection while no lease is held.
                        connections.close_all()
                        connected = False
                    self._wake_at = math.inf if due is None else due
                    self._changed.wait(None if due is None else due - now)
                self._wake_at = math.inf
            self._renew(leases)
            connected = True

    def _renew(self, leases: list[_Lease]) -> None:
        by_duration: dict[timedelta, list[_Lease]] = {}
        for lease in leases:
            by_duration.setdefault(lease.duration, []).append(lease)
        for duration, group in by_duration.items():
            now = time.monotonic()
            try:
                close_old_connections()
                held = TaskExecution.objects.renew(
                    ((lease.execution_id, lease.lease_id) for lease in group), until=timezone.now() + duration
                )
            except DatabaseError:
                logger.warning("Lease renewal failed for %d attempt(s)", len(group), exc_info=True)
                for lease in group:
                    # Not renewed for a whole lease: another delivery may have taken the task.
                    if now - lease.renewed_at >= duration.total_seconds():
                        self._lose(lease, "the database was unreachable for a whole lease period")
                    else:
                        lease.due_at = now + lease.interval
                continue
            for lease in group:
                if lease.execution_id in held:
                    lease.renewed_at, lease.due_at = now, now + lease.interval
                else:
                    self._lose(lease, "cancelled or taken over")

    def _lose(self, lease: _Lease, why: str) -> None:
        logger.warning("Task %s lost its lease (%s)", lease.execution_id, why)
        lease.lost.set()
        with self._changed:
            self._leases.discard(lease)


heartbeat = Heartbeat()
