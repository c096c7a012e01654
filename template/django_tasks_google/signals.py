"""Sending Django's task signals without letting a faulty receiver break task bookkeeping."""

import logging

from django.dispatch import Signal

from .task import AnyTaskResult

logger = logging.getLogger(__name__)


def send_task_signal(signal: Signal, sender: type, task_result: AnyTaskResult) -> None:
    """Send `signal` like Django's backends do (sender = backend class), but robustly.

    A receiver raising must not leave an execution half-recorded: its error is logged instead.
    Call it inside an `except` block for a failure so receivers can read `sys.exc_info()`
    (Django's own `task_finished` logger does).
    """
    for receiver, response in signal.send_robust(sender=sender, task_result=task_result):
        if isinstance(response, Exception):
            logger.error(
                "Receiver %r of a task signal failed for task %s",
                receiver,
                task_result.id,
                exc_info=response,
            )
