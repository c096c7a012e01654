"""An in-process fake of the Google APIs the app calls, served over real gRPC.

The REAL client libraries talk to it through ``django_tasks_google.gcp`` with
``api_endpoint=fake.endpoint``; requests and responses are (de)serialised with the libraries' own
message classes, so what a test sees recorded is exactly what would go over the wire to Google.

Modelled (one lock guards all state; tests may read it directly):

* Cloud Tasks: CreateTask, GetTask, DeleteTask, GetQueue. Queues exist only once added with
  ``add_queue``. Server-side rules: unknown queue or task → NOT_FOUND; HTTP targets only; URL
  scheme http(s); unset method → POST; a body only with POST/PUT/PATCH; an explicit name must be
  ``<queue>/tasks/<id>`` and a duplicate (or a deleted name: Google keeps them for hours) →
  ALREADY_EXISTS; dispatch_deadline in [15 s, 30 min], default 10 min; unset or past schedule_time
  → now; CreateTask/GetTask answer the BASIC view (no body) unless FULL is asked for.
* Cloud Run v2: Jobs.GetJob, Jobs.RunJob, Executions.GetExecution, Executions.CancelExecution,
  Operations.GetOperation. Jobs exist once added with ``add_run_job``. RunJob applies the
  overrides (args replace, env merged by name, task_count/timeout replace), names the execution
  ``<job>/executions/<job id>-xxxxx`` and returns an unfinished long-running operation whose
  metadata is the Execution packed with its real type URL. ``complete_execution`` finishes it.
* Cloud Scheduler: CreateJob, UpdateJob (with or without update_mask), DeleteJob, GetJob, ListJobs,
  PauseJob (needs ENABLED), ResumeJob (needs PAUSED), RunJob; FAILED_PRECONDITION otherwise.

Test controls: ``calls`` / ``requests(method)`` (every call with its request and metadata),
``fail_next(method, code)`` (fault injection), ``reset()``, and builders of what Google would
deliver in return: ``task_push`` (Cloud Tasks HTTP push), ``scheduler_push`` (Cloud Scheduler
push) and ``job_container`` (the command, args and env of a Cloud Run Job task container).

Not modelled: rate limits, retry timing, queue pause/purge, ListTasks, App Engine or Pub/Sub
targets, cron ticking (tests drive time by building pushes).
"""

from __future__ import annotations

import datetime
import random
import re
import secrets
import string
import threading
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.cloud import run_v2, scheduler_v1, tasks_v2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2, field_mask_pb2
from google.rpc import code_pb2, status_pb2

from tests.fakes.oidc_issuer import OidcIssuer

TASKS = "google.cloud.tasks.v2.CloudTasks"
JOBS = "google.cloud.run.v2.Jobs"
EXECUTIONS = "google.cloud.run.v2.Executions"
OPERATIONS = "google.longrunning.Operations"
SCHEDULER = "google.cloud.scheduler.v1.CloudScheduler"

# Headers Cloud Tasks controls itself; a task's own values for them are not forwarded.
_CLOUD_TASKS_OWNED = re.compile(r"host|content-length|user-agent|x-google-.*|x-appengine-.*|x-cloudtasks-.*")
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
_METHODS_WITH_BODY = {tasks_v2.HttpMethod.POST, tasks_v2.HttpMethod.PUT, tasks_v2.HttpMethod.PATCH}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _copy[M](message: M) -> M:
    cls = type(message)
    return cls.deserialize(cls.serialize(message))  # type: ignore[attr-defined]


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _invalid(message: str) -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _not_found(message: str) -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.NOT_FOUND, message)


class FakeRpcError(Exception):
    """A gRPC error status the fake answers with (raised by the handlers below)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


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
class Push:
    """An HTTP request as Cloud Tasks or Cloud Scheduler would deliver it to the service."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The URL's path and query, as a Django test client wants it."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def send(self, client: Any) -> Any:
        """Deliver through a Django test ``Client`` (its own host; scheme from the URL)."""
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-type"}
        content_type = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")
        return client.generic(
            self.method,
            self.path,
            data=self.body,
            content_type=content_type,
            secure=urlsplit(self.url).scheme == "https",
            headers=headers,
        )


@dataclass(frozen=True)
class JobContainer:
    """What one task container of a Cloud Run Job execution is started with."""

    command: list[str]  # the image's entrypoint override from the job (RunJob cannot change it)
    args: list[str]
    env: dict[str, str]


