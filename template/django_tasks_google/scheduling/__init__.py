"""Scheduled (cron) tasks, one module per job.

* ``declared``: the schedules declared in ``settings.SCHEDULED_TASKS``.
* ``definitions``: create, validate, save and delete a ``ScheduledTask`` (atomic with the sync).
* ``cloud_scheduler``: the Cloud Scheduler job of a scheduled task, and bringing Google's copy in line.
* ``cron``: cron expressions, time zones, and the slots a schedule fires at.
* ``firing``: enqueue a scheduled task once per slot, however often the slot is delivered.
* ``pushes``: which Cloud Scheduler push may fire which slot (the ``/tasks/schedule/`` rules).
* ``local_cron``: the local worker's stand-in for Cloud Scheduler.

The public API is ``django_tasks_google.scheduler``; import from there.
"""
