"""Every backend OPTION, declared once: frozen, typed dataclasses read from TASKS[alias]["OPTIONS"].

Each option is one dataclass field whose `option(...)` metadata says how it is read (kind,
default, bounds, the OPTIONS key when it differs from the attribute; the kinds are
option_reader.py's). `read_options()` reads them all and never raises: backends are instantiated
while task modules are imported, so a typo in OPTIONS must not crash the import; each problem is
collected and reported by `manage.py check`, naming the alias and the option. Rules that tie two
options together live in the class's `refine()`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Self
from urllib.parse import urlsplit

from .option_reader import OptionReader, option

# "my-project", or the legacy domain-scoped "example.com:my-project".
PROJECT_ID = re.compile(r"(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
# "us-central1", "europe-west4", "northamerica-northeast1".
LOCATION = re.compile(r"[a-z]+(?:-[a-z]+)+[0-9]+")
SERVICE_ACCOUNT = re.compile(r"[^@\s/]+@[^@\s/]+\.[^@\s/]+")
SCHEDULER_JOB_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,100}")

# Cloud Tasks accepts an HTTP task's dispatch_deadline between 15 seconds and 30 minutes:
# https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks#Task
CLOUD_TASKS_DEADLINE_RANGE = (timedelta(seconds=15), timedelta(minutes=30))
PROCESS_MODES = ("cloud_tasks", "cloud_run_jobs")
DEFAULT_COMMAND = ("python", "manage.py", "execute_task")


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """The OPTIONS every backend reads (the Google ones are optional on the local backend)."""

    # Whether project_id, location, base_url and oidc_service_account are required: set by the
    # backend class (`requires_gcp_config`), not an option.
    requires_gcp: bool = field(default=True, metadata={})

    project_id: str | None = field(default=None, metadata=option("text"))
    location: str | None = field(default=None, metadata=option("text"))
    base_url: str | None = field(default=None, metadata=option("url"))
    oidc_service_account: str | None = field(default=None, metadata=option("text"))
    # Derived from base_url unless set.
    execute_url: str | None = field(default=None, metadata=option("url"))
    schedule_url: str | None = field(default=None, metadata=option("url"))
    oidc_audience: str | None = field(default=None, metadata=option("text"))
    # Where the Google client libraries connect (None: Google's endpoints); tests point it at an
    # in-process fake.
    api_endpoint: str | None = field(default=None, metadata=option("text"))
    # Prepended to a ScheduledTask's name to form its Cloud Scheduler job id, so services that
    # share a project and region never manage each other's jobs.
    scheduler_job_prefix: str = field(default="", metadata=option("text"))
    # Where Google's token-signing certificates are fetched (None: Google's; tests point it at a
    # local issuer).
    oidc_certs_url: str | None = field(default=None, metadata=option("url"))
    # Accept tokens whose signature a private Cloud Run service (no allUsers invoker) replaced
    # after verifying it; every claim is still checked. Never enable it on a public service.
    oidc_trust_platform_signature: bool = field(default=False, metadata=option("boolean"))
    # The key of the MAC every push we create carries (push_mac.py); None: from SECRET_KEY.
    push_secret: str | None = field(default=None, metadata=option("secret"))
    # After a rotation, the old key stays accepted until `push_secret_previous_until`, never after.
    push_secret_previous: str | None = field(default=None, metadata=option("secret"))
    push_secret_previous_until: datetime | None = field(default=None, metadata=option("aware_datetime"))

    run_once: bool = field(default=False, metadata=option("boolean"))
    heartbeat_enabled: bool = field(default=True, metadata=option("boolean"))
    heartbeat_interval: timedelta = field(
        default=timedelta(seconds=10), metadata=option("number", key="heartbeat_interval_seconds", above=0)
    )
    # The lease: how long an attempt may go without a heartbeat before another delivery may take
    # the task over. It applies with heartbeats disabled too (then it bounds the attempt).
    heartbeat_timeout: timedelta = field(
        default=timedelta(seconds=30), metadata=option("number", key="heartbeat_timeout_seconds", above=0)
    )
    # Accepted for compatibility with the published package, whose attempts each stopped a heartbeat
    # thread of their own: the one shared thread of heartbeat.py is never joined, so it has no effect.
    heartbeat_join_timeout: timedelta = field(
        default=timedelta(seconds=5),
        metadata=option("number", key="heartbeat_join_timeout_seconds", minimum=0),
    )
    max_history_entries: int = field(default=100, metadata=option("integer", minimum=1))
    cache_alias: str = field(default="default", metadata=option("text"))
    cache_prefix: str = field(default="django-tasks-google", metadata=option("text"))
    cache_ttl_max_attempts: float = field(default=600, metadata=option("number"))
    queue_aliases: dict[str, str] = field(default_factory=dict, metadata=option("string_mapping"))

    def refine(self, reader: OptionReader) -> Self:
        """Rules across options and derived values (errors go to `reader`)."""
        changes: dict[str, Any] = {}
        if self.heartbeat_interval > self.heartbeat_timeout:
            reader.error(
                "heartbeat_interval_seconds",
                "heartbeat_interval_seconds cannot be greater than heartbeat_timeout_seconds",
            )
            changes["heartbeat_interval"] = self.heartbeat_timeout / 3
        if not SCHEDULER_JOB_PREFIX.fullmatch(self.scheduler_job_prefix or ""):
            reader.error(
                "scheduler_job_prefix",
                "scheduler_job_prefix may only contain letters, digits, '-' and '_' (at most 100), "
                f"not {self.scheduler_job_prefix!r}",
            )
            changes["scheduler_job_prefix"] = ""
        if self.push_secret_previous and self.push_secret_previous_until is None:
            reader.error(
                "push_secret_previous",
                "push_secret_previous needs push_secret_previous_until (when the old key stops being "
                "accepted): an old key without a deadline would be accepted for ever",
            )
        for name in ("cache_alias", "cache_prefix", "scheduler_job_prefix"):
            if getattr(self, name) is None:  # set to "" or None: the default
                changes[name] = _field(type(self), name).default
        if self.requires_gcp:
            for name in ("project_id", "location", "base_url", "oidc_service_account"):
                if not getattr(self, name) and not any(error[0] == name for error in reader.errors):
                    reader.error(name, f"{name} is required")
            self._check_gcp_formats(reader)
        if self.requires_gcp and self.base_url:
            base_url = self.base_url.rstrip("/") + "/"
            changes.update(
                base_url=base_url,
                execute_url=self.execute_url or f"{base_url}execute/",
                schedule_url=self.schedule_url or f"{base_url}schedule/",
                oidc_audience=self.oidc_audience or origin(base_url),
            )
        else:
            # Local backends receive no pushes.
            changes.update(base_url=None, execute_url=None, schedule_url=None, oidc_audience=None)
        return dataclasses.replace(self, **changes) if changes else self

    def _check_gcp_formats(self, reader: OptionReader) -> None:
        if self.project_id and not PROJECT_ID.fullmatch(self.project_id):
            reader.error("project_id", f"project_id {self.project_id!r} is not a Google Cloud project id")
        if self.location and not LOCATION.fullmatch(self.location):
            reader.error(
                "location", f"location {self.location!r} is not a Google Cloud region (e.g. 'us-central1')"
            )
        account = self.oidc_service_account
        if account and not SERVICE_ACCOUNT.fullmatch(account):
            reader.error(
                "oidc_service_account",
                f"oidc_service_account must be a service account email, not {account!r}",
            )
        audience = self.oidc_audience
        if audience and audience.startswith(("http://", "https://")):
            parts = urlsplit(audience)
            if not parts.netloc or parts.query or parts.fragment:
                # Cloud Run rejects such audiences (googleapis/python-tasks#137, #138).
                reader.error(
                    "oidc_audience",
                    f"oidc_audience {audience!r} must be a URL without query or fragment "
                    "(usually the service's origin, e.g. 'https://my-service-abc123-uc.a.run.app')",
                )


@dataclass(frozen=True, kw_only=True)
class CloudTasksOptions(BackendOptions):
    """CloudTasksBackend's OPTIONS: the common ones, plus how long Cloud Tasks and enqueue() wait."""

    # How long Cloud Tasks waits for the push's answer when the task has no `timeout`. Without it
    # Cloud Tasks uses 10 minutes, so a longer task would be redelivered while it still runs.
    # The default, 30 minutes, is Cloud Tasks' maximum and the request timeout the deploy gives the
    # Cloud Run service (https://cloud.google.com/run/docs/configuring/request-timeout; the bounds:
    # https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks).
    dispatch_deadline: timedelta = field(
        default=CLOUD_TASKS_DEADLINE_RANGE[1],
        metadata=option(
            "number",
            key="dispatch_deadline_seconds",
            minimum=CLOUD_TASKS_DEADLINE_RANGE[0].total_seconds(),
            maximum=CLOUD_TASKS_DEADLINE_RANGE[1].total_seconds(),
        ),
    )
    # The most time enqueue() spends on CreateTask, retries included (each call gets at most half).
    create_task_timeout: timedelta = field(
        default=timedelta(seconds=10),
        metadata=option("number", key="create_task_timeout_seconds", above=0, maximum=60),
    )


