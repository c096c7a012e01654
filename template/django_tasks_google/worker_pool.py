"""The local worker's pool of long-lived children, forked from the worker, each running many attempts.

Why a pool: a process per attempt (and Django set up again in it) cost more than a short task
itself. A child is forked from the worker after Django was set up, the task modules imported
and the heap frozen (`gc.freeze()`, so the children's garbage collector does not write to, and
copy, the pages they share with the worker), so it starts in about a millisecond, opens its
database connection once, then runs the attempts the worker hands it, one at a time.

Isolation stays per attempt: the worker signals only the child running the attempt it cancels or
times out (`signal_process_group`: the task's own subprocesses too), and that child is not reused
(the worker retires it; a fresh fork takes its place when needed). A child is also retired after
`recycle_after` attempts and when its resident memory passes `max_rss_bytes`, so a task that leaks
cannot grow the worker for ever, and after `idle_seconds` without an attempt, so an idle worker is
one process: the next attempt forks a new child from the warm worker, which connects to the
database as it starts (on PostgreSQL that attempt starts some 10-30 ms later than on a warm child).

No multiprocessing fork server or resource tracker: a child is a plain `os.fork()`, and each talks
to the worker over one socket pair (`multiprocessing.Pipe`, which starts no helper process).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from django.db import connections
from django.utils.module_loading import autodiscover_modules

from .outcomes import Claimed
from .worker_child import serve

logger = logging.getLogger("django_tasks_google.worker")


@dataclass(eq=False)
class PoolChild:
    """One child: its pid, the worker's end of its pipe, and how much it has run."""

    pid: int
    pipe: Connection
    attempts: int = 0
    busy: bool = False
    rss_bytes: int = 0
    exitcode: int | None = None
    # Monotonic time of its fork or of its last answer (meaningful while not busy).
    idle_since: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ChildEvent:
    """What the worker heard from a busy or idle child: an attempt done, or the child gone."""

    child: PoolChild
    # True: the child answered (its attempt's outcome is recorded); False: it exited (see exitcode).
    answered: bool


