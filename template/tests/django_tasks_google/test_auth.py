"""verify_push against real RS256 ID tokens from the local issuer, verified by google-auth.

Nothing is mocked: tokens are signed with a real key, certificates are fetched over HTTP from the
issuer (which counts the fetches), and the verifier's own cache is exercised.
"""

import base64
import json
import threading
import time

import pytest
from django.test import RequestFactory

from django_tasks_google import auth
from django_tasks_google.auth import PushAuthError, verify_push
from tests.fakes.oidc_issuer import OidcIssuer, strip_signature

AUDIENCE = "https://service-abc123-ew.a.run.app"
SERVICE_ACCOUNT = "service-invoker@test-project.iam.gserviceaccount.com"


def push_with(authorization: str | None) -> object:
    headers = {} if authorization is None else {"Authorization": authorization}
    return RequestFactory().post(
        "/tasks/execute/", data=b"{}", content_type="application/json", headers=headers
    )


def check(issuer: OidcIssuer, token: str, **options: object) -> dict:
    settings = {
        "audience": AUDIENCE,
        "service_account": SERVICE_ACCOUNT,
        "certs_url": issuer.certs_url,
        **options,
    }
    return verify_push(push_with(f"Bearer {token}"), **settings)  # type: ignore[arg-type]


def refused(issuer: OidcIssuer, token: str, **options: object) -> PushAuthError:
    with pytest.raises(PushAuthError) as caught:
        check(issuer, token, **options)
    return caught.value


def unsigned_token(header: dict, payload: dict) -> str:
    def segment(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment(header)}.{segment(payload)}.c2lnbmF0dXJl"


# --- accepted ---------------------------------------------------------------------------------


def test_a_google_token_for_the_service_account_is_accepted(oidc_issuer: OidcIssuer) -> None:
    claims = check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    assert claims["email"] == SERVICE_ACCOUNT
    assert claims["aud"] == AUDIENCE
    assert claims["iss"] == "https://accounts.google.com"


def test_accepted_variants(oidc_issuer: OidcIssuer) -> None:
    custom_domain = "https://tasks.example.com"
    assert check(
        oidc_issuer, oidc_issuer.mint(custom_domain, SERVICE_ACCOUNT), audience=[AUDIENCE, custom_domain]
    )
    assert check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issuer="accounts.google.com"))
    assert check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT.upper()))
    lowercase_scheme = verify_push(
        push_with(f"bearer {oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT)}"),
        audience=AUDIENCE,
        service_account=SERVICE_ACCOUNT,
        certs_url=oidc_issuer.certs_url,
    )
    assert lowercase_scheme["email"] == SERVICE_ACCOUNT


# --- refused: not authenticated (401) ---------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"],
    ids=["absent", "empty", "no-token", "blank-token", "basic", "other-scheme"],
)
def test_missing_or_malformed_header_is_401(oidc_issuer: OidcIssuer, authorization: str | None) -> None:
    with pytest.raises(PushAuthError) as caught:
        verify_push(
            push_with(authorization),
            audience=AUDIENCE,
            service_account=SERVICE_ACCOUNT,
            certs_url=oidc_issuer.certs_url,
        )
    assert caught.value.status == 401
    assert "Authorization header" in caught.value.message
    assert oidc_issuer.fetch_count == 0


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "a.b", "x.y.z.w", "!!!.???.***"],
    ids=["one", "three", "two", "four", "symbols"],
)
def test_garbage_tokens_are_401(oidc_issuer: OidcIssuer, token: str) -> None:
    assert refused(oidc_issuer, token).status == 401


def test_a_token_nested_too_deep_to_parse_is_401(oidc_issuer: OidcIssuer) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 100_000).rstrip(b"=").decode()

    assert refused(oidc_issuer, f"{nested}.{nested}.c2lnbmF0dXJl").status == 401
    assert oidc_issuer.fetch_count == 0


def test_bad_signature_is_401(oidc_issuer: OidcIssuer) -> None:
    # Signed by a key that was never published, under the published key id.
    forged = oidc_issuer.mint(
        AUDIENCE, SERVICE_ACCOUNT, signing_key=oidc_issuer.wrong_key, kid=oidc_issuer.key.kid
    )

    error = refused(oidc_issuer, forged)

    assert (error.status, error.message) == (401, "Invalid ID token: Could not verify token signature.")


