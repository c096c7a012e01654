# Our first own migration: a true attempt counter, the per-attempt timeout, and indexes for the
# worker's and the admin's queries.

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def count_past_attempts(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Rows written by the published package: one worker id was stored per attempt."""
    TaskExecution = apps.get_model("django_tasks_google", "TaskExecution")
    rows = TaskExecution.objects.using(schema_editor.connection.alias).only("pk", "worker_ids")
    batch = []
    for row in rows.iterator(chunk_size=500):
        if not row.worker_ids:
            continue
        row.attempts = len(row.worker_ids)
        batch.append(row)
        if len(batch) == 500:
            TaskExecution.objects.bulk_update(batch, ["attempts"])
            batch = []
    TaskExecution.objects.bulk_update(batch, ["attempts"])


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks_google", "0004_taskexecution_force_cancel"),
    ]

    operations = [
        migrations.AddField(
            model_name="taskexecution",
            name="attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(count_past_attempts, migrations.RunPython.noop, elidable=True),
        migrations.AddField(
            model_name="taskexecution",
            name="timeout",
            field=models.DurationField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="scheduledtask",
            name="schedule",
            field=models.TextField(help_text="Unix cron expression, e.g. '0 */3 * * *'."),
        ),
        migrations.AddIndex(
            model_name="taskexecution",
            index=models.Index(
                fields=["status", "backend_alias", "queue_name", "run_after"], name="dtg_execution_poll_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="taskexecution",
            index=models.Index(fields=["status", "lease_expires_at"], name="dtg_execution_lease_idx"),
        ),
        migrations.AddIndex(
            model_name="taskexecution",
            index=models.Index(fields=["enqueued_at"], name="dtg_execution_enqueued_idx"),
        ),
    ]
