"""The process that runs one attempt for the local worker (`run_tasks`).

The worker starts these through a multiprocessing *fork server* that preloads this module: the
fork server sets Django up once, and every attempt is a cheap fork of it (no new interpreter, no
`django.setup()` per task) that holds no database connection of the worker's.
"""

import contextlib
import os
import signal
import sys

import django
from django.apps import apps

if not apps.ready:
    # Preloaded in the fork server: set Django up once for every child forked from it.
    django.setup()

from django.db import connections

from .executor import Claim, run_claimed

# Sent by the worker when the execution was cancelled gracefully, so `is_task_cancelled()` turns
# True at once instead of at the next heartbeat.
CANCEL_SIGNAL = signal.SIGUSR1


def run_child(claim: Claim) -> None:
    """Run the claimed attempt in its own process group, then exit."""
    # Own process group: a Ctrl-C in the worker's terminal reaches the worker only, which then
    # decides when to stop its attempts (SIGTERM), instead of killing them mid-write.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGUSR1 means "cancelled gracefully"; ignored until the attempt's handler is installed.
    signal.signal(CANCEL_SIGNAL, signal.SIG_IGN)
    try:
        run_claimed(claim, install_sigterm_handler=True, cancel_signal=CANCEL_SIGNAL)
    finally:
        connections.close_all()
        sys.stdout.flush()
        sys.stderr.flush()


def warm_up() -> None:
    """Run once at worker start: returns as soon as the fork server can fork ready children."""
