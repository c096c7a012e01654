"""What the stored state needs from an execution's backend, and how it finds it by alias.

The model layer (the row, its transitions and the attempt policy) must know a backend's rules
(run_once, the attempt limit, how much history to keep, the lease) but sits below the backends,
which create its rows. So it names them through this abstract class, which DjangoTasksGoogleBackend
derives from, and finds the backend in Django's registry by the row's alias: no import of
`backends` from below. (Not a runtime-checkable Protocol: the options are forwarded by the
backend's `__getattr__`, which `isinstance` against a Protocol does not consult.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta

from django.tasks import task_backends


class BackendRules(ABC):
    alias: str
    run_once: bool
    max_history_entries: int
    heartbeat_timeout: timedelta
    supports_force_cancel: bool

    @abstractmethod
    def max_attempts_for(self, queue_name: str) -> int | None:
        """Total attempts allowed on `queue_name` (None: unlimited)."""


def backend_rules(alias: str) -> BackendRules:
    """The backend configured as `alias`; TypeError if it is not one of this app's."""
    backend = task_backends[alias]
    if not isinstance(backend, BackendRules):
        raise TypeError(f"Task backend {alias!r} is not a django_tasks_google backend")
    return backend
