"""Reading a backend's OPTIONS without ever raising: problems are collected for `check()`.

Backends are instantiated while task modules are imported, so a typo in OPTIONS must not crash
the import; it becomes a `manage.py check` error that names the alias and the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._get(name, default)
        if value is None or value == "":
            if required:
                self.error(name, f"{name} is required")
            return default if value is None else None
        if not isinstance(value, str):
            self.error(name, f"{name} must be a string, not {value!r}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            self.error(name, f"{name} must be True or False, not {value!r}")
            return default
        return value

    def number(
        self, name: str, default: float, *, minimum: float | None = None, above: float | None = None
    ) -> float:
        """A real number, at least `minimum` / strictly greater than `above`."""
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
        return value

    def integer(
        self, name: str, default: int | None, *, minimum: int, allow_none: bool = False
    ) -> int | None:
        value = self._get(name, default)
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"{name} must be a whole number, not {value!r}")
            return default
        if value < minimum:
            self.error(name, f"{name} must be at least {minimum}, not {value!r}")
            return default
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, subject: str | None = None) -> str:
        """One of `choices`; the error reads "<subject> must be 'a' or 'b', not 'x'"."""
        value = self._get(name, default)
        if value not in choices:
            quoted = " or ".join(repr(choice) for choice in choices)
            self.error(name, f"{subject or name} must be {quoted}, not {value!r}")
            return default
        return value

    def string_list(self, name: str, default: list[str]) -> list[str]:
        value = self._get(name, default)
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(item, str) and item for item in value)
        ):
            self.error(name, f"{name} must be a non-empty list of strings, not {value!r}")
            return list(default)
        return list(value)

    def string_mapping(self, name: str) -> dict[str, str]:
        value = self._get(name, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(key, str) and isinstance(item, str) and item for key, item in value.items()
        ):
            self.error(name, f"{name} must map queue names to non-empty strings, not {value!r}")
            return {}
        return dict(value)
