"""Push endpoints for Cloud Tasks (/execute/) and Cloud Scheduler (/schedule/).

Every push is handled in the same order, so a caller learns nothing before it has proven who it
is:

1. POST only (405), no CSRF (the caller is Google, authenticated by its ID token).
2. Authenticate the ID token against the identities of the backends this endpoint serves
   (401 not authenticated, 403 someone else, 503 when Google's certificates are unreachable).
3. Only then read the body (400 when malformed or naming a backend this endpoint does not serve)
   and the platform's headers, which are caller-controlled and trusted only from here on.
4. Check the push's MAC (push_mac.py) over what the body names: 401 unless this service created
   the push, whatever the token said (a token replayed for another id, a private service's
   unverifiable token, a misconfigured service).
5. Hand the execution to the executor and turn its outcome into a status: 2xx acknowledges the
   push, 5xx asks the platform to deliver it again.

No 4xx/5xx path before step 5 touches the database. The helpers above the views are shared by both
endpoints.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, HttpResponse, QueryDict
from django.tasks import task_backends
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import auth
from .backends import push_mac
from .backends.base import DjangoTasksGoogleBackend
from .backends.cloud_tasks import CloudTasksBackend
from .executor import AttemptOutcome, Outcome, run_execution
from .scheduling.pushes import PushRefused, SchedulerDelivery, fire_pushed_slot

logger = logging.getLogger(__name__)

# A primary key as the body carries it: digits only, within a signed 64-bit integer.
_DIGITS = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1


# --- Shared helpers -------------------------------------------------------------------------------


class PushRejected(Exception):
    """A push answered without running anything: `status` and a short plain-text `message`."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def response(self) -> HttpResponse:
        response = plain_response(self.status, self.message)
        if self.status == 401:
            response["WWW-Authenticate"] = "Bearer"
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def plain_response(status: int, message: str) -> HttpResponse:
    return HttpResponse(f"{message}\n", status=status, content_type="text/plain; charset=utf-8")


def push_backends() -> dict[str, DjangoTasksGoogleBackend]:
    """The configured backends of this app, by alias.

    A backend that cannot even be built (a typo in TASKS) is skipped and logged: it must not turn
    every push for the other aliases into a 500.
    """
    found: dict[str, DjangoTasksGoogleBackend] = {}
    for alias in task_backends:
        try:
            backend = task_backends[alias]
        except Exception:
            logger.exception("Task backend %r cannot be loaded; pushes for it are refused", alias)
            continue
        if isinstance(backend, DjangoTasksGoogleBackend):
            found[alias] = backend
    return found


def authenticate_push(request: HttpRequest, backends: Iterable[DjangoTasksGoogleBackend]) -> dict[str, Any]:
    """The claims of the push's ID token, if it was issued for one of `backends`; else PushRejected.

    The token is checked against every backend's audience and service account at once, before
    the body is read, so the answer to an unauthenticated caller never depends on which backend
    aliases exist. `identity_matches` then ties the claims to the backend the body names.
    Backends are grouped by how they verify (certificates URL, platform-signature trust).
    """
    groups: dict[tuple[str, bool], tuple[list[str], list[str]]] = {}
    for backend in backends:
        if not backend.oidc_audience or not backend.oidc_service_account:
            continue  # misconfigured: `manage.py check` reports it; it can authenticate no one
        key = (backend.oidc_certs_url or auth.GOOGLE_CERTS_URL, backend.oidc_trust_platform_signature)
        audiences, accounts = groups.setdefault(key, ([], []))
        audiences.append(backend.oidc_audience)
        accounts.append(backend.oidc_service_account)
    if not groups:
        raise PushRejected(401, "No backend here can authenticate this push.")
    refusals: list[auth.PushAuthError] = []
    for (certs_url, trust_platform_signature), (audiences, accounts) in groups.items():
        try:
            return auth.verify_push(
                request,
                audience=audiences,
                service_account=accounts,
                certs_url=certs_url,
                trust_platform_signature=trust_platform_signature,
            )
        except auth.PushAuthError as exc:
            refusals.append(exc)
    # The most telling refusal: our outage (503) before another identity (403) before none (401).
    refusal = max(refusals, key=lambda exc: exc.status)
    raise PushRejected(refusal.status, refusal.message)


def require_push_mac(request: HttpRequest, is_valid: Callable[[str], bool]) -> None:
    """PushRejected(401) unless the push carries the MAC this app puts on the pushes it creates.

    `is_valid` is one of push_mac's checks, bound to what the body names. Called after the body is
    read and before anything touches the database; refused in every authentication mode.
    """
    if not is_valid(request.headers.get(push_mac.HEADER, "")):
        raise PushRejected(
            401, f"No valid {push_mac.HEADER} header: this push was not created by this service."
        )