def test_tampered_payload_is_401(oidc_issuer: OidcIssuer) -> None:
    header, _payload, signature = oidc_issuer.mint(AUDIENCE, "attacker@evil.iam.gserviceaccount.com").split(
        "."
    )
    _, genuine_payload, _ = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT).split(".")

    assert refused(oidc_issuer, f"{header}.{genuine_payload}.{signature}").status == 401


@pytest.mark.parametrize(
    ("header", "reason"),
    [({"alg": "none", "typ": "JWT"}, "unsupported algorithm"), ({"alg": "RS256", "typ": "JWT"}, "no key id")],
    ids=["alg-none", "no-kid"],
)
def test_unsigned_or_unidentified_tokens_are_401(oidc_issuer: OidcIssuer, header: dict, reason: str) -> None:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }

    error = refused(oidc_issuer, unsigned_token(header, payload))

    assert error.status == 401
    assert reason in error.message


def test_expired_token_is_401(oidc_issuer: OidcIssuer) -> None:
    an_hour_ago = int(time.time()) - 7200
    token = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issued_at=an_hour_ago, expires_in=3600)

    error = refused(oidc_issuer, token)

    assert error.status == 401
    assert "Token expired" in error.message


def test_clock_skew_is_tolerated_up_to_the_configured_seconds(oidc_issuer: OidcIssuer) -> None:
    now = int(time.time())
    just_expired = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issued_at=now - 3605, expires_in=3600)
    slightly_early = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issued_at=now + 5)
    far_early = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issued_at=now + 60)

    assert auth.DEFAULT_CLOCK_SKEW_SECONDS == 10
    assert check(oidc_issuer, just_expired)
    assert check(oidc_issuer, slightly_early)
    assert refused(oidc_issuer, just_expired, clock_skew_seconds=0).status == 401
    assert refused(oidc_issuer, slightly_early, clock_skew_seconds=0).status == 401
    assert "too early" in refused(oidc_issuer, far_early).message


def test_wrong_audience_is_401(oidc_issuer: OidcIssuer) -> None:
    other_service = oidc_issuer.mint("https://other-service-xyz-ew.a.run.app", SERVICE_ACCOUNT)
    # What Cloud Tasks uses when the task sets no audience: the full target URL.
    url_audience = oidc_issuer.mint(f"{AUDIENCE}/tasks/execute/", SERVICE_ACCOUNT)

    for token in (other_service, url_audience):
        error = refused(oidc_issuer, token)
        assert error.status == 401
        assert "wrong audience" in error.message


def test_wrong_issuer_is_401(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issuer="https://evil.example.com")

    error = refused(oidc_issuer, token)

    assert error.status == 401
    assert "issuer" in error.message


# --- refused: someone else (403) --------------------------------------------------------------


def test_another_identity_is_403(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(AUDIENCE, "someone-else@test-project.iam.gserviceaccount.com")

    error = refused(oidc_issuer, token)

    assert error.status == 403
    assert "someone-else@" in error.message


def test_unverified_email_is_403(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, email_verified=False)

    assert refused(oidc_issuer, token).status == 403


def test_a_token_without_email_is_403(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, extra_claims={"email": None})

    assert refused(oidc_issuer, token).status == 403


# --- certificates: fetching and caching -------------------------------------------------------


def test_certificates_are_fetched_once_and_cached(oidc_issuer: OidcIssuer) -> None:
    for _ in range(5):
        check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    assert oidc_issuer.fetch_count == 1


def test_concurrent_first_verifications_fetch_once(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT)
    barrier = threading.Barrier(8)
    results: list[dict] = []

    def verify() -> None:
        barrier.wait()
        results.append(check(oidc_issuer, token))

    threads = [threading.Thread(target=verify) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert oidc_issuer.fetch_count == 1


@pytest.mark.parametrize(("max_age", "age"), [(0, None), (3600, 3600)], ids=["max-age-0", "aged-out"])
def test_certificates_are_refetched_once_stale(
    oidc_issuer: OidcIssuer, max_age: int, age: int | None
) -> None:
    oidc_issuer.max_age, oidc_issuer.age = max_age, age

    for _ in range(3):
        check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    assert oidc_issuer.fetch_count == 3


def test_an_unknown_key_id_triggers_a_refetch(
    oidc_issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))
    oidc_issuer.rotate_key()  # Google started signing with a key we have not seen yet
    monkeypatch.setattr(auth, "CERTS_REFETCH_COOLDOWN_SECONDS", 0)

    claims = check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    assert claims["email"] == SERVICE_ACCOUNT
    assert oidc_issuer.fetch_count == 2


def test_unknown_key_ids_do_not_cause_a_fetch_storm(oidc_issuer: OidcIssuer) -> None:
    check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    for index in range(5):
        forged = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, kid=f"{index:040x}")
        error = refused(oidc_issuer, forged)
        assert (error.status, "no certificate for key id" in error.message) == (401, True)

    assert oidc_issuer.fetch_count == 1  # within the cooldown, unknown kids are refused without a fetch


