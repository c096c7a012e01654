"""A MAC on every push this app creates, binding it to what it pushes and to our secret.

The ID token on a push proves that Google sent it for the configured service account; it does
not say which execution it is for (a captured token, valid for an hour, could carry any body), and
on a private Cloud Run service the app cannot verify it at all (``auth.py``: the signature is
removed). So every Cloud Tasks task and Cloud Scheduler job also carries ``X-Tasks-Push-Mac``:
HMAC-SHA256, keyed by the backend's ``push_secret``, over what the push names (the backend alias
and execution id; for a job, the alias, scheduled task id and job id). Only someone who holds the
secret can make a push the views accept, whatever the state of the token or of Cloud Run's IAM.
A captured push replayed whole can only deliver its own execution again, which Cloud Tasks itself
may do (at-least-once delivery) and the executor handles (a finished execution does not run again).

Keys: ``push_secret`` (a dedicated secret; from Secret Manager in the deploy), else one derived
from ``SECRET_KEY`` (``salted_hmac`` with this module's salt, so the MAC reveals nothing usable
elsewhere). Rotation: the previous secret (``push_secret_previous``) stays accepted until
``push_secret_previous_until`` and never after; a previous secret without that deadline is a
configuration error, so the window is always bounded. Pushes are signed with the current key only.

Cloud Tasks and Cloud Scheduler store the headers of a task or job and send them with every
attempt, except those they compute or reserve (Host, Content-Length, User-Agent, ``X-Google-*``,
``X-AppEngine-*``, ``X-CloudTasks-*``; ``X-CloudScheduler*``), which this header's name avoids:
https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks#HttpRequest,
https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs#HttpTarget.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

if TYPE_CHECKING:
    from .base import DjangoTasksGoogleBackend

HEADER = "X-Tasks-Push-Mac"
# Keeps the key derived from SECRET_KEY apart from every other use of SECRET_KEY.
_SALT = "django_tasks_google.push_mac"


def for_execution(backend: DjangoTasksGoogleBackend, execution_id: int) -> str:
    """The header value of the Cloud Tasks push of `execution_id`, under the current key."""
    return _mac(_current_secret(backend), _execution_message(backend.alias, execution_id))


def for_job(backend: DjangoTasksGoogleBackend, task_id: int, job_name: str) -> str:
    """The header value of the pushes of a scheduled task's job (full name or short id)."""
    return _mac(_current_secret(backend), _job_message(backend.alias, task_id, job_name))


def execution_mac_valid(
    backend: DjangoTasksGoogleBackend, execution_id: int, value: str, now: datetime | None = None
) -> bool:
    """Whether `value` is the MAC `for_execution` made, under a key accepted now."""
    return _verify(backend, _execution_message(backend.alias, execution_id), value, now)


def job_mac_valid(
    backend: DjangoTasksGoogleBackend, task_id: int, job_name: str, value: str, now: datetime | None = None
) -> bool:
    """Whether `value` is the MAC `for_job` made, under a key accepted now."""
    return _verify(backend, _job_message(backend.alias, task_id, job_name), value, now)


def _execution_message(alias: str, execution_id: int) -> str:
    return f"execute\n{alias}\n{execution_id}"


def _job_message(alias: str, task_id: int, job_name: str) -> str:
    # The short job id: X-CloudScheduler-JobName may carry it or the full resource name.
    return f"schedule\n{alias}\n{task_id}\n{job_name.rsplit('/', 1)[-1]}"


def _verify(backend: DjangoTasksGoogleBackend, message: str, value: str, now: datetime | None) -> bool:
    # Compared in constant time, and every accepted key is tried: the time taken tells nothing
    # about which key (if any) matched.
    matched = False
    for secret in accepted_secrets(backend, now):
        matched |= constant_time_compare(_mac(secret, message), value)
    return matched


def accepted_secrets(backend: DjangoTasksGoogleBackend, now: datetime | None = None) -> list[str]:
    """The current secret, plus the previous one while its window is open."""
    secrets = [_current_secret(backend)]
    previous, until = backend.push_secret_previous, backend.push_secret_previous_until
    if previous and until is not None and (now or timezone.now()) < until:
        secrets.append(previous)
    return secrets


def _current_secret(backend: DjangoTasksGoogleBackend) -> str:
    # Read at use time: SECRET_KEY is a setting, and backends outlive settings changes in tests.
    return backend.push_secret or settings.SECRET_KEY


def _mac(secret: str, message: str) -> str:
    return salted_hmac(_SALT, message, secret=secret, algorithm="sha256").hexdigest()
