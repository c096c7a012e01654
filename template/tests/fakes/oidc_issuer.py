"""A local stand-in for Google as an OIDC issuer: real RS256 ID tokens and a real certs endpoint.

Tokens minted here have the shape of the ones Cloud Tasks and Cloud Scheduler attach to pushes
(claims iss, aud, azp, sub, email, email_verified, iat, exp; header kid) and are signed with an
RSA key generated at start. The key's self-signed X.509 certificate is served over HTTP in the
format of Google's ``https://www.googleapis.com/oauth2/v1/certs`` (``{kid: PEM}``, with
``Cache-Control: max-age``), so the app verifies them through exactly the code path it uses in
production; only its certs URL setting differs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt

CERTS_PATH = "/oauth2/v1/certs"
GOOGLE_ISSUER = "https://accounts.google.com"


class SigningKey:
    """An RSA key with its self-signed certificate and Google-style key id (40 hex chars)."""

    def __init__(self, kid: str | None = None) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-oidc-issuer")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.private_key, hashes.SHA256())
        )
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.kid = kid or hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        private_pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._signer = crypt.RSASigner.from_string(private_pem)

    def sign(self, payload: dict[str, Any], kid: str) -> str:
        return google_jwt.encode(self._signer, payload, key_id=kid).decode()


class OidcIssuer:
    """Mints Google-shaped ID tokens and serves the certificates that verify them.

    ``wrong_key`` is a second key that is never published: a token signed with it (under the
    published kid) must fail signature verification. ``rotate_key()`` publishes and starts
    using a new key, for tests of certificate refetching on an unknown kid; ``reissue_key()``
    replaces the current key by a new one under the same kid.
    """

    def __init__(self) -> None:
        self.key = self._first_key = SigningKey()
        self.wrong_key = SigningKey()
        self._published = [self.key]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.max_age = 3600
        self.age: int | None = None  # an ``Age`` header, as caches in front of Google add
        self.error_status: int | None = None  # answer the certs URL with this status instead
        self.fetch_count = 0

    # --- serving -----------------------------------------------------------------------------

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != CERTS_PATH:
                    self.send_error(404)
                    return
                status, headers, body = issuer._certs_response()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def certs_url(self) -> str:
        """The URL to configure as the verifier's certs URL (any query string is ignored)."""
        if self._server is None:
            raise RuntimeError("OidcIssuer is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{CERTS_PATH}"

    def _certs_response(self) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.fetch_count += 1
            if self.error_status is not None:
                return self.error_status, {"Content-Type": "text/plain"}, b"certs unavailable"
            body = json.dumps({key.kid: key.certificate_pem for key in self._published}).encode()
            headers = {
                "Content-Type": "application/json; charset=UTF-8",
                "Content-Length": str(len(body)),
                "Cache-Control": f"public, max-age={self.max_age}, must-revalidate, no-transform",
            }
            if self.age is not None:
                headers["Age"] = str(self.age)
            return 200, headers, body

    # --- keys and tokens ---------------------------------------------------------------------

    def rotate_key(self) -> SigningKey:
        """Publish a new key next to the old ones and sign with it from now on."""
        with self._lock:
            self.key = SigningKey()
            self._published.append(self.key)
            return self.key

    def reissue_key(self) -> SigningKey:
        """Publish a new key under the current key's id, in its place, and sign with it from now on."""
        with self._lock:
            old = self.key
            self.key = SigningKey(kid=old.kid)
            self._published[self._published.index(old)] = self.key
            return self.key

    def reset(self) -> None:
        """Back to the first key and default serving behaviour; fetch counter to zero."""
        with self._lock:
            self.key = self._first_key
            self._published = [self.key]
            self.max_age = 3600
            self.age = None
            self.error_status = None
            self.fetch_count = 0

    def mint(
        self,
        audience: str,
        email: str,
        *,
        email_verified: bool = True,
        issuer: str = GOOGLE_ISSUER,
        expires_in: int = 3600,
        issued_at: int | None = None,
        kid: str | None = None,
        signing_key: SigningKey | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """A signed ID token like the ones Google attaches to Cloud Tasks/Scheduler pushes.

        ``issued_at`` defaults to now; ``expires_in`` counts from it (negative = already expired).
        ``kid`` defaults to the signing key's; ``signing_key`` defaults to the current key
        (pass ``issuer.wrong_key`` for a bad signature).
        """
        key = signing_key or self.key
        iat = int(time.time()) if issued_at is None else issued_at
        subject = unique_id(email)  # Google puts the account's numeric id in sub and azp
        payload = {
            "iss": issuer,
            "aud": audience,
            "azp": subject,
            "sub": subject,
            "email": email,
            "email_verified": email_verified,
            "iat": iat,
            "exp": iat + expires_in,
            **(extra_claims or {}),
        }
        return key.sign(payload, kid or key.kid)


def unique_id(email: str) -> str:
    """A stable 21-digit numeric id for an account, like a service account's unique id."""
    return str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:21]


def strip_signature(token: str) -> str:
    """The token as a private Cloud Run service forwards it: signature replaced by a marker."""
    header, payload, _signature = token.split(".")
    return f"{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE"