def test_each_certificate_is_parsed_once(oidc_issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    build = auth.crypt.RSAVerifier.from_string

    def counted(certificate: str) -> auth.crypt.RSAVerifier:
        parsed.append(certificate)
        return build(certificate)

    monkeypatch.setattr(auth.crypt.RSAVerifier, "from_string", counted)

    for _ in range(5):
        check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    assert parsed == [oidc_issuer.key.certificate_pem]


def test_a_refetched_certificate_set_replaces_the_cached_verifiers(oidc_issuer: OidcIssuer) -> None:
    oidc_issuer.max_age = 0  # every verification fetches the certificates again
    before = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT)
    assert check(oidc_issuer, before)
    oidc_issuer.reissue_key()  # another key, published under the same key id

    after = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT)

    assert check(oidc_issuer, after)["email"] == SERVICE_ACCOUNT
    error = refused(oidc_issuer, before)
    assert (error.status, error.message) == (401, "Invalid ID token: Could not verify token signature.")
    assert oidc_issuer.fetch_count == 3


def test_a_signature_by_another_published_key_is_401(oidc_issuer: OidcIssuer) -> None:
    first = oidc_issuer.key
    oidc_issuer.rotate_key()  # both keys are published now
    check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))
    # Validly signed, by the new key, but naming the first key's id.
    misnamed = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, kid=first.kid)

    error = refused(oidc_issuer, misnamed)

    assert (error.status, error.message) == (401, "Invalid ID token: Could not verify token signature.")
    assert check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, signing_key=first))


def test_unavailable_certificates_are_503(oidc_issuer: OidcIssuer) -> None:
    oidc_issuer.error_status = 500

    error = refused(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))

    assert error.status == 503
    oidc_issuer.error_status = None
    assert check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))  # the failure was not cached


# --- private Cloud Run services: signature removed by Google ----------------------------------


def test_a_stripped_token_is_refused_by_default_with_a_pointer(oidc_issuer: OidcIssuer) -> None:
    error = refused(oidc_issuer, strip_signature(oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT)))

    assert error.status == 401
    assert "trust_platform_signature" in error.message


def test_trusting_the_platform_still_checks_every_claim(oidc_issuer: OidcIssuer) -> None:
    def platform_checked(token: str) -> dict:
        return check(oidc_issuer, strip_signature(token), trust_platform_signature=True)

    def platform_refused(token: str) -> int:
        return refused(oidc_issuer, strip_signature(token), trust_platform_signature=True).status

    an_hour_ago = int(time.time()) - 7200
    assert platform_checked(oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT))["email"] == SERVICE_ACCOUNT
    assert platform_refused(oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issued_at=an_hour_ago)) == 401
    assert (
        platform_refused(oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issued_at=int(time.time()) + 60)) == 401
    )
    assert platform_refused(oidc_issuer.mint("https://other.example.com", SERVICE_ACCOUNT)) == 401
    assert (
        platform_refused(oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, issuer="https://evil.example.com"))
        == 401
    )
    assert platform_refused(oidc_issuer.mint(AUDIENCE, "other@test-project.iam.gserviceaccount.com")) == 403
    assert platform_refused(oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, email_verified=False)) == 403
    assert oidc_issuer.fetch_count == 0  # nothing to verify a removed signature with


def stripped_token(header: dict, **claims: object) -> str:
    """A token nobody signed, shaped as Cloud Run forwards a verified one (finding 1 of issue 12)."""
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return unsigned_token(header, payload).rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"


