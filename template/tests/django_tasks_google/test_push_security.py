"""Attacks on the push endpoints, tried as an attacker would; none may run a task.

Every variant starts from a real push: a task enqueued through CloudTasksBackend (CreateTask on
the gRPC fake) or a job synced to Cloud Scheduler, delivered as Google would (the fake rebuilds
the request, with an ID token signed by the test issuer), then altered the way an attacker could.
Both authentication modes are attacked: "verify" (the app checks Google's signature) and "trust"
(`oidc_trust_platform_signature`: a private Cloud Run service forwards tokens it verified with the
signature removed; here the fake's token is stripped as Cloud Run would strip it).

The attacks (ATTACKS below; each must be answered 401 or 403 with nothing run):

* forged token: signed by a key Google never published; or hand-made with its signature replaced
  by SIGNATURE_REMOVED_BY_GOOGLE (also with alg=none, without a key id, living until 1e20);
* replayed for another id: a captured push (token and MAC) with the body of another execution or
  scheduled task;
* stripped signature + X-Serverless-Authorization: with that header Cloud Run verifies it and
  passes Authorization through unchecked;
* MAC under a wrong key, no MAC at all, an old key after its rotation window, a scheduler job
  not yet re-synced after a rotation;
* and, accepted (controls that prove the refusals are not an accident): the genuine push in each
  mode, an old key inside its rotation window, the job once re-synced.

Task runs are counted for real: the pushed task appends a line to a marker file, and a fired
schedule leaves a firing row; nothing is assumed. The session's output ends with a "push security"
section: how many variants were tried and refused, and how many tasks they ran.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.tasks import TaskResultStatus, task, task_backends
from django.test import Client
from django.utils import timezone

from django_tasks_google.backends import push_mac
from django_tasks_google.models import ScheduledTaskFiring, TaskExecution
from django_tasks_google.scheduler import schedule_task, sync_scheduled_task
from tests.django_tasks_google.cloud_tasks_setup import QUEUE, cloud_tasks_entry, enqueue
from tests.django_tasks_google.scheduler_setup import cloud_entry, configure_cloud
from tests.fakes.google_services import GoogleServicesFake, Push
from tests.fakes.oidc_issuer import OidcIssuer, strip_signature

OLD_SECRET = "old-push-secret-old-push-secret-old-push-secret"
NEW_SECRET = "new-push-secret-new-push-secret-new-push-secret"
OTHER_SECRET = "someone-elses-secret-someone-elses-secret-x"


@task()
def writes_marker(path: str) -> None:
    """The task every attack tries to run: its only effect is a line in the marker file."""
    with open(path, "a") as marker:
        marker.write("ran\n")


# --- the tally: what was tried, and what ran ------------------------------------------------------


@dataclass(eq=False)  # hashable: registered as a pytest plugin
class Tally:
    tried: int = 0
    refused: int = 0
    accepted: int = 0
    attack_runs: int = 0

    def record(self, *, refused: bool, runs: int) -> None:
        """One attack variant: whether it was refused, and how many tasks it ran (counted, not assumed)."""
        self.tried += 1
        self.refused += refused
        self.attack_runs += runs

    def line(self) -> str:
        return (
            f"{self.tried} attack variants tried, {self.refused} refused, "
            f"task runs: {self.attack_runs} "
            f"(controls: {self.accepted} genuine pushes accepted, each ran once)"
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Registered as a plugin while this module runs: its line ends the test session's output."""
        terminalreporter.write_sep("-", "push security")
        terminalreporter.write_line(self.line())


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Report the counts at the end of the session; no refused variant may have run a task."""
    if not request.config.pluginmanager.is_registered(TALLY):
        request.config.pluginmanager.register(TALLY, "push-security-tally")
    yield
    assert TALLY.attack_runs == 0, TALLY.line()


# --- pushes and how they are altered --------------------------------------------------------------


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def with_headers(push: Push, changes: dict[str, str | None]) -> Push:
    """The push with headers replaced (None removes one)."""
    lowered = {name.lower() for name in changes}
    headers = {key: item for key, item in push.headers.items() if key.lower() not in lowered}
    headers.update({name: value for name, value in changes.items() if value is not None})
    return Push(push.method, push.url, push.body, headers)


def with_token(push: Push, token: str) -> Push:
    return with_headers(push, {"Authorization": f"Bearer {token}"})


def bearer(push: Push) -> str:
    return push.headers["Authorization"].removeprefix("Bearer ")


@dataclass
class Scene:
    """A genuine push as the container receives it, and what else an attacker can see."""

    push: Push
    other_body: bytes  # the body of another execution / scheduled task, which must not run
    backend: Any
    issuer: OidcIssuer

    def mac_under(self, secret: str) -> str:
        """The MAC of this push computed with `secret` (an attacker's key, not ours)."""
        attacker = copy.copy(self.backend)
        attacker.push_secret = secret
        form = dict(pair.split("=", 1) for pair in self.push.body.decode().split("&"))
        if "execution_id" in form:
            return push_mac.for_execution(attacker, int(form["execution_id"]))
        return push_mac.for_job(attacker, int(form["task_id"]), self.push.headers["X-CloudScheduler-JobName"])

    def hand_made(self, header: dict[str, Any], **changes: Any) -> str:
        """A token nobody signed, with the right claims, shaped as Cloud Run forwards a verified one."""
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": self.backend.oidc_audience,
            "email": self.backend.oidc_service_account,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        } | changes
        return f"{b64(header)}.{b64(claims)}.SIGNATURE_REMOVED_BY_GOOGLE"


