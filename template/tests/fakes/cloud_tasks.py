"""The Cloud Tasks API fake: queues and tasks, with the server-side rules the app meets.

CreateTask, GetTask, DeleteTask, GetQueue. Queues exist only once added with ``add_queue``.
Rules: unknown queue or task → NOT_FOUND; HTTP targets only; URL scheme http(s); unset method →
POST; a body only with POST/PUT/PATCH; an explicit name must be ``<queue>/tasks/<id>`` and a
duplicate (or a deleted name: Google keeps them for hours) → ALREADY_EXISTS; dispatch_deadline
in [15 s, 30 min], default 10 min; unset or past schedule_time → now; CreateTask/GetTask answer
the BASIC view (no body) unless FULL is asked for.
Sources: https://cloud.google.com/tasks/docs/creating-http-target-tasks and the
``CreateTaskRequest``/``Task`` docstrings of google-cloud-tasks.

``task_push`` builds the HTTP request Cloud Tasks sends for a task; the dispatcher
(emulator/cloud_tasks_dispatcher.py) sends such requests by itself.
"""

from __future__ import annotations

import datetime
import random
import re
from urllib.parse import urlsplit

import grpc
from google.cloud import tasks_v2
from google.protobuf import empty_pb2

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
from tests.fakes.push import Push

TASKS = "google.cloud.tasks.v2.CloudTasks"

# Headers Cloud Tasks controls itself; a task's own values for them are not forwarded.
CLOUD_TASKS_OWNED = re.compile(r"host|content-length|user-agent|x-google-.*|x-appengine-.*|x-cloudtasks-.*")
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
METHODS_WITH_BODY = {tasks_v2.HttpMethod.POST, tasks_v2.HttpMethod.PUT, tasks_v2.HttpMethod.PATCH}