GOOGLE_HEADER = {"alg": "RS256", "kid": "0" * 40, "typ": "JWT"}


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"alg": "none", "typ": "JWT"}, {}, "RS256 with a key id"),
        ({"alg": "HS256", "kid": "0" * 40}, {}, "RS256 with a key id"),
        ({"alg": "RS256", "typ": "JWT"}, {}, "RS256 with a key id"),
        ({"alg": "RS256", "kid": ""}, {}, "RS256 with a key id"),
        (GOOGLE_HEADER, {"exp": 10**20}, "longer than a Google ID token"),
        (GOOGLE_HEADER, {"iat": 0, "exp": 10**20}, "longer than a Google ID token"),
        (GOOGLE_HEADER, {"iat": float("nan"), "exp": float("nan")}, "must be numbers"),
        (GOOGLE_HEADER, {"exp": True}, "must be numbers"),
    ],
    ids=[
        "alg-none",
        "alg-hs256",
        "no-kid",
        "empty-kid",
        "exp-1e20",
        "iat-0-exp-1e20",
        "nan-times",
        "bool-exp",
    ],
)
def test_trusting_the_platform_refuses_stripped_tokens_google_never_issues(
    oidc_issuer: OidcIssuer, header: dict, claims: dict, reason: str
) -> None:
    # Fails before issue 12: each of these ran any task in trust mode.
    error = refused(oidc_issuer, stripped_token(header, **claims), trust_platform_signature=True)

    assert error.status == 401
    assert reason in error.message


def test_trusting_the_platform_accepts_the_shape_google_forwards(oidc_issuer: OidcIssuer) -> None:
    claims = check(oidc_issuer, stripped_token(GOOGLE_HEADER), trust_platform_signature=True)

    assert claims["email"] == SERVICE_ACCOUNT


def test_trusting_the_platform_refuses_any_x_serverless_authorization(oidc_issuer: OidcIssuer) -> None:
    # With this header Cloud Run checks it instead of Authorization and forwards Authorization as
    # sent: any run.invoker could pass a hand-made token (fails before issue 12).
    genuine = oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT)
    request = RequestFactory().post(
        "/tasks/execute/",
        data=b"",
        content_type="application/x-www-form-urlencoded",
        headers={
            "Authorization": f"Bearer {strip_signature(genuine)}",
            "X-Serverless-Authorization": f"Bearer {genuine}",
        },
    )
    options = {"audience": AUDIENCE, "service_account": SERVICE_ACCOUNT, "certs_url": oidc_issuer.certs_url}

    with pytest.raises(PushAuthError) as caught:
        verify_push(request, trust_platform_signature=True, **options)  # type: ignore[arg-type]

    assert caught.value.status == 401
    assert "X-Serverless-Authorization" in caught.value.message
    # Verifying the signature ourselves, the header changes nothing.
    signed = RequestFactory().post(
        "/tasks/execute/",
        data=b"",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": f"Bearer {genuine}", "X-Serverless-Authorization": f"Bearer {genuine}"},
    )
    assert verify_push(signed, **options)["email"] == SERVICE_ACCOUNT  # type: ignore[arg-type]


def test_a_signed_token_living_longer_than_an_hour_is_401(oidc_issuer: OidcIssuer) -> None:
    error = refused(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT, expires_in=3600 * 24))

    assert (error.status, "longer than a Google ID token" in error.message) == (401, True)


def test_trusting_the_platform_still_verifies_signed_tokens(oidc_issuer: OidcIssuer) -> None:
    forged = oidc_issuer.mint(
        AUDIENCE, SERVICE_ACCOUNT, signing_key=oidc_issuer.wrong_key, kid=oidc_issuer.key.kid
    )

    assert refused(oidc_issuer, forged, trust_platform_signature=True).status == 401
    assert check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT), trust_platform_signature=True)


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"audience": ""}, {"audience": []}, {"service_account": ""}, {"service_account": [""]}],
    ids=["empty-audience", "no-audience", "empty-account", "blank-account"],
)
def test_missing_configuration_is_a_programming_error(oidc_issuer: OidcIssuer, options: dict) -> None:
    # Never "accept any audience": google-auth skips the audience check when given None.
    with pytest.raises(ValueError, match="non-empty"):
        check(oidc_issuer, oidc_issuer.mint(AUDIENCE, SERVICE_ACCOUNT), **options)
