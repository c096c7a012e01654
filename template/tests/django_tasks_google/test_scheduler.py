"""schedule_task / delete_scheduled_task / sync_scheduled_tasks against the Cloud Scheduler fake.

The real google-cloud-scheduler client talks gRPC to the in-process fake; assertions are made on
the requests it received (CreateJob, UpdateJob, DeleteJob, PauseJob, ResumeJob, ListJobs) and on
the database, including after Cloud Scheduler refused a change.
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import grpc
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from google.cloud import scheduler_v1

from django_tasks_google import gcp
from django_tasks_google.backends import push_mac
from django_tasks_google.models import ScheduledTask
from django_tasks_google.scheduler import (
    SchedulerSyncError,
    delete_scheduled_task,
    save_scheduled_task,
    schedule_task,
    sync_scheduled_task,
)
from django_tasks_google.scheduling.declared import upsert_declared_locally
from tests.django_tasks_google import sample_tasks
from tests.django_tasks_google.scheduler_setup import (
    ORIGIN,
    PARENT,
    SCHEDULE_URL,
    SERVICE_ACCOUNT,
    configure_cloud,
    job_name,
    scheduler_calls,
    set_job_state,
    stored_job,
)

pytestmark = pytest.mark.django_db

State = scheduler_v1.Job.State


@pytest.fixture
def cloud(settings: Any, google_fake: Any, oidc_issuer: Any) -> Any:
    return configure_cloud(settings, google_fake, oidc_issuer)


def schedule(name: str = "every-3-hours", *, schedule: str = "0 */3 * * *", **kwargs: Any) -> ScheduledTask:
    options: dict[str, Any] = {"name": name, "backend": "cloud", "args": [1, 2], **kwargs}
    return schedule_task(sample_tasks.add, schedule, **options)


# --- create / update ------------------------------------------------------------------------------


def test_schedule_task_creates_the_row_and_its_job(cloud: Any, google_fake: Any) -> None:
    row = schedule(description="Adds", time_zone="Europe/Amsterdam")

    assert scheduler_calls(google_fake) == ["GetJob", "CreateJob"]
    [request] = google_fake.requests("CreateJob")
    assert request.parent == PARENT
    job = request.job
    assert job.name == job_name("every-3-hours")
    assert job.description == "Adds"
    assert job.schedule == "0 */3 * * *"
    assert job.time_zone == "Europe/Amsterdam"
    target = job.http_target
    assert target.uri == SCHEDULE_URL
    assert target.http_method == scheduler_v1.HttpMethod.POST
    assert dict(target.headers) == {
        "Content-Type": "application/x-www-form-urlencoded",
        push_mac.HEADER: push_mac.for_job(cloud, row.pk, job.name),  # test_push_security.py
    }
    assert target.body == f"task_id={row.pk}&backend=cloud".encode()
    assert target.oidc_token.service_account_email == SERVICE_ACCOUNT
    assert target.oidc_token.audience == ORIGIN  # explicit: the URL with its path would be refused
    assert job.retry_config.retry_count == 3
    assert job.attempt_deadline == timedelta(minutes=1)

    row.refresh_from_db()
    assert row.cloud_scheduler_job_name == job_name("every-3-hours")
    assert row.module_path == sample_tasks.add.module_path
    assert (row.backend_alias, row.args, row.state) == ("cloud", [1, 2], ScheduledTask.State.ENABLED)
    assert stored_job(google_fake, row.cloud_scheduler_job_name).state == State.ENABLED


def test_scheduling_again_with_the_same_definition_changes_nothing(cloud: Any, google_fake: Any) -> None:
    first = schedule()
    google_fake.calls.clear()

    again = schedule()

    assert again.pk == first.pk
    assert scheduler_calls(google_fake) == ["GetJob"]
    assert again.updated_at == first.updated_at
    assert ScheduledTask.objects.count() == 1


def test_a_changed_definition_updates_the_job_with_a_mask(cloud: Any, google_fake: Any) -> None:
    first = schedule()
    google_fake.calls.clear()

    changed = schedule(schedule="*/10 * * * *", time_zone="utc")

    assert scheduler_calls(google_fake) == ["GetJob", "UpdateJob"]
    [request] = google_fake.requests("UpdateJob")
    assert request.job.name == job_name("every-3-hours")
    assert request.job.schedule == "*/10 * * * *"
    assert request.job.time_zone == "UTC"
    assert set(request.update_mask.paths) == {
        "description",
        "schedule",
        "time_zone",
        "http_target",
        "retry_config",
        "attempt_deadline",
    }
    assert stored_job(google_fake, job_name("every-3-hours")).schedule == "*/10 * * * *"
    assert changed.updated_at > first.updated_at


def test_a_job_left_in_update_failed_is_updated_again(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    set_job_state(google_fake, row.cloud_scheduler_job_name, State.UPDATE_FAILED)
    google_fake.calls.clear()

    sync_scheduled_task(row.pk)

    assert scheduler_calls(google_fake) == ["GetJob", "UpdateJob"]


# --- pause / resume (compared with PAUSED, not the system's DISABLED) ----------------------------


def test_disabled_tasks_are_paused_and_resumed(cloud: Any, google_fake: Any) -> None:
    row = schedule(enabled=False)
    name = row.cloud_scheduler_job_name
    assert scheduler_calls(google_fake) == ["GetJob", "CreateJob", "PauseJob"]
    assert google_fake.requests("PauseJob")[0].name == name
    assert stored_job(google_fake, name).state == State.PAUSED

    google_fake.calls.clear()
    schedule(enabled=False)  # already paused: no PauseJob on a paused job
    assert scheduler_calls(google_fake) == ["GetJob"]

    schedule(enabled=True)
    assert scheduler_calls(google_fake) == ["GetJob", "GetJob", "ResumeJob"]
    assert stored_job(google_fake, name).state == State.ENABLED


def test_a_job_disabled_by_the_system_is_reported_not_toggled(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    set_job_state(google_fake, row.cloud_scheduler_job_name, State.DISABLED)
    google_fake.calls.clear()

    report = sync_scheduled_task(row.pk)

    assert scheduler_calls(google_fake) == ["GetJob"]
    assert "disabled" in " ".join(report.warnings)


# --- renames and backend changes leave no second job firing ---------------------------------------


def test_a_rename_creates_the_new_job_and_deletes_the_old_one(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    google_fake.calls.clear()

    row.name = "every-three-hours"
    save_scheduled_task(row)

    assert scheduler_calls(google_fake) == ["GetJob", "CreateJob", "DeleteJob"]
    assert google_fake.requests("DeleteJob")[0].name == job_name("every-3-hours")
    assert set(google_fake.scheduler_jobs) == {job_name("every-three-hours")}
    row.refresh_from_db()
    assert row.cloud_scheduler_job_name == job_name("every-three-hours")


def test_moving_to_another_project_deletes_the_job_in_the_old_one(
    settings: Any, google_fake: Any, oidc_issuer: Any
) -> None:
    configure_cloud(settings, google_fake, oidc_issuer, elsewhere={"project_id": "other-project"})
    row = schedule()
    row.backend_alias = "elsewhere"
    save_scheduled_task(row)

    assert set(google_fake.scheduler_jobs) == {job_name("every-3-hours", project="other-project")}
    assert google_fake.requests("DeleteJob")[0].name == job_name("every-3-hours")
    body = stored_job(google_fake, job_name("every-3-hours", project="other-project")).http_target.body
    assert body == f"task_id={row.pk}&backend=elsewhere".encode()


def test_moving_to_a_local_backend_deletes_the_job_and_back_creates_it(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    row.backend_alias = "test-tasks"
    save_scheduled_task(row)

    assert google_fake.scheduler_jobs == {}
    row.refresh_from_db()
    assert row.cloud_scheduler_job_name is None

    row.backend_alias = "cloud"
    save_scheduled_task(row)
    assert set(google_fake.scheduler_jobs) == {job_name("every-3-hours")}


# --- failures leave nothing half-saved ------------------------------------------------------------


def test_a_refused_create_saves_no_row(cloud: Any, google_fake: Any) -> None:
    google_fake.fail_next("CreateJob", grpc.StatusCode.PERMISSION_DENIED, "cloudscheduler.jobs.create denied")

    with pytest.raises(SchedulerSyncError, match=r"PERMISSION_DENIED: cloudscheduler\.jobs\.create denied"):
        schedule()

    assert not ScheduledTask.objects.exists()
    assert google_fake.scheduler_jobs == {}


def test_an_error_whose_http_status_has_no_name_is_still_reported(cloud: Any, google_fake: Any) -> None:
    """google-api-core gives CANCELLED the bare HTTP status 499: the message names the gRPC status."""
    google_fake.fail_next("CreateJob", grpc.StatusCode.CANCELLED, "the call was cancelled")

    with pytest.raises(SchedulerSyncError, match="CANCELLED: the call was cancelled"):
        schedule()

    assert not ScheduledTask.objects.exists()


def test_a_refused_pause_removes_the_job_it_just_created(cloud: Any, google_fake: Any) -> None:
    google_fake.fail_next("PauseJob", grpc.StatusCode.INTERNAL)

    with pytest.raises(SchedulerSyncError, match="pause"):
        schedule(enabled=False)

    assert not ScheduledTask.objects.exists()
    assert google_fake.scheduler_jobs == {}


def test_a_refused_update_keeps_the_stored_definition(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    google_fake.fail_next("UpdateJob", grpc.StatusCode.INVALID_ARGUMENT, "bad schedule")

    with pytest.raises(SchedulerSyncError, match="bad schedule"):
        schedule(schedule="*/5 * * * *")

    row.refresh_from_db()
    assert row.schedule == "0 */3 * * *"
    assert stored_job(google_fake, row.cloud_scheduler_job_name).schedule == "0 */3 * * *"


def test_a_rename_whose_old_job_cannot_be_deleted_is_undone(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    google_fake.fail_next("DeleteJob", grpc.StatusCode.PERMISSION_DENIED)

    row.name = "renamed"
    with pytest.raises(SchedulerSyncError, match="delete"):
        save_scheduled_task(row)

    assert ScheduledTask.objects.get().name == "every-3-hours"
    # The job created for the new name was deleted again (the second DeleteJob call).
    assert set(google_fake.scheduler_jobs) == {job_name("every-3-hours")}


def test_a_job_of_the_same_name_pushing_elsewhere_is_never_taken_over(cloud: Any, google_fake: Any) -> None:
    foreign = scheduler_v1.Job(
        name=job_name("every-3-hours"),
        schedule="0 0 * * *",
        http_target=scheduler_v1.HttpTarget(uri="https://another-service.example.com/tasks/schedule/"),
    )
    gcp.cloud_scheduler_client(google_fake.endpoint).create_job(parent=PARENT, job=foreign)

    with pytest.raises(SchedulerSyncError, match="belongs to another service"):
        schedule()

    assert not ScheduledTask.objects.exists()
    assert stored_job(google_fake, job_name("every-3-hours")).http_target.uri == foreign.http_target.uri


# --- validation happens before any call -----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"schedule": "61 * * * *"}, "schedule", "not a valid cron expression"),
        ({"schedule": "@daily"}, "schedule", "five fields"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "not a time zone"),
        ({"name": "with spaces"}, "name", "not a valid name"),
        ({"backend": "nope"}, "backend_alias", "No task backend 'nope'"),
        ({"queue_name": "not-a-queue"}, "queue_name", "not-a-queue"),
    ],
)
def test_bad_definitions_are_refused_with_a_clear_error(
    cloud: Any, google_fake: Any, changes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        schedule(**changes)

    assert message in " ".join(refused.value.message_dict[field])
    assert not ScheduledTask.objects.exists()
    assert scheduler_calls(google_fake) == []


def test_schedule_task_needs_a_task() -> None:
    with pytest.raises(TypeError, match="needs a Task"):
        schedule_task(sample_tasks.add.func, "* * * * *")


# --- local schedules never touch Cloud Scheduler --------------------------------------------------


def test_local_schedules_build_no_client(google_fake: Any) -> None:
    """No Google backend is configured: a client would look for credentials and fail."""
    row = schedule_task(sample_tasks.add, "*/5 * * * *", name="local", args=[1, 1])
    row.schedule = "*/10 * * * *"
    save_scheduled_task(row)
    sync_scheduled_task(row.pk)
    delete_scheduled_task(row.pk)

    assert row.cloud_scheduler_job_name is None
    assert not ScheduledTask.objects.exists()
    assert google_fake.calls == []


# --- delete -----------------------------------------------------------------------------------------


def test_delete_removes_the_job_and_the_row(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    delete_scheduled_task(row.pk)

    assert google_fake.requests("DeleteJob")[0].name == job_name("every-3-hours")
    assert google_fake.scheduler_jobs == {}
    assert not ScheduledTask.objects.exists()


def test_a_refused_delete_keeps_the_row(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    google_fake.fail_next("DeleteJob", grpc.StatusCode.PERMISSION_DENIED)

    with pytest.raises(SchedulerSyncError):
        delete_scheduled_task(row.pk)

    assert ScheduledTask.objects.filter(pk=row.pk).exists()
    assert set(google_fake.scheduler_jobs) == {job_name("every-3-hours")}


def test_a_job_already_gone_does_not_block_deleting_the_row(cloud: Any, google_fake: Any) -> None:
    row = schedule()
    with google_fake._lock:
        google_fake.scheduler_jobs.clear()

    delete_scheduled_task(row.pk)
    assert not ScheduledTask.objects.exists()


# --- manage.py sync_scheduled_tasks ---------------------------------------------------------------


def sync_command(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("sync_scheduled_tasks", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


DECLARED = {
    "adder": {
        "task": sample_tasks.add.module_path,
        "schedule": "*/15 * * * *",
        "backend": "cloud",
        "args": [2, 3],
    },
}


def test_sync_command_upserts_declared_schedules_and_syncs_the_rest(
    cloud: Any, google_fake: Any, settings: Any
) -> None:
    admin_made = schedule(name="admin-made")
    with google_fake._lock:
        google_fake.scheduler_jobs.clear()  # e.g. deleted by hand in the Cloud console
    settings.SCHEDULED_TASKS = DECLARED

    output = sync_command()

    declared = ScheduledTask.objects.get(name="adder")
    assert declared.declared and declared.args == [2, 3] and declared.schedule == "*/15 * * * *"
    assert set(google_fake.scheduler_jobs) == {job_name("adder"), job_name("admin-made")}
    assert "adder: created from SCHEDULED_TASKS" in output
    assert f"admin-made: create {admin_made.cloud_scheduler_job_name}" in output

    settings.SCHEDULED_TASKS = {"adder": {**DECLARED["adder"], "schedule": "0 * * * *"}}
    google_fake.calls.clear()
    sync_command()
    assert stored_job(google_fake, job_name("adder")).schedule == "0 * * * *"
    assert scheduler_calls(google_fake).count("UpdateJob") == 1  # admin-made was unchanged


def test_the_local_worker_upserts_only_its_own_declarations_and_never_calls_cloud_scheduler(
    cloud: Any, google_fake: Any, settings: Any
) -> None:
    schedule(name="moved")  # has a Cloud Scheduler job; its declaration now puts it on the worker
    google_fake.calls.clear()
    local = {"task": sample_tasks.add.module_path, "schedule": "*/5 * * * *"}  # add's own: test-tasks
    settings.SCHEDULED_TASKS = {
        **DECLARED,  # "adder", on the Google backend
        "local": local,
        "other-worker": {**local, "backend": "test-jobs"},
        "moved": {**local, "backend": "test-tasks"},
        "broken": {**local, "task": "tests.no_such_module.task"},
    }

    report = upsert_declared_locally(["test-tasks"])

    assert (report.upserted, report.left_to_sync, report.failed) == (
        ["local"],
        ["adder", "moved"],
        ["broken"],
    )
    assert str(report) == (
        "1 declared schedule(s) upserted (local); 2 left to `manage.py sync_scheduled_tasks` "
        "(Cloud Scheduler's): adder, moved; 1 invalid, not upserted: broken"
    )
    assert scheduler_calls(google_fake) == []
    assert sorted(ScheduledTask.objects.values_list("name", flat=True)) == ["local", "moved"]
    upserted = ScheduledTask.objects.get(name="local")
    assert (
        upserted.declared and upserted.schedule == "*/5 * * * *" and upserted.cloud_scheduler_job_name is None
    )
    assert ScheduledTask.objects.get(name="moved").backend_alias == "cloud"  # left as it was


def test_sync_command_dry_run_changes_nothing(cloud: Any, google_fake: Any, settings: Any) -> None:
    row = schedule(name="admin-made")
    ScheduledTask.objects.filter(pk=row.pk).update(schedule="*/5 * * * *")
    settings.SCHEDULED_TASKS = DECLARED
    google_fake.calls.clear()

    output = sync_command("--dry-run", "--prune")

    assert "adder: would be created" in output
    assert f"admin-made: would: update {row.cloud_scheduler_job_name}" in output
    assert set(scheduler_calls(google_fake)) <= {"GetJob", "ListJobs"}
    assert not ScheduledTask.objects.filter(name="adder").exists()
    assert stored_job(google_fake, row.cloud_scheduler_job_name).schedule == "0 */3 * * *"


def test_sync_command_prune_deletes_orphan_jobs_of_this_service_only(
    cloud: Any, google_fake: Any, settings: Any
) -> None:
    kept = schedule(name="kept")
    client = gcp.cloud_scheduler_client(google_fake.endpoint)
    orphan = scheduler_v1.Job(
        name=f"{PARENT}/jobs/svc-renamed-long-ago",
        schedule="0 0 * * *",
        http_target=scheduler_v1.HttpTarget(uri=SCHEDULE_URL, body=b"task_id=999&backend=cloud"),
    )
    foreign = scheduler_v1.Job(
        name=f"{PARENT}/jobs/other-service-nightly",
        schedule="0 0 * * *",
        http_target=scheduler_v1.HttpTarget(uri="https://other.example.com/tasks/schedule/"),
    )
    client.create_job(parent=PARENT, job=orphan)
    client.create_job(parent=PARENT, job=foreign)

    output = sync_command("--prune")

    assert set(google_fake.scheduler_jobs) == {kept.cloud_scheduler_job_name, foreign.name}
    assert f"delete {orphan.name}" in output


def test_sync_command_prune_deletes_rows_no_longer_declared(
    cloud: Any, google_fake: Any, settings: Any
) -> None:
    settings.SCHEDULED_TASKS = DECLARED
    sync_command()
    settings.SCHEDULED_TASKS = {}

    assert "no longer in SCHEDULED_TASKS; --prune deletes it" in sync_command()
    assert ScheduledTask.objects.filter(name="adder").exists()

    sync_command("--prune")
    assert not ScheduledTask.objects.filter(name="adder").exists()
    assert google_fake.scheduler_jobs == {}


def test_sync_command_reports_every_failure_and_exits_non_zero(
    cloud: Any, google_fake: Any, settings: Any
) -> None:
    settings.SCHEDULED_TASKS = {
        "bad-cron": {"task": sample_tasks.add.module_path, "schedule": "every day", "backend": "cloud"},
        "adder": DECLARED["adder"],
    }

    with pytest.raises(CommandError, match="1 scheduled task"):
        sync_command()
    assert ScheduledTask.objects.filter(name="adder").exists()  # the good one was still synced

    settings.SCHEDULED_TASKS = {"typo": {"task": sample_tasks.add.module_path, "shedule": "* * * * *"}}
    with pytest.raises(CommandError, match=r"SCHEDULED_TASKS\['typo'\] has unknown key\(s\) 'shedule'"):
        sync_command()


def test_manage_py_check_names_a_bad_declaration(settings: Any) -> None:
    settings.SCHEDULED_TASKS = {
        "fine": {"task": sample_tasks.add.module_path, "schedule": "*/5 * * * *", "args": [1, 2]},
        "typo": {
            "task": sample_tasks.add.module_path,
            "schedule": "*/5 * * *",
            "time_zone": "Europe/Amsteram",
        },
    }

    with pytest.raises(SystemCheckError) as failed:
        call_command("check")

    report = str(failed.value)
    assert "SCHEDULED_TASKS['typo']: schedule:" in report
    assert "SCHEDULED_TASKS['typo']: time_zone:" in report
    assert "'fine'" not in report

    settings.SCHEDULED_TASKS = {"typo": {"task": sample_tasks.add.module_path}}
    with pytest.raises(SystemCheckError, match=r"SCHEDULED_TASKS\['typo'\]\['schedule'\] is required"):
        call_command("check")
