"""`manage.py prune_task_executions`: delete finished task executions and old schedule firings.

Meant to run daily (the deploy runs it as the Cloud Run job "<service>-prune", started by Cloud
Scheduler like recover_tasks). See django_tasks_google/retention.py for what goes and what stays.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tasks_google.execution_states import ExecutionState
from django_tasks_google.retention import FINISHED_STATES, prune, retention_period

UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> timedelta:
    """ "30d", "12h" or "90m" as a timedelta (more than zero)."""
    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"--older-than takes a number and a unit (d, h or m), e.g. 30d, not {text!r}")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = (
        "Delete task executions that finished more than --older-than ago (default: "
        "settings.TASKS_RETENTION_DAYS) and the schedule firings as old, keeping each schedule's latest."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            metavar="AGE",
            help="e.g. 30d, 12h, 90m (default: settings.TASKS_RETENTION_DAYS days, 30 unless set).",
        )
        parser.add_argument(
            "--status",
            action="append",
            dest="states",
            choices=[state.value for state in FINISHED_STATES],
            help="Only executions in this state (repeatable; default: all finished ones).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")

    def handle(
        self, *args: Any, older_than: str | None, states: list[str] | None, dry_run: bool, **options: Any
    ) -> None:
        try:
            age = retention_period() if older_than is None else parse_age(older_than)
            report = prune(age, [ExecutionState(state) for state in states or ()], dry_run=dry_run)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(report))
