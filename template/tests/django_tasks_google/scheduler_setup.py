"""What the scheduling tests share: a Google backend whose Cloud Scheduler is the gRPC fake.

The "cloud" alias is a CloudTasksBackend (queue "default" → Cloud Tasks queue "service-default")
talking to the fake through `api_endpoint`, verifying push tokens against the test issuer
(`oidc_certs_url`), with job ids prefixed "svc-". Scheduled tasks use the test tasks of
tests/django_tasks_google/sample_tasks.py, moved onto "cloud" by the ScheduledTask's own backend field.
"""

from __future__ import annotations

from typing import Any

from django.tasks import task_backends
from google.cloud import scheduler_v1

PROJECT = "test-project"
LOCATION = "europe-west1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
QUEUE = f"{PARENT}/queues/service-default"
ORIGIN = "https://service-abc123-ew.a.run.app"
SCHEDULE_URL = f"{ORIGIN}/tasks/schedule/"
SERVICE_ACCOUNT = f"service-invoker@{PROJECT}.iam.gserviceaccount.com"
PREFIX = "svc-"


def job_name(name: str, project: str = PROJECT) -> str:
    return f"projects/{project}/locations/{LOCATION}/jobs/{PREFIX}{name}"


def cloud_entry(api_endpoint: str, certs_url: str, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
        "QUEUES": ["default"],
        "OPTIONS": {
            "project_id": PROJECT,
            "location": LOCATION,
            "base_url": f"{ORIGIN}/tasks/",
            "oidc_service_account": SERVICE_ACCOUNT,
            "api_endpoint": api_endpoint,
            "oidc_certs_url": certs_url,
            "queue_aliases": {"default": "service-default"},
            "scheduler_job_prefix": PREFIX,
            **options,
        },
    }


def configure_cloud(settings: Any, google_fake: Any, oidc_issuer: Any, **aliases: dict[str, Any]) -> Any:
    """Add the "cloud" alias (and any extra `alias=options`) to TASKS; returns the "cloud" backend."""
    google_fake.add_queue(QUEUE)
    tasks = {**settings.TASKS, "cloud": cloud_entry(google_fake.endpoint, oidc_issuer.certs_url)}
    for alias, options in aliases.items():
        tasks[alias] = cloud_entry(google_fake.endpoint, oidc_issuer.certs_url, **options)
    settings.TASKS = tasks
    return task_backends["cloud"]


def scheduler_calls(google_fake: Any) -> list[str]:
    """The Cloud Scheduler RPCs the fake received, by method name, in order."""
    return [call.name for call in google_fake.calls if "CloudScheduler" in call.method]


def stored_job(google_fake: Any, name: str) -> scheduler_v1.Job:
    """A copy of the job as the fake stores it."""
    with google_fake._lock:
        return scheduler_v1.Job.deserialize(scheduler_v1.Job.serialize(google_fake.scheduler_jobs[name]))


def set_job_state(google_fake: Any, name: str, state: scheduler_v1.Job.State) -> None:
    """Put a job in a state only Google sets (system-DISABLED, UPDATE_FAILED)."""
    with google_fake._lock:
        google_fake.scheduler_jobs[name].state = state
