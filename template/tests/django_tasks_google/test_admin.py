"""The admin through Django's test client: scheduled tasks synced with the Cloud Scheduler fake,
and task executions with their filters, detail page and actions.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string

from django_tasks_google.admin import discovered_tasks
from django_tasks_google.models import ScheduledTask, ScheduledTaskFiring, TaskExecution
from django_tasks_google.scheduler import schedule_task
from tests.django_tasks_google import sample_tasks
from tests.django_tasks_google.scheduler_setup import configure_cloud, job_name, scheduler_calls, stored_job

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:django_tasks_google_scheduledtask_add")
LIST_URL = reverse("admin:django_tasks_google_scheduledtask_changelist")
EXECUTIONS_URL = reverse("admin:django_tasks_google_taskexecution_changelist")


def change_url(row: ScheduledTask) -> str:
    return reverse("admin:django_tasks_google_scheduledtask_change", args=[row.pk])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def cloud(settings: Any, google_fake: Any, oidc_issuer: Any) -> Any:
    return configure_cloud(settings, google_fake, oidc_issuer)


@pytest.fixture
def sample_task_path() -> str:
    """The generated service's own send_notification task, as the task selector offers it."""
    paths = [path for path, _label in discovered_tasks() if path.endswith(".tasks.send_notification")]
    assert len(paths) == 1, discovered_tasks()
    return paths[0]


def form_data(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "nightly",
        "description": "",
        "state": "enabled",
        "module_path": sample_tasks.add.module_path,
        "backend_alias": "cloud",
        "queue_name": "",
        "priority": "",
        "takes_context": "unknown",
        "args": "[1, 2]",
        "kwargs": "{}",
        "schedule": "0 3 * * *",
        "time_zone": "UTC",
    }
    data.update(changes)
    return data


def existing(**changes: Any) -> ScheduledTask:
    options = {"name": "nightly", "backend": "cloud", "args": [1, 2], **changes}
    return schedule_task(sample_tasks.add, options.pop("schedule", "0 3 * * *"), **options)


# --- scheduled tasks: add, edit, delete ----------------------------------------------------------


def test_the_add_form_offers_the_discovered_tasks(
    admin_client: Client, cloud: Any, sample_task_path: str
) -> None:
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "task_selector" not in form.fields and "run_after" not in form.fields  # one way to pick
    assert f'<option value="{sample_task_path}">' in response.content.decode()  # the field's suggestions
    assert ("cloud", "cloud (CloudTasksBackend, fired by Cloud Scheduler)") in form.fields[
        "backend_alias"
    ].choices


