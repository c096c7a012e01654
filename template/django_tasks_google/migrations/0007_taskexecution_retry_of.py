# The link from a copy enqueued by the admin's Retry to the execution it retried.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_tasks_google", "0006_scheduled_task_firings"),
    ]

    operations = [
        migrations.AddField(
            model_name="taskexecution",
            name="retry_of",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="retries",
                to="django_tasks_google.taskexecution",
            ),
        ),
    ]