@dataclass
class _Fault:
    code: grpc.StatusCode
    message: str
    remaining: int


class GoogleServicesFake:
    """The fake server and its state. ``start()`` once, ``reset()`` between tests."""

    def __init__(self, issuer: OidcIssuer | None = None) -> None:
        self.issuer = issuer  # mints the ID tokens attached to pushes
        self._lock = threading.RLock()
        self._server: grpc.Server | None = None
        self._port = 0
        self.reset()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="google-fake"))
        handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for service, method, request_cls, serialize, handler in self._rpcs():
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
        """Forget every resource, recorded call and pending fault."""
        with self._lock:
            self.calls: list[Call] = []
            self._faults: dict[str, list[_Fault]] = {}
            self.queues: dict[str, tasks_v2.Queue] = {}
            self.tasks: dict[str, tasks_v2.Task] = {}  # live tasks, FULL view
            self.created_tasks: list[tasks_v2.Task] = []  # every task ever created, FULL view
            self.tombstones: set[str] = set()  # deleted task names: not reusable
            self.run_jobs: dict[str, run_v2.Job] = {}
            self.executions: dict[str, run_v2.Execution] = {}
            self.operations: dict[str, operations_pb2.Operation] = {}
            self._execution_operation: dict[str, str] = {}
            self.scheduler_jobs: dict[str, scheduler_v1.Job] = {}

    # --- test controls ---------------------------------------------------------------------

    def add_queue(
        self,
        name: str,
        *,
        max_attempts: int = 100,
        max_retry_duration: datetime.timedelta = datetime.timedelta(0),
        min_backoff: datetime.timedelta = datetime.timedelta(seconds=0.1),
        max_backoff: datetime.timedelta = datetime.timedelta(seconds=3600),
        max_doublings: int = 16,
    ) -> tasks_v2.Queue:
        """Create a Cloud Tasks queue ``projects/P/locations/L/queues/Q`` (-1 = unlimited attempts)."""
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+/queues/[A-Za-z0-9-]+", name):
            raise ValueError(f"not a queue name: {name!r}")
        queue = tasks_v2.Queue(
            name=name,
            state=tasks_v2.Queue.State.RUNNING,
            retry_config=tasks_v2.RetryConfig(
                max_attempts=max_attempts,
                max_retry_duration=max_retry_duration,
                min_backoff=min_backoff,
                max_backoff=max_backoff,
                max_doublings=max_doublings,
            ),
            rate_limits=tasks_v2.RateLimits(
                max_dispatches_per_second=500, max_burst_size=100, max_concurrent_dispatches=1000
            ),
        )
        with self._lock:
            self.queues[name] = queue
        return _copy(queue)

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
            create_time=_now(),
            template=run_v2.ExecutionTemplate(task_count=task_count, parallelism=0, template=template),
        )
        with self._lock:
            self.run_jobs[name] = job
        return _copy(job)

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

    def complete_execution(self, name: str, *, succeeded: bool = True) -> run_v2.Execution:
        """Finish a Cloud Run execution: every task succeeded or failed; its RunJob LRO resolves."""
        with self._lock:
            execution = self._execution(name)
            if "completion_time" in execution:
                raise ValueError(f"{name} has already completed")
            if succeeded:
                execution.succeeded_count = execution.task_count
            else:
                execution.failed_count = execution.task_count
            execution.completion_time = _now()
            error = None
            if not succeeded:
                # Assumed shape: the RunJob LRO of a failed execution ends with an error status.
                message = f"Execution {_short(name)} has failed to complete."
                error = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=message)
            self._finish_operation(self._execution_operation[name], execution, error)
            return _copy(execution)

    # --- what Google delivers back -----------------------------------------------------------

    def task_push(
        self,
        task: str | tasks_v2.Task | None = None,
        *,
        retry_count: int = 0,
        execution_count: int = 0,
        previous_response: int | None = None,
    ) -> Push:
        """The HTTP request Cloud Tasks sends for a created task (default: the last one created).

        ``retry_count`` is the number of earlier attempts (5xx included), ``execution_count`` the
        number of earlier attempts that got a non-5xx answer, ``previous_response`` the HTTP status
        of the previous attempt (retries only).
        """
        with self._lock:
            # Always the stored FULL view: a Task returned by CreateTask has no body.
            name = task.name if isinstance(task, tasks_v2.Task) else task
            task = next((t for t in reversed(self.created_tasks) if name in (None, t.name)), None)
            if task is None:
                raise LookupError(f"no task {name or ''} has been created")
            request = task.http_request
            headers = {
                k: v for k, v in request.headers.items() if not _CLOUD_TASKS_OWNED.fullmatch(k.lower())
            }
            headers.update(
                {
                    "User-Agent": "Google-Cloud-Tasks",
                    "X-CloudTasks-QueueName": task.name.split("/")[5],
                    "X-CloudTasks-TaskName": _short(task.name),
                    "X-CloudTasks-TaskRetryCount": str(retry_count),
                    "X-CloudTasks-TaskExecutionCount": str(execution_count),
                    "X-CloudTasks-TaskETA": f"{task.schedule_time.timestamp():.6f}",
                }
            )
            if previous_response is not None:
                headers["X-CloudTasks-TaskPreviousResponse"] = str(previous_response)
                headers["X-CloudTasks-TaskRetryReason"] = ""
            if "oidc_token" in request:
                # An empty audience makes Google use the full target URL (path and query included).
                audience = request.oidc_token.audience or request.url
                headers["Authorization"] = f"Bearer {self._mint(audience, request.oidc_token)}"
            body = request.body if request.http_method in _METHODS_WITH_BODY else b""
            return Push(tasks_v2.HttpMethod(request.http_method).name, request.url, body, headers)

    def scheduler_push(
        self, job: str | None = None, *, schedule_time: datetime.datetime | None = None
    ) -> Push:
        """The HTTP request Cloud Scheduler sends when a job fires (default: the last job created).

        ``schedule_time`` is the slot being fired (default: now), sent as RFC 3339 UTC.
        """
        with self._lock:
            if job is None:
                if not self.scheduler_jobs:
                    raise LookupError("no Cloud Scheduler job exists")
                job = next(reversed(self.scheduler_jobs))
            target = self._scheduler_job(job).http_target
            when = (schedule_time or _now()).astimezone(datetime.UTC)
            timespec = "milliseconds" if when.microsecond else "seconds"
            headers = dict(target.headers)
            if target.body and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/octet-stream"
            headers.update(
                {
                    "User-Agent": "Google-Cloud-Scheduler",
                    "X-CloudScheduler": "true",
                    "X-CloudScheduler-JobName": _short(job),
                    "X-CloudScheduler-ScheduleTime": when.isoformat(timespec=timespec).replace("+00:00", "Z"),
                }
            )
            if "oidc_token" in target:
                audience = target.oidc_token.audience or target.uri
                headers["Authorization"] = f"Bearer {self._mint(audience, target.oidc_token)}"
            method = scheduler_v1.HttpMethod(target.http_method or scheduler_v1.HttpMethod.POST).name
            return Push(method, target.uri, target.body, headers)

    def job_container(
        self, execution: str | None = None, *, task_index: int = 0, attempt: int = 0
    ) -> JobContainer:
        """How Cloud Run starts task ``task_index`` (attempt ``attempt``, 0-based) of an execution.

        Default: the last execution created. The env is the container's (job env merged with the
        RunJob override) plus the variables Cloud Run reserves for jobs.
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
                    "CLOUD_RUN_EXECUTION": _short(run.name),
                    "CLOUD_RUN_TASK_INDEX": str(task_index),
                    "CLOUD_RUN_TASK_ATTEMPT": str(attempt),
                    "CLOUD_RUN_TASK_COUNT": str(run.task_count),
                }
            )
            return JobContainer(list(container.command), list(container.args), env)

    def _mint(self, audience: str, oidc_token: Any) -> str:
        if self.issuer is None:
            raise RuntimeError("this push carries an OIDC token: give the fake an OidcIssuer")
        return self.issuer.mint(audience, oidc_token.service_account_email)

    # --- gRPC plumbing -----------------------------------------------------------------------

    def _rpcs(self) -> list[tuple[str, str, Any, Callable[[Any], bytes], Callable[[Any], Any]]]:
        def plus(cls: Any) -> Callable[[Any], bytes]:
            return cls.serialize

        def raw(message: Any) -> bytes:
            return message.SerializeToString()

        sch, run = scheduler_v1, run_v2
        return [
            (TASKS, "CreateTask", tasks_v2.CreateTaskRequest, plus(tasks_v2.Task), self._create_task),
            (TASKS, "GetTask", tasks_v2.GetTaskRequest, plus(tasks_v2.Task), self._get_task),
            (TASKS, "DeleteTask", tasks_v2.DeleteTaskRequest, raw, self._delete_task),
            (TASKS, "GetQueue", tasks_v2.GetQueueRequest, plus(tasks_v2.Queue), self._get_queue),
            (JOBS, "GetJob", run.GetJobRequest, plus(run.Job), self._get_run_job),
            (JOBS, "RunJob", run.RunJobRequest, raw, self._run_job),
            (EXECUTIONS, "GetExecution", run.GetExecutionRequest, plus(run.Execution), self._get_execution),
            (EXECUTIONS, "CancelExecution", run.CancelExecutionRequest, raw, self._cancel_execution),
            (OPERATIONS, "GetOperation", operations_pb2.GetOperationRequest, raw, self._get_operation),
            (SCHEDULER, "CreateJob", sch.CreateJobRequest, plus(sch.Job), self._create_sjob),
            (SCHEDULER, "UpdateJob", sch.UpdateJobRequest, plus(sch.Job), self._update_sjob),
            (SCHEDULER, "DeleteJob", sch.DeleteJobRequest, raw, self._delete_sjob),
            (SCHEDULER, "GetJob", sch.GetJobRequest, plus(sch.Job), self._get_sjob),
            (SCHEDULER, "ListJobs", sch.ListJobsRequest, plus(sch.ListJobsResponse), self._list_sjobs),
            (SCHEDULER, "PauseJob", sch.PauseJobRequest, plus(sch.Job), self._pause_sjob),
            (SCHEDULER, "ResumeJob", sch.ResumeJobRequest, plus(sch.Job), self._resume_sjob),
            (SCHEDULER, "RunJob", sch.RunJobRequest, plus(sch.Job), self._run_sjob),
        ]

    def _behaviour(
        self, path: str, handler: Callable[[Any], Any], serialize: Callable[[Any], bytes]
    ) -> Callable[..., bytes]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> bytes:
            metadata = {item.key: item.value for item in context.invocation_metadata()}
            with self._lock:
                self.calls.append(Call(path, request, metadata))
                fault = self._take_fault(path)
                if fault is None:
                    try:
                        return serialize(handler(request))
                    except FakeRpcError as error:
                        fault = _Fault(error.code, error.message, 0)
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
        return [f"/{service}/{method}" for service, method, *_ in self._rpcs()]

    # --- Cloud Tasks -------------------------------------------------------------------------

    def _create_task(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:
        if request.parent not in self.queues:
            raise _not_found(f"Queue {request.parent} does not exist.")
        task = _copy(request.task)
        if "http_request" not in task:
            raise _invalid("The fake supports HTTP targets only.")
        http = task.http_request
        if urlsplit(http.url).scheme not in {"http", "https"} or not urlsplit(http.url).netloc:
            raise _invalid(f"Invalid url: {http.url!r}")
        if not http.http_method:
            http.http_method = tasks_v2.HttpMethod.POST
        if http.body and http.http_method not in _METHODS_WITH_BODY:
            raise _invalid("A body is allowed only with POST, PUT or PATCH.")
        if task.name:
            prefix = f"{request.parent}/tasks/"
            if not task.name.startswith(prefix) or not _TASK_ID.fullmatch(task.name[len(prefix) :]):
                raise _invalid(f"Invalid task name: {task.name!r}")
            if task.name in self.tasks or task.name in self.tombstones:
                raise FakeRpcError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
        else:
            task.name = f"{request.parent}/tasks/{random.randrange(10**18, 10**19)}"
        if "dispatch_deadline" in task:
            if not datetime.timedelta(seconds=15) <= task.dispatch_deadline <= datetime.timedelta(minutes=30):
                raise _invalid("dispatch_deadline must be in [15s, 30m].")
        else:
            task.dispatch_deadline = datetime.timedelta(minutes=10)
        now = _now()
        if "schedule_time" not in task or task.schedule_time < now:
            task.schedule_time = now
        elif task.schedule_time > now + datetime.timedelta(days=30):
            raise _invalid("schedule_time must be at most 30 days in the future.")
        task.create_time = now
        task.view = tasks_v2.Task.View.FULL
        self.tasks[task.name] = task
        self.created_tasks.append(task)
        return self._task_view(task, request.response_view)

    def _get_task(self, request: tasks_v2.GetTaskRequest) -> tasks_v2.Task:
        return self._task_view(self._task(request.name), request.response_view)

    def _delete_task(self, request: tasks_v2.DeleteTaskRequest) -> empty_pb2.Empty:
        self._task(request.name)
        del self.tasks[request.name]
        self.tombstones.add(request.name)
        return empty_pb2.Empty()

    def _get_queue(self, request: tasks_v2.GetQueueRequest) -> tasks_v2.Queue:
        if request.name not in self.queues:
            raise _not_found(f"Queue {request.name} does not exist.")
        return self.queues[request.name]

    def _task(self, name: str) -> tasks_v2.Task:
        if name not in self.tasks:
            raise _not_found(f"Task {name} does not exist.")
        return self.tasks[name]

    @staticmethod
    def _task_view(task: tasks_v2.Task, view: tasks_v2.Task.View) -> tasks_v2.Task:
        answer = _copy(task)
        if view != tasks_v2.Task.View.FULL:
            answer.view = tasks_v2.Task.View.BASIC
            answer.http_request.body = b""
        return answer

    # --- Cloud Run v2 ------------------------------------------------------------------------

    def _get_run_job(self, request: run_v2.GetJobRequest) -> run_v2.Job:
        if request.name not in self.run_jobs:
            raise _not_found(f"Job {request.name} not found.")
        return self.run_jobs[request.name]

    def _run_job(self, request: run_v2.RunJobRequest) -> operations_pb2.Operation:
        job = self._get_run_job(run_v2.GetJobRequest(name=request.name))
        if request.etag and request.etag != job.etag:
            raise FakeRpcError(grpc.StatusCode.ABORTED, "The etag does not match the job's.")
        template = _copy(job.template.template)
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
        job_id = _short(job.name)
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        execution = run_v2.Execution(
            name=f"{job.name}/executions/{job_id}-{suffix}",
            uid=str(uuid.uuid4()),
            job=job_id,
            create_time=_now(),
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
        return operation

    @staticmethod
    def _override_target(template: run_v2.TaskTemplate, name: str) -> run_v2.Container:
        for container in template.containers:
            if not name or container.name == name:
                return container
        raise _invalid(f"No container named {name!r} in the job.")

    def _get_execution(self, request: run_v2.GetExecutionRequest) -> run_v2.Execution:
        return self._execution(request.name)

    def _cancel_execution(self, request: run_v2.CancelExecutionRequest) -> operations_pb2.Operation:
        execution = self._execution(request.name)
        if "completion_time" in execution:
            # Assumed: the real API refuses to cancel a finished execution in the same way.
            message = f"Execution {request.name} has already completed."
            raise FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, message)
        execution.cancelled_count = execution.task_count - execution.succeeded_count - execution.failed_count
        execution.completion_time = _now()
        self._finish_operation(self._execution_operation[execution.name], execution, None)
        location = "/".join(execution.name.split("/")[:4])
        operation = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4()}", done=True)
        operation.metadata.Pack(run_v2.Execution.pb(execution))
        operation.response.Pack(run_v2.Execution.pb(execution))
        self.operations[operation.name] = operation
        return operation

    def _get_operation(self, request: operations_pb2.GetOperationRequest) -> operations_pb2.Operation:
        if request.name not in self.operations:
            raise _not_found(f"Operation {request.name} not found.")
        return self.operations[request.name]

    def _execution(self, name: str) -> run_v2.Execution:
        if name not in self.executions:
            raise _not_found(f"Execution {name} not found.")
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

    # --- Cloud Scheduler ---------------------------------------------------------------------

    def _create_sjob(self, request: scheduler_v1.CreateJobRequest) -> scheduler_v1.Job:
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+", request.parent):
            raise _invalid(f"Invalid parent: {request.parent!r}")
        job = _copy(request.job)
        if not job.name:
            job.name = f"{request.parent}/jobs/{secrets.token_hex(8)}"
        if not re.fullmatch(rf"{re.escape(request.parent)}/jobs/[A-Za-z0-9_-]{{1,500}}", job.name):
            raise _invalid(f"Invalid job name: {job.name!r}")
        if job.name in self.scheduler_jobs:
            raise FakeRpcError(grpc.StatusCode.ALREADY_EXISTS, f"Job {job.name} already exists.")
        self._apply_scheduler_defaults(job)
        job.state = scheduler_v1.Job.State.ENABLED
        job.user_update_time = _now()
        self.scheduler_jobs[job.name] = job
        return job

    def _update_sjob(self, request: scheduler_v1.UpdateJobRequest) -> scheduler_v1.Job:
        current = self._scheduler_job(request.job.name)
        updated = scheduler_v1.Job.pb(_copy(current))
        source = scheduler_v1.Job.pb(request.job)
        if request.update_mask.paths:
            mask = field_mask_pb2.FieldMask(paths=list(request.update_mask.paths))
            if not mask.IsValidForDescriptor(updated.DESCRIPTOR):
                raise _invalid(f"Invalid update_mask: {list(mask.paths)}")
            mask.MergeMessage(source, updated, replace_message_field=True, replace_repeated_field=True)
        else:
            # Without a mask every field set in the request replaces the stored one (assumed).
            for descriptor, _value in source.ListFields():
                updated.ClearField(descriptor.name)
            updated.MergeFrom(source)
        job = scheduler_v1.Job.wrap(updated)
        job.name, job.state = current.name, current.state  # output-only / not updatable here
        self._apply_scheduler_defaults(job)
        job.user_update_time = _now()
        self.scheduler_jobs[job.name] = job
        return job

    def _delete_sjob(self, request: scheduler_v1.DeleteJobRequest) -> empty_pb2.Empty:
        self._scheduler_job(request.name)
        del self.scheduler_jobs[request.name]
        return empty_pb2.Empty()

    def _get_sjob(self, request: scheduler_v1.GetJobRequest) -> scheduler_v1.Job:
        return self._scheduler_job(request.name)

    def _list_sjobs(self, request: scheduler_v1.ListJobsRequest) -> scheduler_v1.ListJobsResponse:
        """Every job under the parent, in one page (the fake never paginates)."""
        prefix = f"{request.parent}/jobs/"
        return scheduler_v1.ListJobsResponse(
            jobs=[job for name, job in self.scheduler_jobs.items() if name.startswith(prefix)]
        )

    def _pause_sjob(self, request: scheduler_v1.PauseJobRequest) -> scheduler_v1.Job:
        return self._transition(request.name, scheduler_v1.Job.State.ENABLED, scheduler_v1.Job.State.PAUSED)

    def _resume_sjob(self, request: scheduler_v1.ResumeJobRequest) -> scheduler_v1.Job:
        return self._transition(request.name, scheduler_v1.Job.State.PAUSED, scheduler_v1.Job.State.ENABLED)

    def _run_sjob(self, request: scheduler_v1.RunJobRequest) -> scheduler_v1.Job:
        job = self._scheduler_job(request.name)
        job.last_attempt_time = _now()
        return job

    def _transition(
        self, name: str, required: scheduler_v1.Job.State, target: scheduler_v1.Job.State
    ) -> scheduler_v1.Job:
        job = self._scheduler_job(name)
        if job.state != required:
            state = scheduler_v1.Job.State(job.state).name
            raise FakeRpcError(
                grpc.StatusCode.FAILED_PRECONDITION, f"Job {name} is {state}; this needs {required.name}."
            )
        job.state = target
        job.user_update_time = _now()
        return job

    def _scheduler_job(self, name: str) -> scheduler_v1.Job:
        if name not in self.scheduler_jobs:
            raise _not_found(f"Job {name} not found.")
        return self.scheduler_jobs[name]

    @staticmethod
    def _apply_scheduler_defaults(job: scheduler_v1.Job) -> None:
        """Validate an HTTP-target job and fill Cloud Scheduler's documented defaults."""
        if "http_target" not in job:
            raise _invalid("The fake supports HTTP targets only.")
        if not job.schedule:
            raise _invalid("schedule is required.")
        uri = urlsplit(job.http_target.uri)
        if uri.scheme not in {"http", "https"} or not uri.netloc:
            raise _invalid(f"Invalid uri: {job.http_target.uri!r}")
        if not job.http_target.http_method:
            job.http_target.http_method = scheduler_v1.HttpMethod.POST
        if "attempt_deadline" not in job:
            job.attempt_deadline = datetime.timedelta(minutes=3)
        elif not datetime.timedelta(seconds=15) <= job.attempt_deadline <= datetime.timedelta(minutes=30):
            raise _invalid("attempt_deadline must be in [15s, 30m].")
        retry = job.retry_config
        if not 0 <= retry.retry_count <= 5:
            raise _invalid("retry_count must be in [0, 5].")
        if "min_backoff_duration" not in retry:
            retry.min_backoff_duration = datetime.timedelta(seconds=5)
        if "max_backoff_duration" not in retry:
            retry.max_backoff_duration = datetime.timedelta(hours=1)
        if not retry.max_doublings:
            retry.max_doublings = 5
        job.retry_config = retry
