"""The emulator's clock: Google's durations compressed by a factor, so tests stay fast.

Only durations the platform owns are compressed: backoffs, retry durations, dispatch and attempt
deadlines, Cloud Run task timeouts and the Retry-After a handler asks for. Instants the app chose
(a task's ``schedule_time``) are honoured in real time, because the app compares them with its own
clock; and the app itself always runs in real time (its leases, heartbeats and sleeps).
"""

from __future__ import annotations

import datetime
import time


class EmulatorClock:
    """``factor`` emulated seconds pass per real second (1 = Google's own pace)."""

    def __init__(self, factor: float = 1.0) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = factor

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    def real_seconds(self, emulated: datetime.timedelta | float) -> float:
        """How long an emulated duration really lasts."""
        seconds = emulated.total_seconds() if isinstance(emulated, datetime.timedelta) else emulated
        return seconds / self.factor

    def emulated_since(self, monotonic_start: float) -> datetime.timedelta:
        """The emulated time elapsed since a ``monotonic()`` reading."""
        return datetime.timedelta(seconds=(time.monotonic() - monotonic_start) * self.factor)
