"""A child of the local worker's pool (worker_pool.py): runs the attempts it is handed, one at a time.

The child is a fork of the worker, made after Django was set up and the task modules imported,
so an attempt costs no interpreter start, no `django.setup()` and no first-query warm-up; its
database connection stays open from one attempt to the next. The worker sends a `Claimed` (the
claim and the row as the claim left it) over the pipe; the child runs it and answers with its
resident memory, which the worker uses to recycle it. The pipe closing means "exit".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection

from django.db import connections

from .executor import run_claimed
from .outcomes import Claimed

logger = logging.getLogger(__name__)

# Sent by the worker when the execution was cancelled gracefully, so `is_task_cancelled()` turns
# True at once instead of at the next heartbeat.
CANCEL_SIGNAL = signal.SIGUSR1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def serve(pipe: Connection) -> int:
    """Run attempts until the worker closes the pipe; the process's exit code."""
    # Own process group: a Ctrl-C in the worker's terminal reaches the worker only, which then
    # decides when to stop its attempts (SIGTERM), and a kill of the group reaches the task's own
    # subprocesses too.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Between attempts a SIGTERM ends the child at once: it holds nothing.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # SIGUSR1 means "cancelled gracefully"; ignored until an attempt's handler is installed.
    signal.signal(CANCEL_SIGNAL, signal.SIG_IGN)
    try:
        while True:
            try:
                claimed: Claimed = pipe.recv()
            except EOFError:
                return 0
            run_claimed(claimed, install_sigterm_handler=True, cancel_signal=CANCEL_SIGNAL)
            drop_broken_connections()
            sys.stdout.flush()
            sys.stderr.flush()
            pipe.send(resident_bytes())
    except Exception:
        # The worker hears the pipe close and handles the attempt as it handles a crash.
        logger.exception("Worker child %s failed", os.getpid())
        return 1
    finally:
        connections.close_all()
        sys.stdout.flush()
        sys.stderr.flush()


def drop_broken_connections() -> None:
    """Close a connection that failed during the attempt (the next one reconnects); keep the rest."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred and not connection.is_usable():
            connection.close()


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except OSError:
        import resource

        # ru_maxrss is in KiB on Linux, bytes on macOS; both only ever grow.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
