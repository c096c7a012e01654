"""What a value must look like to be stored: the JSON round trip and the stored form of an error.

Django's ImmediateBackend normalises values with `normalize_json`; we additionally encode and
decode them for real, because that is what a task delivered over HTTP or read back from the
database sees (`{1: "a"}` arrives as `{"1": "a"}`, tuples as lists). Refused, because a database
cannot store them: NaN and infinities (PostgreSQL's jsonb), the NUL character (PostgreSQL's text
and jsonb) and lone surrogates (not UTF-8 at all). Error texts cannot be refused (they are what
went wrong), so they are cleaned instead.
"""

import json
from datetime import datetime
from traceback import format_exception
from typing import Any

from django.utils import timezone
from django.utils.json import normalize_json

# The key of an error entry's time; Django's TaskError is built from the other two keys only.
RECORDED_AT = "recorded_at"


def json_round_trip(value: Any) -> Any:
    """`value` as it comes back from JSON storage; TypeError/ValueError if it cannot be stored."""
    loaded = json.loads(json.dumps(normalize_json(value), allow_nan=False))
    _refuse_unstorable_text(loaded)
    return loaded


def _refuse_unstorable_text(value: Any) -> None:
    texts: list[Any] = [value]
    while texts:
        item = texts.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError(
                    f"a text contains a NUL character (\\x00), which databases cannot store: {item!r}"
                )
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"a text contains a lone surrogate, which is not valid UTF-8: {item!r}"
                ) from None
        elif isinstance(item, list):
            texts.extend(item)
        elif isinstance(item, dict):
            texts.extend(item)
            texts.extend(item.values())


def storable_text(text: str) -> str:
    """`text` with NUL characters and lone surrogates replaced by their escapes, so it can be stored."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def error_entry(exception: BaseException) -> dict[str, str]:
    """The stored form of an error: what Django's TaskError needs, in text any database stores, and
    when it was recorded (the row keeps no other time for an attempt between its first and last)."""
    exception_type = type(exception)
    return {
        "exception_class_path": f"{exception_type.__module__}.{exception_type.__qualname__}",
        "traceback": storable_text("".join(format_exception(exception))),
        RECORDED_AT: timezone.now().isoformat(),
    }


def recorded_at(entry: dict[str, Any]) -> datetime | None:
    """When an error entry was recorded; None for entries stored before entries kept their time."""
    value = entry.get(RECORDED_AT)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
