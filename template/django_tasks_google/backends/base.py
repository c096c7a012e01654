"""What every backend of this app shares: OPTIONS, validation, enqueue, results, max_attempts cache.

A backend only decides how a stored TaskExecution is *delivered* (`dispatch`); running it is the
executor's job, whatever the transport.
"""

from __future__ import annotations

import logging
import re
from abc import abstractmethod
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.cache import InvalidCacheBackendError, caches
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

from ..base import DjangoTask, Task, build_task_unvalidated, task_fields
from ..models import TaskExecution, error_entry
from ..serialization import json_round_trip
from ..signals import send_task_signal
from .gcp_options import check_gcp_options, read_push_auth_options
from .options import OptionReader

logger = logging.getLogger("django_tasks_google")

# Stored in the cache for "no limit", so an unlimited queue is cached like any other value.
UNLIMITED_ATTEMPTS = "unlimited"
_MISSING = object()


def get_oidc_audience(url: str) -> str:
    """The origin of `url` (scheme and host): the audience Cloud Run accepts by default."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def clip_history(entries: list[Any], limit: int) -> list[Any]:
    """The last `limit` entries (history lists are capped; counts are kept elsewhere)."""
    return entries[-limit:] if len(entries) > limit else entries


class DjangoTasksGoogleBackend(BaseTaskBackend):
    """Base of CloudTasksBackend, CloudRunJobsBackend and ProcessBackend.

    Subclasses set the class flags and `timeout_range`, read their extra OPTIONS in
    `parse_options` (calling super), and implement `dispatch`, `get_max_attempts` and, where the
    platform can stop a running attempt, `force_cancel`.
    """

    task_class = Task
    supports_async_task = True
    supports_get_result = True
    supports_priority = False
    supports_defer = False

    # Needs project_id, location, base_url and oidc_service_account.
    requires_gcp_config: bool = True
    # Scheduled tasks of this backend are fired by Cloud Scheduler (else by the local worker).
    uses_cloud_scheduler: bool = True
    # cancel_task(..., force=True) can stop a running attempt.
    supports_force_cancel: bool = False
    # Inclusive bounds of Task.timeout.
    timeout_range: tuple[timedelta, timedelta]

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        reader = OptionReader(self.options)
        self.parse_options(reader)
        self.option_errors: list[tuple[str, str]] = reader.errors
        self.unknown_options: list[str] = reader.unknown()

    # --- OPTIONS ---------------------------------------------------------------------------------

    def parse_options(self, options: OptionReader) -> None:
        """Read the common OPTIONS. Never raises: problems are reported by `check()`."""
        gcp = self.requires_gcp_config
        self.project_id = options.text("project_id", required=gcp)
        self.location = options.text("location", required=gcp)
        base_url = options.text("base_url", required=gcp)
        self.oidc_service_account = options.text("oidc_service_account", required=gcp)
        execute_url = options.text("execute_url")
        schedule_url = options.text("schedule_url")
        oidc_audience = options.text("oidc_audience")
        # Where the Google client libraries connect (None: Google's endpoints); tests point it at
        # an in-process fake.
        self.api_endpoint = options.text("api_endpoint")
        # Prepended to a ScheduledTask's name to form its Cloud Scheduler job id, so services that
        # share a project and region never manage each other's jobs.
        self.scheduler_job_prefix = options.text("scheduler_job_prefix", "") or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{0,100}", self.scheduler_job_prefix):
            options.error(
                "scheduler_job_prefix",
                "scheduler_job_prefix may only contain letters, digits, '-' and '_' (at most 100), "
                f"not {self.scheduler_job_prefix!r}",
            )
            self.scheduler_job_prefix = ""
        if base_url and not base_url.startswith(("https://", "http://")):
            options.error("base_url", f"base_url must be an http(s) URL, not {base_url!r}")
            base_url = None
        if gcp and base_url:
            self.base_url: str | None = base_url.rstrip("/") + "/"
            self.execute_url: str | None = execute_url or f"{self.base_url}execute/"
            self.schedule_url: str | None = schedule_url or f"{self.base_url}schedule/"
            self.oidc_audience: str | None = oidc_audience or get_oidc_audience(self.base_url)
        else:
            # Local backends receive no pushes.
            self.base_url = self.execute_url = self.schedule_url = self.oidc_audience = None
        # How pushes are authenticated, and format checks of the GCP options (gcp_options.py).
        read_push_auth_options(self, options)
        if gcp:
            check_gcp_options(self, options)

        self.run_once = options.boolean("run_once", False)
        self.heartbeat_enabled = options.boolean("heartbeat_enabled", True)
        interval = options.number("heartbeat_interval_seconds", 10, above=0)
        lease = options.number("heartbeat_timeout_seconds", 30, above=0)
        join = options.number("heartbeat_join_timeout_seconds", 5, minimum=0)
        if interval > lease:
            options.error(
                "heartbeat_interval_seconds",
                "heartbeat_interval_seconds cannot be greater than heartbeat_timeout_seconds",
            )
            interval = lease / 3
        self.heartbeat_interval = timedelta(seconds=interval)
        # The lease: how long an attempt may go without a heartbeat before another delivery may
        # take the task over. It applies with heartbeats disabled too (then it bounds the attempt).
        self.heartbeat_timeout = timedelta(seconds=lease)
        self.heartbeat_join_timeout = timedelta(seconds=join)
        self.max_history_entries = options.integer("max_history_entries", 100, minimum=1) or 100
        self.cache_alias = options.text("cache_alias", "default") or "default"
        self.cache_prefix = options.text("cache_prefix", "django-tasks-google") or "django-tasks-google"
        self.cache_ttl_max_attempts = options.number("cache_ttl_max_attempts", 600)
        self.queue_aliases = options.string_mapping("queue_aliases")

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
        if self.heartbeat_enabled and self.heartbeat_interval * 2 > self.heartbeat_timeout:
            messages.append(
                checks.Warning(
                    f"TASKS[{self.alias!r}]['OPTIONS']: heartbeat_interval_seconds is more than half of "
                    "heartbeat_timeout_seconds, so one late heartbeat lets the lease expire.",
                    hint="Keep heartbeat_timeout_seconds at two or three heartbeat intervals or more.",
                    obj=self,
                    id="django_tasks_google.W002",
                )
            )
        return messages

    def raise_for_option_errors(self) -> None:
        if self.option_errors:
            _name, message = self.option_errors[0]
            raise ImproperlyConfigured(f"TASKS[{self.alias!r}]['OPTIONS']: {message}")

    # --- Tasks -----------------------------------------------------------------------------------

    def validate_task(self, task: DjangoTask) -> None:
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
        return self.queue_aliases.get(queue_name, queue_name)

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> TaskResult:
        """Store the execution, then deliver it once the enqueueing transaction has committed."""
        self.raise_for_option_errors()
        if isinstance(task.run_after, timedelta):
            run_after: datetime = timezone.now() + task.run_after
            if not settings.USE_TZ:
                run_after = timezone.make_naive(run_after)
            task = build_task_unvalidated(type(task), **{**task_fields(task), "run_after": run_after})
        self.validate_task(task)
        try:
            args = json_round_trip(list(args))
            kwargs = json_round_trip(dict(kwargs))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Arguments of task {task.module_path} must be JSON-serializable: {exc}") from exc
        database = router.db_for_write(TaskExecution)
        with transaction.atomic(using=database):
            execution = TaskExecution.objects.using(database).create(
                priority=task.priority,
                module_path=task.module_path,
                backend_alias=self.alias,
                queue_name=task.queue_name,
                run_after=task.run_after,
                takes_context=task.takes_context,
                args=args,
                kwargs=kwargs,
                timeout=getattr(task, "timeout", None),
            )
            # Delivered only if the row is committed: a rolled-back enqueue never runs.
            transaction.on_commit(partial(self._dispatch_committed, execution, task), using=database)
        return execution.to_task_result(task)

    def _dispatch_committed(self, execution: TaskExecution, task: DjangoTask) -> None:
        try:
            self.dispatch(execution)
        except Exception as exc:
            self.mark_dispatch_failed(execution, exc)
            return
        if execution.status != TaskResultStatus.FAILED:
            send_task_signal(task_enqueued, type(self), execution.to_task_result(task))

    @abstractmethod
    def dispatch(self, execution: TaskExecution) -> None:
        """Deliver a committed execution to its transport (the base class sends task_enqueued after).

        Must not raise: on failure call `mark_dispatch_failed(execution, exc)`; the base class
        treats an exception escaping from here the same way.
        """

    def mark_dispatch_failed(self, execution: TaskExecution, exc: BaseException) -> None:
        """Record that delivery failed: the execution becomes FAILED with the error, and it is logged."""
        logger.error(
            "Could not dispatch task %s (%s) to backend %r",
            execution.pk,
            execution.module_path,
            self.alias,
            exc_info=exc,
        )
        now = timezone.now()
        errors = clip_history([*execution.errors, error_entry(exc)], self.max_history_entries)
        TaskExecution.objects.filter(pk=execution.pk, status=TaskResultStatus.READY).update(
            status=TaskResultStatus.FAILED, finished_at=now, errors=errors
        )
        execution.status = TaskResultStatus.FAILED
        execution.finished_at = now
        execution.errors = errors

    def force_cancel(self, execution: TaskExecution) -> None:
        """Stop the running attempt of a cancelled execution, where the platform allows it."""

    # --- Results ---------------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        try:
            pk = int(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        execution = TaskExecution.objects.filter(pk=pk).first()
        if execution is None:
            raise TaskResultDoesNotExist(result_id)
        return execution.task_result

    # --- Attempt limits --------------------------------------------------------------------------

    @abstractmethod
    def get_max_attempts(self, queue_name: str) -> int | None:
        """Total attempts the platform makes for `queue_name` (None: unlimited). May call an API."""

    def max_attempts_for(self, queue_name: str) -> int | None:
        """`get_max_attempts`, cached for `cache_ttl_max_attempts` seconds (<= 0: no caching)."""
        if self.cache_ttl_max_attempts <= 0:
            return self.get_max_attempts(queue_name)
        try:
            cache = caches[self.cache_alias]
        except InvalidCacheBackendError:
            return self.get_max_attempts(queue_name)
        # Alias, project and location are part of the key: two backends may use one queue name.
        key = ":".join(
            [
                self.cache_prefix,
                "max_attempts",
                self.alias,
                self.project_id or "",
                self.location or "",
                self.resolve_queue_name(queue_name),
            ]
        )
        cached = cache.get(key, _MISSING)
        if cached is not _MISSING:
            return None if cached == UNLIMITED_ATTEMPTS else cached
        value = self.get_max_attempts(queue_name)
        cache.set(key, UNLIMITED_ATTEMPTS if value is None else value, self.cache_ttl_max_attempts)
        return value