def test_adding_a_discovered_task_creates_the_row_and_its_job(
    admin_client: Client, cloud: Any, google_fake: Any, sample_task_path: str
) -> None:
    response = admin_client.post(ADD_URL, form_data(module_path=sample_task_path, args="[7]"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    row = ScheduledTask.objects.get(name="nightly")
    assert (row.module_path, row.args, row.backend_alias) == (sample_task_path, [7], "cloud")
    job = stored_job(google_fake, job_name("nightly"))
    assert job.schedule == "0 3 * * *"
    assert job.http_target.body == f"task_id={row.pk}&backend=cloud".encode()


def test_a_refused_sync_on_add_is_shown_and_nothing_is_saved(
    admin_client: Client, cloud: Any, google_fake: Any
) -> None:
    google_fake.fail_next(
        "CreateJob", grpc.StatusCode.PERMISSION_DENIED, "caller lacks cloudscheduler.jobs.create"
    )

    response = admin_client.post(ADD_URL, form_data())

    assert response.status_code == 200  # the form again, with the input kept
    assert response.context["adminform"].form.data["schedule"] == "0 3 * * *"
    assert any("caller lacks cloudscheduler.jobs.create" in text for text in messages_of(response))
    assert not ScheduledTask.objects.exists()
    assert google_fake.scheduler_jobs == {}


def test_invalid_definitions_are_form_errors_without_any_call(
    admin_client: Client, cloud: Any, google_fake: Any
) -> None:
    response = admin_client.post(ADD_URL, form_data(schedule="0 3 * *", time_zone="Moon/Base", name="a b"))

    errors = response.context["adminform"].form.errors
    assert "five fields" in str(errors["schedule"])
    assert "not a time zone" in str(errors["time_zone"])
    assert "not a valid name" in str(errors["name"])
    assert scheduler_calls(google_fake) == []

    response = admin_client.post(ADD_URL, form_data(module_path=""))
    assert "This field is required" in str(response.context["adminform"].form.errors["module_path"])


def test_editing_updates_the_job_and_a_refused_update_keeps_the_row(
    admin_client: Client, cloud: Any, google_fake: Any
) -> None:
    row = existing()

    response = admin_client.post(change_url(row), form_data(schedule="30 4 * * *"))
    assert response.status_code == 302
    assert stored_job(google_fake, job_name("nightly")).schedule == "30 4 * * *"

    google_fake.fail_next("UpdateJob", grpc.StatusCode.INVALID_ARGUMENT, "schedule rejected")
    response = admin_client.post(change_url(row), form_data(schedule="0 5 * * *"))
    assert response.status_code == 200
    assert any("schedule rejected" in text for text in messages_of(response))
    row.refresh_from_db()
    assert row.schedule == "30 4 * * *"


def test_disabling_in_the_form_pauses_the_job(admin_client: Client, cloud: Any, google_fake: Any) -> None:
    row = existing()

    admin_client.post(change_url(row), form_data(state="disabled"))

    assert google_fake.requests("PauseJob")[0].name == job_name("nightly")


def test_deleting_removes_the_job_and_a_refused_delete_keeps_both(
    admin_client: Client, cloud: Any, google_fake: Any
) -> None:
    row = existing()
    delete_url = reverse("admin:django_tasks_google_scheduledtask_delete", args=[row.pk])

    google_fake.fail_next("DeleteJob", grpc.StatusCode.PERMISSION_DENIED, "no delete for you")
    response = admin_client.post(delete_url, {"post": "yes"}, follow=True)
    assert any("no delete for you" in text for text in messages_of(response))
    assert ScheduledTask.objects.filter(pk=row.pk).exists()
    assert job_name("nightly") in google_fake.scheduler_jobs

    response = admin_client.post(delete_url, {"post": "yes"})
    assert response.status_code == 302
    assert not ScheduledTask.objects.exists()
    assert google_fake.scheduler_jobs == {}


def test_bulk_delete_keeps_the_rows_whose_job_could_not_be_deleted(
    admin_client: Client, cloud: Any, google_fake: Any
) -> None:
    first, second = existing(name="first"), existing(name="second")
    google_fake.fail_next("DeleteJob", grpc.StatusCode.PERMISSION_DENIED)

    response = admin_client.post(
        LIST_URL,
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
        follow=True,
    )

    [kept] = ScheduledTask.objects.all()
    assert set(google_fake.scheduler_jobs) == {kept.cloud_scheduler_job_name}
    assert any("Deleted 1 scheduled task(s); kept" in text for text in messages_of(response))


# --- scheduled tasks: actions ---------------------------------------------------------------------


def action(client: Client, url: str, name: str, *rows: Any) -> Any:
    return client.post(url, {"action": name, "_selected_action": [row.pk for row in rows]}, follow=True)


def test_run_now_enqueues_a_manual_firing(admin_client: Client, cloud: Any) -> None:
    row = existing(enabled=False)  # "Run now" works for a paused schedule too

    response = action(admin_client, LIST_URL, "run_now_action", row)

    firing = ScheduledTaskFiring.objects.get()
    assert firing.source == ScheduledTaskFiring.Source.MANUAL
    execution = TaskExecution.objects.get(pk=firing.task_execution_id)
    assert (execution.module_path, execution.args, execution.backend_alias) == (
        sample_tasks.add.module_path,
        [1, 2],
        "cloud",
    )
    assert f"Enqueued 'nightly' as task {execution.pk}" in messages_of(response)
    detail = admin_client.get(change_url(row))
    assert f"#{execution.pk}" in detail.content.decode()


def test_sync_enable_and_disable_actions(admin_client: Client, cloud: Any, google_fake: Any) -> None:
    row = existing()
    with google_fake._lock:
        google_fake.scheduler_jobs.clear()

    response = action(admin_client, LIST_URL, "sync_action", row)
    assert any(text.startswith("Successfully synced 'nightly'") for text in messages_of(response))
    assert job_name("nightly") in google_fake.scheduler_jobs

    action(admin_client, LIST_URL, "disable_action", row)
    assert ScheduledTask.objects.get().state == "disabled"
    assert len(google_fake.requests("PauseJob")) == 1
    action(admin_client, LIST_URL, "enable_action", row)
    assert len(google_fake.requests("ResumeJob")) == 1

    google_fake.fail_next("CloudScheduler/GetJob", grpc.StatusCode.PERMISSION_DENIED, "denied")
    response = action(admin_client, LIST_URL, "sync_action", row)
    assert any(text.startswith("Failed to sync 'nightly'") for text in messages_of(response))


def test_the_changelist_shows_the_next_run(admin_client: Client, cloud: Any) -> None:
    existing(schedule="0 3 * * *")
    response = admin_client.get(LIST_URL)
    assert response.status_code == 200
    assert "03:00" in response.content.decode()


# --- task executions --------------------------------------------------------------------------------


def enqueued(task: Any = sample_tasks.add, *args: Any, status: str = "READY", **fields: Any) -> TaskExecution:
    result = task.enqueue(*(args or (1, 2)))
    TaskExecution.objects.filter(pk=result.id).update(status=status, **fields)
    return TaskExecution.objects.get(pk=result.id)


def test_executions_list_filters_and_search(admin_client: Client, sample_task_path: str) -> None:
    failed = enqueued(status="FAILED")
    enqueued(sample_tasks.echo, "x", status="SUCCESSFUL")
    notification = enqueued(import_string(sample_task_path), 7)

    by_status = admin_client.get(EXECUTIONS_URL, {"state": "failed"})
    assert [row.pk for row in by_status.context["cl"].result_list] == [failed.pk]
    by_task = admin_client.get(EXECUTIONS_URL, {"module_path": sample_task_path})
    assert [row.pk for row in by_task.context["cl"].result_list] == [notification.pk]
    task_filter = next(spec for spec in by_task.context["cl"].filter_specs if spec.title == "task")
    assert (sample_task_path, "send_notification") in task_filter.lookup_choices  # from code, no DISTINCT
    by_id = admin_client.get(EXECUTIONS_URL, {"q": str(failed.pk)})
    assert [row.pk for row in by_id.context["cl"].result_list] == [failed.pk]
    assert admin_client.get(EXECUTIONS_URL, {"backend_alias": "test-tasks"}).context["cl"].result_count == 2
    assert admin_client.get(EXECUTIONS_URL, {"queue_name": "default"}).context["cl"].result_count == 3


def test_execution_detail_is_read_only_and_formatted(admin_client: Client) -> None:
    execution = enqueued(
        sample_tasks.echo,
        "<script>alert(1)</script>",
        status="FAILED",
        return_value={"total": 3},
        errors=[
            {"exception_class_path": "builtins.ValueError", "traceback": "Traceback ...\nValueError: <bad>"}
        ],
    )

    response = admin_client.get(
        reverse("admin:django_tasks_google_taskexecution_change", args=[execution.pk])
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<strong>ValueError</strong>: &lt;bad&gt;" in html  # the message first
    assert "<details><summary>Traceback (builtins.ValueError)</summary>" in html  # collapsed
    assert "ValueError: &lt;bad&gt;</pre>" in html
    assert "&quot;total&quot;: 3" in html
    assert 'name="_save"' not in html  # view only
    assert admin_client.get(reverse("admin:django_tasks_google_taskexecution_add")).status_code == 403


def test_cancel_and_force_cancel_actions(admin_client: Client) -> None:
    ready = enqueued()
    done = enqueued(status="SUCCESSFUL", finished_at=timezone.now())
    job = enqueued(sample_tasks.add.using(backend="test-jobs"), status="RUNNING")

    response = action(admin_client, EXECUTIONS_URL, "cancel_action", ready, done)
    assert "Cancelled 1 execution(s)" in messages_of(response)
    assert "Skipped 1 already-finished execution(s)" in messages_of(response)
    ready.refresh_from_db()
    assert ready.status == "FAILED" and ready.cancelled_at is not None
    assert TaskExecution.objects.get(pk=done.pk).status == "SUCCESSFUL"

    other = enqueued()
    response = action(admin_client, EXECUTIONS_URL, "force_cancel_action", job, other)
    job.refresh_from_db()
    assert job.force_cancel and job.cancelled_at is not None
    assert any(
        f"not supported by the backend of execution(s): {other.pk}" in t for t in messages_of(response)
    )
    assert TaskExecution.objects.get(pk=other.pk).status == "READY"


def test_retry_enqueues_a_copy_of_a_failed_execution(admin_client: Client) -> None:
    failed = enqueued(sample_tasks.add, 4, 5, status="FAILED", finished_at=timezone.now())
    ready = enqueued()

    response = action(admin_client, EXECUTIONS_URL, "retry_action", failed, ready)

    copy = TaskExecution.objects.exclude(pk__in=[failed.pk, ready.pk]).get()
    assert (copy.module_path, copy.args, copy.backend_alias, copy.status) == (
        sample_tasks.add.module_path,
        [4, 5],
        "test-tasks",
        "READY",
    )
    assert f"Re-enqueued 1 execution(s): {failed.pk} → {copy.pk}" in messages_of(response)
    assert "Skipped 1 execution(s) that have not failed" in messages_of(response)


def test_viewers_without_change_permission_get_no_actions(client: Client) -> None:
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_taskexecution"))
    client.force_login(viewer)
    enqueued()

    response = client.get(EXECUTIONS_URL)

    assert response.status_code == 200
    assert response.context["action_form"] is None or not [
        name for name, _label in response.context["action_form"].fields["action"].choices if name
    ]
