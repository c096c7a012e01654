"""A task that logs a handled exception, then fails (run by the gunicorn server of test_cloud_logging)."""

import logging

from django.tasks import task

logger = logging.getLogger(__name__)


def parse_order(raw: str) -> int:
    return int(raw)


@task()
def logs_and_fails(raw: str) -> None:
    try:
        parse_order(raw)
    except ValueError:
        logger.exception("Order %r could not be parsed", raw)
        raise
