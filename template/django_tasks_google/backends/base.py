"""What every backend of this app shares: OPTIONS, validation, enqueue, results, max_attempts cache.

A backend only decides how a stored TaskExecution is *delivered* (`dispatch`), and answers for
its platform (`delivery_state`, `redispatch`, capability flags); running it is the executor's
job, whatever the transport.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, cast

from django.conf import settings
from django.core import checks
from django.core.cache import InvalidCacheBackendError, caches
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.tasks import Task as DjangoTask
from django.tasks import TaskResult, task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

from .. import gcp, inserting
from ..backend_rules import BackendRules
from ..models import TaskExecution
from ..serialization import json_round_trip
from ..signals import send_task_signal
from ..task import AnyTask, AnyTaskResult, Task, build_task_unvalidated, task_fields
from .delivery import DeliveryState, DispatchResult, PlatformQueue, TaskDispatchError
from .options import BackendOptions, read_options

logger = logging.getLogger(__name__)

# Stored in the cache for "no limit", so an unlimited queue is cached like any other value.
UNLIMITED_ATTEMPTS = "unlimited"
_MISSING = object()


def google_backend(alias: str) -> DjangoTasksGoogleBackend:
    """The backend configured as `alias`; TypeError if it is not one of this app's."""
    backend = task_backends[alias]
    if not isinstance(backend, DjangoTasksGoogleBackend):
        raise TypeError(f"Task backend {alias!r} is not a django_tasks_google backend")
    return backend


