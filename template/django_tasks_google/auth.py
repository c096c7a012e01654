"""Authentication of pushes from Cloud Tasks and Cloud Scheduler by their Google-signed ID token.

Both services attach ``Authorization: Bearer <ID token>`` when the task or job has an
``oidc_token``: an RS256 JWT signed by Google for the configured service account, with ``aud`` the
configured audience. ``verify_push`` accepts a push only if

* the signature verifies against Google's published certificates (``certs_url``; fetched with
  ``requests``, cached in-process for the response's ``Cache-Control: max-age`` and fetched again
  when a token names a key id not seen yet: Google rotates its keys),
* ``iat``/``exp`` hold, give or take ``clock_skew_seconds`` (a few seconds of drift between
  Google's clock and ours must not turn into 401s and retries),
* ``aud`` is the configured audience and ``iss`` is Google,
* ``email`` is the configured service account and ``email_verified`` is true.

Outcomes, as ``PushAuthError.status``: 401 when the caller is not authenticated (no or malformed
header, bad signature, expired, wrong audience or issuer, unknown key); 403 when it is
authenticated as someone else (another or an unverified email); 503 when Google's certificates
cannot be fetched (our outage: the pusher retries). Headers such as ``X-CloudTasks-*`` are
caller-controlled and must not be trusted before this check passes.

Private Cloud Run services (``--no-allow-unauthenticated``): Cloud Run itself verifies the token
and the caller's ``roles/run.invoker`` permission, then forwards the token to the container with
its signature replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``. Such a token cannot be verified here;
``trust_platform_signature=True`` accepts it on the strength of Cloud Run's check and still
checks every claim (times, audience, issuer, email). Enable it ONLY for a service that requires
IAM authentication: on a public service anyone could forge such a token. Off by default; a
stripped token is then refused with a message that points at the option. In trust mode a stripped
token must still look like what Google issues (RS256 with a key id, at most an hour to live), and
a request carrying ``X-Serverless-Authorization`` is refused: Cloud Run then authenticates that
header and passes ``Authorization`` through unverified, so any holder of ``roles/run.invoker``
could send a hand-made token. None of this makes a push trustworthy on its own: the views also
require the push's MAC (``backends/push_mac.py``), which only this service can make.

The signature is verified with google-auth's RSA verifier, built once per certificate and cached
with the certificates here, rather than by ``google.oauth2.id_token.verify_token``, which
downloads the certificates on every call, or ``google.auth.jwt.decode``, which parses the
certificate into a key again on every call. The token is parsed once, and its claims are checked
by one rule (``_check_claims``) whether we or Cloud Run checked the signature.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import requests
from django.http import HttpRequest
from google.auth import crypt

logger = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
DEFAULT_CLOCK_SKEW_SECONDS = 10
SIGNATURE_REMOVED = "SIGNATURE_REMOVED_BY_GOOGLE"
# Google ID tokens (those Cloud Tasks and Cloud Scheduler attach included) expire after one hour:
# https://cloud.google.com/docs/authentication/token-types ("ID tokens": lifetime 1 hour)
MAX_TOKEN_LIFETIME_SECONDS = 3600
# Another header Cloud Run authenticates by, in place of Authorization when both are sent (which
# then reaches the container as sent): https://cloud.google.com/run/docs/authenticating/service-to-service,
# GoogleCloudPlatform/cloud-run-proxy#25.
SERVERLESS_AUTHORIZATION = "X-Serverless-Authorization"

CERTS_FETCH_TIMEOUT_SECONDS = 5.0
# Used when the certs response carries no max-age (Google's does: several hours).
CERTS_DEFAULT_MAX_AGE_SECONDS = 300
# A token with an unknown key id triggers a refetch at most this often, so a flood of forged
# tokens cannot turn into a flood of requests to Google.
CERTS_REFETCH_COOLDOWN_SECONDS = 5.0


class PushAuthError(Exception):
    """A push was refused; ``status`` is the HTTP status to answer with (401, 403 or 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def verify_push(
    request: HttpRequest,
    *,
    audience: str | Sequence[str],
    service_account: str | Sequence[str],
    certs_url: str = GOOGLE_CERTS_URL,
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
    trust_platform_signature: bool = False,
) -> dict[str, Any]:
    """Authenticate a push by its ``Authorization: Bearer`` ID token; return the token's claims.

    ``audience`` and ``service_account`` may each be one value or several accepted ones (for
    example the ``*.run.app`` URL and a custom domain). Raises ``PushAuthError``.
    """
    if trust_platform_signature and SERVERLESS_AUTHORIZATION in request.headers:
        # Cloud Run then checks X-Serverless-Authorization and forwards Authorization as sent:
        # nobody verified the token we would trust. Cloud Tasks and Cloud Scheduler never send it.
        raise PushAuthError(
            401,
            f"{SERVERLESS_AUTHORIZATION} is not accepted here: Cloud Tasks and Cloud Scheduler do not "
            "send it, and with it Cloud Run does not verify the Authorization header.",
        )
    return verify_id_token(
        bearer_token(request),
        audience=audience,
        service_account=service_account,
        certs_url=certs_url,
        clock_skew_seconds=clock_skew_seconds,
        trust_platform_signature=trust_platform_signature,
    )


def bearer_token(request: HttpRequest) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or PushAuthError(401)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PushAuthError(401, "Missing or malformed Authorization header; expected 'Bearer <ID token>'.")
    return token.strip()


def verify_id_token(
    token: str,
    *,
    audience: str | Sequence[str],
    service_account: str | Sequence[str],
    certs_url: str = GOOGLE_CERTS_URL,
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS,
    trust_platform_signature: bool = False,
) -> dict[str, Any]:
    """``verify_push`` for a bare token (see the module docstring for every check).

    The token is parsed once; its signature is checked with the verifier cached for its key id,
    then its claims by ``_check_claims``, the same rule whether we or Cloud Run checked the
    signature.
    """
    audiences = _non_empty_list(audience, "audience")
    accounts = {email.lower() for email in _non_empty_list(service_account, "service_account")}
    segments = token.split(".")
    if len(segments) != 3:
        raise PushAuthError(401, "Malformed ID token.")
    encoded_header, encoded_claims, encoded_signature = segments
    stripped = encoded_signature == SIGNATURE_REMOVED
    if stripped and not trust_platform_signature:
        raise PushAuthError(
            401,
            "The ID token's signature was removed by Cloud Run (a private service forwards tokens "
            "it has verified that way); enable trust_platform_signature for such a service.",
        )
    header, claims = _json_segment(encoded_header), _json_segment(encoded_claims)
    kid = _google_key_id(header)
    if not stripped:
        signature = _base64url(encoded_signature)
        verifier = _certs_cache(certs_url).verifier(kid)
        signed = f"{encoded_header}.{encoded_claims}".encode("ascii")
        try:
            valid = verifier.verify(signed, signature)
        except (ValueError, TypeError):  # a certificate whose key is not RSA
            valid = False
        if not valid:
            raise PushAuthError(401, "Invalid ID token: Could not verify token signature.")
    _check_claims(claims, audiences, accounts, clock_skew_seconds)
    return claims


def clear_certs_cache() -> None:
    """Forget every cached certificate set (tests; or to force a refetch after a key incident)."""
    with _caches_lock:
        _caches.clear()


# --- parsing: a JWT is base64url(header).base64url(claims).base64url(signature) ----------------


def _base64url(segment: str) -> bytes:
    """A JWT segment's bytes (unpadded base64url, RFC 7515 section 2), as google-auth decodes it."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise PushAuthError(401, "Malformed ID token.") from None


def _json_segment(segment: str) -> dict[str, Any]:
    """The JSON object a header or claims segment holds."""
    try:
        value = json.loads(_base64url(segment))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep to parse
        raise PushAuthError(401, "Malformed ID token.") from None
    if not isinstance(value, dict):
        raise PushAuthError(401, "Malformed ID token.")
    return value


def _google_key_id(header: Mapping[str, Any]) -> str:
    """The key id of a header shaped as Google's ID tokens are: RS256, signed by a named key.

    Whoever checks the signature (google-auth's RSA verifier here, or Cloud Run for a stripped
    token), a token of another shape was not issued by Google.
    """
    if header.get("alg") != "RS256":
        raise PushAuthError(
            401,
            f"Invalid ID token: unsupported algorithm {header.get('alg')!r} "
            "(a Google ID token is RS256 with a key id).",
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise PushAuthError(401, "Invalid ID token: no key id (a Google ID token is RS256 with a key id).")
    return kid


# --- claims: one rule, whoever checked the signature ---------------------------------------------


def _check_claims(
    claims: Mapping[str, Any], audiences: list[str], accounts: set[str], clock_skew_seconds: int
) -> None:
    """The checks Google lists for an ID token (https://developers.google.com/identity/sign-in/web/backend-auth:
    ``aud``, ``iss`` either form of accounts.google.com, ``exp``), with google-auth's ``iat`` and
    clock skew, and the caller's identity (``email``, ``email_verified``)."""
    _check_times(claims, clock_skew_seconds)
    if claims.get("aud") not in audiences:
        raise PushAuthError(401, f"Invalid ID token: wrong audience {claims.get('aud')!r}.")
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise PushAuthError(401, f"Invalid ID token: issuer {claims.get('iss')!r} is not Google.")
    email = claims.get("email")
    if not isinstance(email, str) or email.lower() not in accounts:
        raise PushAuthError(403, f"Unexpected caller: {email!r} is not the configured service account.")
    if claims.get("email_verified") is not True:
        raise PushAuthError(403, f"Unexpected caller: the email {email!r} is not verified.")


def _is_time(value: object) -> TypeGuard[int | float]:
    """A finite number (JSON as Python reads it allows NaN, which no comparison would refuse)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_times(claims: Mapping[str, Any], clock_skew_seconds: int) -> None:
    """``iat``/``exp`` as google-auth checks them (either may be off by the clock skew), and a
    lifetime no longer than Google gives its ID tokens (a longer one was not issued by Google)."""
    issued_at, expires_at = claims.get("iat"), claims.get("exp")
    if not (_is_time(issued_at) and _is_time(expires_at)):
        raise PushAuthError(401, "Invalid ID token: iat and exp must be numbers.")
    now = time.time()
    if now < issued_at - clock_skew_seconds:
        raise PushAuthError(401, "Invalid ID token: Token used too early.")
    if now > expires_at + clock_skew_seconds:
        raise PushAuthError(401, "Invalid ID token: Token expired.")
    if expires_at - issued_at > MAX_TOKEN_LIFETIME_SECONDS:
        raise PushAuthError(
            401, "Invalid ID token: it claims to live longer than a Google ID token (1 hour)."
        )


def _non_empty_list(value: str | Sequence[str], name: str) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(item, str) and item for item in values):
        # A configuration error, not the caller's: google-auth would skip the audience check.
        raise ValueError(f"{name} must be a non-empty string or list of strings.")
    return values


# --- Google's certificates, cached per URL ---------------------------------------------------


@dataclass(frozen=True)
class _Certs:
    """One fetched certificate set, with the verifiers built from it.

    A verifier is built once per certificate (parsing the PEM costs more than verifying a
    signature) and lives as long as its set: a refetch (expiry, or a key id not seen yet) brings
    a new set, and with it new verifiers. google-auth's RSAVerifier is meant for this, "to verify
    many messages with the same certificate":
    https://googleapis.dev/python/google-auth/latest/reference/google.auth.crypt.html
    """

    by_kid: dict[str, str]
    fetched_at: float  # time.monotonic()
    expires_at: float
    verifiers: dict[str, crypt.RSAVerifier] = field(default_factory=dict)

    def verifier(self, kid: str) -> crypt.RSAVerifier:
        verifier = self.verifiers.get(kid)
        if verifier is None:
            try:
                verifier = crypt.RSAVerifier.from_string(self.by_kid[kid])
            except (ValueError, TypeError):
                raise PushAuthError(
                    401, f"Invalid ID token: the certificate for key id {kid!r} cannot be read."
                ) from None
            # Two threads may both build it; either result is the same verifier.
            self.verifiers[kid] = verifier
        return verifier


class _CertsCache:
    """The certificates of one certs URL; thread-safe, one fetch at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._certs: _Certs | None = None

    def verifier(self, kid: str) -> crypt.RSAVerifier:
        """The verifier of the certificate `kid` names, from a fresh certificate set."""
        certs = self._certs
        if certs is not None and time.monotonic() < certs.expires_at and kid in certs.by_kid:
            return certs.verifier(kid)
        with self._lock:  # one fetch at a time; waiting threads then find the fresh certificates
            certs, now = self._certs, time.monotonic()
            if (
                certs is None
                or now >= certs.expires_at
                or (kid not in certs.by_kid and now - certs.fetched_at >= CERTS_REFETCH_COOLDOWN_SECONDS)
            ):
                certs = self._certs = self._fetch()
            if kid not in certs.by_kid:
                raise PushAuthError(401, f"Invalid ID token: no certificate for key id {kid!r}.")
            return certs.verifier(kid)

    def _fetch(self) -> _Certs:
        try:
            response = requests.get(self.url, timeout=CERTS_FETCH_TIMEOUT_SECONDS)
            response.raise_for_status()
            by_kid = response.json()
        except (requests.RequestException, ValueError) as exc:
            logger.warning("Could not fetch Google's ID token certificates from %s: %s", self.url, exc)
            raise PushAuthError(
                503, "Google's token certificates are unavailable; try again later."
            ) from None
        if not isinstance(by_kid, dict) or not all(isinstance(v, str) for v in by_kid.values()):
            logger.warning("Unexpected certificates document at %s", self.url)
            raise PushAuthError(503, "Google's token certificates are unavailable; try again later.")
        now = time.monotonic()
        return _Certs(by_kid, fetched_at=now, expires_at=now + _freshness_seconds(response.headers))


def _freshness_seconds(headers: Mapping[str, str]) -> float:
    """How long a response may be reused: Cache-Control max-age minus Age (RFC 9111)."""
    directives = [part.strip().lower() for part in headers.get("Cache-Control", "").split(",")]
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    max_age: float = CERTS_DEFAULT_MAX_AGE_SECONDS
    for directive in directives:
        name, _, value = directive.partition("=")
        if name == "max-age" and value.strip().isdigit():
            max_age = int(value)
    age = headers.get("Age", "").strip()
    return max(0.0, max_age - (int(age) if age.isdigit() else 0))


_caches_lock = threading.Lock()
_caches: dict[str, _CertsCache] = {}


def _certs_cache(url: str) -> _CertsCache:
    with _caches_lock:
        cache = _caches.get(url)
        if cache is None:
            cache = _caches[url] = _CertsCache(url)
        return cache
