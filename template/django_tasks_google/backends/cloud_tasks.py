"""CloudTasksBackend: each execution becomes a Cloud Tasks HTTP task pushed to /tasks/execute/.

Cloud Tasks POSTs `execution_id=<id>&backend=<alias>` (the published package's body) to
`execute_url` with a Google-signed ID token for `oidc_service_account`; the view authenticates it
and runs the attempt in the request. Cloud Tasks retries any non-2xx answer under the queue's
retry config, so the queue's `max_attempts` is also the execution's attempt limit.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.core import checks
from django.tasks.exceptions import InvalidTask
from django.utils import timezone

from .. import gcp, push_mac
from ..models import TaskExecution
from .base import DjangoTasksGoogleBackend

# Google's libraries are imported where they are used: importing them takes about a second, which
# a project that only runs the local backend should not pay at startup.
if TYPE_CHECKING:
    from google.cloud import tasks_v2

    from ..base import DjangoTask

logger = logging.getLogger("django_tasks_google")

# Cloud Tasks' dispatch_deadline bounds for HTTP targets.
CLOUD_TASKS_TIMEOUT_RANGE = (timedelta(seconds=15), timedelta(minutes=30))
# What Cloud Tasks accepts as a queue id.
QUEUE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
# Cloud Tasks refuses a schedule_time further ahead than this.
MAX_SCHEDULE_AHEAD = timedelta(days=30)
# Pauses before retrying a CreateTask that failed transiently. Retrying is safe because the task
# name is deterministic: if the failed call did create the task, the retry gets ALREADY_EXISTS.
# Short on purpose: enqueue() waits for them.
CREATE_TASK_RETRY_DELAYS = (0.1, 0.4)


class CloudTasksBackend(DjangoTasksGoogleBackend):
    supports_defer = True
    timeout_range = CLOUD_TASKS_TIMEOUT_RANGE

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = super().check(**kwargs)
        for queue_name in sorted(self.queues):
            queue_id = self.resolve_queue_name(queue_name)
            if not QUEUE_ID.fullmatch(queue_id):
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}]: queue {queue_name!r} names the Cloud Tasks queue id "
                        f"{queue_id!r}, which Cloud Tasks does not accept.",
                        hint="A queue id has 1-100 letters, digits and hyphens; map the queue name to it "
                        "with the 'queue_aliases' option.",
                        obj=self,
                        id="django_tasks_google.E010",
                    )
                )
        return messages

    def validate_task(self, task: DjangoTask) -> None:
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
        return f"projects/{self.project_id}/locations/{self.location}/queues/{queue_id}"

    def cloud_task_name(self, execution: TaskExecution, replacing: str | None = None) -> str:
        """The task's name: deterministic per execution, so a repeated CreateTask is deduplicated.

        Cloud Tasks answers ALREADY_EXISTS for a name that exists or existed recently, so a
        retried or repeated dispatch of the same execution can never create a second task. The
        id starts with a hash (Google advises against sequential ids, which crowd one key range)
        and ends with the execution id for people reading logs. The enqueue time and attempt
        count are hashed in, so a database reusing ids, or a later re-dispatch of an execution
        that already ran, gets a fresh name. `replacing` (a task Cloud Tasks gave up on, see
        recovery.py) is hashed in too: that name cannot be reused for a while.
        """
        parts = [self.alias, str(execution.pk), execution.enqueued_at.isoformat(), str(execution.attempts)]
        if replacing:
            # recover_tasks replaces a task Cloud Tasks gave up on; its name stays taken for a while.
            parts.append(replacing)
        identity = "\0".join(parts)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        return f"{self.queue_path(execution.queue_name)}/tasks/{digest}-{execution.pk}"

    def build_task(self, execution: TaskExecution, replacing: str | None = None) -> tasks_v2.Task:
        """The Cloud Tasks task that pushes `execution` to this service's execute URL."""
        from google.cloud import tasks_v2

        task = tasks_v2.Task(
            name=self.cloud_task_name(execution, replacing),
            http_request=tasks_v2.HttpRequest(
                http_method=tasks_v2.HttpMethod.POST,
                url=self.execute_url,
                # Cloud Tasks sets no Content-Type of its own.
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    push_mac.HEADER: push_mac.for_execution(self, execution.pk),
                },
                body=urlencode({"execution_id": str(execution.pk), "backend": self.alias}).encode(),
                # Always an explicit audience: left empty, Google would use the full URL (path
                # included), which Cloud Run rejects.
                oidc_token=tasks_v2.OidcToken(
                    service_account_email=self.oidc_service_account, audience=self.oidc_audience
                ),
            ),
        )
        if execution.run_after is not None:
            task.schedule_time = execution.run_after
        if execution.timeout is not None:
            # How long Cloud Tasks waits for the answer before it counts the attempt as failed and
            # retries; the request itself is also bounded by the Cloud Run service's timeout.
            task.dispatch_deadline = execution.timeout
        return task

    def dispatch(self, execution: TaskExecution, *, replacing: str | None = None) -> None:
        """Create the Cloud Task (called once the enqueueing transaction has committed).

        No transaction and no row lock are held here: the push may arrive before this method has
        stored the task name, and the executor does not need it. `replacing`: the name of a task
        that no longer exists and that this one replaces (recover_tasks).
        """
        from google.api_core import exceptions as api_exceptions

        try:
            max_attempts = self.max_attempts_for(execution.queue_name)
            name = self._create_task(
                self.queue_path(execution.queue_name), self.build_task(execution, replacing)
            )
        except api_exceptions.GoogleAPIError as exc:
            self.mark_dispatch_failed(execution, exc)
            return
        TaskExecution.objects.filter(pk=execution.pk).update(cloud_task_name=name, max_attempts=max_attempts)
        execution.cloud_task_name = name
        execution.max_attempts = max_attempts

    def _create_task(self, parent: str, task: tasks_v2.Task) -> str:
        """CreateTask, retried briefly on transient errors; returns the task's name."""
        from google.api_core import exceptions as api_exceptions

        for delay in CREATE_TASK_RETRY_DELAYS:
            try:
                return self._create_task_once(parent, task)
            except (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded) as exc:
                logger.warning("CreateTask %s failed (%s); retrying in %ss", task.name, exc, delay)
                time.sleep(delay)
        return self._create_task_once(parent, task)

    def _create_task_once(self, parent: str, task: tasks_v2.Task) -> str:
        from google.api_core import exceptions as api_exceptions

        client = gcp.cloud_tasks_client(self.api_endpoint)
        try:
            return client.create_task(parent=parent, task=task, timeout=gcp.DEFAULT_TIMEOUT).name
        except api_exceptions.AlreadyExists:
            # Created by an earlier call whose answer was lost, or by a repeated dispatch.
            logger.info("Cloud Task %s already exists; not creating it again", task.name)
            return task.name

    # --- Attempt limit ---------------------------------------------------------------------------

    def get_max_attempts(self, queue_name: str) -> int | None:
        """The queue's `retry_config.max_attempts` (-1, unlimited, gives None).

        Cloud Tasks retries a task until both max_attempts and max_retry_duration are used up;
        the attempt count is the one limit the execution can check, with the attempt number
        Cloud Tasks sends in X-CloudTasks-TaskRetryCount.
        """
        client = gcp.cloud_tasks_client(self.api_endpoint)
        queue = client.get_queue(name=self.queue_path(queue_name), timeout=gcp.DEFAULT_TIMEOUT)
        max_attempts = queue.retry_config.max_attempts
        return max_attempts if max_attempts > 0 else None
