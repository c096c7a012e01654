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

* Cron ticking (``tick()``): each ENABLED job fires at every slot of its unix-cron ``schedule`` in
  its ``time_zone`` (https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules), with
  that slot as ScheduleTime; a slot due while the job's previous firing still runs waits for it
  ("execution n+1 never starts before execution n has finished", reference §5.2). Slots are
  computed with croniter, the library the project already depends on for cron.

Durations are compressed by the clock, and so is the passing of slots while ``tick()`` runs: the
emulated time starts at the real time and runs ``clock.factor`` times faster.
"""

from __future__ import annotations

import datetime
import threading
import time
import zoneinfo
from dataclasses import dataclass, field

import requests
from croniter import croniter
from google.cloud import scheduler_v1

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
        self._ticking = threading.Event()

    def start(self) -> CloudSchedulerPusher:
        self.fake.on("scheduler_run", lambda name: self.fire(name))
        return self

    def stop(self) -> None:
        self._ticking.clear()
        while True:
            with self._lock:
                pending = [thread for thread in self._threads if thread.is_alive()]
            if not pending:
                return
            for thread in pending:
                thread.join()

    def tick(self) -> None:
        """Start firing every ENABLED job at its cron slots, on the compressed clock, until ``stop()``."""
        self._ticking.set()
        thread = threading.Thread(target=self._tick, name="scheduler-cron")
        with self._lock:
            self._threads.append(thread)
            thread.start()

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

    def _tick(self) -> None:
        start, real_start = now(), self.clock.monotonic()
        upcoming: dict[str, datetime.datetime] = {}
        running: dict[str, threading.Thread] = {}
        while self._ticking.is_set():
            emulated_now = start + self.clock.emulated_since(real_start)
            with self.fake._lock:
                jobs = {
                    name: (job.schedule, job.time_zone or "UTC")
                    for name, job in self.fake.scheduler_jobs.items()
                    if job.state == scheduler_v1.Job.State.ENABLED
                }
            for name, (schedule, time_zone) in jobs.items():
                if name not in upcoming:
                    upcoming[name] = _next_slot(schedule, time_zone, start)
                busy = name in running and running[name].is_alive()
                if upcoming[name] <= emulated_now and not busy:
                    running[name] = self.fire(name, upcoming[name])
                    upcoming[name] = _next_slot(schedule, time_zone, upcoming[name])
            time.sleep(0.01)

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


def _next_slot(schedule: str, time_zone: str, after: datetime.datetime) -> datetime.datetime:
    """The first slot of a unix-cron schedule strictly after ``after``, in UTC."""
    local = after.astimezone(zoneinfo.ZoneInfo(time_zone))
    return croniter(schedule, local).get_next(datetime.datetime).astimezone(datetime.UTC)