class CloudTasksFake(FakeGrpcServer):
    """Cloud Tasks' state (``queues``, ``tasks``, ``created_tasks``, ``tombstones``) and RPCs."""

    def _reset_service(self) -> None:
        super()._reset_service()
        self.queues: dict[str, tasks_v2.Queue] = {}
        self.tasks: dict[str, tasks_v2.Task] = {}  # live tasks, FULL view
        self.created_tasks: list[tasks_v2.Task] = []  # every task ever created, FULL view
        self.tombstones: set[str] = set()  # deleted task names: not reusable

    def _service_rpcs(self) -> list[Rpc]:
        return [
            *super()._service_rpcs(),
            (TASKS, "CreateTask", tasks_v2.CreateTaskRequest, plus(tasks_v2.Task), self._create_task),
            (TASKS, "GetTask", tasks_v2.GetTaskRequest, plus(tasks_v2.Task), self._get_task),
            (TASKS, "DeleteTask", tasks_v2.DeleteTaskRequest, raw, self._delete_task),
            (TASKS, "GetQueue", tasks_v2.GetQueueRequest, plus(tasks_v2.Queue), self._get_queue),
        ]

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
        return copy(queue)

    def drop_task(self, name: str) -> None:
        """Make Cloud Tasks forget a live task, as a queue purge would (its name stays taken)."""
        with self._lock:
            self._task(name)
            del self.tasks[name]
            self.tombstones.add(name)

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
        of the previous attempt (retries only). Header semantics: the golden recording in the
        reference and https://cloud.google.com/tasks/docs/creating-http-target-tasks.
        """
        with self._lock:
            # Always the stored FULL view: a Task returned by CreateTask has no body.
            name = task.name if isinstance(task, tasks_v2.Task) else task
            task = next((t for t in reversed(self.created_tasks) if name in (None, t.name)), None)
            if task is None:
                raise LookupError(f"no task {name or ''} has been created")
            request = task.http_request
            headers = {k: v for k, v in request.headers.items() if not CLOUD_TASKS_OWNED.fullmatch(k.lower())}
            headers.update(
                {
                    "User-Agent": "Google-Cloud-Tasks",
                    "X-CloudTasks-QueueName": task.name.split("/")[5],
                    "X-CloudTasks-TaskName": short(task.name),
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
            body = request.body if request.http_method in METHODS_WITH_BODY else b""
            return Push(tasks_v2.HttpMethod(request.http_method).name, request.url, body, headers)

    def retry_config(self, task_name: str) -> tasks_v2.RetryConfig:
        """The retry config that applies to a task: its own (google-cloud-tasks ≥ 2.26), else its queue's."""
        with self._lock:
            task = next(t for t in reversed(self.created_tasks) if t.name == task_name)
            if "retry_config" in task:
                return copy(task.retry_config)
            queue = self.queues.get(task_name.rsplit("/tasks/", 1)[0])
            return copy(queue.retry_config) if queue is not None else tasks_v2.RetryConfig()

    def finish_task(self, name: str) -> None:
        """Cloud Tasks deletes a task once acknowledged (2xx) or out of retries; its name stays taken."""
        with self._lock:
            if self.tasks.pop(name, None) is not None:
                self.tombstones.add(name)

    def is_live(self, name: str) -> bool:
        with self._lock:
            return name in self.tasks

    # --- RPCs --------------------------------------------------------------------------------

    def _create_task(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:
        if request.parent not in self.queues:
            raise not_found(f"Queue {request.parent} does not exist.")
        task = copy(request.task)
        if "http_request" not in task:
            raise invalid("The fake supports HTTP targets only.")
        http = task.http_request
        if urlsplit(http.url).scheme not in {"http", "https"} or not urlsplit(http.url).netloc:
            raise invalid(f"Invalid url: {http.url!r}")
        if not http.http_method:
            http.http_method = tasks_v2.HttpMethod.POST
        if http.body and http.http_method not in METHODS_WITH_BODY:
            raise invalid("A body is allowed only with POST, PUT or PATCH.")
        if task.name:
            prefix = f"{request.parent}/tasks/"
            if not task.name.startswith(prefix) or not _TASK_ID.fullmatch(task.name[len(prefix) :]):
                raise invalid(f"Invalid task name: {task.name!r}")
            if task.name in self.tasks or task.name in self.tombstones:
                raise FakeRpcError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
        else:
            task.name = f"{request.parent}/tasks/{random.randrange(10**18, 10**19)}"
        if "dispatch_deadline" in task:
            if not datetime.timedelta(seconds=15) <= task.dispatch_deadline <= datetime.timedelta(minutes=30):
                raise invalid("dispatch_deadline must be in [15s, 30m].")
        else:
            task.dispatch_deadline = datetime.timedelta(minutes=10)
        created = now()
        if "schedule_time" not in task or task.schedule_time < created:
            task.schedule_time = created
        elif task.schedule_time > created + datetime.timedelta(days=30):
            raise invalid("schedule_time must be at most 30 days in the future.")
        task.create_time = created
        task.view = tasks_v2.Task.View.FULL
        self.tasks[task.name] = task
        self.created_tasks.append(task)
        self._emit("task_created", task.name)
        return self._task_view(task, request.response_view)

    def _get_task(self, request: tasks_v2.GetTaskRequest) -> tasks_v2.Task:
        return self._task_view(self._task(request.name), request.response_view)

    def _delete_task(self, request: tasks_v2.DeleteTaskRequest) -> empty_pb2.Empty:
        self._task(request.name)
        del self.tasks[request.name]
        self.tombstones.add(request.name)
        self._emit("task_deleted", request.name)
        return empty_pb2.Empty()

    def _get_queue(self, request: tasks_v2.GetQueueRequest) -> tasks_v2.Queue:
        if request.name not in self.queues:
            raise not_found(f"Queue {request.name} does not exist.")
        return self.queues[request.name]

    def _task(self, name: str) -> tasks_v2.Task:
        if name not in self.tasks:
            raise not_found(f"Task {name} does not exist.")
        return self.tasks[name]

    @staticmethod
    def _task_view(task: tasks_v2.Task, view: tasks_v2.Task.View) -> tasks_v2.Task:
        answer = copy(task)
        if view != tasks_v2.Task.View.FULL:
            answer.view = tasks_v2.Task.View.BASIC
            answer.http_request.body = b""
        return answer