def identity_matches(backend: DjangoTasksGoogleBackend, claims: Mapping[str, Any]) -> bool:
    """Whether authenticated claims are those of `backend`'s own audience and service account."""
    email = claims.get("email")
    return (
        claims.get("aud") == backend.oidc_audience
        and isinstance(email, str)
        and email.lower() == (backend.oidc_service_account or "").lower()
    )


def read_form(request: HttpRequest, fields: tuple[str, ...]) -> dict[str, str]:
    """The named fields of an `application/x-www-form-urlencoded` push body; else PushRejected(400).

    The body is parsed whatever the Content-Type says. Each field must appear exactly once and be
    non-empty; other fields are ignored.
    """
    try:
        form = QueryDict(request.body)
    except SuspiciousOperation as exc:  # too large, or too many fields
        raise PushRejected(400, f"Malformed body: {exc}") from None
    values: dict[str, str] = {}
    for field in fields:
        found = form.getlist(field)
        if len(found) != 1 or not found[0]:
            raise PushRejected(400, f"Malformed body: expected one non-empty {field!r} form field.")
        values[field] = found[0]
    return values


def parse_id(value: str, field: str) -> int:
    """A positive database id from the body; else PushRejected(400)."""
    if not _DIGITS.fullmatch(value) or not 0 < int(value) <= _MAX_ID:
        raise PushRejected(400, f"Malformed body: {field!r} must be a positive integer.")
    return int(value)


def serving_backend[B: DjangoTasksGoogleBackend](
    alias: str, backends: Mapping[str, B], kind_label: str, claims: Mapping[str, Any]
) -> B:
    """The backend the body names, if this endpoint serves it and the token is its own."""
    backend = backends.get(alias)
    if backend is None:
        if alias in task_backends.settings:
            raise PushRejected(
                400, f"Backend {alias!r} is not a {kind_label} backend; this endpoint refuses it."
            )
        raise PushRejected(400, f"Unknown backend {alias!r}.")
    if not identity_matches(backend, claims):
        raise PushRejected(403, f"The token was not issued for backend {alias!r}.")
    return backend


# --- Cloud Tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudTasksDelivery:
    """What the Cloud Tasks headers say about one push (trusted only after authentication)."""

    retry_count: int | None  # earlier attempts of this task, 5xx answers included
    execution_count: int | None  # earlier attempts that got a non-5xx answer
    task_name: str
    queue_name: str

    @property
    def attempt(self) -> int | None:
        """The 1-based attempt number, as Cloud Tasks counts it towards the queue's max_attempts.

        Without the header (not a Cloud Tasks push) the execution counts attempts itself. Cloud
        Tasks restarts the count for a re-dispatched execution (a new task), so the executor
        numbers the attempt by the larger of this and the row's count (attempts.py).
        """
        return None if self.retry_count is None else self.retry_count + 1

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CloudTasksDelivery:
        return cls(
            retry_count=_count_header(headers, "X-CloudTasks-TaskRetryCount"),
            execution_count=_count_header(headers, "X-CloudTasks-TaskExecutionCount"),
            task_name=headers.get("X-CloudTasks-TaskName", ""),
            queue_name=headers.get("X-CloudTasks-QueueName", ""),
        )


# A count header as Cloud Tasks sends it: decimal digits, at most 9 of them (no queue retries a
# task a billion times; a longer value is a forgery, and int() of thousands of digits raises).
_COUNT = re.compile(r"[0-9]{1,9}")


def _count_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    if not _COUNT.fullmatch(value.strip()):
        raise PushRejected(400, f"Malformed header: {name} must be a non-negative integer below 10**9.")
    return int(value)


