"""django-tasks-google 0.6.0 from PyPI: its ProcessBackend locally, CloudTasksBackend for pushes."""

import os

from settings_common import *  # noqa: F403

INSTALLED_APPS += ["django_tasks_google"]  # noqa: F405
DJANGO_TASKS_GOOGLE_OTEL_ENABLED = False
TASKS = {
    "default": {
        "BACKEND": "django_tasks_google.backends.ProcessBackend",
        "OPTIONS": {"mode": "cloud_tasks", "max_attempts": 3},
    },
    "push": {
        "BACKEND": "django_tasks_google.backends.CloudTasksBackend",
        "OPTIONS": {
            "project_id": "bench-project",
            "location": "us-central1",
            "base_url": "https://bench.example.com/tasks/",
            "oidc_service_account": "invoker@bench.iam.gserviceaccount.com",
        },
    },
}

if os.environ.get("BENCH_CERTS_URL"):
    # 0.6.0 verifies against Google's certificates URL, a constant of google-auth that
    # verify_oauth2_token reads at call time: pointed at the local issuer, verification stays real.
    from google.oauth2 import id_token

    id_token._GOOGLE_OAUTH2_CERTS_URL = os.environ["BENCH_CERTS_URL"]
