"""The gRPC plumbing every fake Google service shares: one server, one lock, calls, faults, events.

Why one server: the app's clients of all three services share one insecure channel in tests
(``api_endpoint``), exactly as production shares one ``googleapis.com`` endpoint per service;
one lock makes each RPC atomic, so a test that reads the state never sees half an RPC.

A service is a mixin of ``FakeGrpcServer`` that contributes its RPCs (``_service_rpcs``) and its
state (``_reset_service``); ``GoogleServicesFake`` (google_services.py) composes them. Requests
and responses are (de)serialised with the client libraries' own message classes: proto-plus
``serialize``/``deserialize`` for API messages, raw protobuf for ``Operation`` and ``Empty``.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from tests.fakes.oidc_issuer import OidcIssuer

logger = logging.getLogger(__name__)

# (service, method, request class, response serialiser, handler)
Rpc = tuple[str, str, Any, Callable[[Any], bytes], Callable[[Any], Any]]
Listener = Callable[..., None]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def copy[M](message: M) -> M:
    cls = type(message)
    return cls.deserialize(cls.serialize(message))  # type: ignore[attr-defined]


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def plus(cls: Any) -> Callable[[Any], bytes]:
    """The serialiser of a proto-plus response class."""
    return cls.serialize


def raw(message: Any) -> bytes:
    """The serialiser of a raw protobuf response (``Operation``, ``Empty``)."""
    return message.SerializeToString()


class FakeRpcError(Exception):
    """A gRPC error status the fake answers with (raised by the handlers)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def invalid(message: str) -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.NOT_FOUND, message)


@dataclass(frozen=True)
class Call:
    """One RPC as the server received it."""

    method: str  # the full gRPC path, e.g. "/google.cloud.tasks.v2.CloudTasks/CreateTask"
    request: Any  # the deserialised request message
    metadata: dict[str, str | bytes]  # invocation metadata, e.g. "x-goog-request-params"

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[-1]


@dataclass
class _Fault:
    code: grpc.StatusCode
    message: str
    remaining: int


class FakeGrpcServer:
    """The server, its lock, the call log, injected faults and event listeners.

    Events (``on(event, listener)``) let the behavioural emulator react to what the app asks for:
    ``task_created``, ``task_deleted``, ``execution_created``, ``execution_cancelled``,
    ``scheduler_run``. Listeners run in the RPC's thread after the lock is released, so they may
    call back into the fake; ``reset()`` forgets them with the rest of the state.
    """

    def __init__(self, issuer: OidcIssuer | None = None) -> None:
        self.issuer = issuer  # mints the ID tokens attached to pushes
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None
        self._port = 0
        self._pending = threading.local()
        self.reset()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="google-fake"))
        handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for service, method, request_cls, serialize, handler in self._service_rpcs():
            path = f"/{service}/{method}"
            # No response_serializer: behaviours return bytes, serialised while holding the lock.
            handlers.setdefault(service, {})[method] = grpc.unary_unary_rpc_method_handler(
                self._behaviour(path, handler, serialize),
                request_deserializer=getattr(request_cls, "deserialize", None) or request_cls.FromString,
            )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, methods) for service, methods in handlers.items()]
        )
        self._port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    @property
    def endpoint(self) -> str:
        """The ``api_endpoint`` value that points the app's clients at this fake."""
        if self._server is None:
            raise RuntimeError("GoogleServicesFake is not started")
        return f"127.0.0.1:{self._port}"

    def reset(self) -> None:
        """Forget every resource, recorded call, pending fault and listener."""
        with self._lock:
            self.calls: list[Call] = []
            self._faults: dict[str, list[_Fault]] = {}
            self._listeners: dict[str, list[Listener]] = {}
            self._reset_service()

    def _reset_service(self) -> None:
        """Each service mixin clears its own state here (cooperatively, through ``super()``)."""

    def _service_rpcs(self) -> list[Rpc]:
        """Each service mixin adds its RPCs here (cooperatively, through ``super()``)."""
        return []

    # --- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        message: str = "injected by the test",
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``code`` (the call is still recorded).

        ``method`` is a method name ("CreateTask"), "Service/Method" where the name alone is
        ambiguous ("Jobs/RunJob", "CloudScheduler/RunJob") or the full gRPC path.
        """
        path = self._resolve(method)
        with self._lock:
            self._faults.setdefault(path, []).append(_Fault(code, message, times))

    def requests(self, method: str) -> list[Any]:
        """The request messages received for ``method`` (named as for ``fail_next``), in order."""
        return [call.request for call in self.calls_to(method)]

    def calls_to(self, method: str) -> list[Call]:
        path = self._resolve(method)
        with self._lock:
            return [call for call in self.calls if call.method == path]

    def on(self, event: str, listener: Listener) -> None:
        """Call ``listener(*details)`` after each RPC that emits ``event`` (see the class docstring)."""
        with self._lock:
            self._listeners.setdefault(event, []).append(listener)

    def _emit(self, event: str, *details: Any) -> None:
        """Queue an event from inside a handler; delivered once the RPC released the lock."""
        pending = getattr(self._pending, "events", None)
        if pending is None:
            pending = self._pending.events = []
        pending.append((event, details))

    def _deliver_events(self) -> None:
        pending, self._pending.events = getattr(self._pending, "events", None) or [], []
        for event, details in pending:
            with self._lock:
                listeners = list(self._listeners.get(event, ()))
            for listener in listeners:
                try:
                    listener(*details)
                except Exception:  # the emulator's bug must not turn the app's RPC into an error
                    logger.exception("listener of %s failed", event)

    # --- gRPC plumbing -----------------------------------------------------------------------

    def _behaviour(
        self, path: str, handler: Callable[[Any], Any], serialize: Callable[[Any], bytes]
    ) -> Callable[..., bytes]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> bytes:
            metadata = {item.key: item.value for item in context.invocation_metadata()}
            self._pending.events = []
            with self._lock:
                self.calls.append(Call(path, request, metadata))
                fault = self._take_fault(path)
                if fault is None:
                    try:
                        answer = serialize(handler(request))
                    except FakeRpcError as error:
                        fault = _Fault(error.code, error.message, 0)
            if fault is None:
                self._deliver_events()
                return answer
            self._pending.events = []
            context.abort(fault.code, fault.message)

        return behaviour

    def _take_fault(self, path: str) -> _Fault | None:
        pending = self._faults.get(path)
        if not pending:
            return None
        fault = pending[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            pending.pop(0)
        return fault

    def _resolve(self, method: str) -> str:
        if method.startswith("/"):
            candidates = [method] if method in self._all_paths() else []
        elif "/" in method:
            candidates = [path for path in self._all_paths() if path.endswith(f".{method}")]
        else:
            candidates = [path for path in self._all_paths() if path.endswith(f"/{method}")]
        if len(candidates) != 1:
            known = ", ".join(sorted(self._all_paths()))
            raise ValueError(f"{method!r} names {len(candidates)} of the fake's methods; known: {known}")
        return candidates[0]

    def _all_paths(self) -> list[str]:
        return [f"/{service}/{method}" for service, method, *_ in self._service_rpcs()]

    def _mint(self, audience: str, oidc_token: Any) -> str:
        if self.issuer is None:
            raise RuntimeError("this push carries an OIDC token: give the fake an OidcIssuer")
        return self.issuer.mint(audience, oidc_token.service_account_email)
