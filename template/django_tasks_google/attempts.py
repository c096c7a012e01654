"""The attempt policy: how attempts are numbered and limited, and how much history is kept.

Every path that starts, ends or gives up an attempt (the claim, a failed attempt, the release of
an abandoned one, `recover_tasks`) asks here, so the most correctness-critical rule of the app is
written once.

Two counts exist for an attempt. The transport's (Cloud Tasks' `X-CloudTasks-TaskRetryCount`,
Cloud Run's `CLOUD_RUN_TASK_ATTEMPT`) restarts at 0 whenever an execution is re-dispatched as a new
Cloud Task or Cloud Run execution; the row's `attempts` counts the attempts that really started.
An attempt is numbered by the larger of the two (a re-dispatch cannot make a task run its attempts
again), but whether an attempt may start at all is decided by the row alone: a caller-supplied
count must never fail a task that has not run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import PermanentTaskError
from .serialization import error_entry

if TYPE_CHECKING:
    from .backend_rules import BackendRules
    from .models import TaskExecution


def attempt_limit(execution: TaskExecution, backend: BackendRules) -> int | None:
    """Total attempts allowed (None: unlimited): fixed on the row at dispatch, else the backend's."""
    if execution.max_attempts is not None:
        return execution.max_attempts
    return backend.max_attempts_for(execution.queue_name)


def attempt_number(attempts_started: int, transport_attempt: int | None) -> int:
    """The 1-based number of the attempt about to start after `attempts_started` earlier ones."""
    return max(transport_attempt or 0, attempts_started + 1)


def refusal(execution: TaskExecution, backend: BackendRules, limit: int | None) -> PermanentTaskError | None:
    """Why no further attempt of `execution` may start (None: one may), from the row's own count.

    `limit` is `attempt_limit(execution, backend)`, which the caller looks up once (the claim hands
    it on to the attempt: looking it up may read a cache).
    """
    if backend.run_once and execution.attempts > 0:
        return PermanentTaskError(
            f"run_once: attempt {execution.attempts} did not finish, and the task must not run twice."
        )
    if limit is not None and execution.attempts >= limit:
        return PermanentTaskError(f"No attempts left: all {limit} attempts were used.")
    return None


def is_last_attempt(
    execution: TaskExecution, backend: BackendRules, number: int, error: BaseException
) -> bool:
    """Whether attempt `number`, which failed with `error`, ends the execution (FAILED)."""
    if backend.run_once or getattr(error, "retryable", True) is False:
        return True
    limit = attempt_limit(execution, backend)
    return limit is not None and number >= limit


def is_last_abandoned(execution: TaskExecution, backend: BackendRules, *, counted: bool) -> bool:
    """Whether an attempt that ended without recording its outcome ends the execution (FAILED).

    An attempt that is not `counted` (the worker stopped it for a shutdown) is given back, so only
    run_once can make it the last.
    """
    if backend.run_once:
        return True
    limit = attempt_limit(execution, backend)
    return counted and limit is not None and execution.attempts >= limit


def clip_history(entries: list[Any], limit: int) -> list[Any]:
    """The last `limit` entries: `errors` and `worker_ids` are capped, `attempts` keeps the count."""
    return entries[-limit:] if len(entries) > limit else entries


def with_error(errors: list[dict[str, str]], error: BaseException, limit: int) -> list[dict[str, str]]:
    """The error history with `error` recorded last, clipped by the same rule."""
    return clip_history([*errors, error_entry(error)], limit)
