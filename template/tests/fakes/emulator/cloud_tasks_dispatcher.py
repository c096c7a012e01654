"""Cloud Tasks' dispatcher: every task of the fake becomes real HTTP requests to the service.

What it models (each rule from Google's pages, cited where it applies):

* Dispatch at ``schedule_time`` (real time), as a request with the task's headers minus those
  Cloud Tasks owns, plus ``User-Agent: Google-Cloud-Tasks``, ``X-CloudTasks-QueueName``,
  ``-TaskName``, ``-TaskRetryCount`` (earlier attempts, 5xx and timeouts included),
  ``-TaskExecutionCount`` (earlier attempts answered with a non-5xx status), ``-TaskETA`` and, on
  retries, ``-TaskPreviousResponse`` and ``-TaskRetryReason`` (empty for HTTP targets), and a real
  OIDC ID token (``Authorization: Bearer``). Headers and counts:
  https://cloud.google.com/tasks/docs/creating-http-target-tasks and the golden recording in the
  reference (503 → 404 → 200: retry counts 0/1/2, execution counts 0/0/1).
* 2xx acknowledges (the task is deleted); any other status, or no answer before the task's
  ``dispatch_deadline``, is a failed attempt and the task is retried
  (https://cloud.google.com/python/docs/reference/cloudtasks/latest/google.cloud.tasks_v2.types.Task,
  field ``dispatch_deadline``: "the request is cancelled and the attempt is marked as a
  DEADLINE_EXCEEDED failure"). The abandoned request may still be running in the service when the
  next attempt is dispatched: nothing stops it.
* Retries follow the task's ``retry_config`` or else its queue's
  (https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#RetryConfig):
  backoff as in backoff.py; retrying stops only once BOTH
  ``max_attempts`` (-1 = unlimited) and ``max_retry_duration`` (0 = no time limit) are exhausted
  (https://docs.cloud.google.com/dotnet/docs/reference/Google.Cloud.Tasks.V2/latest/Google.Cloud.Tasks.V2.RetryConfig,
  MaxAttempts: "stops retrying only when max_attempts and max_retry_duration are both satisfied").
* System throttling: on 429 or 503 "Cloud Tasks will use a higher backoff rate. The retry
  specified in the Retry-After HTTP response header is considered"
  (https://cloud.google.com/python/docs/reference/cloudtasks/latest/google.cloud.tasks_v2.types.HttpRequest).
  Modelled (the magnitude is ours): the whole queue holds back for twice the task's backoff or
  the Retry-After, whichever is longer; each throttle is recorded in ``throttles``.
* At-least-once delivery: ``duplicate(task)`` sends one more copy of the task's latest attempt
  while it runs, as Google may ("in some rare circumstances, multiple task execution is
  possible", https://cloud.google.com/tasks/docs/concepts).

Durations (backoffs, deadlines, retry duration, Retry-After) are compressed by the clock.
Not modelled: rate limits and ramp-up, queue pause, redirects (``drop_task`` on the fake plays a purge).
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import math
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from google.cloud import tasks_v2

from tests.fakes.cloud_tasks import CloudTasksFake
from tests.fakes.emulator.backoff import backoff
from tests.fakes.emulator.clock import EmulatorClock
from tests.fakes.emulator.front_end import FrontEnd
from tests.fakes.grpc_server import now, short

# HTTP status → the RPC status Cloud Tasks records in Task.last_attempt (reference §8.3).
_RPC_STATUS = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 499: 1, 501: 12, 503: 14, 504: 4}
_THROTTLING = {429, 503}


@dataclass
class Attempt:
    """One dispatch as the emulator sent it (the audit log)."""

    task: str  # short task id
    number: int  # 1-based dispatch number of this task (a duplicate repeats its original's)
    headers: dict[str, str]
    started: float  # monotonic
    ended: float | None = None
    status: int | None = None  # None: no answer (deadline exceeded or connection lost)
    error: str = ""
    retry_after: str | None = None
    duplicate: bool = False

    @property
    def retry_count(self) -> int:
        return int(self.headers["X-CloudTasks-TaskRetryCount"])


@dataclass
class Throttle:
    queue: str
    status: int
    seconds: float  # real seconds the queue held back


@dataclass
class _State:
    name: str
    due: float
    dispatches: int = 0
    responses: int = 0  # non-5xx answers
    previous: int | None = None
    first_attempt: float | None = None
    outcome: str | None = None  # "succeeded", "exhausted" or "deleted"
    in_flight: bool = False


@dataclass
class CloudTasksDispatcher:
    """Subscribes to the fake's ``task_created``/``task_deleted`` and delivers every task."""

    fake: CloudTasksFake
    clock: EmulatorClock
    front_end: FrontEnd = field(default_factory=FrontEnd)
    workers: int = 8

    def __post_init__(self) -> None:
        self.audit: list[Attempt] = []
        self.throttles: list[Throttle] = []
        self._states: dict[str, _State] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._queue_hold: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cloud-tasks-dispatch")
        self._thread = threading.Thread(target=self._loop, name="cloud-tasks-scheduler", daemon=True)

    def start(self) -> CloudTasksDispatcher:
        self.fake.on("task_created", self._created)
        self.fake.on("task_deleted", self._deleted)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- test API --------------------------------------------------------------------------

    def attempts(self, task: str | None = None) -> list[Attempt]:
        """The audit log, or one task's part of it (full or short name)."""
        with self._cond:
            return [a for a in self.audit if task is None or a.task == short(task)]

    def outcome(self, task: str) -> str | None:
        with self._cond:
            state = self._states.get(task)
            return state.outcome if state else None

    def settled(self, tasks: Iterable[str] | None = None) -> bool:
        """Whether the tasks (default: all) reached an outcome and no attempt is in flight."""
        with self._cond:
            names = list(self._states) if tasks is None else list(tasks)
            return all(
                n in self._states and self._states[n].outcome and not self._states[n].in_flight for n in names
            )

    def duplicate(self, task: str) -> None:
        """Deliver one more copy of the task's latest attempt now (at-least-once delivery)."""
        with self._cond:
            state = self._states[task]
            number = max(1, state.dispatches)
        self._pool.submit(self._send, state, number, duplicate=True)

    # --- events from the fake ----------------------------------------------------------------

    def _created(self, name: str) -> None:
        task = next(t for t in reversed(self.fake.created_tasks) if t.name == name)
        delay = max(0.0, (task.schedule_time - now()).total_seconds())
        with self._cond:
            state = self._states[name] = _State(name, self.clock.monotonic() + delay)
            self._push(state)

    def _deleted(self, name: str) -> None:
        with self._cond:
            state = self._states.get(name)
            if state is not None and state.outcome is None and not state.in_flight:
                state.outcome = "deleted"

    # --- dispatching -------------------------------------------------------------------------

    def _push(self, state: _State) -> None:
        heapq.heappush(self._heap, (state.due, next(self._order), state.name))
        self._cond.notify_all()

    def _loop(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, name = self._heap[0]
                wait = due - self.clock.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                state = self._states[name]
                if state.outcome is not None:
                    continue
                if not self.fake.is_live(name):
                    state.outcome = "deleted"
                    continue
                hold = self._queue_hold.get(self._queue(name), 0.0)
                if hold > self.clock.monotonic():
                    state.due = hold
                    self._push(state)
                    continue
                state.dispatches += 1
                state.in_flight = True
                if state.first_attempt is None:
                    state.first_attempt = self.clock.monotonic()
                self._pool.submit(self._send, state, state.dispatches)

    def _send(self, state: _State, number: int, *, duplicate: bool = False) -> None:
        with self._cond:
            previous = state.previous if number > 1 else None
            retry_count = number - 1
            execution_count = state.responses
        push = self.fake.task_push(
            state.name, retry_count=retry_count, execution_count=execution_count, previous_response=previous
        )
        task = next(t for t in reversed(self.fake.created_tasks) if t.name == state.name)
        attempt = Attempt(
            short(state.name), number, push.headers, self.clock.monotonic(), duplicate=duplicate
        )
        with self._cond:
            self.audit.append(attempt)
        try:
            response = self.front_end.send(push, timeout=self.clock.real_seconds(task.dispatch_deadline))
        except requests.Timeout:
            attempt.error = "DEADLINE_EXCEEDED"
        except requests.ConnectionError as exc:
            attempt.error = f"UNAVAILABLE: {type(exc).__name__}"
        except Exception as exc:  # the emulator's own failure: recorded, never lost in the pool
            attempt.error = f"EMULATOR: {exc!r}"
        else:
            attempt.status = response.status_code
            attempt.retry_after = response.headers.get("Retry-After")
        attempt.ended = self.clock.monotonic()
        if not duplicate:
            self._settle(state, attempt)

    def _settle(self, state: _State, attempt: Attempt) -> None:
        status = attempt.status
        self._record(state, attempt)
        with self._cond:
            state.in_flight = False
            state.previous = status
            if status is not None and status < 500:
                state.responses += 1
            if status is not None and 200 <= status < 300:
                state.outcome = "succeeded"
                self.fake.finish_task(state.name)
                return
            if not self.fake.is_live(state.name):
                state.outcome = "deleted"
                return
            config = self.fake.retry_config(state.name)
            if self._exhausted(state, config):
                state.outcome = "exhausted"
                self.fake.finish_task(state.name)
                return
            delay = self.clock.real_seconds(task_backoff(config, state.dispatches))
            if status in _THROTTLING:
                delay = max(2 * delay, self.clock.real_seconds(_retry_after(attempt.retry_after)))
                queue = self._queue(state.name)
                self._queue_hold[queue] = max(
                    self._queue_hold.get(queue, 0.0), self.clock.monotonic() + delay
                )
                self.throttles.append(Throttle(queue, status, delay))
            state.due = self.clock.monotonic() + delay
            self._push(state)

    def _exhausted(self, state: _State, config: tasks_v2.RetryConfig) -> bool:
        attempts_done = config.max_attempts != -1 and state.dispatches >= (config.max_attempts or 100)
        limit = config.max_retry_duration
        assert state.first_attempt is not None
        duration_done = not limit or self.clock.emulated_since(state.first_attempt) >= limit
        return attempts_done and duration_done

    def _record(self, state: _State, attempt: Attempt) -> None:
        """Keep the fake's Task counters as GetTask shows them (dispatch/response count, attempts)."""
        status = attempt.status
        code = (
            4
            if status is None
            else _RPC_STATUS.get(status, 0 if status < 300 else 13 if status >= 500 else 9)
        )
        record = tasks_v2.Attempt(
            schedule_time=now(), dispatch_time=now(), response_time=now(), response_status={"code": code}
        )
        with self.fake._lock:
            task = self.fake.tasks.get(state.name)
            if task is None:
                return
            task.dispatch_count = state.dispatches
            task.response_count = state.responses + (1 if status is not None and status < 500 else 0)
            if "first_attempt" not in task:
                task.first_attempt = record
            task.last_attempt = record

    @staticmethod
    def _queue(name: str) -> str:
        return name.rsplit("/tasks/", 1)[0]


def task_backoff(config: tasks_v2.RetryConfig, retry: int) -> datetime.timedelta:
    """The wait before retry ``retry`` under a Cloud Tasks RetryConfig (unset fields: the defaults)."""
    minimum = config.min_backoff or datetime.timedelta(seconds=0.1)
    maximum = config.max_backoff or datetime.timedelta(hours=1)
    return backoff(minimum, maximum, config.max_doublings, retry)


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds form; an HTTP date is not sent by the app)."""
    try:
        return max(0.0, float(value)) if value is not None and math.isfinite(float(value)) else 0.0
    except ValueError:
        return 0.0
