"""The task executions list's filters.

They list their values from settings, code and ExecutionState, never with SELECT DISTINCT over a
table that only grows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.tasks import task_backends

from ..execution_states import ExecutionState, in_states
from .scheduled_tasks import discovered_tasks


class ChoicesFilter(admin.SimpleListFilter):
    field: str

    def choices_for(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return self.choices_for()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class StateFilter(admin.SimpleListFilter):
    """Status as operators tell it: Cancelled apart from Failed, Scheduled apart from Ready."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(state.value, str(state.label)) for state in ExecutionState]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in ExecutionState.values:
            return queryset
        return in_states(queryset, [ExecutionState(value)])


class TaskFilter(ChoicesFilter):
    title = "task"
    parameter_name = field = "module_path"

    def choices_for(self) -> list[tuple[str, str]]:
        return [(path, path.rsplit(".", 1)[-1]) for path, _label in discovered_tasks()]


class BackendFilter(ChoicesFilter):
    title = "backend"
    parameter_name = field = "backend_alias"

    def choices_for(self) -> list[tuple[str, str]]:
        return [(alias, alias) for alias in task_backends.settings]


class QueueFilter(ChoicesFilter):
    title = "queue"
    parameter_name = field = "queue_name"

    def choices_for(self) -> list[tuple[str, str]]:
        queues = {queue for config in task_backends.settings.values() for queue in config.get("QUEUES", [])}
        return [(queue, queue) for queue in sorted(queues)]
