"""Scheduled tasks in the admin: definitions edited in sync with Cloud Scheduler.

Add, edit and delete go through ``scheduler.save_scheduled_task`` / ``delete_scheduled_task``, so
the database and Cloud Scheduler change together or not at all. When Cloud Scheduler refuses, the
admin's transaction is rolled back, the error is shown as a message and the form is shown again
with the input kept. Actions: run now, sync, enable, disable.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..backends.base import DjangoTasksGoogleBackend
from ..base import DjangoTask
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

logger = logging.getLogger("django_tasks_google")


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


class ScheduledTaskForm(forms.ModelForm):
    task_selector = forms.ChoiceField(
        required=False,
        label="Task",
        help_text="A task found in the installed apps' tasks modules; or enter its module path below.",
    )
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
            "run_after",
            "takes_context",
            "args",
            "kwargs",
            "schedule",
            "time_zone",
        )
        widgets = {  # noqa: RUF012 (Django's Meta API)
            "name": forms.TextInput(attrs={"size": 60}),
            "description": forms.Textarea(attrs={"rows": 2}),
            "module_path": forms.TextInput(attrs={"size": 60}),
            "queue_name": forms.TextInput(),
            "schedule": forms.TextInput(attrs={"placeholder": "*/15 * * * *"}),
            "time_zone": forms.TextInput(attrs={"placeholder": "UTC"}),
        }
        help_texts = {  # noqa: RUF012
            "name": "Letters, digits, '-' and '_'; it becomes the Cloud Scheduler job id.",
            "schedule": "Unix cron: minute hour day-of-month month day-of-week, e.g. '0 */3 * * *'.",
            "time_zone": "A tz database name, e.g. 'UTC' or 'Europe/Amsterdam'; the schedule is read in it.",
            "queue_name": "Empty: the task's own queue.",
            "args": 'JSON list of positional arguments, e.g. [1, "two"].',
            "kwargs": 'JSON object of keyword arguments, e.g. {"user_id": 1}.',
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["task_selector"].choices = [("", "--- Enter a module path ---"), *discovered_tasks()]
        self.fields["module_path"].required = False
        self.fields["backend_alias"] = forms.ChoiceField(
            choices=backend_choices(), required=False, label="Backend"
        )
        self.fields["queue_name"].required = False
        if self.instance.module_path in dict(self.fields["task_selector"].choices):
            self.initial.setdefault("task_selector", self.instance.module_path)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        selected = cleaned.get("task_selector")
        if selected:
            cleaned["module_path"] = selected
            self.instance.module_path = selected
        elif not cleaned.get("module_path"):
            raise ValidationError("Either task selector or module path must be set")
        return cleaned

    def _post_clean(self) -> None:
        super()._post_clean()  # copies the cleaned data onto the instance
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
class ScheduledTaskAdmin(admin.ModelAdmin):
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
        "created_at",
        "updated_at",
    )
    fieldsets = (
        ("General", {"fields": ("name", "description", "state", "declared")}),
        (
            "Task",
            {
                "fields": (
                    "task_selector",
                    "module_path",
                    "backend_alias",
                    "queue_name",
                    "priority",
                    "run_after",
                    "takes_context",
                )
            },
        ),
        (
            "Arguments",
            {"fields": ("args", "kwargs"), "description": "JSON formatted arguments for the task."},
        ),
        ("Schedule", {"fields": ("schedule", "time_zone", "next_run", "recent_firings")}),
        (
            "Cloud Scheduler",
            {"fields": ("cloud_scheduler_job_name", "idempotency_key", "created_at", "updated_at")},
        ),
    )

    @admin.display(description="Next run")
    def next_run(self, scheduled: ScheduledTask) -> str:
        if scheduled.pk is None or scheduled.state != ScheduledTask.State.ENABLED:
            return "-"
        try:
            slot = next_slot(scheduled.schedule, scheduled.time_zone, timezone.now())
        except Exception:  # a stored definition that no longer validates
            return "?"
        return timezone.localtime(slot).strftime("%Y-%m-%d %H:%M %Z")

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
            rows.append((firing.scheduled_for, firing.get_source_display(), link))
        if not rows:
            return "Not fired yet"
        return format_html(
            "<table><tr><th>Slot</th><th>By</th><th>Execution</th></tr>{}</table>",
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

        class RefusedForm(form_class):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                super().clean()
                raise ValidationError(error)

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