@dataclass(frozen=True, kw_only=True)
class CloudRunJobsOptions(BackendOptions):
    """CloudRunJobsBackend's OPTIONS: the common ones, plus the container's command."""

    # Sent as the container's args, followed by the execution id.
    command: tuple[str, ...] = field(default=DEFAULT_COMMAND, metadata=option("string_list"))


@dataclass(frozen=True, kw_only=True)
class ProcessOptions(BackendOptions):
    """ProcessBackend's OPTIONS: the common ones (Google's optional), plus the local worker's."""

    # Which production backend's capabilities the local worker mirrors.
    mode: str = field(
        default="cloud_tasks", metadata=option("choice", choices=PROCESS_MODES, subject="ProcessBackend mode")
    )
    # Total attempts of every execution (stored on the row by the INSERT).
    max_attempts: int = field(default=1, metadata=option("integer", minimum=1))
    max_workers: int = field(default=4, metadata=option("integer", minimum=1))
    poll_interval: float = field(default=1.0, metadata=option("number", key="poll_interval_seconds", above=0))
    # Executions claimed per poll (unset: max_workers).
    batch_size: int = field(default=0, metadata=option("integer", minimum=1))
    # On shutdown, running attempts get this long to finish before they are interrupted (and
    # returned to READY).
    shutdown_timeout: float = field(
        default=10.0, metadata=option("number", key="shutdown_timeout_seconds", minimum=0)
    )
    # After SIGTERM (cancel, timeout, shutdown) an attempt gets this long before SIGKILL, like
    # Cloud Run's 10 seconds.
    kill_grace: float = field(default=10.0, metadata=option("number", key="kill_grace_seconds", minimum=0))
    # A worker child (it runs many attempts, one at a time) is replaced after this many attempts...
    worker_recycle_after: int = field(default=500, metadata=option("integer", minimum=1))
    # ... and when its resident memory grows past this many MB after an attempt (0: no limit).
    worker_max_child_rss_mb: float = field(default=0, metadata=option("number", minimum=0))
    # A child idle for this many seconds exits, so an idle worker is one process (0: children
    # stay); the next task forks a new one, which opens its own database connection first.
    worker_idle_child_seconds: float = field(default=5.0, metadata=option("number", minimum=0))

    def refine(self, reader: OptionReader) -> Self:
        refined = super().refine(reader)
        if not refined.batch_size:
            refined = dataclasses.replace(refined, batch_size=refined.max_workers)
        return refined


def read_options[O: BackendOptions](
    cls: type[O], raw: Mapping[str, Any], *, requires_gcp: bool
) -> tuple[O, OptionReader]:
    """Read every option `cls` declares from `raw`; problems are in the returned reader's `errors`."""
    reader = OptionReader(raw)
    values: dict[str, Any] = {"requires_gcp": requires_gcp}
    for spec in dataclasses.fields(cls):
        kind = spec.metadata.get("kind")
        if kind is None:
            continue
        key = spec.metadata.get("key") or spec.name
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if not reader.given(key):
            continue  # the dataclass default
        if isinstance(default, timedelta):
            seconds = getattr(reader, kind)(key, default.total_seconds(), **spec.metadata["rules"])
            values[spec.name] = timedelta(seconds=seconds)
        else:
            values[spec.name] = getattr(reader, kind)(key, default, **spec.metadata["rules"])
    return cls(**values).refine(reader), reader


def origin(url: str) -> str:
    """The origin of `url` (scheme and host): the audience Cloud Run accepts by default."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _field(cls: type, name: str) -> dataclasses.Field[Any]:
    return next(spec for spec in dataclasses.fields(cls) if spec.name == name)
