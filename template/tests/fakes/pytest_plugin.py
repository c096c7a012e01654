"""pytest fixtures that start the Google fakes once per session and reset them after every test.

* ``oidc_issuer``: the test OIDC issuer (``OidcIssuer``); configure its ``certs_url`` as the
  verifier's certs URL and ``mint()`` tokens.
* ``google_fake``: the gRPC fake of Cloud Tasks / Cloud Run v2 / Cloud Scheduler
  (``GoogleServicesFake``); its pushes carry tokens minted by ``oidc_issuer``.
* ``google_api_endpoint``: the ``api_endpoint`` backend option that points the real clients at it.
* ``google_emulator``: Google's behaviour on top of the fake (``GoogleEmulator``): Cloud Tasks
  dispatches real HTTP requests, Cloud Scheduler fires on RunJob (and ticks through cron slots
  after ``scheduler.tick()``), Cloud Run Jobs runs containers once the test calls
  ``run_jobs(launch)``. Its clock compresses Google's durations (``google_emulator.clock.factor``,
  default 20). Stopped after the test.

At the end of the session the "Google behaves badly" scenarios' table (tests/fakes/emulator/
report.py) is printed.

Both servers start lazily, on first use, and stay up for the session (the shared gRPC channel and
the cached clients in ``django_tasks_google.gcp`` are never closed). After every test the fakes
used so far are reset and the app's certificate cache is cleared, so state set up in a
function-scoped fixture never leaks into the next test; don't populate the fakes from module- or
session-scoped fixtures.
"""

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

# Must be set before grpc is imported, or grpc-core prints INFO lines.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import pytest

from tests.fakes.emulator import report
from tests.fakes.emulator.clock import EmulatorClock
from tests.fakes.emulator.google import GoogleEmulator
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer

_started: list[GoogleServicesFake | OidcIssuer] = []
_ROWS_KEY = "google_behaves_badly_rows"


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[OidcIssuer]:
    issuer = OidcIssuer()
    issuer.start()
    _started.append(issuer)
    yield issuer
    _started.remove(issuer)
    issuer.stop()


@pytest.fixture(scope="session")
def google_fake(oidc_issuer: OidcIssuer) -> Iterator[GoogleServicesFake]:
    fake = GoogleServicesFake(issuer=oidc_issuer)
    fake.start()
    _started.append(fake)
    yield fake
    _started.remove(fake)
    fake.stop()


@pytest.fixture
def google_api_endpoint(google_fake: GoogleServicesFake) -> str:
    return google_fake.endpoint


@pytest.fixture
def google_emulator(google_fake: GoogleServicesFake) -> Iterator[GoogleEmulator]:
    emulator = GoogleEmulator(google_fake, EmulatorClock(factor=20))
    yield emulator
    emulator.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its scenario rows to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_ROWS_KEY] = [dataclasses.asdict(row) for row in report.ROWS]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist's controller: collect the rows a finished worker sent."""
    for row in getattr(node, "workeroutput", {}).get(_ROWS_KEY, []):
        report.record(report.ScenarioRow(**row))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if report.ROWS:
        terminalreporter.section("Google behaves badly")
        for line in report.table():
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _reset_google_fakes() -> Iterator[None]:
    yield
    for started in _started:
        started.reset()
    if any(isinstance(started, OidcIssuer) for started in _started):
        from django_tasks_google.auth import clear_certs_cache

        clear_certs_cache()
