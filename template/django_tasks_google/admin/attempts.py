"""An execution's attempts and errors as an operator reads them.

A row keeps the attempt count, the time of the first and the last attempt, and the last
``max_history_entries`` worker ids and errors (each a class path, a traceback and the time it was
recorded). This module lines them up into one entry per attempt, newest last, and words an error as
"Class: message" with the traceback kept for the page's collapsed section. An attempt between the
first and the last shows when its error was recorded ("ended": when it failed, or when its expired
lease was found); one whose error was not kept (or was stored before errors kept their time) shows
as unknown rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.tasks import TaskResultStatus
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..models import TaskExecution
from ..serialization import recorded_at
from .times import local_time


def error_message(entry: dict[str, Any]) -> str:
    """The exception's message: the traceback's last line without its "Class: " prefix."""
    lines = [line for line in str(entry.get("traceback", "")).splitlines() if line.strip()]
    _class, separator, message = (lines[-1] if lines else "").partition(": ")
    return message.strip() if separator else ""


def error_class(entry: dict[str, Any]) -> str:
    return str(entry.get("exception_class_path", "")).rsplit(".", 1)[-1]


def error_summary(entry: dict[str, Any], limit: int = 90) -> str:
    """ "Class: message", cut to `limit` characters."""
    message = error_message(entry)
    text = f"{error_class(entry)}: {message}" if message else error_class(entry)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


@dataclass(frozen=True)
class Attempt:
    number: int
    started_at: datetime | None
    ended_at: datetime | None  # when its error was recorded
    worker_id: str
    outcome: str
    error: dict[str, Any] | None


def _last_attempt_failed(execution: TaskExecution) -> bool:
    """Whether the newest error belongs to the newest attempt (else that attempt has no error)."""
    if execution.status in (TaskResultStatus.RUNNING, TaskResultStatus.SUCCESSFUL):
        return False
    if execution.cancelled_at is not None:  # cancelled while it ran, unless every attempt failed
        return len(execution.errors) >= execution.attempts
    return True


def attempts_of(execution: TaskExecution) -> list[Attempt]:
    # Rows written before attempts were counted (or edited by hand) may hold more errors.
    count = max(execution.attempts, len(execution.errors))
    last_failed = _last_attempt_failed(execution)
    # The number of the attempt the newest error / worker id belongs to.
    newest_error = count if last_failed else count - 1
    attempts = []
    for number in range(1, count + 1):
        error_index = len(execution.errors) - 1 - (newest_error - number)
        error = execution.errors[error_index] if 0 <= error_index < len(execution.errors) else None
        worker_index = len(execution.worker_ids) - 1 - (count - number)
        worker = execution.worker_ids[worker_index] if worker_index >= 0 else ""
        if error is not None:
            outcome = "Failed"
        elif number < count or (number == newest_error):
            outcome = "Failed (error not kept)"
        elif execution.cancelled_at is not None:
            outcome = "Cancelled"
        else:
            outcome = {TaskResultStatus.RUNNING: "Running", TaskResultStatus.SUCCESSFUL: "Succeeded"}.get(
                TaskResultStatus(execution.status), "Unknown"
            )
        started = (
            execution.last_attempted_at
            if number == count
            else (execution.started_at if number == 1 else None)
        )
        ended = recorded_at(error) if error is not None else None
        attempts.append(Attempt(number, started, ended, str(worker), outcome, error))
    return attempts


def render_timeline(execution: TaskExecution) -> SafeString | str:
    attempts = attempts_of(execution)
    if not attempts:
        return "Not attempted yet"
    rows = format_html_join(
        "",
        '<li class="dtg-attempt dtg-attempt-{}"><div class="dtg-attempt-head">'
        "<strong>Attempt {}</strong> · {} · worker <code>{}</code> · <span>{}</span></div>{}</li>",
        (
            (
                "failed" if attempt.outcome.startswith("Failed") else attempt.outcome.lower(),
                attempt.number,
                _when(attempt),
                attempt.worker_id or "-",
                attempt.outcome,
                _render_error(attempt.error),
            )
            for attempt in attempts
        ),
    )
    return format_html('<ol class="dtg-timeline">{}</ol>', rows)


def _when(attempt: Attempt) -> str:
    """When it started, else when it ended (an attempt between the first and the last)."""
    if attempt.started_at is not None:
        return local_time(attempt.started_at)
    if attempt.ended_at is not None:
        return f"ended {local_time(attempt.ended_at)}"
    return "time not recorded"


def _render_error(error: dict[str, Any] | None) -> SafeString | str:
    if error is None:
        return ""
    return format_html(
        '<p class="dtg-error-message"><strong>{}</strong>: {}</p>'
        "<details><summary>Traceback ({})</summary><pre>{}</pre></details>",
        error_class(error),
        error_message(error) or "(no message)",
        error.get("exception_class_path", ""),
        error.get("traceback", ""),
    )
