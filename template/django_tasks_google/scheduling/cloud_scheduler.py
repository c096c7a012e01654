"""Cloud Scheduler jobs of scheduled tasks: build the wanted job, and bring Google's copy in line.

One ``ScheduledTask`` ↔ one HTTP-target job that POSTs ``task_id=<pk>&backend=<alias>`` to the
backend's ``schedule_url`` with an OIDC token for ``oidc_service_account`` (audience set
explicitly: left empty, Cloud Scheduler would use the URL with its path, which Cloud Run rejects).

What ``JobSync`` guarantees, each a bug of the published package:

* Pausing compares with ``PAUSED`` (paused by a user). ``DISABLED`` means "disabled by the system
  after errors" and cannot be set or resumed by us; it is reported, not toggled.
* The job of a renamed task (or one moved to another backend or project) is deleted once the new
  one exists, so no slot is fired twice by two jobs.
* A job of the same name that targets another URL belongs to another service: it is never
  adopted or overwritten.

Every RPC passes an explicit timeout; create/update/pause/resume are not retried by the client
library (they are not idempotent), get/list/delete are.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .. import gcp
from ..backends import push_mac

if TYPE_CHECKING:
    from google.api_core import exceptions as api_exceptions
    from google.cloud import scheduler_v1

    from ..backends.base import DjangoTasksGoogleBackend
    from ..models import ScheduledTask

logger = logging.getLogger(__name__)

# A failed push is retried (the endpoint is idempotent per slot, so a retry never enqueues twice)
# with backoff, but never past the next slot: Cloud Scheduler stops retrying when it arrives.
RETRY_COUNT = 3
MIN_BACKOFF = timedelta(seconds=10)
MAX_BACKOFF = timedelta(minutes=5)
MAX_DOUBLINGS = 3
# The endpoint only stores a row and hands it to the backend; a minute covers a cold start.
ATTEMPT_DEADLINE = timedelta(minutes=1)

UPDATE_MASK = ["description", "schedule", "time_zone", "http_target", "retry_config", "attempt_deadline"]
JOB_ID_MAX_LENGTH = 500
_JOB_ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")


class SchedulerSyncError(Exception):
    """Cloud Scheduler refused a change, or a job could not be reconciled; the message says which."""


def job_id_for(name: str, prefix: str = "") -> str:
    """The Cloud Scheduler job id of a scheduled task: the prefix plus its name.

    Names are validated to job id characters; a legacy name with other characters is turned into a
    valid id with a short hash, so two such names never map to the same job.
    """
    candidate = f"{prefix}{name}"
    if _JOB_ID_CHARS.fullmatch(candidate) and len(candidate) <= JOB_ID_MAX_LENGTH:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", candidate).strip("-")[: JOB_ID_MAX_LENGTH - 11]
    return f"{cleaned}-{digest}"


def location_path(backend: DjangoTasksGoogleBackend) -> str:
    return f"projects/{backend.project_id}/locations/{backend.location}"


def job_name_for(scheduled_task: ScheduledTask, backend: DjangoTasksGoogleBackend) -> str:
    """The full resource name of the task's job under ``backend``'s project and location."""
    return f"{location_path(backend)}/jobs/{job_id_for(scheduled_task.name, backend.scheduler_job_prefix)}"


def wanted_job(scheduled_task: ScheduledTask, backend: DjangoTasksGoogleBackend) -> scheduler_v1.Job:
    """The job as it should be in Cloud Scheduler (its state is set separately: pause/resume)."""
    from google.cloud import scheduler_v1

    body = urlencode({"task_id": scheduled_task.pk, "backend": backend.alias}).encode()
    name = job_name_for(scheduled_task, backend)
    return scheduler_v1.Job(
        name=name,
        description=scheduled_task.description,
        schedule=scheduled_task.schedule,
        time_zone=scheduled_task.time_zone,
        http_target=scheduler_v1.HttpTarget(
            uri=backend.schedule_url,
            http_method=scheduler_v1.HttpMethod.POST,
            # Without it Cloud Scheduler sends application/octet-stream.
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                push_mac.HEADER: push_mac.for_job(backend, scheduled_task.pk, name),
            },
            body=body,
            oidc_token=scheduler_v1.OidcToken(
                service_account_email=backend.oidc_service_account, audience=backend.oidc_audience
            ),
        ),
        retry_config=scheduler_v1.RetryConfig(
            retry_count=RETRY_COUNT,
            min_backoff_duration=MIN_BACKOFF,
            max_backoff_duration=MAX_BACKOFF,
            max_doublings=MAX_DOUBLINGS,
        ),
        attempt_deadline=ATTEMPT_DEADLINE,
    )


@dataclass
class SyncReport:
    """What a sync did (or, in a dry run, would do), in words an operator can read."""

    job_name: str | None = None
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(self.actions + self.warnings) or "unchanged"


class JobSync:
    """Cloud Scheduler operations for the jobs of one backend (its endpoint, project, location).

    With ``dry_run`` only reads are made; the report says what would change.
    """

    def __init__(self, backend: DjangoTasksGoogleBackend, *, dry_run: bool = False) -> None:
        self.backend = backend
        self.dry_run = dry_run
        self.client = gcp.cloud_scheduler_client(backend.api_endpoint)

    def apply(
        self, job: scheduler_v1.Job, *, enabled: bool, owned_name: str | None, report: SyncReport
    ) -> bool:
        """Create or update ``job`` and set its state; returns whether it was created now.

        ``owned_name`` is the job name this task had before: a job found under the wanted name that
        targets another URL is adopted only if it is ours already.
        """
        from google.cloud import scheduler_v1

        existing = self._get(job.name)
        created = existing is None
        if existing is None:
            report.actions.append(f"create {job.name}")
            current = job if self.dry_run else self._call("create", job.name, self._create, job)
        else:
            if existing.http_target.uri != job.http_target.uri and owned_name != job.name:
                raise SchedulerSyncError(
                    f"Cloud Scheduler job {job.name} already exists and targets "
                    f"{existing.http_target.uri or 'something else'}, not {job.http_target.uri}: it belongs "
                    "to another service. Rename the scheduled task or set the backend's scheduler_job_prefix."
                )
            current = existing
            update_failed = existing.state == scheduler_v1.Job.State.UPDATE_FAILED
            if update_failed or _differs(existing, job):
                report.actions.append(f"update {job.name}")
                if not self.dry_run:
                    current = self._call("update", job.name, self._update, job)
        try:
            self._set_state(current, enabled=enabled, report=report)
        except SchedulerSyncError:
            if created:
                self.undo_create(job.name)
            raise
        return created

    def undo_create(self, name: str) -> None:
        """Delete a job this sync created, after a later step failed (best effort: --prune
        catches what is left)."""
        if self.dry_run:
            return
        try:
            self.delete(name, SyncReport())
        except SchedulerSyncError:
            logger.exception("Could not delete Cloud Scheduler job %s after a failed sync", name)

    def delete(self, name: str, report: SyncReport) -> None:
        """Delete a job; one that is already gone is fine."""
        from google.api_core import exceptions as api_exceptions

        report.actions.append(f"delete {name}")
        if self.dry_run:
            return
        try:
            self.client.delete_job(name=name, timeout=gcp.DEFAULT_TIMEOUT)
        except api_exceptions.NotFound:
            report.actions[-1] += " (already gone)"
        except api_exceptions.GoogleAPICallError as exc:
            raise SchedulerSyncError(f"Cloud Scheduler could not delete {name}: {_describe(exc)}") from exc

    def jobs_targeting(self, uris: Iterable[str]) -> list[scheduler_v1.Job]:
        """The jobs of this backend's project and location that push to one of ``uris``."""
        from google.api_core import exceptions as api_exceptions

        wanted = set(uris)
        try:
            jobs = list(
                self.client.list_jobs(parent=location_path(self.backend), timeout=gcp.DEFAULT_TIMEOUT)
            )
        except api_exceptions.GoogleAPICallError as exc:
            raise SchedulerSyncError(
                f"Cloud Scheduler could not list the jobs of {location_path(self.backend)}: {_describe(exc)}"
            ) from exc
        return [job for job in jobs if "http_target" in job and job.http_target.uri in wanted]

    # --- internals -------------------------------------------------------------------------------

    def _set_state(self, job: scheduler_v1.Job, *, enabled: bool, report: SyncReport) -> None:
        from google.cloud import scheduler_v1

        state = scheduler_v1.Job.State(job.state) if job.state else scheduler_v1.Job.State.ENABLED
        if enabled and state == scheduler_v1.Job.State.PAUSED:
            report.actions.append(f"resume {job.name}")
            if not self.dry_run:
                self._call(
                    "resume", job.name, self.client.resume_job, name=job.name, timeout=gcp.DEFAULT_TIMEOUT
                )
        elif not enabled and state == scheduler_v1.Job.State.ENABLED:
            report.actions.append(f"pause {job.name}")
            if not self.dry_run:
                self._call(
                    "pause", job.name, self.client.pause_job, name=job.name, timeout=gcp.DEFAULT_TIMEOUT
                )
        elif state == scheduler_v1.Job.State.DISABLED:
            report.warnings.append(
                f"Cloud Scheduler disabled {job.name} after errors; fix the cause, then re-enable it "
                "in the Cloud console"
            )

    def _get(self, name: str) -> scheduler_v1.Job | None:
        from google.api_core import exceptions as api_exceptions

        try:
            return self.client.get_job(name=name, timeout=gcp.DEFAULT_TIMEOUT)
        except api_exceptions.NotFound:
            return None
        except api_exceptions.GoogleAPICallError as exc:
            raise SchedulerSyncError(f"Cloud Scheduler could not read {name}: {_describe(exc)}") from exc

    def _create(self, job: scheduler_v1.Job) -> scheduler_v1.Job:
        parent = job.name.rsplit("/jobs/", 1)[0]
        return self.client.create_job(parent=parent, job=job, timeout=gcp.DEFAULT_TIMEOUT)

    def _update(self, job: scheduler_v1.Job) -> scheduler_v1.Job:
        return self.client.update_job(
            job=job, update_mask={"paths": UPDATE_MASK}, timeout=gcp.DEFAULT_TIMEOUT
        )

    @staticmethod
    def _call[R](verb: str, name: str, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        from google.api_core import exceptions as api_exceptions

        try:
            return function(*args, **kwargs)
        except api_exceptions.GoogleAPICallError as exc:
            raise SchedulerSyncError(f"Cloud Scheduler could not {verb} {name}: {_describe(exc)}") from exc


def _differs(existing: scheduler_v1.Job, wanted: scheduler_v1.Job) -> bool:
    return any(getattr(existing, path) != getattr(wanted, path) for path in UPDATE_MASK)


def _describe(exc: api_exceptions.GoogleAPICallError) -> str:
    """`PERMISSION_DENIED: <message>`: the gRPC status (`exc.code` is the HTTP status, a bare int
    for some errors), else the exception's class."""
    code = exc.grpc_status_code
    return f"{code.name if code is not None else type(exc).__name__}: {exc.message}"
