"""Settings for the test suite: local tasks, and the database `manage.py` would use.

pytest-django imports settings before any conftest runs, so test defaults live here. The database
is the project's own (DATABASE_URL from the environment or `.env`, else the settings' default), so
a PostgreSQL project is tested on PostgreSQL; pytest-django creates `test_<name>` next to it (one per
pytest-xdist worker, `test_<name>_gw0`, ...).
"""

import os
from pathlib import Path

from manage import load_local_env

os.environ.setdefault("DJANGO_DEBUG", "true")
# Strong enough for the Cloud Run check in config/settings.py: emulated job containers run with
# CLOUD_RUN_JOB set and inherit this environment.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-" + "0123456789abcdefghijklmnopqrstuvwxyz" * 2)
os.environ.setdefault("TASKS_TARGET", "local")
load_local_env(Path(__file__).resolve().parent.parent / ".env")

from config.settings import *  # noqa: E402, F403
from config.settings import BASE_DIR, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not ":memory:", so worker subprocesses started by tests see the same database
    # (pytest-django appends the xdist worker's name to it: one file per worker).
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
# pytest-django runs tests with DEBUG off, and WhiteNoise's AUTOREFRESH and USE_FINDERS default to
# DEBUG: it would then look for `collectstatic` output in STATIC_ROOT, which only the image build
# creates, and warn "No directory at" each time its middleware starts. Serve from the apps' static
# directories instead, as during development.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
