"""The vocabulary of delivering an execution: dispatch outcomes, delivery states, refusals.

Shared by the backends (which dispatch and answer for their platform) and `recover_tasks`
(which asks them), so neither needs to know the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from re import Pattern

from ..task import AnyTaskResult


class DispatchResult(StrEnum):
    """How handing an execution to its platform went."""

    DISPATCHED = "dispatched"
    # The platform was unavailable (a transient error): the execution stays READY, undelivered,
    # for `recover_tasks` to dispatch again.
    DEFERRED = "deferred"
    # The platform refused it for good (bad request, permission, unknown queue): FAILED.
    FAILED = "failed"


class DeliveryState(StrEnum):
    """What the platform says about a READY execution's delivery."""

    PENDING = "pending"  # a Cloud Task still exists / the Cloud Run execution still runs
    GONE = "gone"  # no Cloud Task (never created, or Cloud Tasks gave up) / the execution completed
    NEVER_DISPATCHED = "never-dispatched"  # nothing was ever handed to the platform


class DeliveryUnknown(Exception):
    """`delivery_state()` could not ask the platform (its API failed): try again on the next pass."""


class TaskDispatchError(Exception):
    """`enqueue()` outside a transaction: the platform refused the task for good.

    The execution is stored FAILED with the platform's error (`task_result`); it will not run.
    """

    def __init__(self, message: str, task_result: AnyTaskResult) -> None:
        super().__init__(message)
        self.task_result = task_result


@dataclass(frozen=True)
class PlatformQueue:
    """What a platform accepts as the target a queue name resolves to (checked by `check()`)."""

    pattern: Pattern[str]
    noun: str  # "the Cloud Tasks queue id"
    rule: str  # the hint: what the platform accepts
    check_id: str
