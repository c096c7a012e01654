"""Scheduled tasks in the admin: definitions edited in sync with Cloud Scheduler.

Add, edit and delete go through ``scheduler.save_scheduled_task`` / ``delete_scheduled_task``, so
the database and Cloud Scheduler change together or not at all. When Cloud Scheduler refuses, the
admin's transaction is rolled back, the error is shown as a message and the form is shown again
with the input kept. Actions: run now, sync, enable, disable.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.tasks import Task as DjangoTask
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..backends.base import DjangoTasksGoogleBackend
from ..models import ScheduledTask
from ..scheduler import (
    SchedulerSyncError,
    delete_scheduled_task,
    next_slot,
    run_now,
    save_scheduled_task,
    sync_scheduled_task,
    validate_scheduled_task,
)
from .times import local_time

logger = logging.getLogger(__name__)


def discovered_tasks() -> list[tuple[str, str]]:
    """(module path, label) of every task defined in an installed app's ``tasks`` module."""
    found: dict[str, str] = {}
    for app_config in apps.get_app_configs():
        try:
            module = importlib.import_module(f"{app_config.name}.tasks")
        except ModuleNotFoundError as exc:
            if not (exc.name and f"{app_config.name}.tasks".startswith(exc.name)):
                logger.exception("Cannot import %s.tasks; its tasks are not offered", app_config.name)
            continue  # (or the app has no tasks module)
        for value in vars(module).values():
            if isinstance(value, DjangoTask) and value.func.__module__ == module.__name__:
                found[value.module_path] = f"{value.module_path} ({value.backend} / {value.queue_name})"
    return sorted(found.items())


def backend_choices() -> list[tuple[str, str]]:
    choices = [("", "The task's own backend")]
    for alias in task_backends.settings:
        backend = task_backends[alias]
        if isinstance(backend, DjangoTasksGoogleBackend):
            where = "Cloud Scheduler" if backend.uses_cloud_scheduler else "local worker"
            choices.append((alias, f"{alias} ({type(backend).__name__}, fired by {where})"))
    return choices


class TaskPathInput(forms.TextInput):
    """One field to pick the task: type a module path, or pick one the installed apps define."""

    template_name = "django_tasks_google/widgets/task_path.html"

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        context["widget"]["attrs"]["list"] = f"{context['widget']['attrs']['id']}_tasks"
        context["widget"]["tasks"] = discovered_tasks()
        return context


# ModelForm and ModelAdmin are generic in django-stubs only: subscripting them at run time would fail.
if TYPE_CHECKING:
    _ModelForm = forms.ModelForm[ScheduledTask]
    _ModelAdmin = admin.ModelAdmin[ScheduledTask]
else:
    _ModelForm = forms.ModelForm
    _ModelAdmin = admin.ModelAdmin


class ScheduledTaskForm(_ModelForm):
    takes_context = forms.NullBooleanField(
        required=False,
        widget=forms.NullBooleanSelect,
        help_text="Unknown: as the task declares it.",
    )

    class Meta:
        model = ScheduledTask
        fields = (
            "name",
            "description",
            "state",
            "module_path",
            "backend_alias",
            "queue_name",
            "priority",
            "takes_context",
            "args",
            "kwargs",
            "schedule",
            "time_zone",
        )
        widgets = {  # noqa: RUF012 (Django's Meta API)
            "name": forms.TextInput(attrs={"size": 60}),
            "description": forms.Textarea(attrs={"rows": 2}),
            "module_path": TaskPathInput(attrs={"size": 60}),
            "queue_name": forms.TextInput(),
            "schedule": forms.TextInput(attrs={"placeholder": "*/15 * * * *"}),
            "time_zone": forms.TextInput(attrs={"placeholder": "UTC"}),
        }
        labels = {"module_path": "Task"}  # noqa: RUF012
        help_texts = {  # noqa: RUF012
            "module_path": "Its module path; the field suggests the tasks the installed apps define.",
            "name": "Letters, digits, '-' and '_'; it becomes the Cloud Scheduler job id.",
            "schedule": "Unix cron: minute hour day-of-month month day-of-week, e.g. '0 */3 * * *'.",
            "time_zone": "A tz database name, e.g. 'UTC' or 'Europe/Amsterdam'; the schedule is read in it.",
            "queue_name": "Empty: the task's own queue.",
            "args": 'JSON list of positional arguments, e.g. [1, "two"].',
            "kwargs": 'JSON object of keyword arguments, e.g. {"user_id": 1}.',
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "backend_alias" not in self.fields:
            return  # the read-only page of a declared schedule: no editable fields
        self.fields["backend_alias"] = forms.ChoiceField(
            choices=backend_choices(), required=False, label="Backend"
        )
        self.fields["queue_name"].required = False

    # ModelForm's hook between building the instance and validating it, private to Django and so
    # absent from django-stubs.
    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # copies the cleaned data onto the instance
        if self.errors:
            return
        try:
            validate_scheduled_task(self.instance)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)


