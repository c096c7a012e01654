"""The Cloud Run v2 API fake: Jobs, Executions and the long-running Operations they return.

Jobs.GetJob, Jobs.RunJob, Executions.GetExecution, Executions.CancelExecution,
Operations.GetOperation. Jobs exist once added with ``add_run_job``. RunJob applies the
overrides (args replace, env merged by name, task_count/timeout replace), names the execution
``<job>/executions/<job id>-xxxxx`` and returns an unfinished long-running operation whose
metadata is the Execution packed with its real type URL. ``complete_execution`` finishes it (the
job runner of the emulator calls it when the containers end).
Source: the ``RunJobRequest.Overrides`` docstrings of google-cloud-run and
https://cloud.google.com/run/docs/execute/jobs#override-job-configuration.
"""

from __future__ import annotations

import datetime
import random
import re
import secrets
import string
import uuid

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2

from tests.fakes.grpc_server import (
    FakeGrpcServer,
    FakeRpcError,
    Rpc,
    copy,
    invalid,
    not_found,
    now,
    plus,
    raw,
    short,
)
from tests.fakes.push import JobContainer

JOBS = "google.cloud.run.v2.Jobs"
EXECUTIONS = "google.cloud.run.v2.Executions"
OPERATIONS = "google.longrunning.Operations"


