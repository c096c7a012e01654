"""What Google delivers back to the app: an HTTP push (Cloud Tasks, Cloud Scheduler) or a job
container's start (Cloud Run Jobs). Built by the service fakes, sent by tests or the emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Push:
    """An HTTP request as Cloud Tasks or Cloud Scheduler would deliver it to the service."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The URL's path and query, as a Django test client wants it."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def send(self, client: Any) -> Any:
        """Deliver through a Django test ``Client`` (its own host; scheme from the URL)."""
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-type"}
        content_type = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")
        return client.generic(
            self.method,
            self.path,
            data=self.body,
            content_type=content_type,
            secure=urlsplit(self.url).scheme == "https",
            headers=headers,
        )


@dataclass(frozen=True)
class JobContainer:
    """What one task container of a Cloud Run Job execution is started with."""

    command: list[str]  # the image's entrypoint override from the job (RunJob cannot change it)
    args: list[str]
    env: dict[str, str]
