"""CloudTasksBackend: each execution becomes a Cloud Tasks HTTP task pushed to /tasks/execute/.

Cloud Tasks POSTs `execution_id=<id>&backend=<alias>` (the published package's body) to
`execute_url` with a Google-signed ID token for `oidc_service_account`; the view authenticates it
and runs the attempt in the request. Cloud Tasks retries any non-2xx answer under the queue's
retry config, so the queue's `max_attempts` is also the execution's attempt limit.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from .. import gcp
from ..models import TaskExecution
from . import push_mac
from .base import DjangoTasksGoogleBackend
from .delivery import DeliveryState, DeliveryUnknown, DispatchResult, PlatformQueue
from .options import CLOUD_TASKS_DEADLINE_RANGE, CloudTasksOptions

# Google's libraries are imported where they are used: importing them takes about a second, which
# a project that only runs the local backend should not pay at startup.
if TYPE_CHECKING:
    from google.cloud import tasks_v2

    from ..task import AnyTask

logger = logging.getLogger(__name__)

# Task.timeout becomes the task's dispatch_deadline, so it has the same bounds.
CLOUD_TASKS_TIMEOUT_RANGE = CLOUD_TASKS_DEADLINE_RANGE
# Cloud Tasks refuses a schedule_time further ahead than this.
MAX_SCHEDULE_AHEAD = timedelta(days=30)


class CloudTasksBackend(DjangoTasksGoogleBackend):
    """Cloud Tasks HTTP tasks pushed to this service's execute URL.

    Options of its own (see options.py, `CloudTasksOptions`):

    * `dispatch_deadline_seconds` (default 1800, i.e. 30 minutes; 15 to 1800): how long Cloud
      Tasks waits for the answer to a push of a task without a `timeout` (a task's `timeout` is
      its deadline). Past it, Cloud Tasks counts the attempt failed and delivers again while the
      first request may still run. Cloud Tasks' own default is 10 minutes; 30 minutes is its
      maximum and the request timeout the deploy gives the Cloud Run service, so a task is never
      redelivered while the service still lets it run. Lower it together with the service's
      request timeout. (https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks,
      "dispatchDeadline"; https://cloud.google.com/run/docs/configuring/request-timeout)
    * `create_task_timeout_seconds` (default 10): the most time `enqueue()` spends on
      CreateTask, transient errors retried within it. Past it the task stays READY for
      `recover_tasks`.
    """

    supports_defer = True
    timeout_range = CLOUD_TASKS_TIMEOUT_RANGE
    options_class = CloudTasksOptions
    config: CloudTasksOptions
    platform_queue = PlatformQueue(
        re.compile(r"[A-Za-z0-9-]{1,100}"),
        "the Cloud Tasks queue id",
        "A queue id has 1-100 letters, digits and hyphens",
        "django_tasks_google.E010",
    )

    def validate_task(self, task: AnyTask) -> None:
        """The base validation, plus Cloud Tasks' 30-day limit on `run_after`."""
        super().validate_task(task)
        run_after = task.run_after
        if isinstance(run_after, timedelta):
            too_late = run_after > MAX_SCHEDULE_AHEAD
        elif isinstance(run_after, datetime) and timezone.is_aware(run_after):
            too_late = run_after - timezone.now() > MAX_SCHEDULE_AHEAD
        else:
            too_late = False
        if too_late:
            raise InvalidTask("Cloud Tasks cannot schedule a task more than 30 days ahead (run_after).")

    # --- Delivery --------------------------------------------------------------------------------

    def queue_path(self, queue_name: str) -> str:
        """The Cloud Tasks queue resource of a logical queue name (after `queue_aliases`)."""
        queue_id = self.resolve_queue_name(queue_name)
        return f"projects/{self.config.project_id}/locations/{self.config.location}/queues/{queue_id}"

    def new_task_name(self, queue_name: str) -> str:
        """A fresh task name in the queue of `queue_name`, stored on the row by the INSERT.

        Random, so it is known before the row exists (no UPDATE after CreateTask) and a
        repeated CreateTask of the same execution is deduplicated (ALREADY_EXISTS). Cloud Tasks
        keeps a name taken for up to 24 hours after its task was deleted or ran, so a re-dispatch
        always takes a new one. Not sequential: Google advises against sequential ids, which crowd
        one key range. (https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks/create)
        """
        return f"{self.queue_path(queue_name)}/tasks/{secrets.token_hex(16)}"

    def insert_fields(self, task: AnyTask, using: str) -> dict[str, Any]:
        return {"cloud_task_name": self.new_task_name(task.queue_name)}

    def build_task(self, execution: TaskExecution) -> tasks_v2.Task:
        """The Cloud Tasks task that pushes `execution` to this service's execute URL."""
        from google.cloud import tasks_v2

        task = tasks_v2.Task(
            name=execution.cloud_task_name,
            http_request=tasks_v2.HttpRequest(
                http_method=tasks_v2.HttpMethod.POST,
                url=self.config.execute_url,
                # Cloud Tasks sets no Content-Type of its own.
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    push_mac.HEADER: push_mac.for_execution(self, execution.pk),
                },
                body=urlencode({"execution_id": str(execution.pk), "backend": self.alias}).encode(),
                # Always an explicit audience: left empty, Google would use the full URL (path
                # included), which Cloud Run rejects.
                oidc_token=tasks_v2.OidcToken(
                    service_account_email=self.config.oidc_service_account, audience=self.config.oidc_audience
                ),
            ),
            # How long Cloud Tasks waits for the answer before it counts the attempt as failed and
            # delivers again: the task's timeout, else the backend's (see the class docstring).
            dispatch_deadline=execution.timeout or self.config.dispatch_deadline,
        )
        if execution.run_after is not None:
            task.schedule_time = execution.run_after
        return task

    def dispatch(self, execution: TaskExecution) -> DispatchResult:
        """Create the Cloud Task named on the row (called once the enqueueing row is committed).

        No transaction, no row lock and no write: the push may arrive before CreateTask returns.
        The queue's max_attempts is not looked up here: the executor reads it (cached) when the
        push arrives, so enqueue() makes a single API call. CreateTask is retried on transient
        errors for at most `create_task_timeout_seconds` in all (the library would not retry it
        and would wait up to 20 s). Retrying is safe: the name is fixed, so a call that did create
        the task makes the retry answer ALREADY_EXISTS.
        """
        from google.api_core import exceptions as api_exceptions

        total = self.config.create_task_timeout.total_seconds()
        client = gcp.cloud_tasks_client(self.config.api_endpoint)
        try:
            client.create_task(
                parent=self.queue_path(execution.queue_name),
                task=self.build_task(execution),
                retry=gcp.transient_retry(total),
                timeout=total / 2,
            )
        except api_exceptions.AlreadyExists:
            # Created by an earlier call whose answer was lost, or by a repeated dispatch.
            logger.info("Cloud Task %s already exists; not creating it again", execution.cloud_task_name)
        except Exception as exc:
            return self.dispatch_failed(execution, exc)
        return DispatchResult.DISPATCHED

    # --- Recovery --------------------------------------------------------------------------------

    def delivery_state(self, execution: TaskExecution) -> DeliveryState:
        """PENDING while the named task exists: it is deleted once it succeeded or Cloud Tasks gave
        up retrying it. NOT_FOUND cannot tell "gone" from "never created" (CreateTask failed
        transiently, or the process died before it), and either needs a new delivery."""
        from google.api_core.exceptions import GoogleAPIError, NotFound

        if not execution.cloud_task_name:
            return DeliveryState.NEVER_DISPATCHED
        try:
            gcp.cloud_tasks_client(self.config.api_endpoint).get_task(
                name=execution.cloud_task_name, timeout=gcp.DEFAULT_TIMEOUT
            )
        except NotFound:
            return DeliveryState.GONE
        except GoogleAPIError as exc:
            raise DeliveryUnknown(f"GetTask {execution.cloud_task_name}: {exc}") from exc
        return DeliveryState.PENDING

    def redispatch(self, execution: TaskExecution) -> DispatchResult | None:
        # A new name: the old one may have existed, and stays taken for a while. Storing it is the
        # claim: a concurrent recovery run read the old name, so its UPDATE matches nothing.
        name = self.new_task_name(execution.queue_name)
        if not TaskExecution.objects.as_read(execution).update(cloud_task_name=name):
            return None
        execution.cloud_task_name = name
        return self.dispatch(execution)

    # --- Attempt limit ---------------------------------------------------------------------------

    def get_max_attempts(self, queue_name: str) -> int | None:
        """The queue's `retry_config.max_attempts` (-1, unlimited, gives None).

        Cloud Tasks retries a task until both max_attempts and max_retry_duration are used up;
        the attempt count is the one limit the execution can check, with the attempt number
        Cloud Tasks sends in X-CloudTasks-TaskRetryCount.
        """
        client = gcp.cloud_tasks_client(self.config.api_endpoint)
        queue = client.get_queue(name=self.queue_path(queue_name), timeout=gcp.DEFAULT_TIMEOUT)
        max_attempts = queue.retry_config.max_attempts
        return max_attempts if max_attempts > 0 else None
