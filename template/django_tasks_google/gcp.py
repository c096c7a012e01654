"""The one place that knows how to reach Google's APIs: cached clients per API endpoint.

Every backend, view and command gets its Cloud Tasks, Cloud Run v2 and Cloud Scheduler clients
from here. Why a cache, and why module-level:

* Building a client is expensive: Application Default Credentials are discovered (environment,
  metadata server), a token is fetched on first use and a TLS gRPC channel is opened. Doing that
  per enqueue (as the published package did) adds tens to hundreds of milliseconds to every
  call, often while the caller holds a row lock.
* Django creates task backends per thread (``django.tasks.task_backends`` is an asgiref
  ``Local``), so a cache on the backend instance would still build one client per thread.
  gRPC sync clients are thread-safe, so one client per (API, endpoint) serves the process.

``api_endpoint`` selects where the clients talk to:

* ``None`` (or ``""``): Google's production endpoint over TLS with Application Default
  Credentials, exactly as the client libraries default.
* ``"host:port"``: a local fake or emulator. One plaintext gRPC channel per endpoint is shared
  by all four clients and credentials are never looked up. None of the libraries reads an
  ``*_EMULATOR_HOST`` variable, so this setting is the only way to point them elsewhere.

Shared clients are never closed: closing one would close the channel under every other user.

Every RPC must pass an explicit ``timeout=`` (use ``DEFAULT_TIMEOUT``): Cloud Run v2 methods have
no default deadline at all, and Cloud Scheduler's is ten minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc
    from google.api_core.retry import Retry
    from google.cloud.run_v2 import ExecutionsClient, JobsClient
    from google.cloud.scheduler_v1 import CloudSchedulerClient
    from google.cloud.tasks_v2 import CloudTasksClient

# Seconds allowed for one RPC (per attempt of the library's own retry, where it has one).
DEFAULT_TIMEOUT: float = 30.0

_lock = threading.Lock()
_clients: dict[tuple[str, str | None], Any] = {}
_channels: dict[str, grpc.Channel] = {}


def cloud_tasks_client(api_endpoint: str | None = None) -> CloudTasksClient:
    """The shared Cloud Tasks client for ``api_endpoint`` (None: Google, with ADC)."""
    return _cached("cloud_tasks", api_endpoint, _build_cloud_tasks)


def run_jobs_client(api_endpoint: str | None = None) -> JobsClient:
    """The shared Cloud Run v2 Jobs client for ``api_endpoint`` (None: Google, with ADC)."""
    return _cached("run_jobs", api_endpoint, _build_run_jobs)


def run_executions_client(api_endpoint: str | None = None) -> ExecutionsClient:
    """The shared Cloud Run v2 Executions client for ``api_endpoint`` (None: Google, with ADC)."""
    return _cached("run_executions", api_endpoint, _build_run_executions)


def cloud_scheduler_client(api_endpoint: str | None = None) -> CloudSchedulerClient:
    """The shared Cloud Scheduler client for ``api_endpoint`` (None: Google, with ADC)."""
    return _cached("cloud_scheduler", api_endpoint, _build_cloud_scheduler)


def lro_polling(
    timeout: float = DEFAULT_TIMEOUT, *, initial_delay: float = 0.5, max_delay: float = 5.0
) -> Retry:
    """Polling settings for waiting on a long-running operation (``op.result(polling=...)``).

    The library default starts at 1 s, grows to 20 s and gives up after 15 minutes, far too slow
    and too long for a request handler. Callers that only need the Cloud Run execution name must
    not poll at all: ``run_job(...).metadata.name`` is available as soon as RunJob returns.
    """
    from google.api_core.future.polling import DEFAULT_POLLING

    return DEFAULT_POLLING.with_delay(initial=initial_delay, maximum=max_delay).with_timeout(timeout)


def _cached[C](kind: str, api_endpoint: str | None, build: Callable[[grpc.Channel | None], C]) -> C:
    endpoint = api_endpoint or None
    client = _clients.get((kind, endpoint))
    if client is None:
        with _lock:  # double-checked: build each client once, even under concurrent first use
            client = _clients.get((kind, endpoint))
            if client is None:
                client = _clients[kind, endpoint] = build(_channel(endpoint) if endpoint else None)
    return client


def _channel(api_endpoint: str) -> grpc.Channel:
    """The plaintext channel shared by every client of a local endpoint (caller holds _lock)."""
    channel = _channels.get(api_endpoint)
    if channel is None:
        import grpc

        channel = _channels[api_endpoint] = grpc.insecure_channel(api_endpoint)
    return channel


# The builders import lazily: the client libraries take most of a second to import, which a
# project running only the local ProcessBackend should not pay at startup.


def _build_cloud_tasks(channel: grpc.Channel | None) -> CloudTasksClient:
    from google.cloud.tasks_v2 import CloudTasksClient
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    if channel is None:
        return CloudTasksClient()
    return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def _build_run_jobs(channel: grpc.Channel | None) -> JobsClient:
    from google.cloud.run_v2 import JobsClient
    from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport

    if channel is None:
        return JobsClient()
    return JobsClient(transport=JobsGrpcTransport(channel=channel))


def _build_run_executions(channel: grpc.Channel | None) -> ExecutionsClient:
    from google.cloud.run_v2 import ExecutionsClient
    from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport

    if channel is None:
        return ExecutionsClient()
    return ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel))


def _build_cloud_scheduler(channel: grpc.Channel | None) -> CloudSchedulerClient:
    from google.cloud.scheduler_v1 import CloudSchedulerClient
    from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport

    if channel is None:
        return CloudSchedulerClient()
    return CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
