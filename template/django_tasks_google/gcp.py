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
  by all the clients and credentials are never looked up. None of the libraries reads an
  ``*_EMULATOR_HOST`` variable, so this setting is the only way to point them elsewhere.

Shared clients are never closed: closing one would close the channel under every other user.

Every RPC must pass an explicit ``timeout=`` (use ``DEFAULT_TIMEOUT``): Cloud Run v2 methods have
no default deadline at all, and Cloud Scheduler's is ten minutes.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any, cast

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
    return cast("CloudTasksClient", _client("google.cloud.tasks_v2.CloudTasksClient", api_endpoint))


def run_jobs_client(api_endpoint: str | None = None) -> JobsClient:
    """The shared Cloud Run v2 Jobs client for ``api_endpoint`` (None: Google, with ADC)."""
    return cast("JobsClient", _client("google.cloud.run_v2.JobsClient", api_endpoint))


def run_executions_client(api_endpoint: str | None = None) -> ExecutionsClient:
    """The shared Cloud Run v2 Executions client for ``api_endpoint`` (None: Google, with ADC)."""
    return cast("ExecutionsClient", _client("google.cloud.run_v2.ExecutionsClient", api_endpoint))


def cloud_scheduler_client(api_endpoint: str | None = None) -> CloudSchedulerClient:
    """The shared Cloud Scheduler client for ``api_endpoint`` (None: Google, with ADC)."""
    return cast(
        "CloudSchedulerClient", _client("google.cloud.scheduler_v1.CloudSchedulerClient", api_endpoint)
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call may succeed if simply made again later (the platform was unavailable).

    Google's error model: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ABORTED and
    RESOURCE_EXHAUSTED are worth retrying with a backoff; INVALID_ARGUMENT, PERMISSION_DENIED,
    NOT_FOUND, FAILED_PRECONDITION... are not (https://cloud.google.com/apis/design/errors,
    "Retrying errors"). A client-side RetryError means retrying ran out of time: transient too,
    as are network errors of the credential refresh.
    """
    from google.api_core import exceptions
    from google.auth.exceptions import TransportError

    return isinstance(
        exc,
        exceptions.ServiceUnavailable
        | exceptions.DeadlineExceeded
        | exceptions.InternalServerError
        | exceptions.Unknown
        | exceptions.Aborted
        | exceptions.TooManyRequests
        | exceptions.GatewayTimeout
        | exceptions.BadGateway
        | exceptions.RetryError
        | TransportError,
    )


def transient_retry(total: float) -> Retry:
    """A Retry of transient errors (`is_transient`) giving up after `total` seconds in all.

    For calls the caller waits on (CreateTask in `enqueue()`): the library's own default for
    CreateTask is no retry and a 20 s timeout (``transports/base.py`` of google-cloud-tasks).
    """
    from google.api_core.retry import Retry

    return Retry(predicate=is_transient, initial=0.1, maximum=1.0, multiplier=2.0, timeout=total)


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


def _client(path: str, api_endpoint: str | None) -> Any:
    """The one client of class `path` ("package.ClassName") per endpoint, built on first use.

    The client libraries are imported here, lazily: they take most of a second to import, which
    a project running only the local ProcessBackend should not pay at startup.
    """
    endpoint = api_endpoint or None
    client = _clients.get((path, endpoint))
    if client is None:
        with _lock:  # double-checked: build each client once, even under concurrent first use
            client = _clients.get((path, endpoint))
            if client is None:
                module, _, name = path.rpartition(".")
                client_class = getattr(importlib.import_module(module), name)
                if endpoint is None:
                    client = client_class()
                else:
                    # Every GAPIC client names its gRPC transport class; given a channel, the
                    # transport looks up no credentials.
                    transport = client_class.get_transport_class("grpc")(channel=_channel(endpoint))
                    client = client_class(transport=transport)
                _clients[path, endpoint] = client
    return client


def _channel(api_endpoint: str) -> grpc.Channel:
    """The plaintext channel shared by every client of a local endpoint (caller holds _lock)."""
    channel = _channels.get(api_endpoint)
    if channel is None:
        import grpc

        channel = _channels[api_endpoint] = grpc.insecure_channel(api_endpoint)
    return channel
