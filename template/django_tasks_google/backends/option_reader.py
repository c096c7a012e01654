"""How one OPTIONS value is read: the kinds of option, each checked, none ever raising.

`OptionReader` has one typed accessor per kind (text, url, secret, number, ...); a bad value is
recorded as an error naming the option and replaced by the default, so a typo in TASKS never
breaks the import of a task module. options.py declares which option is read as which kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

# A push secret must be hard to guess: `python -c "import secrets; print(secrets.token_urlsafe(48))"`.
PUSH_SECRET_MIN_LENGTH = 32


def option(kind: str, *, key: str | None = None, **rules: Any) -> dict[str, Any]:
    """A dataclass field's metadata declaring it an OPTION read by `OptionReader.<kind>`.

    Used as `name: T = field(default=..., metadata=option(kind, **rules))`. `key` is the OPTIONS
    name when it differs from the attribute (e.g. `heartbeat_interval` is read from
    `heartbeat_interval_seconds`); such a number of seconds becomes a timedelta when the field's
    default is one.
    """
    return {"kind": kind, "key": key, "rules": rules}


class OptionReader:
    """Typed accessors over one backend's OPTIONS dict; remembers which names were read."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self.errors: list[tuple[str, str]] = []  # (option name, message)
        self.read: set[str] = set()

    def error(self, name: str, message: str) -> None:
        self.errors.append((name, message))

    def unknown(self) -> list[str]:
        return sorted(set(self.options) - self.read)

    def _get(self, name: str, default: Any) -> Any:
        self.read.add(name)
        return self.options.get(name, default)

    def given(self, name: str) -> bool:
        """Whether OPTIONS sets `name` (which counts as read: it is a known option)."""
        self.read.add(name)
        return name in self.options

    def text(self, name: str, default: str | None = None) -> str | None:
        """A string; None or "" read as unset (None)."""
        value = self._get(name, default)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.error(name, f"{name} must be a string, not {value!r}")
            return default
        return value

    def url(self, name: str, default: str | None = None) -> str | None:
        """An http(s) URL without a fragment."""
        value = self.text(name, default)
        if value is not None and not _is_http_url(value):
            self.error(name, f"{name} must be an http(s) URL without a fragment, not {value!r}")
            return default
        return value

    def secret(self, name: str, default: str | None = None) -> str | None:
        """A key that must be hard to guess: at least PUSH_SECRET_MIN_LENGTH characters."""
        value = self.text(name, default)
        if value is not None and len(value) < PUSH_SECRET_MIN_LENGTH:
            self.error(name, f"{name} must be at least {PUSH_SECRET_MIN_LENGTH} characters long")
            return default
        return value

    def aware_datetime(self, name: str, default: datetime | None = None) -> datetime | None:
        """An aware datetime, or an ISO 8601 time with a UTC offset."""
        value = self._get(name, default)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = datetime.fromisoformat(value)
        if not isinstance(value, datetime) or value.tzinfo is None:
            self.error(
                name,
                f"{name} must be an ISO 8601 time with a UTC offset (e.g. '2027-01-31T00:00Z'), "
                f"not {value!r}",
            )
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            self.error(name, f"{name} must be True or False, not {value!r}")
            return default
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A real number, at least `minimum` / strictly greater than `above` / at most `maximum`."""
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"{name} must be a number, not {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.error(name, f"{name} must be at least {minimum}, not {value!r}")
            return default
        if above is not None and value <= above:
            self.error(name, f"{name} must be greater than {above}, not {value!r}")
            return default
        if maximum is not None and value > maximum:
            self.error(name, f"{name} must be at most {maximum}, not {value!r}")
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"{name} must be a whole number, not {value!r}")
            return default
        if value < minimum:
            self.error(name, f"{name} must be at least {minimum}, not {value!r}")
            return default
        return value

    def choice(self, name: str, default: str, *, choices: tuple[str, ...], subject: str | None = None) -> str:
        """One of `choices`; the error reads "<subject> must be 'a' or 'b', not 'x'"."""
        value = self._get(name, default)
        if value not in choices:
            quoted = " or ".join(repr(choice) for choice in choices)
            self.error(name, f"{subject or name} must be {quoted}, not {value!r}")
            return default
        return str(value)

    def string_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name, default)
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(item, str) and item for item in value)
        ):
            self.error(name, f"{name} must be a non-empty list of strings, not {value!r}")
            return default
        return tuple(value)

    def string_mapping(self, name: str, default: None = None) -> dict[str, str]:
        value = self._get(name, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(key, str) and isinstance(item, str) and item for key, item in value.items()
        ):
            self.error(name, f"{name} must map queue names to non-empty strings, not {value!r}")
            return {}
        return dict(value)


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.netloc) and not parts.fragment
