"""CloudRunJobsBackend: each execution runs as one execution of a Cloud Run job.

Delivery is a single `RunJob` call on the job the queue names (through `queue_aliases`). It
overrides the container's args with the `command` option plus the execution id, so the job's
container runs `python manage.py execute_task <id>`; that command runs the attempt through the
shared executor and exits non-zero only when Cloud Run should retry it.

How this fits Cloud Run's model:

* `ContainerOverride` has `args` but no `command`: the args replace the image's CMD. The image
  therefore has no ENTRYPOINT and the job is deployed without `--command`; otherwise the default
  option would run `python python manage.py ...`.
* Cloud Run retries a failed task up to the job's `max_retries` (default 3), passing the 0-based
  attempt in `CLOUD_RUN_TASK_ATTEMPT`; so an execution gets `max_retries + 1` attempts.
* The task timeout is per attempt: a task's `timeout` becomes the execution's timeout override,
  and Cloud Run SIGTERMs an attempt that runs past it.
* Cancelling the Cloud Run execution SIGTERMs its container, which raises `TaskCancelledError`
  inside the task (forceful cancellation).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING

from .. import gcp
from ..models import TaskExecution
from .base import DjangoTasksGoogleBackend
from .delivery import DeliveryState, DeliveryUnknown, DispatchResult, PlatformQueue
from .options import DEFAULT_COMMAND, CloudRunJobsOptions

if TYPE_CHECKING:
    from google.cloud.run_v2 import RunJobRequest

logger = logging.getLogger(__name__)

# Cloud Run Jobs' per-attempt task timeout bounds.
CLOUD_RUN_JOBS_TIMEOUT_RANGE = (timedelta(seconds=1), timedelta(hours=168))
# What Cloud Run uses when a job leaves max_retries unset.
CLOUD_RUN_DEFAULT_MAX_RETRIES = 3

__all__ = ["CLOUD_RUN_JOBS_TIMEOUT_RANGE", "DEFAULT_COMMAND", "CloudRunJobsBackend"]


class CloudRunJobsBackend(DjangoTasksGoogleBackend):
    supports_defer = False
    supports_force_cancel = True
    enforces_timeout = True
    timeout_range = CLOUD_RUN_JOBS_TIMEOUT_RANGE
    options_class = CloudRunJobsOptions
    config: CloudRunJobsOptions
    platform_queue = PlatformQueue(
        re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"),
        "the Cloud Run job",
        "A job name has up to 63 lowercase letters, digits and hyphens, starts with a letter and "
        "does not end with a hyphen",
        "django_tasks_google.E020",
    )

    # --- Names and requests ----------------------------------------------------------------------

    def job_name(self, queue_name: str) -> str:
        """The full Cloud Run job name for a logical queue name."""
        job = self.resolve_queue_name(queue_name)
        return f"projects/{self.config.project_id}/locations/{self.config.location}/jobs/{job}"

    def container_args(self, execution_id: int | str) -> list[str]:
        """The args the job's container runs with: the `command` option, then the execution id."""
        return [*self.config.command, str(execution_id)]

    def run_job_request(self, execution: TaskExecution) -> RunJobRequest:
        from google.cloud.run_v2 import RunJobRequest

        overrides = RunJobRequest.Overrides(
            container_overrides=[
                RunJobRequest.Overrides.ContainerOverride(args=self.container_args(execution.pk))
            ],
            # One task per execution, whatever the job's --tasks: every task would run the same id.
            task_count=1,
        )
        if execution.timeout is not None:
            overrides.timeout = execution.timeout
        return RunJobRequest(name=self.job_name(execution.queue_name), overrides=overrides)

    # --- Delivery --------------------------------------------------------------------------------

    def dispatch(self, execution: TaskExecution) -> DispatchResult:
        """Start a Cloud Run execution for `execution` and remember its name.

        No row lock is held during the RPC: the container may start (and lease the row) before
        RunJob even returns, so only the column this method owns is updated. The job's
        max_retries is not looked up here: the container's executor reads it (cached) when the
        attempt starts. RunJob is not retried here (a retry could start a second execution, the
        call having no request id); a transient error leaves the row READY for recover_tasks.
        """
        client = gcp.run_jobs_client(self.config.api_endpoint)
        try:
            operation = client.run_job(request=self.run_job_request(execution), timeout=gcp.DEFAULT_TIMEOUT)
        except Exception as exc:
            return self.dispatch_failed(execution, exc)
        # The operation resolves only when the execution finishes: never wait on it. Its metadata
        # is the new Execution, available at once.
        metadata = operation.metadata
        if metadata is None:
            # The execution was started all the same, so the task must not be marked failed.
            logger.warning("RunJob for task %s returned no execution metadata", execution.pk)
            return DispatchResult.DISPATCHED
        TaskExecution.objects.filter(pk=execution.pk).update(cloud_run_job_execution_name=metadata.name)
        execution.cloud_run_job_execution_name = metadata.name
        logger.info(
            "Task %s (%s) runs as Cloud Run execution %s", execution.pk, execution.module_path, metadata.name
        )
        return DispatchResult.DISPATCHED

    # --- Recovery --------------------------------------------------------------------------------

    def delivery_state(self, execution: TaskExecution) -> DeliveryState:
        """PENDING while its Cloud Run execution has not completed (Cloud Run may still retry it)."""
        from google.api_core.exceptions import GoogleAPIError, NotFound

        name = execution.cloud_run_job_execution_name
        if not name:
            return DeliveryState.NEVER_DISPATCHED
        try:
            run = gcp.run_executions_client(self.config.api_endpoint).get_execution(
                name=name, timeout=gcp.DEFAULT_TIMEOUT
            )
        except NotFound:
            return DeliveryState.GONE
        except GoogleAPIError as exc:
            raise DeliveryUnknown(f"GetExecution {name}: {exc}") from exc
        # Completed (succeeded, failed or cancelled): Cloud Run retries nothing any more.
        return DeliveryState.GONE if "completion_time" in run else DeliveryState.PENDING

    def redispatch(self, execution: TaskExecution) -> DispatchResult | None:
        # Dropping the completed execution's name is the claim; dispatch stores the new one. A run
        # reading the row before that could start a second execution, which the executor's lease
        # turns into a no-op.
        if not TaskExecution.objects.as_read(execution).update(cloud_run_job_execution_name=None):
            return None
        execution.cloud_run_job_execution_name = None
        return self.dispatch(execution)

    def get_max_attempts(self, queue_name: str) -> int | None:
        """The job's `max_retries + 1` (Cloud Run's default of 3 retries when the job leaves it unset)."""
        job = gcp.run_jobs_client(self.config.api_endpoint).get_job(
            name=self.job_name(queue_name), timeout=gcp.DEFAULT_TIMEOUT
        )
        template = job.template.template
        # `max_retries` lives in a oneof: unset reads 0, but Cloud Run then retries 3 times.
        max_retries = template.max_retries if "max_retries" in template else CLOUD_RUN_DEFAULT_MAX_RETRIES
        return max_retries + 1

    # --- Cancellation ----------------------------------------------------------------------------

    def force_cancel(self, execution: TaskExecution) -> None:
        """Cancel the Cloud Run execution: Cloud Run SIGTERMs its container, then kills it 10 s later.

        Without a stored execution name (not started yet, or RunJob failed) there is nothing to
        stop: a container that starts later finds the row cancelled and does not run the task.
        An execution that already finished is harmless to cancel (logged). Other API errors
        propagate; the row is cancelled by then, so the task still stops at its next heartbeat.
        """
        from google.api_core.exceptions import FailedPrecondition, NotFound

        name = execution.cloud_run_job_execution_name
        if not name:
            logger.info("Task %s has no Cloud Run execution yet: nothing to cancel", execution.pk)
            return
        client = gcp.run_executions_client(self.config.api_endpoint)
        try:
            # Not waited on: the operation resolves when the container has stopped.
            client.cancel_execution(name=name, timeout=gcp.DEFAULT_TIMEOUT)
        except (FailedPrecondition, NotFound) as exc:
            logger.warning("Cloud Run execution %s of task %s was not cancelled: %s", name, execution.pk, exc)
            return
        logger.info("Cancelled Cloud Run execution %s of task %s", name, execution.pk)