@transaction.non_atomic_requests
@csrf_exempt
@require_POST
def execute_task_view(request: HttpRequest) -> HttpResponse:
    """Run one attempt of the execution a Cloud Tasks push names.

    Not wrapped in a request transaction (ATOMIC_REQUESTS): the executor commits the lease before
    the task runs, so duplicate deliveries see it, and records the outcome in its own writes.
    """
    backends = {
        alias: backend for alias, backend in push_backends().items() if isinstance(backend, CloudTasksBackend)
    }
    if not backends:
        return plain_response(404, "No Cloud Tasks backend is configured.")
    try:
        claims = authenticate_push(request, backends.values())
        form = read_form(request, ("execution_id", "backend"))
        backend = serving_backend(form["backend"], backends, "Cloud Tasks", claims)
        execution_id = parse_id(form["execution_id"], "execution_id")
        require_push_mac(request, partial(push_mac.execution_mac_valid, backend, execution_id))
        delivery = CloudTasksDelivery.from_headers(request.headers)
    except PushRejected as rejected:
        logger.warning("Cloud Tasks push refused (%s): %s", rejected.status, rejected.message)
        return rejected.response()
    logger.debug(
        "Cloud Tasks push: execution %s, backend %r, task %s in queue %s, retry %s, executions %s",
        execution_id,
        backend.alias,
        delivery.task_name,
        delivery.queue_name,
        delivery.retry_count,
        delivery.execution_count,
    )
    try:
        outcome = run_execution(execution_id, backend_alias=backend.alias, attempt=delivery.attempt)
    except Exception:
        # Not the task's own failure (the executor records those): the database, or the queue's
        # attempt limit could not be read. Nothing was recorded; a later delivery may succeed.
        logger.exception("Task %s: the push could not be handled", execution_id)
        return PushRejected(503, "The execution could not be run now; retry later.").response()
    return outcome_response(outcome, backend)


def outcome_response(outcome: AttemptOutcome, backend: DjangoTasksGoogleBackend) -> HttpResponse:
    """2xx when Cloud Tasks should forget the push; any other status makes it deliver it again.

    Cloud Tasks retries every non-2xx answer, but on 429 and 503 it also slows down the whole
    queue ("Cloud Tasks will use a higher backoff rate", and considers Retry-After:
    https://cloud.google.com/python/docs/reference/cloudtasks/latest/google.cloud.tasks_v2.types.HttpRequest).
    So the answers that concern one task alone (a duplicate delivery, an early one) use 409 with
    Retry-After, and 503 is kept for trouble on our side.
    """
    if not outcome.retry:
        # Succeeded, failed for good, already finished, cancelled, unknown execution, ...
        return HttpResponse(status=204)
    if outcome.reason == Outcome.RETRY:
        # The attempt failed and attempts remain: the queue's backoff decides when the next one comes.
        return plain_response(500, "The attempt failed; retry.")
    # Another attempt holds the lease, or the task is not due yet: come back once a lease period
    # has passed. A live holder renews its lease; a dead one's lease will have expired.
    retry_after = max(1, math.ceil(backend.heartbeat_timeout.total_seconds()))
    status = 503 if outcome.reason == Outcome.SAVE_FAILED else 409
    return PushRejected(
        status, f"Not now ({outcome.reason}); retry later.", retry_after=retry_after
    ).response()


# --- Cloud Scheduler --------------------------------------------------------------------------


@transaction.non_atomic_requests
@csrf_exempt
@require_POST
def schedule_task_view(request: HttpRequest) -> HttpResponse:
    """Enqueue the scheduled task a Cloud Scheduler push names, once per slot.

    Cloud Scheduler retries a failed push and, rarely, delivers one twice; the slot's key (job id
    + the slot's UTC instant) is stored with the firing, so every repeat is acknowledged (204)
    without enqueueing again. Also 204, with nothing enqueued: a disabled task (its job may fire
    once more before a pause lands). The other answers are ``scheduling.pushes``'s (400 for a slot
    far from now, 404, 409, 422, 503).
    """
    backends = {alias: backend for alias, backend in push_backends().items() if backend.uses_cloud_scheduler}
    if not backends:
        return plain_response(404, "No Cloud Scheduler backend is configured.")
    try:
        claims = authenticate_push(request, backends.values())
        form = read_form(request, ("task_id", "backend"))
        backend = serving_backend(form["backend"], backends, "Cloud Scheduler", claims)
        task_id = parse_id(form["task_id"], "task_id")
        delivery = SchedulerDelivery.from_headers(request.headers)
        require_push_mac(request, partial(push_mac.job_mac_valid, backend, task_id, delivery.job_name))
        fire_pushed_slot(task_id, backend.alias, delivery)
    except (PushRejected, PushRefused) as refused:
        logger.warning("Cloud Scheduler push refused (%s): %s", refused.status, refused.message)
        return PushRejected(refused.status, refused.message).response()
    except Exception:
        # The database, most likely. A firing that did not commit fires on Cloud Scheduler's retry;
        # one that did makes the retry a duplicate (204).
        logger.exception("A Cloud Scheduler push could not be handled")
        return PushRejected(503, "The scheduled task could not be fired now; retry later.").response()
    return HttpResponse(status=204)
