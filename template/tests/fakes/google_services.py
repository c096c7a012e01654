"""The fake of the Google APIs the app calls (one module per service), composed on one gRPC server.

The REAL client libraries talk to it through ``django_tasks_google.gcp`` with
``api_endpoint=fake.endpoint``; requests and responses are (de)serialised with the libraries' own
message classes, so what a test sees recorded is exactly what would go over the wire to Google.

* Cloud Tasks: tests/fakes/cloud_tasks.py
* Cloud Run v2 (Jobs, Executions, Operations): tests/fakes/cloud_run.py
* Cloud Scheduler: tests/fakes/cloud_scheduler.py
* the shared server, lock, call log, fault injection and events: tests/fakes/grpc_server.py

Test controls: ``calls`` / ``requests(method)`` (every call with its request and metadata),
``fail_next(method, code)`` (fault injection), ``on(event, listener)``, ``reset()``, and builders
of what Google would deliver in return: ``task_push``, ``scheduler_push`` and ``job_container``.
The fake answers API calls only; the behavioural emulator (tests/fakes/emulator/) dispatches,
retries, runs containers and fires schedules on top of it.
"""

from __future__ import annotations

from tests.fakes.cloud_run import EXECUTIONS, JOBS, OPERATIONS, CloudRunFake
from tests.fakes.cloud_scheduler import SCHEDULER, CloudSchedulerFake
from tests.fakes.cloud_tasks import TASKS, CloudTasksFake
from tests.fakes.grpc_server import Call, FakeRpcError
from tests.fakes.push import JobContainer, Push

__all__ = [
    "EXECUTIONS",
    "JOBS",
    "OPERATIONS",
    "SCHEDULER",
    "TASKS",
    "Call",
    "FakeRpcError",
    "GoogleServicesFake",
    "JobContainer",
    "Push",
]


class GoogleServicesFake(CloudTasksFake, CloudRunFake, CloudSchedulerFake):
    """The fake server and its state. ``start()`` once, ``reset()`` between tests."""
