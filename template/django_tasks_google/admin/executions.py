"""The task executions' list and page: read-only records with cancel and retry.

The list shows a colour badge of the ExecutionState (Cancelled and Scheduled told apart), the
attempts as "n / max", the duration and the last error, in columns that fit a 1,400 px screen,
with the state computed by the database for the whole page (no query per row). The page reads
as a timeline of attempts with Retry / Cancel / Force cancel buttons where they apply, links
between a retry and its original, and to the schedule firing that created it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from ..execution_states import ExecutionState, with_state
from ..models import ScheduledTaskFiring, TaskExecution
from . import operations
from .attempts import error_summary, render_timeline
from .filters import BackendFilter, QueueFilter, StateFilter, TaskFilter
from .times import local_time


def pretty_json(value: Any) -> SafeString:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="dtg-json">{}</pre>', text)


def state_of(execution: TaskExecution) -> ExecutionState:
    return ExecutionState(getattr(execution, "state", None) or ExecutionState.READY)


def execution_url(pk: int) -> str:
    return reverse("admin:django_tasks_google_taskexecution_change", args=[pk])


def duration(execution: TaskExecution) -> str:
    if execution.started_at is None:
        return "-"
    end = execution.finished_at or timezone.now()
    seconds = int((end - execution.started_at).total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02}m {seconds:02}s" if hours else f"{minutes}m {seconds:02}s"


# ModelAdmin is generic in django-stubs only: subscripting it at run time would fail.
if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[TaskExecution]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(TaskExecution)
class TaskExecutionAdmin(_ModelAdmin):
    list_display = (
        "id",
        "state_badge",
        "task_name",
        "attempts_of_max",
        "enqueued_short",
        "took",
        "last_error",
    )
    list_display_links = ("id", "task_name")
    list_filter = (StateFilter, BackendFilter, QueueFilter, TaskFilter)
    search_fields = ("=id", "module_path", "cloud_task_name", "cloud_run_job_execution_name")
    show_full_result_count = False  # no COUNT(*) of the whole table next to every filtered count
    date_hierarchy = "enqueued_at"
    ordering = ("-enqueued_at",)
    actions = ("cancel_action", "force_cancel_action", "retry_action")
    fieldsets = (
        ("State", {"fields": ("state_badge", "attempts_of_max", "timeline", "links")}),
        ("Result", {"fields": ("result",)}),
        (
            "Task",
            {
                "fields": (
                    "module_path",
                    "backend_alias",
                    "queue_name",
                    "priority",
                    "takes_context",
                    "run_after",
                    "timeout",
                    "arguments",
                    "keyword_arguments",
                )
            },
        ),
        ("Times", {"fields": ("enqueued", "started", "finished", "cancelled", "took", "force_cancel")}),
        ("Workers", {"fields": ("lease_worker_id", "lease_expires_at")}),
        ("Google Cloud", {"fields": ("cloud_task_name", "cloud_run_job_execution_name")}),
    )

    class Media:
        css = {"all": ("django_tasks_google/admin.css",)}  # noqa: RUF012 (Django's Media API)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskExecution]:
        return with_state(super().get_queryset(request))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a record of what ran: view only; the actions and buttons are the ways to act

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and not obj.is_finished:
            return False  # never delete a row a worker may be running: cancel it first
        return super().has_delete_permission(request, obj)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Cancel and retry need the model's change permission (the page itself stays read-only)."""
        return request.user.has_perm("django_tasks_google.change_taskexecution")

    # List columns.

    @admin.display(description="State", ordering="status")
    def state_badge(self, execution: TaskExecution) -> SafeString:
        state = state_of(execution)
        return format_html('<span class="dtg-badge dtg-{}">{}</span>', state.value, state.label)

    @admin.display(description="Task · backend / queue", ordering="module_path")
    def task_name(self, execution: TaskExecution) -> SafeString:
        module, _dot, name = execution.module_path.rpartition(".")
        return format_html(
            '<span title="{}">{}</span><div class="dtg-where">{} / {}</div>',
            execution.module_path,
            name or module,
            execution.backend_alias,
            execution.queue_name,
        )

    @admin.display(description="Attempts")
    def attempts_of_max(self, execution: TaskExecution) -> str:
        limit = "∞" if execution.max_attempts is None else execution.max_attempts
        return f"{execution.attempts} / {limit}"

    @admin.display(description="Enqueued", ordering="enqueued_at")
    def enqueued(self, execution: TaskExecution) -> str:
        return local_time(execution.enqueued_at)

    @admin.display(description=f"Enqueued ({settings.TIME_ZONE})", ordering="enqueued_at")
    def enqueued_short(self, execution: TaskExecution) -> str:
        return timezone.localtime(execution.enqueued_at).strftime("%b %d, %H:%M")

    @admin.display(description="Started", ordering="started_at")
    def started(self, execution: TaskExecution) -> str:
        return local_time(execution.started_at)

    @admin.display(description="Finished")
    def finished(self, execution: TaskExecution) -> str:
        return local_time(execution.finished_at)

    @admin.display(description="Cancelled")
    def cancelled(self, execution: TaskExecution) -> str:
        return local_time(execution.cancelled_at)

    @admin.display(description="Duration")
    def took(self, execution: TaskExecution) -> SafeString:
        return format_html(
            '<span title="Started {}">{}</span>', local_time(execution.started_at), duration(execution)
        )

    @admin.display(description="Last error")
    def last_error(self, execution: TaskExecution) -> SafeString | str:
        if not execution.errors:
            return "-"
        return format_html('<span class="dtg-last-error">{}</span>', error_summary(execution.errors[-1]))

    # The page.

    @admin.display(description="Attempts")
    def timeline(self, execution: TaskExecution) -> SafeString | str:
        return render_timeline(execution)

    @admin.display(description="Arguments")
    def arguments(self, execution: TaskExecution) -> SafeString:
        return pretty_json(execution.args)

    @admin.display(description="Keyword arguments")
    def keyword_arguments(self, execution: TaskExecution) -> SafeString:
        return pretty_json(execution.kwargs)

    @admin.display(description="Return value")
    def result(self, execution: TaskExecution) -> SafeString:
        return pretty_json(execution.return_value)

    @admin.display(description="Related")
    def links(self, execution: TaskExecution) -> SafeString | str:
        items: list[SafeString] = []
        if execution.retry_of_id is not None:
            items.append(
                format_html(
                    'Retry of <a href="{}">#{}</a>',
                    execution_url(execution.retry_of_id),
                    execution.retry_of_id,
                )
            )
        retries = list(execution.retries.order_by("pk").values_list("pk", flat=True))
        if retries:
            items.append(
                format_html(
                    "Retried as {}",
                    format_html_join(
                        ", ", '<a href="{}">#{}</a>', ((execution_url(pk), pk) for pk in retries)
                    ),
                )
            )
        firing = (
            ScheduledTaskFiring.objects.filter(task_execution=execution)
            .select_related("scheduled_task")
            .first()
        )
        if firing is not None:
            url = reverse("admin:django_tasks_google_scheduledtask_change", args=[firing.scheduled_task_id])
            items.append(
                format_html(
                    'Fired by schedule <a href="{}">{}</a> ({}, slot {})',
                    url,
                    firing.scheduled_task.name,
                    firing.get_source_display(),
                    local_time(firing.scheduled_for),
                )
            )
        if not items:
            return "-"
        return format_html_join("", "<div>{}</div>", ((item,) for item in items))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        execution = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if execution is not None:
            state = state_of(execution)
            name = execution.module_path.rsplit(".", 1)[-1]
            context["title"] = f"{name} #{execution.pk} · {state.label}"
            context["subtitle"] = None  # else the model's __str__ leads the page's <title>
            if self.has_operate_permission(request):
                context["dtg_buttons"] = self._buttons(execution)
        return super().change_view(request, object_id, form_url, context)

    def _buttons(self, execution: TaskExecution) -> list[tuple[str, str, str]]:
        """(label, url, css class) of each operation that applies to the execution."""
        buttons = []
        if operations.can_retry(execution):
            buttons.append(("Retry", "retry", "dtg-button"))
        if not execution.is_finished:
            buttons.append(("Cancel", "cancel", "dtg-button dtg-danger"))
        if operations.can_force_cancel(execution):
            buttons.append(("Force cancel", "force_cancel", "dtg-button dtg-danger"))
        return [
            (label, reverse(f"admin:django_tasks_google_taskexecution_{name}", args=[execution.pk]), css)
            for label, name, css in buttons
        ]

    def get_urls(self) -> list[Any]:
        def view(function: Any) -> Any:  # staff only, CSRF-checked, POST only
            return self.admin_site.admin_view(require_POST(function))

        return [
            path("<int:pk>/retry/", view(self._retry_view), name="django_tasks_google_taskexecution_retry"),
            path(
                "<int:pk>/cancel/", view(self._cancel_view), name="django_tasks_google_taskexecution_cancel"
            ),
            path(
                "<int:pk>/force-cancel/",
                view(self._force_cancel_view),
                name="django_tasks_google_taskexecution_force_cancel",
            ),
            *super().get_urls(),
        ]

    def _operable(self, request: HttpRequest, pk: int) -> TaskExecution:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request), pk=pk)

    def _retry_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        execution = self._operable(request, pk)
        self._retry(request, [execution])
        return HttpResponseRedirect(execution_url(pk))

    def _cancel_view(self, request: HttpRequest, pk: int, *, force: bool = False) -> HttpResponse:
        execution = self._operable(request, pk)
        self._report(request, operations.cancel([execution], force=force))
        return HttpResponseRedirect(execution_url(pk))

    def _force_cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._cancel_view(request, pk, force=True)

    # Actions.

    @admin.action(description="Cancel selected executions", permissions=["operate"])
    def cancel_action(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        self._report(request, operations.cancel(list(queryset), force=False))

    @admin.action(
        description="Force cancel selected executions (stop the running process)", permissions=["operate"]
    )
    def force_cancel_action(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        self._report(request, operations.cancel(list(queryset), force=True))

    @admin.action(description="Retry selected failed executions (enqueue a copy)", permissions=["operate"])
    def retry_action(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        self._retry(request, list(queryset))

    def _report(self, request: HttpRequest, report: operations.CancelReport) -> None:
        for level, text in report.messages():
            self.message_user(request, text, getattr(messages, level.upper()))

    def _retry(self, request: HttpRequest, executions: list[TaskExecution]) -> None:
        retried, skipped, failed = [], [], []
        for execution in executions:
            if not operations.can_retry(execution):
                skipped.append(str(execution.pk))
                continue
            try:
                result = operations.retry(execution)
            except Exception as exc:
                failed.append(f"{execution.pk} ({exc})")
                continue
            retried.append(f"{execution.pk} → {result.id}")
        if retried:
            self.message_user(
                request, f"Re-enqueued {len(retried)} execution(s): {', '.join(retried)}", messages.SUCCESS
            )
        if skipped:
            self.message_user(
                request, f"Skipped {len(skipped)} execution(s) that have not failed", messages.WARNING
            )
        if failed:
            self.message_user(request, f"Could not retry: {'; '.join(failed)}", messages.ERROR)
