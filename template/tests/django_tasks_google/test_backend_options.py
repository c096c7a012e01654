"""Backend OPTIONS: defaults, and every bad value reported by `manage.py check`, naming the option."""

import dataclasses
from datetime import timedelta

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.tasks import task_backends
from django.test import override_settings

from django_tasks_google.backends import CloudRunJobsBackend, CloudTasksBackend, ProcessBackend

PROCESS = "django_tasks_google.backends.ProcessBackend"
GCP_OPTIONS = {
    "project_id": "my-project",
    "location": "europe-west1",
    "base_url": "https://svc-123.run.app/tasks",
    "oidc_service_account": "invoker@my-project.iam.gserviceaccount.com",
}


def process_backend(**options: object) -> ProcessBackend:
    return ProcessBackend("local", {"QUEUES": ["default"], "OPTIONS": options})


def error_messages(backend: object) -> list[str]:
    return [message.msg for message in backend.check() if message.level >= checks.ERROR]


def test_process_backend_defaults() -> None:
    backend = process_backend()
    assert backend.mode == "cloud_tasks"
    assert (backend.max_attempts, backend.max_workers, backend.batch_size) == (1, 4, 4)
    assert backend.poll_interval == 1.0
    assert (backend.worker_recycle_after, backend.worker_max_child_rss_mb) == (500, 0)
    assert backend.worker_idle_child_seconds == 5.0
    assert backend.supports_defer and not backend.supports_force_cancel
    assert backend.timeout_range == (timedelta(seconds=15), timedelta(minutes=30))
    assert backend.heartbeat_enabled
    assert (backend.heartbeat_interval, backend.heartbeat_timeout) == (
        timedelta(seconds=10),
        timedelta(seconds=30),
    )
    assert backend.heartbeat_join_timeout == timedelta(seconds=5)
    assert (backend.max_history_entries, backend.cache_ttl_max_attempts) == (100, 600)
    assert (backend.cache_alias, backend.cache_prefix) == ("default", "django-tasks-google")
    assert not backend.run_once
    assert backend.requires_gcp_config is False and backend.uses_cloud_scheduler is False
    assert backend.execute_url is None and backend.oidc_audience is None
    assert backend.check() == []


def test_process_backend_cloud_run_jobs_mode() -> None:
    backend = process_backend(mode="cloud_run_jobs", max_workers=2)
    assert not backend.supports_defer and backend.supports_force_cancel
    assert backend.timeout_range == (timedelta(seconds=1), timedelta(hours=168))
    assert backend.batch_size == 2


def test_gcp_urls_and_audience_are_derived_from_base_url() -> None:
    backend = CloudTasksBackend("default", {"OPTIONS": GCP_OPTIONS})
    assert backend.base_url == "https://svc-123.run.app/tasks/"
    assert backend.execute_url == "https://svc-123.run.app/tasks/execute/"
    assert backend.schedule_url == "https://svc-123.run.app/tasks/schedule/"
    assert backend.oidc_audience == "https://svc-123.run.app"
    assert backend.check() == []
    jobs = CloudRunJobsBackend("jobs", {"OPTIONS": GCP_OPTIONS})
    assert jobs.command == ("python", "manage.py", "execute_task")
    assert jobs.supports_force_cancel and not jobs.supports_defer


def test_missing_gcp_options_are_check_errors_not_import_errors() -> None:
    backend = CloudTasksBackend("default", {"OPTIONS": {"location": "us-central1"}})
    messages = error_messages(backend)
    for name in ("project_id", "base_url", "oidc_service_account"):
        assert any(f"{name} is required" in message for message in messages), messages
    assert all("TASKS['default']" in message for message in messages)
    assert {message.id for message in backend.check()} == {"django_tasks_google.E001"}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"heartbeat_interval_seconds": 40}, "heartbeat_interval_seconds cannot be greater than"),
        ({"heartbeat_timeout_seconds": 0}, "heartbeat_timeout_seconds must be greater than 0"),
        ({"heartbeat_interval_seconds": "10"}, "heartbeat_interval_seconds must be a number"),
        ({"heartbeat_enabled": "no"}, "heartbeat_enabled must be True or False"),
        ({"heartbeat_join_timeout_seconds": -1}, "heartbeat_join_timeout_seconds must be at least 0"),
        ({"mode": "cloud_functions"}, "ProcessBackend mode must be 'cloud_tasks' or 'cloud_run_jobs'"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"max_workers": 2.5}, "max_workers must be a whole number"),
        ({"worker_recycle_after": 0}, "worker_recycle_after must be at least 1"),
        ({"worker_max_child_rss_mb": -1}, "worker_max_child_rss_mb must be at least 0"),
        ({"worker_max_child_rss_mb": "1G"}, "worker_max_child_rss_mb must be a number"),
        ({"worker_idle_child_seconds": -1}, "worker_idle_child_seconds must be at least 0"),
        ({"max_history_entries": 0}, "max_history_entries must be at least 1"),
        ({"queue_aliases": ["default"]}, "queue_aliases must map queue names"),
        ({"run_once": 1}, "run_once must be True or False"),
    ],
)
def test_bad_option_is_a_check_error_naming_it(options: dict, named: str) -> None:
    backend = process_backend(**options)  # constructing never raises
    messages = error_messages(backend)
    assert any(named in message for message in messages), messages