RS256 = {"alg": "RS256", "kid": "0" * 40, "typ": "JWT"}
NO_MAC = {push_mac.HEADER: None}

# attack -> how the genuine push is altered. Every one must be answered 401 or 403, running nothing.
# The hand-made tokens keep the genuine MAC (except the first), so the token checks are tried on
# their own. (A well-formed hand-made token WITH the genuine MAC of that very push is accepted in
# trust mode: it can only run what the genuine push runs, and only Cloud Run can tell it apart.)
ATTACKS: dict[str, Callable[[Scene], Push]] = {
    "forged token: signed by an unpublished key": lambda scene: with_token(
        scene.push,
        scene.issuer.mint(
            scene.backend.oidc_audience,
            scene.backend.oidc_service_account,
            signing_key=scene.issuer.wrong_key,
            kid=scene.issuer.key.kid,
        ),
    ),
    "forged token: hand-made with its signature 'removed', no MAC": lambda scene: with_headers(
        with_token(scene.push, scene.hand_made(RS256)), NO_MAC
    ),
    "forged token: hand-made, alg=none": lambda scene: with_token(
        scene.push, scene.hand_made({"alg": "none", "typ": "JWT"})
    ),
    "forged token: hand-made, no key id": lambda scene: with_token(
        scene.push, scene.hand_made({"alg": "RS256", "typ": "JWT"})
    ),
    "forged token: hand-made, exp=1e20": lambda scene: with_token(
        scene.push, scene.hand_made(RS256, exp=10**20)
    ),
    "replayed for another id": lambda scene: Push(
        scene.push.method, scene.push.url, scene.other_body, scene.push.headers
    ),
    "stripped signature + X-Serverless-Authorization": lambda scene: with_headers(
        with_token(scene.push, strip_signature(bearer(scene.push))),
        {"X-Serverless-Authorization": f"Bearer {bearer(scene.push)}"},
    ),
    "MAC under a wrong key": lambda scene: with_headers(
        scene.push, {push_mac.HEADER: scene.mac_under(OTHER_SECRET)}
    ),
    "no MAC": lambda scene: with_headers(scene.push, NO_MAC),
}


# --- the scenes: a real enqueued task, a real scheduled job ---------------------------------------

