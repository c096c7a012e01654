"""The operators' console: the executions list's states and columns, and an execution's page with
its attempts, links and Retry / Cancel buttons, through Django's test client.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_tasks_google.admin.times import local_time
from django_tasks_google.execution_states import ExecutionState, with_state
from django_tasks_google.executor import run_execution
from django_tasks_google.models import ScheduledTaskFiring, TaskExecution
from django_tasks_google.scheduler import schedule_task
from django_tasks_google.serialization import recorded_at
from tests.django_tasks_google import sample_tasks

pytestmark = pytest.mark.django_db

EXECUTIONS_URL = reverse("admin:django_tasks_google_taskexecution_changelist")
ERROR = {"exception_class_path": "builtins.ValueError", "traceback": "Traceback ...\nValueError: bad input"}


def page_url(execution: TaskExecution) -> str:
    return reverse("admin:django_tasks_google_taskexecution_change", args=[execution.pk])


def enqueued(task: Any = sample_tasks.add, *args: Any, **fields: Any) -> TaskExecution:
    result = task.enqueue(*(args or (1, 2)))
    TaskExecution.objects.filter(pk=result.id).update(**fields)
    return TaskExecution.objects.get(pk=result.id)


def one_of_each() -> dict[ExecutionState, TaskExecution]:
    now = timezone.now()
    return {
        ExecutionState.SCHEDULED: enqueued(run_after=now + timedelta(hours=1)),
        ExecutionState.READY: enqueued(run_after=now - timedelta(minutes=1)),
        ExecutionState.RUNNING: enqueued(status="RUNNING", started_at=now, attempts=1),
        ExecutionState.SUCCESSFUL: enqueued(status="SUCCESSFUL", started_at=now, finished_at=now, attempts=1),
        ExecutionState.FAILED: enqueued(
            status="FAILED",
            started_at=now - timedelta(seconds=75),
            finished_at=now,
            attempts=3,
            max_attempts=3,
            errors=[ERROR, ERROR, ERROR],
        ),
        ExecutionState.CANCELLED: enqueued(status="FAILED", cancelled_at=now, finished_at=now),
    }


def test_each_row_has_exactly_one_derived_state() -> None:
    rows = one_of_each()
    states = dict(with_state(TaskExecution.objects.all()).values_list("pk", "state"))
    assert states == {row.pk: state.value for state, row in rows.items()}


def test_the_list_shows_badges_attempts_duration_and_the_last_error(admin_client: Client) -> None:
    one_of_each()
    html = admin_client.get(EXECUTIONS_URL).content.decode()
    for state in ExecutionState:
        assert f'<span class="dtg-badge dtg-{state.value}">{state.label}</span>' in html
    assert "3 / 3" in html
    assert "1m 15s" in html
    assert '<span class="dtg-last-error">ValueError: bad input</span>' in html


@pytest.mark.parametrize("state", list(ExecutionState))
def test_the_state_filter_tells_cancelled_from_failed_and_scheduled_from_ready(
    admin_client: Client, state: ExecutionState
) -> None:
    rows = one_of_each()
    response = admin_client.get(EXECUTIONS_URL, {"state": state.value})
    assert [row.pk for row in response.context["cl"].result_list] == [rows[state].pk]


def test_the_list_makes_no_query_per_row(admin_client: Client) -> None:
    one_of_each()
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(EXECUTIONS_URL).status_code == 200
    one_of_each()
    one_of_each()
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(EXECUTIONS_URL).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_page_of_a_failed_execution(admin_client: Client) -> None:
    failed = enqueued(
        sample_tasks.echo,
        "x",
        status="FAILED",
        attempts=2,
        max_attempts=2,
        worker_ids=["worker-a", "worker-b"],
        errors=[ERROR, {**ERROR, "traceback": "Traceback ...\nValueError: worse"}],
        finished_at=timezone.now(),
    )
    response = admin_client.get(page_url(failed))
    html = response.content.decode()

    assert f"<title>echo #{failed.pk} · Failed |" in html
    assert "<strong>Attempt 1</strong>" in html and "<strong>Attempt 2</strong>" in html
    assert "worker <code>worker-a</code>" in html and "worker <code>worker-b</code>" in html
    assert html.index("ValueError</strong>: bad input") < html.index("ValueError</strong>: worse")
    assert html.count("<details><summary>Traceback") == 2
    assert ">Retry</button>" in html
    assert ">Cancel</button>" not in html
    assert "/delete/" in html  # a finished record may go


@pytest.mark.django_db(transaction=True)  # the executor's heartbeat thread has its own connection
def test_every_attempt_of_a_run_execution_shows_its_time(admin_client: Client) -> None:
    result = sample_tasks.fails.enqueue("third time unlucky")
    for _ in range(3):  # test-tasks allows 3 attempts
        run_execution(result.id, backend_alias=None)
    failed = TaskExecution.objects.get(pk=result.id)
    assert failed.status == "FAILED" and len(failed.errors) == 3

    html = admin_client.get(page_url(failed)).content.decode()

    assert html.count('<li class="dtg-attempt ') == 3
    assert "time not recorded" not in html
    assert html.count(" · ended ") == 1  # attempt 2: neither the first nor the last start
    ended = recorded_at(failed.errors[1])
    assert ended is not None and f" · ended {local_time(ended)} · " in html


def test_errors_stored_without_their_time_still_render(admin_client: Client) -> None:
    failed = enqueued(
        status="FAILED",
        attempts=3,
        started_at=timezone.now(),
        last_attempted_at=timezone.now(),
        errors=[ERROR, ERROR, ERROR],
        finished_at=timezone.now(),
    )
    html = admin_client.get(page_url(failed)).content.decode()
    assert html.count('<li class="dtg-attempt ') == 3
    assert html.count("time not recorded") == 1  # attempt 2 of an older row


def test_a_running_execution_offers_cancel_but_never_delete(admin_client: Client) -> None:
    running = enqueued(
        sample_tasks.add.using(backend="test-jobs"), status="RUNNING", attempts=1, started_at=timezone.now()
    )
    html = admin_client.get(page_url(running)).content.decode()
    assert ">Cancel</button>" in html and ">Force cancel</button>" in html
    assert ">Retry</button>" not in html
    assert "/delete/" not in html
    assert (
        admin_client.post(
            reverse("admin:django_tasks_google_taskexecution_delete", args=[running.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert TaskExecution.objects.filter(pk=running.pk).exists()

    admin_client.post(reverse("admin:django_tasks_google_taskexecution_cancel", args=[running.pk]))

    running.refresh_from_db()
    assert running.cancelled_at is not None and not running.force_cancel
    html = admin_client.get(page_url(running)).content.decode()
    assert "· Cancelled |" in html and ">Cancel</button>" not in html


def test_retry_button_links_the_copy_and_the_original(admin_client: Client) -> None:
    failed = enqueued(sample_tasks.add, 4, 5, status="FAILED", finished_at=timezone.now())

    response = admin_client.post(reverse("admin:django_tasks_google_taskexecution_retry", args=[failed.pk]))

    copy = TaskExecution.objects.get(retry_of=failed)
    assert (copy.args, copy.status) == ([4, 5], "READY")
    assert response.status_code == 302
    original_html = admin_client.get(page_url(failed)).content.decode()
    assert f'Retried as <a href="{page_url(copy)}">#{copy.pk}</a>' in original_html
    copy_html = admin_client.get(page_url(copy)).content.decode()
    assert f'Retry of <a href="{page_url(failed)}">#{failed.pk}</a>' in copy_html


def test_operations_are_post_only_and_need_the_change_permission(
    client: Client, admin_client: Client
) -> None:
    failed = enqueued(status="FAILED", finished_at=timezone.now())
    retry_url = reverse("admin:django_tasks_google_taskexecution_retry", args=[failed.pk])
    assert admin_client.get(retry_url).status_code == 405
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_taskexecution"))
    client.force_login(viewer)
    assert ">Retry</button>" not in client.get(page_url(failed)).content.decode()
    assert client.post(retry_url).status_code == 403
    assert TaskExecution.objects.count() == 1


def test_the_page_links_to_the_schedule_firing_that_created_it(admin_client: Client) -> None:
    scheduled = schedule_task(
        sample_tasks.add, "0 3 * * *", name="nightly", backend="test-tasks", args=[1, 2]
    )
    execution = enqueued()
    ScheduledTaskFiring.objects.create(
        scheduled_task=scheduled,
        key="local:x",
        source=ScheduledTaskFiring.Source.LOCAL,
        scheduled_for=timezone.now(),
        task_execution=execution,
    )
    html = admin_client.get(page_url(execution)).content.decode()
    url = reverse("admin:django_tasks_google_scheduledtask_change", args=[scheduled.pk])
    assert f'Fired by schedule <a href="{url}">nightly</a> (Local worker' in html
