"""Measured inside the rendered service (see ../push_path.py): the cost of one Cloud Tasks push.

Django's test client sends in-process POSTs through the service's whole middleware stack:

* "execute": `/tasks/execute/` with a REAL RS256 ID token from the local issuer
  (tests.fakes.oidc_issuer; certificates cached after the first push) and the headers Cloud Tasks
  sends, running a no-op task on a CloudTasksBackend to completion;
* "bare": a view that does one INSERT into the same table and answers 204, the floor any view
  that writes to the database pays.

The two alternate request by request, so load on the machine hits both alike. Prints one JSON
line: per view, the median and mean ms per request. Logging at INFO and below is off.
"""

# ruff: noqa: E402  (the app's modules are imported once django.setup() has run)

import argparse
import json
import logging
import statistics
import time
from urllib.parse import urlencode

import django

django.setup()

from django.core.management import call_command
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.tasks import task, task_backends
from django.test import Client
from django.test.utils import override_settings
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django_tasks_google.models import TaskExecution
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer

ORIGIN = "https://bench.example.com"
INVOKER = "invoker@bench.iam.gserviceaccount.com"
WARM_UP = 20


@csrf_exempt
@transaction.non_atomic_requests
def bare_insert(request: HttpRequest) -> HttpResponse:
    TaskExecution.objects.create(module_path="bench.bare", status="SUCCESSFUL")
    return HttpResponse(status=204)


urlpatterns = [path("tasks/", include("django_tasks_google.urls")), path("bare/", bare_insert)]


def noop() -> None:
    """The task every push runs."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    # Log lines (one or two per push) would measure the terminal, not the push path.
    logging.disable(logging.INFO)
    issuer = OidcIssuer()
    issuer.start()
    fake = GoogleServicesFake(issuer=issuer)
    endpoint = fake.start()
    tasks = {
        "default": {
            "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
            "QUEUES": ["default"],
            "OPTIONS": {
                "project_id": "bench",
                "location": "us-central1",
                "base_url": f"{ORIGIN}/tasks/",
                "oidc_service_account": INVOKER,
                "api_endpoint": endpoint,
                "oidc_certs_url": issuer.certs_url,
            },
        }
    }
    try:
        with override_settings(
            TASKS=tasks, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECURE_SSL_REDIRECT=False, DEBUG=False
        ):
            results = measure(issuer, args.requests)
    finally:
        fake.stop()
        issuer.stop()
    print(json.dumps(results))


def measure(issuer: OidcIssuer, requests: int) -> dict[str, dict[str, float]]:
    noop_task = task(backend="default")(noop)
    globals()["noop"] = noop_task  # what the stored module path names
    ids = [
        execution.pk
        for execution in TaskExecution.objects.bulk_create(
            TaskExecution(module_path=noop_task.module_path, backend_alias="default", max_attempts=3)
            for _ in range(requests + WARM_UP)
        )
    ]
    if any(pk is None for pk in ids):
        ids = list(
            TaskExecution.objects.filter(module_path=noop_task.module_path, status="READY")
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    client = Client()
    headers = {
        "HTTP_AUTHORIZATION": f"Bearer {issuer.mint(ORIGIN, INVOKER)}",
        "HTTP_X_CLOUDTASKS_QUEUENAME": "default",
        "HTTP_X_CLOUDTASKS_TASKRETRYCOUNT": "0",
        "HTTP_X_CLOUDTASKS_TASKEXECUTIONCOUNT": "0",
    }
    durations: dict[str, list[float]] = {"execute": [], "bare": []}
    for number, pk in enumerate(ids):
        body = urlencode({"execution_id": pk, "backend": "default"})
        mac = push_mac_header(pk)
        for name, url, data in [("execute", "/tasks/execute/", body), ("bare", "/bare/", "")]:
            started = time.perf_counter()
            response = client.post(
                url,
                data,
                content_type="application/x-www-form-urlencoded",
                secure=True,
                HTTP_X_CLOUDTASKS_TASKNAME=f"task-{pk}",
                **headers,
                **mac,
            )
            elapsed = time.perf_counter() - started
            if response.status_code != 204:
                raise SystemExit(f"{url} answered {response.status_code}: {response.content[:200]!r}")
            if number >= WARM_UP:
                durations[name].append(elapsed)
    unfinished = TaskExecution.objects.filter(pk__in=ids).exclude(status="SUCCESSFUL").count()
    if unfinished:
        raise SystemExit(f"{unfinished} pushed tasks did not succeed")
    TaskExecution.objects.all().delete()
    return {
        name: {
            "median_ms": 1000 * statistics.median(values),
            "mean_ms": 1000 * statistics.fmean(values),
            "requests": len(values),
        }
        for name, values in durations.items()
    }


def push_mac_header(execution_id: int) -> dict[str, str]:
    """The MAC header the backend puts on the tasks it creates (none for an app without one)."""
    try:
        from django_tasks_google.backends import push_mac
    except ImportError:
        return {}
    name = "HTTP_" + push_mac.HEADER.upper().replace("-", "_")
    return {name: push_mac.for_execution(task_backends["default"], execution_id)}


if __name__ == "__main__":
    main()
