"""The retry backoff Cloud Tasks and Cloud Scheduler share.

"A task's retry interval starts at min_backoff, then doubles max_doublings times, then increases
linearly, and finally retries at intervals of max_backoff"
(https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#RetryConfig;
Cloud Scheduler's RetryConfig says the same of its *_backoff_duration fields). With min 10 s,
max 300 s and 3 doublings: 10, 20, 40, 80, 160, 240, 300, 300, ...
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
