"""Measured inside the rendered service (see ../google_calls.py): per-call cost of Google calls.

* Cloud Tasks CreateTask with the REAL client over real gRPC to the in-process fake
  (tests.fakes.google_services): the cached client of django_tasks_google.gcp vs a new client
  and channel per call.
* Push authentication of a REAL RS256 ID token from the local issuer (tests.fakes.oidc_issuer):
  django_tasks_google.auth with its certificate cache vs google-auth's
  google.oauth2.id_token.verify_token, which downloads the certificates on every call.

Prints one JSON line: per design, the call durations' median and mean (ms) and how many times
the certificates were downloaded.
"""

# ruff: noqa: E402  (the app's modules are imported once django.setup() has run)

import argparse
import json
import statistics
import time
from collections.abc import Callable

import django

django.setup()

import grpc
from django_tasks_google import auth, gcp
from google.auth.transport.requests import Request
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.oauth2 import id_token
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer

QUEUE = "projects/bench/locations/us-central1/queues/bench"
AUDIENCE = "https://bench.example.com"
INVOKER = "invoker@bench.iam.gserviceaccount.com"
WARM_UP_CALLS = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, required=True)
    args = parser.parse_args()
    issuer = OidcIssuer()
    issuer.start()
    fake = GoogleServicesFake(issuer=issuer)
    endpoint = fake.start()
    try:
        results = {
            "create_task_cached": measure(lambda: create_task_cached_client(endpoint), args.calls, fake),
            "create_task_fresh": measure(lambda: create_task_fresh_client(endpoint), args.calls, fake),
            **measure_verification(issuer, args.calls),
        }
    finally:
        fake.stop()
        issuer.stop()
    print(json.dumps(results))


def create_task(client: tasks_v2.CloudTasksClient) -> None:
    task = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(url="https://bench.example.com/tasks/execute/", body=b"{}")
    )
    client.create_task(parent=QUEUE, task=task, timeout=gcp.DEFAULT_TIMEOUT)


def create_task_cached_client(endpoint: str) -> None:
    create_task(gcp.cloud_tasks_client(endpoint))


def create_task_fresh_client(endpoint: str) -> None:
    """A client per call, as the published package builds them (minus ADC and TLS: see README)."""
    transport = CloudTasksGrpcTransport(channel=grpc.insecure_channel(endpoint))
    try:
        create_task(tasks_v2.CloudTasksClient(transport=transport))
    finally:
        transport.close()


def measure_verification(issuer: OidcIssuer, calls: int) -> dict[str, dict[str, float]]:
    token = issuer.mint(AUDIENCE, INVOKER)

    def ours() -> None:
        auth.verify_id_token(token, audience=AUDIENCE, service_account=INVOKER, certs_url=issuer.certs_url)

    def google_auth_uncached() -> None:
        claims = id_token.verify_token(token, Request(), audience=AUDIENCE, certs_url=issuer.certs_url)
        if claims["email"] != INVOKER or claims["email_verified"] is not True:
            raise AssertionError("unexpected claims")

    results = {}
    for name, verify in [("verify_cached", ours), ("verify_uncached", google_auth_uncached)]:
        auth.clear_certs_cache()
        issuer.reset()
        results[name] = measure(verify, calls)
        results[name]["cert_downloads"] = issuer.fetch_count
    return results


def measure(call: Callable[[], None], calls: int, fake: GoogleServicesFake | None = None) -> dict[str, float]:
    if fake is not None:
        fake.reset()  # forget earlier calls and tasks; each design starts from one empty queue
        fake.add_queue(QUEUE)
    for _ in range(WARM_UP_CALLS):
        call()
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return {
        "median_ms": 1000 * statistics.median(durations),
        "mean_ms": 1000 * statistics.fmean(durations),
        "calls": calls,
    }


if __name__ == "__main__":
    main()
