"""Schedules declared in ``settings.SCHEDULED_TASKS``: read them, check them, upsert them.

Declared schedules live in code review, not in the admin: ``sync_scheduled_tasks`` upserts them
on deploy (and syncs their Cloud Scheduler jobs), and ``manage.py check`` refuses malformed ones.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured, ValidationError

from ..models import ScheduledTask
from .definitions import (
    DEFINITION_FIELDS,
    save_scheduled_task,
    validate_scheduled_task,
)

logger = logging.getLogger(__name__)

DECLARATION_KEYS = {
    "task",
    "schedule",
    "description",
    "time_zone",
    "enabled",
    "backend",
    "queue_name",
    "priority",
    "takes_context",
    "args",
    "kwargs",
}


def declared_scheduled_tasks() -> dict[str, ScheduledTask]:
    """settings.SCHEDULED_TASKS as unsaved ScheduledTask definitions, by name.

        SCHEDULED_TASKS = {
            "send-notification": {"task": "myapp.tasks.send_notification", "schedule": "*/15 * * * *",
                                  "args": [1], "time_zone": "Europe/Amsterdam"},
        }

    Keys: task (dotted path, required), schedule (required), description, time_zone ("UTC"),
    enabled (True), backend, queue_name, priority, takes_context, args, kwargs. Raises
    ImproperlyConfigured naming the entry and key for anything malformed; the definitions
    themselves are validated when saved.
    """
    declared = getattr(settings, "SCHEDULED_TASKS", {}) or {}
    if not isinstance(declared, dict):
        raise ImproperlyConfigured("SCHEDULED_TASKS must be a dict of name -> definition.")
    definitions: dict[str, ScheduledTask] = {}
    for name, entry in declared.items():
        where = f"SCHEDULED_TASKS[{name!r}]"
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"{where} must be a dict with at least 'task' and 'schedule'.")
        unknown = sorted(set(entry) - DECLARATION_KEYS)
        if unknown:
            raise ImproperlyConfigured(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}.")
        for key in ("task", "schedule"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ImproperlyConfigured(f"{where}[{key!r}] is required (a non-empty string).")
        definitions[name] = ScheduledTask(
            name=name,
            module_path=entry["task"],
            schedule=entry["schedule"],
            description=entry.get("description", ""),
            time_zone=entry.get("time_zone", "UTC"),
            state=ScheduledTask.State.ENABLED if entry.get("enabled", True) else ScheduledTask.State.DISABLED,
            backend_alias=entry.get("backend", ""),
            queue_name=entry.get("queue_name", ""),
            priority=entry.get("priority"),
            takes_context=entry.get("takes_context"),
            args=entry.get("args", []),
            kwargs=entry.get("kwargs", {}),
            declared=True,
        )
    return definitions


def upsert_declared(definition: ScheduledTask) -> ScheduledTask:
    """Save a declared definition over the stored row of the same name (or as a new row), synced."""
    stored = ScheduledTask.objects.filter(name=definition.name).first()
    if stored is not None:
        for name in DEFINITION_FIELDS:
            setattr(stored, name, getattr(definition, name))
        definition = stored
    return save_scheduled_task(definition, declared=True)


def check_declared_scheduled_tasks(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """System check: every SCHEDULED_TASKS entry is well-formed and would save (`manage.py check`)."""
    try:
        declared = declared_scheduled_tasks()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(str(exc), hint="See SCHEDULED_TASKS in settings.", id="django_tasks_google.E101")
        ]
    errors = []
    for name, definition in declared.items():
        try:
            validate_scheduled_task(definition)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.append(
                    checks.Error(
                        f"SCHEDULED_TASKS[{name!r}]: {field}: {' '.join(messages)}",
                        hint="Fix the declaration in settings.SCHEDULED_TASKS.",
                        id="django_tasks_google.E102",
                    )
                )
    return errors
