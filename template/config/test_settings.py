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

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
