"""Cron expressions and time zones: validation, and the slots a schedule fires at.

Cloud Scheduler evaluates schedules on Google's side; this module serves everything on ours:
validating a schedule before it is sent to Cloud Scheduler (so a typo fails in the admin form or
in ``schedule_task()`` instead of as an RPC error), and computing the due slots the local worker
(``run_tasks``) fires in Cloud Scheduler's place.

Daylight saving time, the way classic cron (and Cloud Scheduler's documented unix-cron) treats it:

* Spring forward: a wall-clock time that does not exist that day (02:30 in New York on the
  changeover day) fires once, at the moment the clock jumps (croniter already does this).
* Fall back: the repeated wall-clock hour fires once for schedules with a fixed hour field
  (``30 1 * * *`` fires at the first 01:30 only), but keeps firing for schedules whose hour field
  is ``*`` (``*/15 * * * *`` fires every 15 real minutes, through both passes of the hour).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError

# Cloud Scheduler takes unix-cron: five fields (minute hour day-of-month month day-of-week) made of
# numbers, ranges, steps, lists, "*" and English month/day names. croniter accepts more (seconds,
# "L", "#", "H" hashes, "@daily"), which Cloud Scheduler would reject, so those are refused here.
_CRON_FIELD = re.compile(r"[0-9A-Za-z*,/\-]+")
_NAMES = {
    *("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    *("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
}


def validate_cron_expression(schedule: str) -> str:
    """Return the normalised (single-spaced) unix-cron expression, or raise ValidationError."""
    from croniter import croniter

    fields = schedule.split()
    if len(fields) != 5:
        raise ValidationError(
            "%(schedule)r is not a unix-cron expression: it needs five fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'.",
            code="invalid_cron",
            params={"schedule": schedule},
        )
    for field in fields:
        names = {name.lower() for name in re.findall(r"[A-Za-z]+", field)}
        if not _CRON_FIELD.fullmatch(field) or not names <= _NAMES:
            raise ValidationError(
                "%(schedule)r is not a unix-cron expression: field %(field)r may only use numbers, "
                "'*', ',', '-', '/' and three-letter month or weekday names.",
                code="invalid_cron",
                params={"schedule": schedule, "field": field},
            )
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised):
        raise ValidationError(
            "%(schedule)r is not a valid cron expression (a value is out of range?).",
            code="invalid_cron",
            params={"schedule": schedule},
        )
    return normalised


def validate_time_zone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone (as Cloud Scheduler requires), else raise."""
    if name.lower() == "utc":
        return "UTC"  # Cloud Scheduler's docs spell it "utc"; the tz database (and zoneinfo) "UTC"
    try:
        if not name or name != name.strip():
            raise ValueError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            "%(name)r is not a time zone name from the tz database, e.g. 'UTC' or 'Europe/Amsterdam'.",
            code="invalid_time_zone",
            params={"name": name},
        ) from exc
    return name


def slots_between(
    schedule: str, time_zone: str, after: datetime, until: datetime, *, limit: int
) -> list[datetime]:
    """The slots in ``(after, until]`` as aware UTC datetimes, oldest first, at most the newest ``limit``.

    Walks backwards from ``until``, so the cost is bounded by ``limit`` however far ``after`` lies
    in the past (a worker that was stopped for a month does not iterate a month of minutes).
    """
    newest_first: list[datetime] = []
    for slot in _slots_before(schedule, time_zone, until):
        if slot <= after or len(newest_first) >= limit:
            break
        newest_first.append(slot)
    return newest_first[::-1]


def next_slot(schedule: str, time_zone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (aware UTC), e.g. for showing "next run" in the admin."""
    from croniter import croniter

    zone = ZoneInfo(time_zone)
    fixed_hour = _has_fixed_hour(schedule)
    iterator = croniter(schedule, after.astimezone(zone))
    while True:
        local = _canonical(iterator.get_next(datetime), zone)
        if not (fixed_hour and local.fold):
            return local.astimezone(UTC)


def _slots_before(schedule: str, time_zone: str, until: datetime) -> Iterator[datetime]:
    from croniter import croniter

    zone = ZoneInfo(time_zone)
    fixed_hour = _has_fixed_hour(schedule)
    # get_prev() returns slots strictly before its start; a slot exactly at `until` is due too.
    iterator = croniter(schedule, (until + timedelta(microseconds=1)).astimezone(zone))
    while True:
        local = _canonical(iterator.get_prev(datetime), zone)
        if fixed_hour and local.fold:
            continue  # the second pass of a repeated (fall-back) wall-clock time: fired on the first
        yield local.astimezone(UTC)


def _canonical(moment: datetime, zone: ZoneInfo) -> datetime:
    """Re-derive the local time from the instant, so ``fold`` reliably marks a repeated wall time."""
    return moment.astimezone(UTC).astimezone(zone)


def _has_fixed_hour(schedule: str) -> bool:
    return schedule.split()[1] != "*"