def test_unknown_option_and_tight_heartbeat_are_warnings() -> None:
    backend = process_backend(heartbeat_interval_seconds=20, max_attemps=3)
    warnings = {message.id: message.msg for message in backend.check() if message.level == checks.WARNING}
    assert "'max_attemps'" in warnings["django_tasks_google.W001"]
    assert "heartbeat_interval_seconds" in warnings["django_tasks_google.W002"]
    assert error_messages(backend) == []


@pytest.mark.django_db
def test_manage_py_check_reports_the_option() -> None:
    bad = {"BACKEND": PROCESS, "OPTIONS": {"heartbeat_interval_seconds": 60}}
    with (
        # No declared schedules: they name the project's own aliases, which this TASKS lacks.
        override_settings(TASKS={"default": bad}, SCHEDULED_TASKS={}),
        pytest.raises(SystemCheckError, match="heartbeat_interval_seconds cannot be greater"),
    ):
        call_command("check")


def test_enqueue_refuses_a_misconfigured_backend() -> None:
    from tests.django_tasks_google.sample_tasks import add

    bad = {"BACKEND": PROCESS, "QUEUES": ["default"], "OPTIONS": {"heartbeat_timeout_seconds": -5}}
    with (
        override_settings(TASKS={"test-tasks": bad}),
        pytest.raises(ImproperlyConfigured, match="heartbeat_timeout_seconds"),
    ):
        add.enqueue(1, 2)


def test_test_backends_are_process_backends() -> None:
    assert isinstance(task_backends["test-jobs"], ProcessBackend)
    assert task_backends["test-jobs"].mode == "cloud_run_jobs"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"dispatch_deadline_seconds": 14}, "dispatch_deadline_seconds must be at least 15"),
        ({"dispatch_deadline_seconds": 1801}, "dispatch_deadline_seconds must be at most 1800"),
        ({"create_task_timeout_seconds": 0}, "create_task_timeout_seconds must be greater than 0"),
        ({"create_task_timeout_seconds": "5"}, "create_task_timeout_seconds must be a number"),
    ],
)
def test_cloud_tasks_options_are_checked(options: dict, named: str) -> None:
    backend = CloudTasksBackend("default", {"OPTIONS": {**GCP_OPTIONS, **options}})
    messages = error_messages(backend)
    assert len(messages) == 1 and named in messages[0], messages
    assert "TASKS['default']['OPTIONS']" in messages[0]


def test_options_are_one_frozen_dataclass_also_read_as_attributes() -> None:
    backend = CloudTasksBackend("default", {"OPTIONS": {**GCP_OPTIONS, "dispatch_deadline_seconds": 900}})
    config = backend.config
    assert config.dispatch_deadline == backend.dispatch_deadline == timedelta(minutes=15)
    assert config.create_task_timeout == timedelta(seconds=10)
    assert backend.heartbeat_timeout is config.heartbeat_timeout
    assert backend.options["dispatch_deadline_seconds"] == 900  # Django's raw OPTIONS stay as given
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run_once = True  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no attribute 'not_an_option'"):
        backend.not_an_option  # noqa: B018
    # Options of another backend class are neither read nor accepted.
    process = process_backend(dispatch_deadline_seconds=900)
    assert not hasattr(process.config, "dispatch_deadline")
    assert any(m.id == "django_tasks_google.W001" for m in process.check())


def test_capabilities_are_flags() -> None:
    jobs = CloudRunJobsBackend("jobs", {"OPTIONS": GCP_OPTIONS})
    tasks = CloudTasksBackend("default", {"OPTIONS": GCP_OPTIONS})
    assert (jobs.enforces_timeout, tasks.enforces_timeout) == (True, False)
    assert jobs.needs_recovery and tasks.needs_recovery
    local = process_backend(mode="cloud_run_jobs")
    assert local.enforces_timeout and not local.needs_recovery
    assert not process_backend().enforces_timeout