@dataclass
class Pool:
    recycle_after: int
    max_rss_bytes: int | None
    # Seconds without an attempt after which an idle child is retired (None: never).
    idle_seconds: float | None = None
    # Run in a new child right after the fork (the worker closes its own descriptors there).
    after_fork: Callable[[], None] = lambda: None
    children: dict[int, PoolChild] = field(default_factory=dict)

    def prepare(self) -> None:
        """Import what every attempt needs before the first fork, so no child does it again."""
        # The `tasks` modules of the installed apps (where tasks usually live), and the SQL
        # compiler, which Django imports lazily at the first query.
        try:
            autodiscover_modules("tasks")
        except Exception:
            # A broken module fails the tasks it holds when they run, not the whole worker.
            logger.warning("Could not import the apps' tasks modules ahead of the tasks", exc_info=True)
        import django.db.models.sql.compiler  # noqa: F401

        gc.collect()  # the garbage of the start-up, before the first fork freezes what is left

    def run(self, claimed: Claimed) -> PoolChild:
        """Hand `claimed` to an idle child, forking one if none is idle (OSError: could not fork)."""
        child = next((child for child in self.children.values() if not child.busy), None) or self._fork()
        try:
            child.pipe.send(claimed)
        except OSError:
            # It died while idle: forget it, and hand the attempt to a fresh one.
            self._forget(child)
            child = self._fork()
            child.pipe.send(claimed)
        child.busy = True
        return child

    def waitables(self) -> list[Connection]:
        """What the worker waits on: every child's pipe (an answer, or the end of the child)."""
        return [child.pipe for child in self.children.values()]

    def collect(self, ready: Iterable[object]) -> list[ChildEvent]:
        """The events behind the pipes `ready` reported readable."""
        by_pipe = {id(child.pipe): child for child in self.children.values()}
        events = []
        for waitable in ready:
            child = by_pipe.get(id(waitable))
            if child is None:
                continue
            try:
                child.rss_bytes = child.pipe.recv()
            except (EOFError, OSError):
                self._forget(child)
                events.append(ChildEvent(child, answered=False))
                continue
            child.busy = False
            child.idle_since = time.monotonic()
            child.attempts += 1
            events.append(ChildEvent(child, answered=True))
            self._recycle_if_due(child)
        return events

    def retire_idle(self) -> float | None:
        """Retire the children idle for `idle_seconds`; when the next one would be (None: never)."""
        if self.idle_seconds is None:
            return None
        now = time.monotonic()
        for child in [child for child in self.children.values() if not child.busy]:
            if now - child.idle_since >= self.idle_seconds:
                logger.info(
                    "Worker child %s idle for %.0fs: letting it exit", child.pid, now - child.idle_since
                )
                self.retire(child)
        idle = [child.idle_since for child in self.children.values() if not child.busy]
        return min(idle) + self.idle_seconds if idle else None

    def retire(self, child: PoolChild) -> None:
        """Let the child exit (it sees its pipe close) and forget it."""
        if child.pid in self.children:
            self._forget(child)

    def close(self) -> None:
        """Retire every child and wait for them all to exit (the worker stops)."""
        for child in list(self.children.values()):
            self._forget(child)

    # --- internals -------------------------------------------------------------------------------

    def _recycle_if_due(self, child: PoolChild) -> None:
        if child.attempts >= self.recycle_after:
            logger.info("Worker child %s ran %d attempts: replacing it", child.pid, child.attempts)
            self.retire(child)
        elif self.max_rss_bytes is not None and child.rss_bytes > self.max_rss_bytes:
            logger.info("Worker child %s uses %d MB: replacing it", child.pid, child.rss_bytes // 2**20)
            self.retire(child)

    def _forget(self, child: PoolChild) -> None:
        """Close the worker's end of the pipe and reap the child (an idle child exits at once)."""
        del self.children[child.pid]
        child.pipe.close()
        with contextlib.suppress(ChildProcessError):
            _pid, status = os.waitpid(child.pid, 0)
            child.exitcode = os.waitstatus_to_exitcode(status)

    def _fork(self) -> PoolChild:
        ours, theirs = Pipe()
        for connection in connections.all(initialized_only=True):
            # SQLite forbids carrying a connection across fork() (https://www.sqlite.org/howtocorrupt.html,
            # section 2.6); reopening one costs next to nothing. The others stay (see below).
            if connection.vendor == "sqlite":
                connection.close()
        sys.stdout.flush()
        sys.stderr.flush()
        # What exists now is shared with the child until written: keep the collector off it.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's side, ends in os._exit
            code = 1
            try:
                ours.close()
                for sibling in self.children.values():
                    # Else a sibling would never see the worker close its pipe.
                    sibling.pipe.close()
                _leave_inherited_connections()
                self.after_fork()
                code = serve(theirs)
            finally:
                os._exit(code)
        theirs.close()
        child = PoolChild(pid=pid, pipe=ours)
        self.children[pid] = child
        return child


# The worker's database connections as a child inherited them: kept, never used, never closed.
_inherited: list[object] = []


def _leave_inherited_connections() -> None:
    """In a new child: open connections of its own instead of the worker's, without closing those.

    The worker keeps its (PostgreSQL) connections across forks instead of reconnecting after each
    one (a reconnection costs about as much as the fork). Closing them in the child would end the
    worker's session too (libpq sends its Terminate message on the shared socket), so the child
    keeps them referenced, unused, until it exits with `os._exit` (no finalizer runs).

    A connection pool (`"pool"` in a PostgreSQL database's OPTIONS) is left behind the same way:
    its idle connections are the worker's sockets too, and its threads did not survive the fork.
    A child runs one attempt at a time, so it connects without a pool.
    """
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            _inherited.append(connection.connection)
            connection.connection = None
    for alias in connections:
        settings = connections.settings[alias]
        options = settings.get("OPTIONS") or {}
        if options.get("pool"):
            # Every wrapper of this alias (the heartbeat thread's too) reads this very dict.
            settings["OPTIONS"] = {name: value for name, value in options.items() if name != "pool"}


def signal_process_group(pid: int, signum: int) -> None:
    """Signal the child's process group (the task's own subprocesses too), or the child alone if
    it has not made its group yet."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    except PermissionError:
        pass


def signal_process(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