class SyncRefused(Exception):
    """Raised out of a save or delete so the admin's transaction rolls back; carries the message."""


@admin.register(ScheduledTask)
class ScheduledTaskAdmin(_ModelAdmin):
    form = ScheduledTaskForm
    list_display = (
        "name",
        "state",
        "schedule",
        "time_zone",
        "module_path",
        "backend_alias",
        "next_run",
        "declared",
    )
    list_filter = ("state", "backend_alias", "time_zone", "declared")
    search_fields = ("name", "module_path", "description")
    ordering = ("name",)
    actions = ("run_now_action", "sync_action", "enable_action", "disable_action")
    readonly_fields = (
        "cloud_scheduler_job_name",
        "next_run",
        "recent_firings",
        "idempotency_key",
        "declared",
        "created",
        "updated",
        "run_after",
    )

    class Media:
        css = {"all": ("django_tasks_google/admin.css",)}  # noqa: RUF012 (Django's Media API)

    def get_fieldsets(self, request: HttpRequest, obj: ScheduledTask | None = None) -> Any:
        task = ["module_path", "backend_alias", "queue_name", "priority", "takes_context"]
        if obj is not None and obj.run_after is not None:
            task.append("run_after")  # the published package's field: shown, never offered
        fieldsets: list[Any] = [
            ("General", {"fields": ("name", "description", "state", "declared", "created", "updated")}),
            ("Task", {"fields": task}),
            ("Arguments", {"fields": ("args", "kwargs"), "description": "JSON, passed to the task."}),
            ("Schedule", {"fields": ("schedule", "time_zone", "next_run", "recent_firings")}),
        ]
        if obj is not None and obj.cloud_scheduler_job_name:
            fieldsets.append(("Cloud Scheduler", {"fields": ("cloud_scheduler_job_name", "idempotency_key")}))
        return fieldsets

    def has_change_permission(self, request: HttpRequest, obj: ScheduledTask | None = None) -> bool:
        if obj is not None and obj.declared:
            return False  # settings.SCHEDULED_TASKS owns it: the next sync would overwrite an edit
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ScheduledTask | None = None) -> bool:
        if obj is not None and obj.declared:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="Created")
    def created(self, scheduled: ScheduledTask) -> str:
        return local_time(scheduled.created_at)

    @admin.display(description="Changed")
    def updated(self, scheduled: ScheduledTask) -> str:
        return local_time(scheduled.updated_at)

    @admin.display(description="Next run")
    def next_run(self, scheduled: ScheduledTask) -> str:
        if scheduled.pk is None or scheduled.state != ScheduledTask.State.ENABLED:
            return "-"
        try:
            slot = next_slot(scheduled.schedule, scheduled.time_zone, timezone.now())
        except Exception:  # a stored definition that no longer validates
            return "?"
        return local_time(slot)

    @admin.display(description="Recent firings")
    def recent_firings(self, scheduled: ScheduledTask) -> SafeString | str:
        if scheduled.pk is None:
            return "-"
        firings = scheduled.firings.select_related("task_execution").order_by("-scheduled_for")[:10]
        rows = []
        for firing in firings:
            execution = firing.task_execution
            if execution is None:
                link = format_html("{}", "-")
            else:
                url = reverse("admin:django_tasks_google_taskexecution_change", args=[execution.pk])
                link = format_html('<a href="{}">#{} {}</a>', url, execution.pk, execution.status)
            rows.append((local_time(firing.scheduled_for), firing.get_source_display(), link))
        if not rows:
            return "Not fired yet"
        return format_html(
            '<table class="dtg-firings"><tr><th>Slot</th><th>By</th><th>Execution</th></tr>{}</table>',
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    # Saving and deleting: database and Cloud Scheduler together, or neither.

    def save_model(self, request: HttpRequest, obj: ScheduledTask, form: Any, change: bool) -> None:
        try:
            save_scheduled_task(obj)
        except SchedulerSyncError as exc:
            raise SyncRefused(f"Not saved: {exc}") from exc

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        scheduled = self.get_object(request, object_id) if object_id else None
        if scheduled is not None:  # its name, not the model's __str__, as subtitle and <title>
            extra_context = {**(extra_context or {}), "subtitle": scheduled.name}
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SyncRefused as refused:
            # The admin's transaction was rolled back; show the form again with the input kept.
            self.message_user(request, str(refused), messages.ERROR)
            request._scheduler_sync_error = str(refused)  # type: ignore[attr-defined]
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        error = getattr(request, "_scheduler_sync_error", None)
        if error is None:
            return form_class
        message = str(error)

        class RefusedForm(form_class):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                super().clean()
                raise ValidationError(message)

        return RefusedForm

    def delete_model(self, request: HttpRequest, obj: ScheduledTask) -> None:
        try:
            delete_scheduled_task(obj.pk)
        except SchedulerSyncError as exc:
            raise SyncRefused(f"Not deleted: {exc}") from exc

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except SyncRefused as refused:
            self.message_user(request, str(refused), messages.ERROR)
            return HttpResponseRedirect(request.path)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ScheduledTask]) -> None:
        """One by one: each row goes with its job, or stays with it."""
        deleted, failures = 0, []
        for scheduled in queryset:
            try:
                delete_scheduled_task(scheduled.pk)
            except SchedulerSyncError as exc:
                failures.append(f"'{scheduled.name}' ({exc})")
            else:
                deleted += 1
        if failures:
            # Raised instead of returning, so the action's "Successfully deleted" message is not shown.
            raise SyncRefused(f"Deleted {deleted} scheduled task(s); kept {'; '.join(failures)}")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        try:
            return super().changelist_view(request, extra_context)
        except SyncRefused as refused:
            self.message_user(request, str(refused), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    # Actions.

    @admin.action(description="Run selected scheduled tasks now", permissions=["change"])
    def run_now_action(self, request: HttpRequest, queryset: QuerySet[ScheduledTask]) -> None:
        for scheduled in queryset:
            try:
                outcome = run_now(scheduled.pk)
            except (InvalidTask, ValidationError, TypeError, ValueError) as exc:
                self.message_user(request, f"Could not run '{scheduled.name}': {exc}", messages.ERROR)
                continue
            if outcome.result is not None:
                self.message_user(
                    request, f"Enqueued '{scheduled.name}' as task {outcome.result.id}", messages.SUCCESS
                )

    @admin.action(description="Sync selected tasks with Cloud Scheduler", permissions=["change"])
    def sync_action(self, request: HttpRequest, queryset: QuerySet[ScheduledTask]) -> None:
        for scheduled in queryset:
            try:
                report = sync_scheduled_task(scheduled.pk)
            except (SchedulerSyncError, ValidationError) as exc:
                self.message_user(request, f"Failed to sync '{scheduled.name}': {exc}", messages.ERROR)
                continue
            self.message_user(request, f"Successfully synced '{scheduled.name}' ({report})", messages.SUCCESS)
            for warning in report.warnings:
                self.message_user(request, f"'{scheduled.name}': {warning}", messages.WARNING)

    @admin.action(description="Enable selected scheduled tasks", permissions=["change"])
    def enable_action(self, request: HttpRequest, queryset: QuerySet[ScheduledTask]) -> None:
        self._set_state(request, queryset, ScheduledTask.State.ENABLED)

    @admin.action(description="Disable selected scheduled tasks", permissions=["change"])
    def disable_action(self, request: HttpRequest, queryset: QuerySet[ScheduledTask]) -> None:
        self._set_state(request, queryset, ScheduledTask.State.DISABLED)

    def _set_state(self, request: HttpRequest, queryset: QuerySet[ScheduledTask], state: str) -> None:
        for scheduled in queryset:
            if scheduled.state == state:
                continue
            scheduled.state = state
            try:
                save_scheduled_task(scheduled)
            except (SchedulerSyncError, ValidationError) as exc:
                self.message_user(request, f"'{scheduled.name}' is unchanged: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"'{scheduled.name}' is {state} now", messages.SUCCESS)
