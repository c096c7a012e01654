"""`manage.py run_tasks`: the local worker for ProcessBackend aliases (see worker.py).

On start it upserts the schedules of settings.SCHEDULED_TASKS that it fires itself (those of the
ProcessBackends it serves; never a Cloud Scheduler call), so a fresh database has its schedules
without a separate `sync_scheduled_tasks`, and it logs what it upserted and what it left alone.
"""

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import task_backends

from django_tasks_google.backends import ProcessBackend
from django_tasks_google.scheduling.declared import upsert_declared_locally
from django_tasks_google.scheduling.local_cron import MAX_CATCH_UP_SLOTS, CatchUp
from django_tasks_google.worker import Worker
from django_tasks_google.worker_settings import WorkerSettings

logger = logging.getLogger(__name__)


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(value)
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Run tasks of the ProcessBackend aliases in TASKS until stopped, in a pool of processes "
        "that run one task at a time each."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            action="append",
            dest="backends",
            metavar="ALIAS",
            help="A ProcessBackend alias to serve (repeatable; default: all of them).",
        )
        parser.add_argument(
            "--queue", action="append", dest="queues", metavar="NAME", help="Only this queue (repeatable)."
        )
        parser.add_argument("--max-workers", type=positive_int, help="Concurrent task processes.")
        parser.add_argument(
            "--poll-interval", type=positive_float, metavar="SECONDS", help="Seconds between polls."
        )
        parser.add_argument("--batch-size", type=positive_int, help="Tasks started per poll at most.")
        parser.add_argument(
            "--recycle-after",
            type=positive_int,
            metavar="N",
            help="Replace a worker process after it ran N tasks (default: worker_recycle_after, 500).",
        )
        parser.add_argument(
            "--max-child-rss-mb",
            type=positive_float,
            metavar="MB",
            help="Replace a worker process whose memory grew past MB (default: worker_max_child_rss_mb).",
        )
        parser.add_argument(
            "--idle-child-seconds",
            type=non_negative_float,
            metavar="SECONDS",
            help=(
                "Let a worker process exit after SECONDS without a task; 0: keep it "
                "(default: worker_idle_child_seconds, 5)."
            ),
        )
        parser.add_argument(
            "--once", action="store_true", help="Poll once, wait for the tasks started, exit."
        )
        parser.add_argument(
            "--catch-up",
            nargs="?",
            const=CatchUp.LATEST,
            default=CatchUp.NONE,
            type=CatchUp,
            choices=[CatchUp.LATEST, CatchUp.ALL],
            metavar="{latest,all}",
            help=(
                "Also fire the cron slots missed while no worker ran. 'latest' (the default when "
                "the flag is given): only the latest missed slot of each schedule, as cron-like "
                "schedulers coalesce missed runs; 'all': each missed slot, oldest first, "
                f"{MAX_CATCH_UP_SLOTS} per schedule at most."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backends = self.process_backends(options["backends"])
        for backend in backends:
            backend.raise_for_option_errors()
        settings = WorkerSettings.from_backends(
            backends,
            max_workers=options["max_workers"],
            poll_interval=options["poll_interval"],
            batch_size=options["batch_size"],
            recycle_after=options["recycle_after"],
            max_child_rss_mb=options["max_child_rss_mb"],
            idle_child_seconds=options["idle_child_seconds"],
        )
        try:
            upserted = upsert_declared_locally(backend.alias for backend in backends)
        except ImproperlyConfigured as exc:  # only reached with --skip-checks: check reports it
            raise CommandError(str(exc)) from exc
        logger.info("Scheduled tasks: %s", upserted)
        worker = Worker(backends, settings, queues=options["queues"] or [], catch_up=options["catch_up"])
        worker.run(once=options["once"])

    def process_backends(self, aliases: list[str] | None) -> list[ProcessBackend]:
        if not aliases:
            backends = [backend for backend in task_backends.all() if isinstance(backend, ProcessBackend)]
            if not backends:
                raise CommandError("No ProcessBackend is configured in TASKS.")
            return backends
        unknown = [alias for alias in aliases if alias not in task_backends.settings]
        if unknown:
            raise CommandError(f"Unknown task backend aliases: {', '.join(unknown)}")
        others = [alias for alias in aliases if not isinstance(task_backends[alias], ProcessBackend)]
        if others:
            raise CommandError(f"Not ProcessBackend aliases: {', '.join(others)}")
        return [
            backend
            for alias in dict.fromkeys(aliases)
            if isinstance(backend := task_backends[alias], ProcessBackend)
        ]