pytestmark = pytest.mark.django_db(transaction=True)
MODES = ["verify", "trust"]
# A recent slot of the jobs' "*/15 * * * *": /tasks/schedule/ refuses slots far from now.
_NOW = datetime.now(UTC)
SLOT = _NOW.replace(minute=_NOW.minute // 15 * 15, second=0, microsecond=0) - timedelta(minutes=15)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "task-runs"


def task_runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def mode_options(mode: str, **options: Any) -> dict[str, Any]:
    return {"push_secret": NEW_SECRET, "oidc_trust_platform_signature": mode == "trust", **options}


def as_received(push: Push, mode: str) -> Push:
    """What the container receives: a private service (trust mode) gets the signature removed."""
    return with_token(push, strip_signature(bearer(push))) if mode == "trust" else push


def configure_tasks(
    settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer, **options: Any
) -> Any:
    if QUEUE not in google_fake.queues:
        google_fake.add_queue(QUEUE, max_attempts=3)
    settings.TASKS = {
        **settings.TASKS,
        "default": cloud_tasks_entry(google_fake.endpoint, oidc_issuer.certs_url, **options),
    }
    return task_backends["default"]


def execute_scene(
    mode: str, settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer, marker: Path
) -> Scene:
    backend = configure_tasks(settings, google_fake, oidc_issuer, **mode_options(mode))
    _, target = enqueue(writes_marker, str(marker))
    _, other = enqueue(writes_marker, str(marker))
    push = as_received(google_fake.task_push(target.cloud_task_name), mode)
    other_body = google_fake.task_push(other.cloud_task_name).body
    return Scene(push, other_body, backend, oidc_issuer)


def schedule_scene(
    mode: str, settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer, marker: Path
) -> Scene:
    configure_cloud(settings, google_fake, oidc_issuer)
    entry = cloud_entry(google_fake.endpoint, oidc_issuer.certs_url, **mode_options(mode))
    settings.TASKS = {**settings.TASKS, "cloud": entry}
    target = schedule_task(writes_marker, "*/15 * * * *", name="target", backend="cloud", args=[str(marker)])
    other = schedule_task(writes_marker, "*/15 * * * *", name="other", backend="cloud", args=[str(marker)])
    push = as_received(google_fake.scheduler_push(target.cloud_scheduler_job_name, schedule_time=SLOT), mode)
    other_body = google_fake.scheduler_push(other.cloud_scheduler_job_name, schedule_time=SLOT).body
    return Scene(push, other_body, task_backends["cloud"], oidc_issuer)


SCENES = {"execute": execute_scene, "schedule": schedule_scene}


def runs(endpoint: str, marker: Path) -> int:
    """Tasks run by Cloud Tasks pushes (marker lines), or slots fired by Cloud Scheduler pushes."""
    return task_runs(marker) if endpoint == "execute" else ScheduledTaskFiring.objects.count()


# --- the attacks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("endpoint", list(SCENES))
def test_attack_is_refused_and_runs_nothing(
    endpoint: str,
    mode: str,
    attack: str,
    settings: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    marker: Path,
) -> None:
    scene = SCENES[endpoint](mode, settings, google_fake, oidc_issuer, marker)

    response = ATTACKS[attack](scene).send(Client())

    TALLY.record(refused=response.status_code in {401, 403}, runs=runs(endpoint, marker))
    assert response.status_code in {401, 403}, response.content
    assert runs(endpoint, marker) == 0
    assert not TaskExecution.objects.exclude(status=TaskResultStatus.READY).exists()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("endpoint", list(SCENES))
def test_the_genuine_push_is_accepted(
    endpoint: str,
    mode: str,
    settings: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    marker: Path,
) -> None:
    # The control: every refusal above is of an attack, not of every push.
    scene = SCENES[endpoint](mode, settings, google_fake, oidc_issuer, marker)

    response = scene.push.send(Client())

    assert response.status_code == 204, response.content
    assert runs(endpoint, marker) == 1
    TALLY.accepted += 1


# --- key rotation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window_ends_in", "status", "expected_runs"),
    [(timedelta(days=1), 204, 1), (-timedelta(seconds=1), 401, 0)],
    ids=["old-key-within-window", "old-key-after-window"],
)
def test_a_task_queued_under_the_previous_key(
    window_ends_in: timedelta,
    status: int,
    expected_runs: int,
    settings: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    marker: Path,
) -> None:
    configure_tasks(settings, google_fake, oidc_issuer, push_secret=OLD_SECRET)
    _, queued = enqueue(writes_marker, str(marker))
    push = google_fake.task_push(queued.cloud_task_name)  # created under the old key
    until = (timezone.now() + window_ends_in).isoformat()
    rotated = configure_tasks(
        settings,
        google_fake,
        oidc_issuer,
        push_secret=NEW_SECRET,
        push_secret_previous=OLD_SECRET,
        push_secret_previous_until=until,
    )
    assert (rotated.push_secret, rotated.option_errors) == (NEW_SECRET, [])

    response = push.send(Client())

    if status == 204:
        TALLY.accepted += response.status_code == 204
    else:
        TALLY.record(refused=response.status_code == 401, runs=task_runs(marker))
    assert response.status_code == status, response.content
    assert task_runs(marker) == expected_runs


def test_a_rotated_key_reaches_scheduler_jobs_at_the_next_sync(
    settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer, marker: Path
) -> None:
    # Every deploy runs sync_scheduled_tasks: the jobs then carry a MAC under the new key.
    configure_cloud(settings, google_fake, oidc_issuer)
    settings.TASKS = {
        **settings.TASKS,
        "cloud": cloud_entry(google_fake.endpoint, oidc_issuer.certs_url, push_secret=OLD_SECRET),
    }
    row = schedule_task(writes_marker, "*/15 * * * *", name="target", backend="cloud", args=[str(marker)])
    before = google_fake.scheduler_push(row.cloud_scheduler_job_name, schedule_time=SLOT)
    settings.TASKS = {
        **settings.TASKS,
        "cloud": cloud_entry(google_fake.endpoint, oidc_issuer.certs_url, push_secret=NEW_SECRET),
    }

    stale = before.send(Client())  # the old key has no window: refused
    TALLY.record(refused=stale.status_code == 401, runs=ScheduledTaskFiring.objects.count())
    sync_scheduled_task(row.pk)
    after = google_fake.scheduler_push(row.cloud_scheduler_job_name, schedule_time=SLOT)

    assert stale.status_code == 401
    assert after.headers[push_mac.HEADER] != before.headers[push_mac.HEADER]
    assert after.send(Client()).status_code == 204
    assert ScheduledTaskFiring.objects.count() == 1
    TALLY.accepted += 1


