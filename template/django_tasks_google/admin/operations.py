"""Cancel and retry, as the executions list's actions and the execution page's buttons do them.

Both go through the public API: ``cancellation.cancel_execution`` (what ``cancel_task`` calls)
and the stored task's ``.enqueue()``, so the admin follows the same rules as code does. A retry
is a new execution (a FAILED one is finished for good) linked to the one it retries by
``retry_of``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.tasks import TaskResultStatus

from ..cancellation import cancel_execution
from ..models import TaskExecution
from ..task import AnyTaskResult, build_task_unvalidated, task_fields

logger = logging.getLogger(__name__)


@dataclass
class CancelReport:
    cancelled: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    unsupported: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def messages(self) -> list[tuple[str, str]]:
        """(level, text) pairs for the admin's messages."""
        out = []
        if self.cancelled:
            out.append(("success", f"Cancelled {len(self.cancelled)} execution(s)"))
        if self.finished:
            out.append(("warning", f"Skipped {len(self.finished)} already-finished execution(s)"))
        if self.unsupported:
            out.append(
                (
                    "warning",
                    f"Force cancel is not supported by the backend of execution(s): {_ids(self.unsupported)}",
                )
            )
        if self.failed:
            out.append(("error", f"Failed to cancel execution(s): {_ids(self.failed)}"))
        return out


def can_retry(execution: TaskExecution) -> bool:
    return execution.status == TaskResultStatus.FAILED


def can_force_cancel(execution: TaskExecution) -> bool:
    return not execution.is_finished and execution.backend.supports_force_cancel


def cancel(executions: list[TaskExecution], *, force: bool) -> CancelReport:
    report = CancelReport()
    for execution in executions:
        if execution.is_finished:
            report.finished.append(execution.pk)
            continue
        try:
            if force and not execution.backend.supports_force_cancel:
                report.unsupported.append(execution.pk)
                continue
            (report.cancelled if cancel_execution(execution, force=force) else report.finished).append(
                execution.pk
            )
        except Exception:
            report.failed.append(execution.pk)
            logger.exception("Could not cancel execution %s", execution.pk)
    return report


def retry(execution: TaskExecution) -> AnyTaskResult:
    """Enqueue the execution's task with its arguments again, and link the copy to it."""
    if not can_retry(execution):
        raise ValueError(f"Execution {execution.pk} has not failed; only a failed one can be retried")
    stored = execution.task
    # Validated afresh by enqueue(); run_after is dropped: a retry should run now.
    task = build_task_unvalidated(type(stored), **{**task_fields(stored), "run_after": None})
    result = task.enqueue(*execution.args, **execution.kwargs)
    TaskExecution.objects.filter(pk=result.id).update(retry_of=execution)
    return result


def _ids(ids: list[int]) -> str:
    return ", ".join(str(pk) for pk in ids)
