"""What a delivery leads to: the claim an attempt runs under, and the outcome the transport hears.

Shared by the claim (claiming.py), the transitions (transitions.py), the executor and the views,
which turn an outcome into an HTTP status or an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import TaskExecution


class Outcome(StrEnum):
    """Why a delivery ended the way it did (the `reason` of an AttemptOutcome)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # FAILED for good (last attempt, permanent error, or not allowed to run)
    RETRY = "retry"  # the attempt failed; the execution is READY for another
    LEASE_HELD = "lease-held"  # another attempt holds the lease (a duplicate delivery)
    NOT_DUE = "not-due"  # delivered before its run_after
    LEASE_LOST = "lease-lost"  # our lease was taken over while the task ran
    CANCELLED = "cancelled"
    FINISHED = "finished"  # already SUCCESSFUL or FAILED
    NOT_FOUND = "not-found"
    BACKEND_MISMATCH = "backend-mismatch"
    SAVE_FAILED = "save-failed"  # the outcome could not be written; the lease will expire


@dataclass(frozen=True)
class AttemptOutcome:
    """What happened to a delivery, and whether the transport should deliver it again.

    `retry=True` asks the platform to redeliver (Cloud Tasks: a non-2xx answer; Cloud Run Jobs: a
    non-zero exit). It is also the answer while another attempt holds a live lease, so that a
    holder that crashed is retried once its lease expires instead of being forgotten.
    """

    retry: bool
    status: str | None
    reason: Outcome


@dataclass(frozen=True)
class Claim:
    """A lease taken on an execution; picklable, so a worker can claim and a child process run."""

    execution_id: int
    lease_id: str
    # The attempt number (1 = first): the larger of the transport's count and the row's.
    attempt: int
    # The total attempts allowed (None: unlimited), as the claim checked them (attempts.attempt_limit).
    limit: int | None
    # True when no transport counted the attempt (local worker, `execute_task` by hand): then an
    # attempt interrupted by a shutdown is given back instead of being used up.
    counted_by_row: bool
    first_start: bool


@dataclass(frozen=True)
class Claimed:
    """A claim together with the execution as the claim left it (no re-read needed)."""

    claim: Claim
    execution: TaskExecution


def answer(reason: Outcome, status: str | None = None, *, retry: bool = False) -> AttemptOutcome:
    """The outcome of a delivery (`retry`: the transport should deliver it again)."""
    return AttemptOutcome(retry=retry, status=status, reason=reason)