# --- where the check sits, and its configuration --------------------------------------------------


def test_a_push_without_a_valid_mac_is_refused_before_any_database_query(
    settings: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    marker: Path,
    django_assert_num_queries: Any,
) -> None:
    scene = execute_scene("verify", settings, google_fake, oidc_issuer, marker)
    forged = with_headers(scene.push, {push_mac.HEADER: scene.mac_under(OTHER_SECRET)})

    with django_assert_num_queries(0):
        response = forged.send(Client())

    assert response.status_code == 401
    assert push_mac.HEADER in response.content.decode()


def test_without_a_push_secret_the_key_is_derived_from_secret_key(
    settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer
) -> None:
    backend = configure_tasks(settings, google_fake, oidc_issuer)
    assert backend.push_secret is None
    derived = push_mac.for_execution(backend, 7)

    settings.SECRET_KEY = "another-secret-key-another-secret-key-another-secret-key"

    assert push_mac.for_execution(backend, 7) != derived
    assert push_mac.for_execution(backend, 7) != push_mac.for_execution(backend, 8)
    # A dedicated secret wins over SECRET_KEY.
    dedicated = configure_tasks(settings, google_fake, oidc_issuer, push_secret=NEW_SECRET)
    assert push_mac.for_execution(dedicated, 7) not in {derived, push_mac.for_execution(backend, 7)}


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        ({"push_secret": "short"}, "push_secret", "at least 32 characters"),
        ({"push_secret_previous": OLD_SECRET}, "push_secret_previous", "needs push_secret_previous_until"),
        (
            {"push_secret_previous": OLD_SECRET, "push_secret_previous_until": "2030-01-01T00:00"},
            "push_secret_previous_until",
            "with a UTC offset",
        ),
        (
            {"push_secret_previous": OLD_SECRET, "push_secret_previous_until": "next week"},
            "push_secret_previous_until",
            "ISO 8601",
        ),
    ],
    ids=["short-secret", "previous-without-deadline", "naive-deadline", "unparsable-deadline"],
)
def test_push_secret_options_are_checked(
    settings: Any,
    google_fake: GoogleServicesFake,
    oidc_issuer: OidcIssuer,
    options: dict[str, str],
    option: str,
    message: str,
) -> None:
    backend = configure_tasks(settings, google_fake, oidc_issuer, **options)

    assert [name for name, text in backend.option_errors if message in text] == [option]
    # An old key without a (valid) deadline is never accepted.
    assert len(push_mac.accepted_secrets(backend)) == 1


def test_a_task_queued_before_macs_existed_is_refused_then_recovered_with_one(
    settings: Any, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer, marker: Path
) -> None:
    # The upgrade path the CHANGELOG promises: refused (nothing runs, nothing is recorded), then
    # recover_tasks dispatches it again once Cloud Tasks has given up, and it runs once.
    configure_tasks(settings, google_fake, oidc_issuer, push_secret=NEW_SECRET)
    _, queued = enqueue(writes_marker, str(marker))
    legacy = with_headers(google_fake.task_push(queued.cloud_task_name), NO_MAC)

    refused = legacy.send(Client())
    TALLY.record(refused=refused.status_code == 401, runs=task_runs(marker))
    with google_fake._lock:  # Cloud Tasks gives up after its last attempt: the task is deleted
        del google_fake.tasks[queued.cloud_task_name]
        google_fake.tombstones.add(queued.cloud_task_name)
    TaskExecution.objects.filter(pk=queued.pk).update(enqueued_at=timezone.now() - timedelta(hours=1))
    call_command("recover_tasks", stdout=StringIO())
    redispatched = TaskExecution.objects.get(pk=queued.pk)
    accepted = google_fake.task_push(redispatched.cloud_task_name).send(Client())

    assert refused.status_code == 401
    assert redispatched.cloud_task_name != queued.cloud_task_name
    assert accepted.status_code == 204
    assert task_runs(marker) == 1
    TALLY.accepted += 1
