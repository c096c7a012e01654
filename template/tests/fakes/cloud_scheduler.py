"""The Cloud Scheduler API fake: HTTP-target jobs, their states and forced runs.

CreateJob, UpdateJob (with or without update_mask), DeleteJob, GetJob, ListJobs, PauseJob (needs
ENABLED), ResumeJob (needs PAUSED), RunJob; FAILED_PRECONDITION otherwise. Defaults and ranges
(attempt_deadline 3 min in [15 s, 30 min]; retry_count 0 to 5; backoff 5 s / 1 h / 5 doublings) are
those of https://cloud.google.com/scheduler/docs/reference/rpc/google.cloud.scheduler.v1#job and
#retryconfig. RunJob emits ``scheduler_run`` (the emulator's pusher fires the job then).
"""

from __future__ import annotations

import datetime
import re
import secrets
from urllib.parse import urlsplit

import grpc
from google.cloud import scheduler_v1
from google.protobuf import empty_pb2, field_mask_pb2

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

SCHEDULER = "google.cloud.scheduler.v1.CloudScheduler"


def schedule_time_header(when: datetime.datetime) -> str:
    """``X-CloudScheduler-ScheduleTime``: RFC 3339 in UTC ("Zulu")."""
    when = when.astimezone(datetime.UTC)
    timespec = "milliseconds" if when.microsecond else "seconds"
    return when.isoformat(timespec=timespec).replace("+00:00", "Z")


