"""django-tasks-db from PyPI: the reference database backend of django.tasks."""

from settings_common import *  # noqa: F403

INSTALLED_APPS += ["django_tasks_db"]  # noqa: F405
ROOT_URLCONF = "urls_dbtasks"
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