class DjangoTasksGoogleBackend(BaseTaskBackend, BackendRules):
    """Base of CloudTasksBackend, CloudRunJobsBackend and ProcessBackend.

    Subclasses set the capability flags, `options_class` and `timeout_range`, and implement
    `dispatch`, `get_max_attempts` and, where `needs_recovery`, `delivery_state` and
    `redispatch`; where the platform can stop a running attempt, `force_cancel`.

    OPTIONS are read once into `self.config` (a frozen dataclass, see options.py); each option
    can also be read as an attribute of the backend (`backend.heartbeat_timeout`), forwarded to
    `config`. Django's own `self.options` stays the raw OPTIONS dict.
    """

    task_class = Task
    supports_async_task = True
    supports_get_result = True
    supports_priority = False
    supports_defer = False

    options_class: ClassVar[type[BackendOptions]] = BackendOptions
    config: BackendOptions

    # Needs project_id, location, base_url and oidc_service_account.
    requires_gcp_config: bool = True
    # Scheduled tasks of this backend are fired by Cloud Scheduler (else by the local worker).
    uses_cloud_scheduler: bool = True
    # cancel_task(..., force=True) can stop a running attempt.
    supports_force_cancel: bool = False
    # The platform stops an attempt that runs past the task's `timeout`.
    enforces_timeout: bool = False
    # The platform's retries are limited, so a delivery can be lost for good: `recover_tasks`
    # asks `delivery_state` and calls `redispatch` (the local worker recovers its own).
    needs_recovery: bool = True
    # What a resolved queue name must look like on the platform (None: anything).
    platform_queue: ClassVar[PlatformQueue | None] = None
    # Inclusive bounds of Task.timeout.
    timeout_range: tuple[timedelta, timedelta]

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.config, reader = read_options(
            self.options_class, self.options, requires_gcp=self.requires_gcp_config
        )
        self.option_errors: list[tuple[str, str]] = reader.errors
        self.unknown_options: list[str] = reader.unknown()

    def __getattr__(self, name: str) -> Any:
        """Each option as a read-only attribute (`backend.run_once` is `backend.config.run_once`)."""
        if name != "config" and "config" in self.__dict__ and hasattr(self.config, name):
            return getattr(self.config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- OPTIONS ---------------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = [
            checks.Error(
                f"TASKS[{self.alias!r}]['OPTIONS']: {message}.",
                hint=f"Fix the {name!r} option of the {self.alias!r} task backend.",
                obj=self,
                id="django_tasks_google.E001",
            )
            for name, message in self.option_errors
        ]
        messages += [
            checks.Warning(
                f"TASKS[{self.alias!r}]['OPTIONS'] has an unknown option {name!r}.",
                hint=f"{type(self).__name__} does not read it; check its spelling.",
                obj=self,
                id="django_tasks_google.W001",
            )
            for name in self.unknown_options
        ]
        config = self.config
        if config.heartbeat_enabled and config.heartbeat_interval * 2 > config.heartbeat_timeout:
            messages.append(
                checks.Warning(
                    f"TASKS[{self.alias!r}]['OPTIONS']: heartbeat_interval_seconds is more than half of "
                    "heartbeat_timeout_seconds, so one late heartbeat lets the lease expire.",
                    hint="Keep heartbeat_timeout_seconds at two or three heartbeat intervals or more.",
                    obj=self,
                    id="django_tasks_google.W002",
                )
            )
        return messages + self._check_queues()

    def _check_queues(self) -> list[checks.CheckMessage]:
        """Each queue name must resolve to a name the platform accepts."""
        platform = self.platform_queue
        if platform is None:
            return []
        return [
            checks.Error(
                f"TASKS[{self.alias!r}]: queue {queue_name!r} names {platform.noun} {target!r}, "
                "which the platform does not accept.",
                hint=f"{platform.rule}; map the queue name to it with the 'queue_aliases' option.",
                obj=self,
                id=platform.check_id,
            )
            for queue_name in sorted(self.queues)
            if not platform.pattern.fullmatch(target := self.resolve_queue_name(queue_name))
        ]

    def raise_for_option_errors(self) -> None:
        if self.option_errors:
            _name, message = self.option_errors[0]
            raise ImproperlyConfigured(f"TASKS[{self.alias!r}]['OPTIONS']: {message}")

    # --- Tasks -----------------------------------------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        """Django's validation, plus `timeout` and a `run_after` that may be a timedelta."""
        if isinstance(task.run_after, timedelta):
            # Django's own check would crash on a timedelta under USE_TZ; enqueue() resolves it.
            if not self.supports_defer:
                raise InvalidTask("Backend does not support run_after.")
            task = build_task_unvalidated(type(task), **{**task_fields(task), "run_after": None})
        super().validate_task(task)
        timeout = getattr(task, "timeout", None)
        if timeout is not None:
            if not isinstance(timeout, timedelta):
                raise InvalidTask(f"Task timeout must be a timedelta, not {timeout!r}.")
            low, high = self.timeout_range
            if not low <= timeout <= high:
                raise InvalidTask(f"Task timeout must be between {low} and {high}.")

    def resolve_queue_name(self, queue_name: str) -> str:
        """The platform's queue or job name for a logical queue name (`queue_aliases`)."""
        return self.config.queue_aliases.get(queue_name, queue_name)

    def enqueue[**P, R](
        self, task: DjangoTask[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        """Store the execution (one INSERT), then deliver it once that row is committed.

        Inside a transaction, delivery happens when it commits. Outside one, it happens before
        this returns, and a platform that refuses the task for good (`DispatchResult.FAILED`:
        bad request, permission, unknown queue) makes this raise `TaskDispatchError` (the row
        stays FAILED with the platform's error) rather than return a FAILED result nobody looks
        at. A platform that is merely unavailable does not fail the task: it stays READY and
        `recover_tasks` delivers it later.
        """
        self.raise_for_option_errors()
        if isinstance(task.run_after, timedelta):
            run_after: datetime = timezone.now() + task.run_after
            if not settings.USE_TZ:
                run_after = timezone.make_naive(run_after)
            task = build_task_unvalidated(type(task), **{**task_fields(task), "run_after": run_after})
        self.validate_task(task)
        try:
            args, kwargs = json_round_trip([list(args), dict(kwargs)])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Arguments of task {task.module_path} must be JSON-serializable: {exc}") from exc
        database = router.db_for_write(TaskExecution)
        in_transaction = transaction.get_connection(database).in_atomic_block
        # A single INSERT is atomic by itself: no transaction of our own, so no extra statements.
        # (What QuerySet.create() does, with the statement built once per process: inserting.py.)
        execution = TaskExecution(
            priority=task.priority,
            module_path=task.module_path,
            backend_alias=self.alias,
            queue_name=task.queue_name,
            run_after=task.run_after,
            takes_context=task.takes_context,
            args=args,
            kwargs=kwargs,
            timeout=getattr(task, "timeout", None),
            **self.insert_fields(task, database),
        )
        inserting.insert(execution, database)
        # The row's result is this task's: its arguments and return value are the task's own. The
        # task_enqueued signal carries this same object, as Django's own backends do.
        result = cast("TaskResult[P, R]", execution.to_task_result(task))
        # Delivered only once the row is committed: a rolled-back enqueue never runs. Outside a
        # transaction this runs at once.
        outcome: list[DispatchResult] = []
        transaction.on_commit(
            partial(self._dispatch_committed, execution, result, outcome.append), using=database
        )
        if not in_transaction and outcome == [DispatchResult.FAILED]:
            result = cast("TaskResult[P, R]", execution.to_task_result(task))  # FAILED, with the error
            raise TaskDispatchError(
                f"Task {execution.pk} ({task.module_path}) was refused by backend {self.alias!r} and "
                f"will not run: {execution.errors[-1]['traceback'].strip().splitlines()[-1]}",
                result,
            )
        return result

    def insert_fields(self, task: AnyTask, using: str) -> dict[str, Any]:
        """Columns the backend fills in the enqueue INSERT on database `using` (so no UPDATE follows it)."""
        return {}

    def _dispatch_committed(
        self, execution: TaskExecution, result: AnyTaskResult, report: Any = None
    ) -> None:
        try:
            outcome = self.dispatch(execution)
        except Exception as exc:
            self.mark_dispatch_failed(execution, exc)
            outcome = DispatchResult.FAILED
        if report is not None:
            report(outcome)
        if outcome != DispatchResult.FAILED:
            # Enqueued: delivered now, or (DEFERRED) by recover_tasks once the platform is back.
            send_task_signal(task_enqueued, type(self), result)

    @abstractmethod
    def dispatch(self, execution: TaskExecution) -> DispatchResult:
        """Deliver a committed execution to its platform (the base class sends task_enqueued after).

        Must not raise. A transient platform error (`gcp.is_transient`) leaves the execution
        READY (DEFERRED); any other failure calls `mark_dispatch_failed(execution, exc)` (FAILED).
        The base class treats an exception escaping from here as FAILED.
        """

    def dispatch_failed(self, execution: TaskExecution, exc: Exception) -> DispatchResult:
        """Classify a failed delivery: DEFERRED (left READY, logged) if transient, else FAILED."""
        if gcp.is_transient(exc):
            logger.warning(
                "Could not dispatch task %s (%s) to backend %r: %s. It stays READY; "
                "recover_tasks dispatches it again.",
                execution.pk,
                execution.module_path,
                self.alias,
                exc,
            )
            return DispatchResult.DEFERRED
        self.mark_dispatch_failed(execution, exc)
        return DispatchResult.FAILED

    # --- Recovery (needs_recovery backends) --------------------------------------------------------

    def delivery_state(self, execution: TaskExecution) -> DeliveryState:
        """Whether the platform still holds a delivery of a READY execution. May call an API;
        raises DeliveryUnknown when the platform cannot be asked."""
        raise NotImplementedError(f"{type(self).__name__} recovers its own executions")

    def redispatch(self, execution: TaskExecution) -> DispatchResult | None:
        """Deliver a READY execution again whose delivery is gone (or never happened).

        Claims the re-dispatch first with a conditional UPDATE on the row as read, so concurrent
        recovery runs never both deliver it: None if another change won.
        """
        raise NotImplementedError(f"{type(self).__name__} recovers its own executions")

    def mark_dispatch_failed(self, execution: TaskExecution, exc: BaseException) -> None:
        """Record that delivery failed: the execution becomes FAILED with the error, and it is logged."""
        TaskExecution.objects.fail_undelivered(execution, exc, "Could not dispatch")

    def force_cancel(self, execution: TaskExecution) -> None:
        """Stop the running attempt of a cancelled execution, where the platform allows it."""

    # --- Results ---------------------------------------------------------------------------------

    def get_result(self, result_id: str) -> AnyTaskResult:
        """The result of one of this backend's executions (another alias's id does not exist here)."""
        try:
            pk = int(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        execution = TaskExecution.objects.filter(pk=pk, backend_alias=self.alias).first()
        if execution is None:
            raise TaskResultDoesNotExist(result_id)
        return execution.task_result

    # --- Attempt limits --------------------------------------------------------------------------

    @abstractmethod
    def get_max_attempts(self, queue_name: str) -> int | None:
        """Total attempts the platform makes for `queue_name` (None: unlimited). May call an API."""

    def max_attempts_for(self, queue_name: str) -> int | None:
        """`get_max_attempts`, cached for `cache_ttl_max_attempts` seconds (<= 0: no caching)."""
        config = self.config
        if config.cache_ttl_max_attempts <= 0:
            return self.get_max_attempts(queue_name)
        try:
            cache = caches[config.cache_alias]
        except InvalidCacheBackendError:
            return self.get_max_attempts(queue_name)
        # Alias, project and location are part of the key: two backends may use one queue name.
        key = ":".join(
            [
                config.cache_prefix,
                "max_attempts",
                self.alias,
                config.project_id or "",
                config.location or "",
                self.resolve_queue_name(queue_name),
            ]
        )
        cached = cache.get(key, _MISSING)
        if cached is not _MISSING:
            return None if cached == UNLIMITED_ATTEMPTS else cached
        value = self.get_max_attempts(queue_name)
        cache.set(key, UNLIMITED_ATTEMPTS if value is None else value, config.cache_ttl_max_attempts)
        return value
