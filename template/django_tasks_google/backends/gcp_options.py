"""The Google Cloud OPTIONS every GCP backend shares: format checks and push authentication.

Kept apart from `base.py` so the rules for Google's names and for verifying pushes live in one
place. Like the rest of the OPTIONS parsing it never raises: each problem is recorded on the
OptionReader and reported by `manage.py check`, naming the option.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .options import OptionReader

if TYPE_CHECKING:
    from .base import DjangoTasksGoogleBackend

# "my-project", or the legacy domain-scoped "example.com:my-project".
PROJECT_ID = re.compile(r"(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
# "us-central1", "europe-west4", "northamerica-northeast1".
LOCATION = re.compile(r"[a-z]+(?:-[a-z]+)+[0-9]+")
SERVICE_ACCOUNT = re.compile(r"[^@\s/]+@[^@\s/]+\.[^@\s/]+")
# A push secret must be hard to guess: `python -c "import secrets; print(secrets.token_urlsafe(48))"`.
PUSH_SECRET_MIN_LENGTH = 32


def read_push_auth_options(backend: DjangoTasksGoogleBackend, options: OptionReader) -> None:
    """The options of authenticating pushes from Cloud Tasks and Cloud Scheduler (ID token, MAC).

    - `oidc_certs_url`: where Google's token-signing certificates are fetched (None: Google's,
      `auth.GOOGLE_CERTS_URL`; tests point it at a local issuer).
    - `oidc_trust_platform_signature`: accept tokens whose signature a private Cloud Run service
      (no allUsers invoker) replaced after verifying it; every claim is still checked. Never
      enable it on a service anyone may call.
    - `push_secret`: the key of the MAC every push we create carries (push_mac.py); None: one
      derived from SECRET_KEY.
    - `push_secret_previous` and `push_secret_previous_until` (an ISO 8601 time with offset, or an
      aware datetime): after a rotation, the old key stays accepted until then, never after.
    """
    backend.oidc_certs_url = options.text("oidc_certs_url")
    backend.oidc_trust_platform_signature = options.boolean("oidc_trust_platform_signature", False)
    if backend.oidc_certs_url is not None and not _is_http_url(backend.oidc_certs_url):
        options.error(
            "oidc_certs_url", f"oidc_certs_url must be an http(s) URL, not {backend.oidc_certs_url!r}"
        )
    backend.push_secret = _push_secret(options, "push_secret")
    backend.push_secret_previous = _push_secret(options, "push_secret_previous")
    backend.push_secret_previous_until = _aware_datetime(options, "push_secret_previous_until")
    if backend.push_secret_previous and backend.push_secret_previous_until is None:
        options.error(
            "push_secret_previous",
            "push_secret_previous needs push_secret_previous_until (when the old key stops being "
            "accepted): an old key without a deadline would be accepted for ever",
        )


def _push_secret(options: OptionReader, name: str) -> str | None:
    secret = options.text(name)
    if secret is not None and len(secret) < PUSH_SECRET_MIN_LENGTH:
        options.error(name, f"{name} must be at least {PUSH_SECRET_MIN_LENGTH} characters long")
        return None
    return secret


def _aware_datetime(options: OptionReader, name: str) -> datetime | None:
    value = options.options.get(name)
    options.read.add(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    if not isinstance(value, datetime) or value.tzinfo is None:
        options.error(
            name,
            f"{name} must be an ISO 8601 time with a UTC offset (e.g. '2027-01-31T00:00Z'), not {value!r}",
        )
        return None
    return value


def check_gcp_options(backend: DjangoTasksGoogleBackend, options: OptionReader) -> None:
    """Record an error for each GCP option that is set but cannot be right.

    Missing required options are reported by the reader itself; this catches values Google would
    refuse later, at the first enqueue or push, with a less helpful message.
    """
    if backend.project_id and not PROJECT_ID.fullmatch(backend.project_id):
        options.error("project_id", f"project_id {backend.project_id!r} is not a Google Cloud project id")
    if backend.location and not LOCATION.fullmatch(backend.location):
        options.error(
            "location", f"location {backend.location!r} is not a Google Cloud region (e.g. 'us-central1')"
        )
    account = backend.oidc_service_account
    if account and not SERVICE_ACCOUNT.fullmatch(account):
        options.error(
            "oidc_service_account", f"oidc_service_account must be a service account email, not {account!r}"
        )
    for name in ("execute_url", "schedule_url"):
        url = options.options.get(name)
        if url and (not isinstance(url, str) or not _is_http_url(url) or urlsplit(url).fragment):
            options.error(name, f"{name} must be an http(s) URL without a fragment, not {url!r}")
    audience = options.options.get("oidc_audience")
    if isinstance(audience, str) and audience.startswith(("http://", "https://")):
        parts = urlsplit(audience)
        if not parts.netloc or parts.query or parts.fragment:
            # Cloud Run rejects such audiences (googleapis/python-tasks#137, #138).
            options.error(
                "oidc_audience",
                f"oidc_audience {audience!r} must be a URL without query or fragment "
                "(usually the service's origin, e.g. 'https://my-service-abc123-uc.a.run.app')",
            )


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)
