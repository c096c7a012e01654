"""Cloud Scheduler's pusher: a job firing becomes real HTTP requests to its ``http_target``.

What it models (https://cloud.google.com/scheduler/docs/reference/rpc/google.cloud.scheduler.v1#httptarget,
#retryconfig, and https://cloud.google.com/scheduler/docs/creating#retry):

* A firing (``RunJob``, which "forces a job to run now", or ``fire(job, schedule_time)`` for a cron
  slot) sends the job's ``http_target`` with ``User-Agent: Google-Cloud-Scheduler``,
  ``X-CloudScheduler: true``, ``X-CloudScheduler-JobName``, ``X-CloudScheduler-ScheduleTime``
  (RFC 3339 UTC) and a real OIDC ID token for ``oidc_token.audience`` (default: the URI).
* 2xx acknowledges; any other status, or no answer within ``attempt_deadline``, fails the attempt,
  which is retried ``retry_count`` times with the backoff of backoff.py. Every retry of a slot carries the
  same ScheduleTime.

Durations are compressed by the clock. Cron ticking is not modelled: tests fire slots explicitly.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field

import requests

from tests.fakes.cloud_scheduler import CloudSchedulerFake
from tests.fakes.emulator.backoff import backoff
from tests.fakes.emulator.clock import EmulatorClock
from tests.fakes.emulator.front_end import FrontEnd
from tests.fakes.grpc_server import now, short


@dataclass
class Firing:
    """One HTTP attempt of a job's slot (the audit log)."""

    job: str  # short job id
    schedule_time: str  # the header value
    attempt: int  # 0 = first
    status: int | None = None
    error: str = ""


@dataclass
class CloudSchedulerPusher:
    fake: CloudSchedulerFake
    clock: EmulatorClock
    front_end: FrontEnd = field(default_factory=FrontEnd)

    def __post_init__(self) -> None:
        self.audit: list[Firing] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> CloudSchedulerPusher:
        self.fake.on("scheduler_run", lambda name: self.fire(name))
        return self

    def stop(self) -> None:
        for thread in self._threads:
            thread.join()

    def fire(self, job: str, schedule_time: datetime.datetime | str | None = None) -> threading.Thread:
        """Fire one slot of ``job`` (default: now) in the background; join the thread to wait.

        A string is sent verbatim as ``X-CloudScheduler-ScheduleTime`` (another spelling of a slot).
        """
        thread = threading.Thread(
            target=self._fire, args=(job, schedule_time or now()), name="scheduler-fire"
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def firings(self, job: str | None = None) -> list[Firing]:
        with self._lock:
            return [f for f in self.audit if job is None or f.job == short(job)]

    def _fire(self, job: str, schedule_time: datetime.datetime | str) -> None:
        with self.fake._lock:
            config = self.fake.scheduler_jobs[job]
            retry = config.retry_config
            deadline = config.attempt_deadline
        for attempt in range(retry.retry_count + 1):
            if isinstance(schedule_time, str):
                push = self.fake.scheduler_push(job)
                push.headers["X-CloudScheduler-ScheduleTime"] = schedule_time
            else:
                push = self.fake.scheduler_push(job, schedule_time=schedule_time)
            firing = Firing(short(job), push.headers["X-CloudScheduler-ScheduleTime"], attempt)
            with self._lock:
                self.audit.append(firing)
            try:
                firing.status = self.front_end.send(
                    push, timeout=self.clock.real_seconds(deadline)
                ).status_code
            except requests.Timeout:
                firing.error = "DEADLINE_EXCEEDED"
            except requests.ConnectionError as exc:
                firing.error = f"UNAVAILABLE: {type(exc).__name__}"
            if firing.status is not None and 200 <= firing.status < 300:
                return
            if attempt < retry.retry_count:
                wait = backoff(
                    retry.min_backoff_duration, retry.max_backoff_duration, retry.max_doublings, attempt + 1
                )
                time.sleep(self.clock.real_seconds(wait))