class CloudSchedulerFake(FakeGrpcServer):
    """Cloud Scheduler's state (``scheduler_jobs``) and RPCs."""

    def _reset_service(self) -> None:
        super()._reset_service()
        self.scheduler_jobs: dict[str, scheduler_v1.Job] = {}

    def _service_rpcs(self) -> list[Rpc]:
        sch = scheduler_v1
        return [
            *super()._service_rpcs(),
            (SCHEDULER, "CreateJob", sch.CreateJobRequest, plus(sch.Job), self._create_sjob),
            (SCHEDULER, "UpdateJob", sch.UpdateJobRequest, plus(sch.Job), self._update_sjob),
            (SCHEDULER, "DeleteJob", sch.DeleteJobRequest, raw, self._delete_sjob),
            (SCHEDULER, "GetJob", sch.GetJobRequest, plus(sch.Job), self._get_sjob),
            (SCHEDULER, "ListJobs", sch.ListJobsRequest, plus(sch.ListJobsResponse), self._list_sjobs),
            (SCHEDULER, "PauseJob", sch.PauseJobRequest, plus(sch.Job), self._pause_sjob),
            (SCHEDULER, "ResumeJob", sch.ResumeJobRequest, plus(sch.Job), self._resume_sjob),
            (SCHEDULER, "RunJob", sch.RunJobRequest, plus(sch.Job), self._run_sjob),
        ]

    # --- what Google delivers back -----------------------------------------------------------

    def scheduler_push(
        self, job: str | None = None, *, schedule_time: datetime.datetime | None = None
    ) -> Push:
        """The HTTP request Cloud Scheduler sends when a job fires (default: the last job created).

        ``schedule_time`` is the slot being fired (default: now), sent as RFC 3339 UTC.
        Headers: https://cloud.google.com/scheduler/docs/reference/rpc/google.cloud.scheduler.v1#httptarget
        """
        with self._lock:
            if job is None:
                if not self.scheduler_jobs:
                    raise LookupError("no Cloud Scheduler job exists")
                job = next(reversed(self.scheduler_jobs))
            target = self._scheduler_job(job).http_target
            headers = dict(target.headers)
            if target.body and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/octet-stream"
            headers.update(
                {
                    "User-Agent": "Google-Cloud-Scheduler",
                    "X-CloudScheduler": "true",
                    "X-CloudScheduler-JobName": short(job),
                    "X-CloudScheduler-ScheduleTime": schedule_time_header(schedule_time or now()),
                }
            )
            if "oidc_token" in target:
                audience = target.oidc_token.audience or target.uri
                headers["Authorization"] = f"Bearer {self._mint(audience, target.oidc_token)}"
            method = scheduler_v1.HttpMethod(target.http_method or scheduler_v1.HttpMethod.POST).name
            return Push(method, target.uri, target.body, headers)

    # --- RPCs --------------------------------------------------------------------------------

    def _create_sjob(self, request: scheduler_v1.CreateJobRequest) -> scheduler_v1.Job:
        if not re.fullmatch(r"projects/[^/]+/locations/[^/]+", request.parent):
            raise invalid(f"Invalid parent: {request.parent!r}")
        job = copy(request.job)
        if not job.name:
            job.name = f"{request.parent}/jobs/{secrets.token_hex(8)}"
        if not re.fullmatch(rf"{re.escape(request.parent)}/jobs/[A-Za-z0-9_-]{{1,500}}", job.name):
            raise invalid(f"Invalid job name: {job.name!r}")
        if job.name in self.scheduler_jobs:
            raise FakeRpcError(grpc.StatusCode.ALREADY_EXISTS, f"Job {job.name} already exists.")
        self._apply_scheduler_defaults(job)
        job.state = scheduler_v1.Job.State.ENABLED
        job.user_update_time = now()
        self.scheduler_jobs[job.name] = job
        return job

    def _update_sjob(self, request: scheduler_v1.UpdateJobRequest) -> scheduler_v1.Job:
        current = self._scheduler_job(request.job.name)
        updated = scheduler_v1.Job.pb(copy(current))
        source = scheduler_v1.Job.pb(request.job)
        if request.update_mask.paths:
            mask = field_mask_pb2.FieldMask(paths=list(request.update_mask.paths))
            if not mask.IsValidForDescriptor(updated.DESCRIPTOR):
                raise invalid(f"Invalid update_mask: {list(mask.paths)}")
            mask.MergeMessage(source, updated, replace_message_field=True, replace_repeated_field=True)
        else:
            # Without a mask every field set in the request replaces the stored one (assumed).
            for descriptor, _value in source.ListFields():
                updated.ClearField(descriptor.name)
            updated.MergeFrom(source)
        job = scheduler_v1.Job.wrap(updated)
        job.name, job.state = current.name, current.state  # output-only / not updatable here
        self._apply_scheduler_defaults(job)
        job.user_update_time = now()
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
        job.last_attempt_time = now()
        self._emit("scheduler_run", job.name)
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
        job.user_update_time = now()
        return job

    def _scheduler_job(self, name: str) -> scheduler_v1.Job:
        if name not in self.scheduler_jobs:
            raise not_found(f"Job {name} not found.")
        return self.scheduler_jobs[name]

    @staticmethod
    def _apply_scheduler_defaults(job: scheduler_v1.Job) -> None:
        """Validate an HTTP-target job and fill Cloud Scheduler's documented defaults."""
        if "http_target" not in job:
            raise invalid("The fake supports HTTP targets only.")
        if not job.schedule:
            raise invalid("schedule is required.")
        uri = urlsplit(job.http_target.uri)
        if uri.scheme not in {"http", "https"} or not uri.netloc:
            raise invalid(f"Invalid uri: {job.http_target.uri!r}")
        if not job.http_target.http_method:
            job.http_target.http_method = scheduler_v1.HttpMethod.POST
        if "attempt_deadline" not in job:
            job.attempt_deadline = datetime.timedelta(minutes=3)
        elif not datetime.timedelta(seconds=15) <= job.attempt_deadline <= datetime.timedelta(minutes=30):
            raise invalid("attempt_deadline must be in [15s, 30m].")
        retry = job.retry_config
        if not 0 <= retry.retry_count <= 5:
            raise invalid("retry_count must be in [0, 5].")
        if "min_backoff_duration" not in retry:
            retry.min_backoff_duration = datetime.timedelta(seconds=5)
        if "max_backoff_duration" not in retry:
            retry.max_backoff_duration = datetime.timedelta(hours=1)
        if not retry.max_doublings:
            retry.max_doublings = 5
        job.retry_config = retry
