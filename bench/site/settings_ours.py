"""The rendered service's own settings (the working tree's vendored app), plus the bare view."""

import os

from config.settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS += ["bench_bare"]  # noqa: F405
ROOT_URLCONF = "urls_published"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
# The service's sample schedule (every 15 minutes) would fire under the measured worker, which the
# other subjects' workers have no equivalent of: at 19:30 it ran during an idle-memory measurement
# and left a busy child behind. The bench measures the tasks it enqueues and nothing else.
SCHEDULED_TASKS: dict[str, object] = {}

if os.environ.get("BENCH_API_ENDPOINT"):  # bench/inside/push.py: a Cloud Tasks alias on the fakes
    TASKS["push"] = {  # noqa: F405
        "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
        "QUEUES": ["default"],
        "OPTIONS": {
            **GOOGLE_TASK_OPTIONS,  # noqa: F405
            "project_id": "bench-project",
            "location": "us-central1",
            "base_url": "https://bench.example.com/tasks/",
            "oidc_service_account": "invoker@bench.iam.gserviceaccount.com",
            "api_endpoint": os.environ["BENCH_API_ENDPOINT"],
            "oidc_certs_url": os.environ["BENCH_CERTS_URL"],
            "queue_aliases": {"default": "bench-default"},
        },
    }
