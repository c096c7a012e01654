"""`manage.py sync_scheduled_tasks [--dry-run] [--prune]`: reconcile scheduled tasks on deploy.

1. Upsert the schedules declared in settings.SCHEDULED_TASKS (rows marked "declared").
2. Sync every scheduled task with Cloud Scheduler: create, update, pause or resume its job
   (local ProcessBackend schedules have none and are only checked).
3. Declared rows whose declaration was removed: deleted with --prune, else reported.
4. With --prune: delete Cloud Scheduler jobs that push to this service's schedule_url but belong to
   no scheduled task (left over from renames, deleted rows or a restored database).

Every item is attempted; the command fails (exit 1) at the end if any of them failed. With
--dry-run nothing is written, in the database or in Cloud Scheduler: the output says what would be.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.tasks import task_backends

from django_tasks_google.backends.base import DjangoTasksGoogleBackend
from django_tasks_google.models import ScheduledTask
from django_tasks_google.scheduler import (
    SchedulerSyncError,
    SyncReport,
    declared_scheduled_tasks,
    delete_scheduled_task,
    sync_scheduled_task,
    upsert_declared,
    validate_scheduled_task,
)
from django_tasks_google.scheduling.cloud_scheduler import JobSync


class Command(BaseCommand):
    help = "Upsert settings.SCHEDULED_TASKS and bring Cloud Scheduler in line with the scheduled tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Change nothing; print what would change.")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Delete undeclared 'declared' rows and Cloud Scheduler jobs of this service without a row.",
        )

    def handle(self, *args: Any, dry_run: bool, prune: bool, **options: Any) -> None:
        self.dry_run = dry_run
        self.failures: list[str] = []
        try:
            declared = declared_scheduled_tasks()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        for definition in declared.values():
            self.upsert(definition)
        for scheduled in ScheduledTask.objects.exclude(name__in=list(declared)).order_by("name"):
            if scheduled.declared:
                self.undeclared(scheduled, prune=prune)
            else:
                self.sync(scheduled)
        if prune:
            self.prune_jobs()
        if self.failures:
            raise CommandError(
                f"{len(self.failures)} scheduled task(s) could not be synced: {'; '.join(self.failures)}"
            )

    def upsert(self, definition: ScheduledTask) -> None:
        stored = ScheduledTask.objects.filter(name=definition.name).first()
        if self.dry_run:
            try:
                validate_scheduled_task(definition)
            except ValidationError as exc:
                self.fail(definition.name, exc)
                return
            if stored is None:
                self.say(definition.name, "would be created from SCHEDULED_TASKS (and its job, if any)")
                return
            self.sync(stored, label="declared")
            return
        try:
            saved = upsert_declared(definition)
        except (ValidationError, SchedulerSyncError, DatabaseError) as exc:
            self.fail(definition.name, exc)
            return
        self.say(
            saved.name,
            f"{'created' if stored is None else 'upserted'} from SCHEDULED_TASKS ({_where(saved)})",
        )

    def sync(self, scheduled: ScheduledTask, *, label: str = "") -> None:
        try:
            report = sync_scheduled_task(scheduled.pk, dry_run=self.dry_run)
        except (ValidationError, SchedulerSyncError, DatabaseError) as exc:
            self.fail(scheduled.name, exc)
            return
        self.report(scheduled.name, report, label)

    def undeclared(self, scheduled: ScheduledTask, *, prune: bool) -> None:
        if not prune:
            self.say(
                scheduled.name,
                "is no longer in SCHEDULED_TASKS; --prune deletes it",
                style=self.style.WARNING,
            )
            return
        if self.dry_run:
            self.say(scheduled.name, "would be deleted (no longer in SCHEDULED_TASKS)")
            return
        try:
            delete_scheduled_task(scheduled.pk)
        except (SchedulerSyncError, DatabaseError) as exc:
            self.fail(scheduled.name, exc)
            return
        self.say(scheduled.name, "deleted (no longer in SCHEDULED_TASKS)")

    def prune_jobs(self) -> None:
        """Delete jobs that target one of our schedule URLs and belong to no scheduled task."""
        backends = [
            backend
            for backend in (task_backends[alias] for alias in task_backends.settings)
            if isinstance(backend, DjangoTasksGoogleBackend) and backend.uses_cloud_scheduler
        ]
        if not backends:
            self.stdout.write("No Cloud Scheduler backend is configured: no jobs to prune.")
            return
        ours = {url for url in (backend.schedule_url for backend in backends) if url}
        known = set(
            ScheduledTask.objects.filter(cloud_scheduler_job_name__isnull=False).values_list(
                "cloud_scheduler_job_name", flat=True
            )
        )
        seen: set[tuple[str | None, str | None, str | None]] = set()
        for backend in backends:
            place = (backend.api_endpoint, backend.project_id, backend.location)
            if place in seen:
                continue
            seen.add(place)
            sync = JobSync(backend, dry_run=self.dry_run)
            try:
                orphans = [job.name for job in sync.jobs_targeting(ours) if job.name not in known]
                for name in orphans:
                    report = SyncReport()
                    sync.delete(name, report)
                    self.stdout.write(
                        f"{'Would ' if self.dry_run else ''}{report}: no scheduled task uses it"
                    )
            except SchedulerSyncError as exc:
                self.fail(f"prune {backend.project_id}/{backend.location}", exc)

    # --- output ----------------------------------------------------------------------------------

    def report(self, name: str, report: SyncReport, label: str = "") -> None:
        prefix = "would: " if self.dry_run and report.actions else ""
        self.say(name, f"{label + ', ' if label else ''}{prefix}{report}")
        for warning in report.warnings:
            self.say(name, warning, style=self.style.WARNING)

    def say(self, name: str, message: str, *, style: Any = None) -> None:
        line = f"{name}: {message}"
        self.stdout.write(style(line) if style else line)

    def fail(self, name: str, exc: Exception) -> None:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        self.failures.append(f"{name}: {message}")
        self.stderr.write(self.style.ERROR(f"{name}: FAILED: {message}"))


def _where(scheduled: ScheduledTask) -> str:
    return (
        f"job {scheduled.cloud_scheduler_job_name}" if scheduled.cloud_scheduler_job_name else "fired locally"
    )
