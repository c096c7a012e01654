"""Cloud Run's front end, played locally: a push to the service URL reaches a local server.

Cloud Run terminates TLS and forwards the request to the container over plain HTTP with the
original ``Host`` and ``X-Forwarded-Proto`` (https://cloud.google.com/run/docs/container-contract#request-headers
and gunicorn's ``forwarded_allow_ips``); the emulator does the same for every URL whose origin is
routed, and sends other URLs as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from tests.fakes.push import Push


@dataclass
class FrontEnd:
    """Origins (``https://service-xyz.run.app``) → local base URLs (``http://127.0.0.1:8123``)."""

    routes: dict[str, str] = field(default_factory=dict)

    def route(self, origin: str, local: str) -> None:
        self.routes[origin.rstrip("/")] = local.rstrip("/")

    def send(self, push: Push, *, timeout: float) -> requests.Response:
        """Deliver ``push``; raises ``requests.Timeout`` when no answer came within ``timeout`` s."""
        url = urlsplit(push.url)
        local = self.routes.get(f"{url.scheme}://{url.netloc}")
        headers = dict(push.headers)
        target = push.url
        if local is not None:
            headers.update({"Host": url.netloc, "X-Forwarded-Proto": url.scheme})
            target = f"{local}{push.path}"
        # A fresh connection per attempt: an abandoned attempt's socket is closed, not reused.
        with requests.Session() as session:
            return session.request(
                push.method, target, data=push.body, headers=headers, timeout=timeout, allow_redirects=False
            )
