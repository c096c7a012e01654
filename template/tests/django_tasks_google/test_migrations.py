"""A database created by the published django-tasks-google package (its migrations 0001-0004)
migrates forward to ours, keeping its executions and counting their past attempts."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

APP = "django_tasks_google"
PUBLISHED_LAST = (APP, "0004_taskexecution_force_cancel")


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor


def test_published_schema_migrates_forward() -> None:
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes(APP)
    try:
        executor = migrate([PUBLISHED_LAST])
        apps = executor.loader.project_state([PUBLISHED_LAST]).apps
        OldExecution = apps.get_model(APP, "TaskExecution")
        published_fields = {field.name for field in OldExecution._meta.get_fields()}
        assert {"lease_worker_id", "lease_expires_at", "max_attempts", "force_cancel", "backend_alias"} <= (
            published_fields
        )
        assert "attempts" not in published_fields
        old = OldExecution.objects.create(
            module_path="tests.django_tasks_google.sample_tasks.add",
            backend_alias="test-tasks",
            args=[1, 2],
            status="FAILED",
            worker_ids=["a", "b", "c"],
            errors=[{"exception_class_path": "builtins.ValueError", "traceback": "..."}],
        )
        migrate(latest)
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes(APP))

    from django_tasks_google.models import TaskExecution

    migrated = TaskExecution.objects.get(pk=old.pk)
    assert migrated.attempts == 3
    assert migrated.task_result.args == [1, 2]
    assert migrated.task_result.errors[0].exception_class_path == "builtins.ValueError"
