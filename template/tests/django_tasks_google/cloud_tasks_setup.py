"""What the Cloud Tasks tests share: a CloudTasksBackend pointed at the fakes, and enqueueing.

The backend's clients talk to the gRPC fake (`api_endpoint`) and its push verification fetches
certificates from the test OIDC issuer (`oidc_certs_url`); nothing else differs from production.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.tasks import TaskResult

from django_tasks_google.models import TaskExecution

PROJECT = "test-project"
LOCATION = "europe-west1"
QUEUE_ID = "service-default"
QUEUE = f"projects/{PROJECT}/locations/{LOCATION}/queues/{QUEUE_ID}"
ORIGIN = "https://service-abc123-ew.a.run.app"
BASE_URL = f"{ORIGIN}/tasks/"
EXECUTE_URL = f"{BASE_URL}execute/"
SERVICE_ACCOUNT = f"service-invoker@{PROJECT}.iam.gserviceaccount.com"


def cloud_tasks_entry(
    api_endpoint: str, certs_url: str, queues: dict[str, str] | None = None, **options: Any
) -> dict[str, Any]:
    """A TASKS entry of a CloudTasksBackend (logical queue "default" → QUEUE_ID by default)."""
    queues = {"default": QUEUE_ID} if queues is None else queues
    return {
        "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
        "QUEUES": list(queues),
        "OPTIONS": {
            "project_id": PROJECT,
            "location": LOCATION,
            "base_url": BASE_URL,
            "oidc_service_account": SERVICE_ACCOUNT,
            "api_endpoint": api_endpoint,
            "oidc_certs_url": certs_url,
            "queue_aliases": queues,
            **options,
        },
    }


def enqueue(task: Any, *args: Any, **kwargs: Any) -> tuple[TaskResult, TaskExecution]:
    """Enqueue in a transaction that commits (so the on-commit dispatch runs); the result and row.

    Needs a test database with real commits (`transactional_db`), or `capture_on_commit` below.
    """
    with transaction.atomic():
        result = task.enqueue(*args, **kwargs)
    return result, TaskExecution.objects.get(pk=result.id)


def enqueue_captured(
    capture_on_commit: Any, task: Any, *args: Any, **kwargs: Any
) -> tuple[TaskResult, TaskExecution]:
    """Enqueue inside a `django_db` test: runs the on-commit dispatch as a commit would."""
    with capture_on_commit(execute=True):
        result = task.enqueue(*args, **kwargs)
    return result, TaskExecution.objects.get(pk=result.id)
