"""One format and one zone for every time the console shows: the site's TIME_ZONE, named."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def local_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")
