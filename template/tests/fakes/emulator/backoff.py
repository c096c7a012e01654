"""The retry backoff Cloud Tasks and Cloud Scheduler share.

The interval starts at the minimum backoff, doubles ``max_doublings`` times, then grows linearly
by ``min·2^max_doublings`` and is capped at the maximum backoff
(https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#RetryConfig,
field maxDoublings; Cloud Scheduler's RetryConfig describes its *_backoff_duration fields alike).
With min 10 s, max 300 s and 3 doublings: 10, 20, 40, 80, 160, 240, 300, 300, ...
"""

from __future__ import annotations

import datetime


def backoff(
    minimum: datetime.timedelta, maximum: datetime.timedelta, doublings: int, retry: int
) -> datetime.timedelta:
    """The wait before retry number ``retry`` (1 = the first retry)."""
    if retry <= doublings + 1:
        seconds = minimum.total_seconds() * 2 ** (retry - 1)
    else:
        seconds = minimum.total_seconds() * 2**doublings * (retry - doublings)
    return min(datetime.timedelta(seconds=seconds), maximum)
