# Scheduling: the per-slot firing record (idempotent firing for Cloud Scheduler pushes and local
# workers), and when a ScheduledTask was created / last changed / declared in settings.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_tasks_google', '0005_taskexecution_attempts_timeout_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='scheduledtask',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now, editable=False),
        ),
        migrations.AddField(
            model_name='scheduledtask',
            name='declared',
            field=models.BooleanField(default=False, editable=False, help_text='Declared in settings.SCHEDULED_TASKS: sync_scheduled_tasks overwrites edits made here.'),
        ),
        migrations.AddField(
            model_name='scheduledtask',
            name='updated_at',
            field=models.DateTimeField(default=django.utils.timezone.now, editable=False),
        ),
        migrations.CreateModel(
            name='ScheduledTaskFiring',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.TextField(unique=True)),
                ('source', models.TextField(choices=[('cloud_scheduler', 'Cloud Scheduler'), ('local', 'Local worker'), ('manual', 'Run now')])),
                ('scheduled_for', models.DateTimeField()),
                ('fired_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('scheduled_task', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='firings', to='django_tasks_google.scheduledtask')),
                ('task_execution', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='django_tasks_google.taskexecution')),
            ],
            options={
                'indexes': [models.Index(fields=['scheduled_task', 'source', 'scheduled_for'], name='dtg_firing_latest_idx')],
            },
        ),
    ]
