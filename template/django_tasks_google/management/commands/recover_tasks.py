"""`manage.py recover_tasks`: re-deliver tasks that Google Cloud stopped delivering.

Meant to run every few minutes on Google Cloud (e.g. a Cloud Scheduler job that starts a Cloud
Run job running this command): the platforms' retries are limited, and nothing else notices a
task whose process crashed after its last retry, or whose dispatch never happened. See
django_tasks_google/recovery.py. Safe to run concurrently; always exits 0 once it ran.
"""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tasks_google.recovery import recover

DEFAULT_OLDER_THAN_SECONDS = 600


class Command(BaseCommand):
    help = (
        "Release expired leases and re-dispatch READY tasks of the Cloud Tasks / Cloud Run Jobs "
        "backends that the platform no longer delivers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=DEFAULT_OLDER_THAN_SECONDS,
            metavar="SECONDS",
            help="Only READY tasks neither enqueued nor attempted in the last SECONDS "
            f"(default {DEFAULT_OLDER_THAN_SECONDS}): younger ones may still be in flight.",
        )
        parser.add_argument(
            "--backend",
            action="append",
            dest="aliases",
            metavar="ALIAS",
            help="A Cloud Tasks or Cloud Run Jobs backend alias (repeatable; default: all of them).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be done; change nothing."
        )

    def handle(
        self, *args: Any, older_than: int, aliases: list[str] | None, dry_run: bool, **options: Any
    ) -> None:
        if older_than < 0:
            raise CommandError("--older-than must be 0 or more seconds")
        try:
            summary = recover(older_than=timedelta(seconds=older_than), aliases=aliases, dry_run=dry_run)
        except ValueError as exc:
            # An alias that is not a Google backend: a usage error, raised before anything changed.
            raise CommandError(str(exc)) from None
        self.stdout.write(str(summary))