class CloudRunFake(FakeGrpcServer):
    """Cloud Run's state (``run_jobs``, ``executions``, ``operations``) and RPCs."""

    def _reset_service(self) -> None:
        super()._reset_service()
        self.run_jobs: dict[str, run_v2.Job] = {}
        self.executions: dict[str, run_v2.Execution] = {}
        self.operations: dict[str, operations_pb2.Operation] = {}
        self._execution_operation: dict[str, str] = {}

    def _service_rpcs(self) -> list[Rpc]:
        run = run_v2
        return [
            *super()._service_rpcs(),
            (JOBS, "GetJob", run.GetJobRequest, plus(run.Job), self._get_run_job),
            (JOBS, "RunJob", run.RunJobRequest, raw, self._run_job),
            (EXECUTIONS, "GetExecution", run.GetExecutionRequest, plus(run.Execution), self._get_execution),
            (EXECUTIONS, "CancelExecution", run.CancelExecutionRequest, raw, self._cancel_execution),
            (OPERATIONS, "GetOperation", operations_pb2.GetOperationRequest, raw, self._get_operation),
        ]

    # --- test controls ---------------------------------------------------------------------

    def add_run_job(
        self,
        name: str,
        *,
        max_retries: int | None = 3,
        task_count: int = 1,
        timeout: datetime.timedelta = datetime.timedelta(minutes=10),
        command: list[str] | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        container_name: str = "job",
    ) -> run_v2.Job:
        """Create a Cloud Run job ``projects/P/locations/L/jobs/J`` (max_retries None = left unset)."""
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+/jobs/[a-z][a-z0-9-]*", name):
            raise ValueError(f"not a Cloud Run job name: {name!r}")
        container = run_v2.Container(
            name=container_name,
            image="europe-docker.pkg.dev/test-project/images/service:latest",
            command=command or [],
            args=args or [],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        )
        template = run_v2.TaskTemplate(containers=[container], timeout=timeout)
        if max_retries is not None:
            template.max_retries = max_retries
        job = run_v2.Job(
            name=name,
            uid=str(uuid.uuid4()),
            etag=secrets.token_hex(8),
            create_time=now(),
            template=run_v2.ExecutionTemplate(task_count=task_count, parallelism=0, template=template),
        )
        with self._lock:
            self.run_jobs[name] = job
        return copy(job)

    def complete_execution(
        self, name: str, *, succeeded: bool = True, failed_tasks: int | None = None
    ) -> run_v2.Execution:
        """Finish a Cloud Run execution; its RunJob LRO resolves.

        Every task succeeded or failed, or (``failed_tasks``) that many failed and the rest
        succeeded, as the job runner reports it.
        """
        with self._lock:
            execution = self._execution(name)
            if "completion_time" in execution:
                raise ValueError(f"{name} has already completed")
            failed = (0 if succeeded else execution.task_count) if failed_tasks is None else failed_tasks
            execution.failed_count = failed
            execution.succeeded_count = execution.task_count - failed
            execution.running_count = 0
            execution.completion_time = now()
            error = None
            if failed:
                # Assumed shape: the RunJob LRO of a failed execution ends with an error status.
                message = f"Execution {short(name)} has failed to complete."
                error = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=message)
            self._finish_operation(self._execution_operation[name], execution, error)
            return copy(execution)

    def job_container(
        self, execution: str | None = None, *, task_index: int = 0, attempt: int = 0
    ) -> JobContainer:
        """How Cloud Run starts task ``task_index`` (attempt ``attempt``, 0-based) of an execution.

        Default: the last execution created. The env is the container's (job env merged with the
        RunJob override) plus the variables Cloud Run reserves for jobs
        (https://cloud.google.com/run/docs/container-contract#jobs-env-vars).
        """
        with self._lock:
            if execution is None:
                if not self.executions:
                    raise LookupError("no Cloud Run execution exists")
                execution = next(reversed(self.executions))
            run = self._execution(execution)
            container = run.template.containers[0]
            env = {var.name: var.value for var in container.env}
            env.update(
                {
                    "CLOUD_RUN_JOB": run.job,
                    "CLOUD_RUN_EXECUTION": short(run.name),
                    "CLOUD_RUN_TASK_INDEX": str(task_index),
                    "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
                    "CLOUD_RUN_TASK_COUNT": str(run.task_count),
                }
            )
            return JobContainer(list(container.command), list(container.args), env)

    # --- RPCs --------------------------------------------------------------------------------

    def _get_run_job(self, request: run_v2.GetJobRequest) -> run_v2.Job:
        if request.name not in self.run_jobs:
            raise not_found(f"Job {request.name} not found.")
        return self.run_jobs[request.name]

    def _run_job(self, request: run_v2.RunJobRequest) -> operations_pb2.Operation:
        job = self._get_run_job(run_v2.GetJobRequest(name=request.name))
        if request.etag and request.etag != job.etag:
            raise FakeRpcError(grpc.StatusCode.ABORTED, "The etag does not match the job's.")
        template = copy(job.template.template)
        overrides = request.overrides
        for override in overrides.container_overrides:
            container = self._override_target(template, override.name)
            if override.clear_args or override.args:
                container.args = list(override.args)
            env = {var.name: var for var in container.env}
            env.update({var.name: var for var in override.env})
            container.env = list(env.values())
        if "timeout" in overrides:
            template.timeout = overrides.timeout
        job_id = short(job.name)
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        execution = run_v2.Execution(
            name=f"{job.name}/executions/{job_id}-{suffix}",
            uid=str(uuid.uuid4()),
            job=job_id,
            create_time=now(),
            task_count=overrides.task_count or job.template.task_count or 1,
            parallelism=job.template.parallelism,
            template=template,
            etag=secrets.token_hex(8),
        )
        job.execution_count += 1
        location = "/".join(job.name.split("/")[:4])
        operation = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4()}", done=False)
        operation.metadata.Pack(run_v2.Execution.pb(execution))
        self.executions[execution.name] = execution
        self.operations[operation.name] = operation
        self._execution_operation[execution.name] = operation.name
        self._emit("execution_created", execution.name)
        return operation

    @staticmethod
    def _override_target(template: run_v2.TaskTemplate, name: str) -> run_v2.Container:
        for container in template.containers:
            if not name or container.name == name:
                return container
        raise invalid(f"No container named {name!r} in the job.")

    def _get_execution(self, request: run_v2.GetExecutionRequest) -> run_v2.Execution:
        return self._execution(request.name)

    def _cancel_execution(self, request: run_v2.CancelExecutionRequest) -> operations_pb2.Operation:
        execution = self._execution(request.name)
        if "completion_time" in execution:
            # Assumed: the real API refuses to cancel a finished execution in the same way.
            message = f"Execution {request.name} has already completed."
            raise FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, message)
        execution.cancelled_count = execution.task_count - execution.succeeded_count - execution.failed_count
        execution.completion_time = now()
        self._finish_operation(self._execution_operation[execution.name], execution, None)
        location = "/".join(execution.name.split("/")[:4])
        operation = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4()}", done=True)
        operation.metadata.Pack(run_v2.Execution.pb(execution))
        operation.response.Pack(run_v2.Execution.pb(execution))
        self.operations[operation.name] = operation
        self._emit("execution_cancelled", execution.name)
        return operation

    def _get_operation(self, request: operations_pb2.GetOperationRequest) -> operations_pb2.Operation:
        if request.name not in self.operations:
            raise not_found(f"Operation {request.name} not found.")
        return self.operations[request.name]

    def _execution(self, name: str) -> run_v2.Execution:
        if name not in self.executions:
            raise not_found(f"Execution {name} not found.")
        return self.executions[name]

    def _finish_operation(
        self, operation_name: str, execution: run_v2.Execution, error: status_pb2.Status | None
    ) -> None:
        operation = self.operations[operation_name]
        operation.done = True
        operation.metadata.Pack(run_v2.Execution.pb(execution))
        if error is None:
            operation.response.Pack(run_v2.Execution.pb(execution))
        else:
            operation.error.CopyFrom(error)
