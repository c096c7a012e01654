"""Settings for the test suite: local tasks, a fixed secret, SQLite unless DATABASE_URL says otherwise.

pytest-django imports settings before any conftest runs, so test defaults live here.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("TASKS_TARGET", "local")
os.environ.setdefault("DATABASE_URL", "sqlite:///test.sqlite3")

from config.settings import *  # noqa: F403
from config.settings import BASE_DIR, DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not ":memory:", so worker subprocesses started by tests see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}

# Extra local backends for the vendored app's tests (tests/django_tasks_google/): short heartbeats,
# polls and grace periods, so the worker subprocesses the tests start react within a fraction of a second.
_FAST_PROCESS_OPTIONS = {
    "heartbeat_interval_seconds": 0.2,
    "heartbeat_timeout_seconds": 5,
    "poll_interval_seconds": 0.1,
    "shutdown_timeout_seconds": 3,
    "kill_grace_seconds": 1,
}
TASKS = {
    **TASKS,  # noqa: F405
    "test-tasks": {
        "BACKEND": "django_tasks_google.backends.ProcessBackend",
        "QUEUES": ["default", "other"],
        "OPTIONS": {"mode": "cloud_tasks", "max_attempts": 3, **_FAST_PROCESS_OPTIONS},
    },
    "test-jobs": {
        "BACKEND": "django_tasks_google.backends.ProcessBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"mode": "cloud_run_jobs", "max_attempts": 1, **_FAST_PROCESS_OPTIONS},
    },
    "test-once": {
        "BACKEND": "django_tasks_google.backends.ProcessBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"mode": "cloud_tasks", "max_attempts": 3, "run_once": True, **_FAST_PROCESS_OPTIONS},
    },
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
