"""/tasks/schedule/ as Cloud Scheduler calls it: real pushes, real signed ID tokens, real commits.

Pushes are built by the fake from the job `schedule_task()` created (its URI, body, headers and
OIDC token), so the request is the one Cloud Scheduler would send; the token is signed by the test
issuer and verified by google-auth. The enqueued execution goes to Cloud Tasks (the fake).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from django.db import connection
from django.tasks import task_backends
from django.test import Client

from django_tasks_google.backends import push_mac
from django_tasks_google.models import ScheduledTask, ScheduledTaskFiring, TaskExecution
from django_tasks_google.scheduler import save_scheduled_task, schedule_task
from tests.django_tasks_google import sample_tasks
from tests.django_tasks_google.scheduler_setup import ORIGIN, SERVICE_ACCOUNT, configure_cloud
from tests.fakes.google_services import Push

pytestmark = pytest.mark.django_db(transaction=True)

# Two recent slots of the tasks' "*/15 * * * *": a push for a slot far from now is refused.
_NOW = datetime.now(UTC)
SLOT = _NOW.replace(minute=_NOW.minute // 15 * 15, second=0, microsecond=0) - timedelta(minutes=15)
NEXT_SLOT = SLOT + timedelta(minutes=15)


@pytest.fixture
def scheduled(settings: Any, google_fake: Any, oidc_issuer: Any) -> ScheduledTask:
    configure_cloud(settings, google_fake, oidc_issuer)
    return schedule_task(sample_tasks.add, "*/15 * * * *", name="adder", backend="cloud", args=[2, 3])


def push_for(google_fake: Any, row: ScheduledTask, slot: datetime = SLOT) -> Push:
    return google_fake.scheduler_push(row.cloud_scheduler_job_name, schedule_time=slot)


def send(push: Push) -> Any:
    return push.send(Client())


def nothing_fired() -> bool:
    return not ScheduledTaskFiring.objects.exists() and not TaskExecution.objects.exists()


# --- firing -----------------------------------------------------------------------------------------


def test_a_push_enqueues_the_task_through_its_backend(scheduled: ScheduledTask, google_fake: Any) -> None:
    push = push_for(google_fake, scheduled)
    assert push.headers["X-CloudScheduler-JobName"] == "svc-adder"

    response = send(push)

    assert response.status_code == 204, response.content
    execution = TaskExecution.objects.get()
    assert (execution.module_path, execution.backend_alias, execution.args) == (
        sample_tasks.add.module_path,
        "cloud",
        [2, 3],
    )
    assert execution.cloud_task_name  # handed to Cloud Tasks after the firing committed
    [created] = google_fake.requests("CreateTask")
    assert created.task.http_request.body == f"execution_id={execution.pk}&backend=cloud".encode()
    firing = ScheduledTaskFiring.objects.get()
    assert firing.key == f"svc-adder:{SLOT:%Y-%m-%dT%H:%M:%S}Z"  # the published package's format
    assert firing.source == ScheduledTaskFiring.Source.CLOUD_SCHEDULER
    assert firing.scheduled_for == SLOT
    assert firing.task_execution_id == execution.pk
    scheduled.refresh_from_db()
    assert scheduled.idempotency_key == firing.key


def test_a_repeated_push_of_a_slot_enqueues_once(scheduled: ScheduledTask, google_fake: Any) -> None:
    push = push_for(google_fake, scheduled)

    assert send(push).status_code == 204
    assert send(push).status_code == 204  # Cloud Scheduler's retry, or a duplicate delivery

    assert TaskExecution.objects.count() == 1
    assert len(google_fake.requests("CreateTask")) == 1

    assert send(push_for(google_fake, scheduled, NEXT_SLOT)).status_code == 204
    assert TaskExecution.objects.count() == 2


def test_one_slot_fires_once_however_its_schedule_time_is_spelled(
    scheduled: ScheduledTask, google_fake: Any
) -> None:
    push = push_for(google_fake, scheduled)
    assert push.headers["X-CloudScheduler-ScheduleTime"] == f"{SLOT:%Y-%m-%dT%H:%M:%S}Z"
    in_paris = SLOT.astimezone(ZoneInfo("Europe/Paris"))
    spellings = [
        f"{SLOT:%Y-%m-%dT%H:%M:%S}Z",
        f"{SLOT:%Y-%m-%dT%H:%M:%S}.000Z",
        f"{SLOT:%Y-%m-%dT%H:%M:%S}+00:00",
        f"{SLOT:%Y-%m-%d %H:%M:%S}Z",
        in_paris.isoformat(),  # the same instant in another offset
        f"{SLOT:%Y-%m-%dT%H:%M:%S}.000000-00:00",
    ]

    for spelling in spellings:
        response = send(with_header(push, "X-CloudScheduler-ScheduleTime", spelling))
        assert response.status_code == 204, (spelling, response.content)

    assert TaskExecution.objects.count() == 1
    assert len(google_fake.requests("CreateTask")) == 1
    assert ScheduledTaskFiring.objects.get().scheduled_for == SLOT
    # The job's full resource name is the same job: still the same slot.
    assert (
        send(with_header(push, "X-CloudScheduler-JobName", scheduled.cloud_scheduler_job_name)).status_code
        == 204
    )
    assert TaskExecution.objects.count() == 1


def test_slots_far_from_now_are_refused(scheduled: ScheduledTask, google_fake: Any) -> None:
    push = push_for(google_fake, scheduled)
    now = datetime.now(UTC)
    for spelling in [
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:30:00-01:00",  # past year 9999 in UTC
        "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
        f"{now - timedelta(days=3):%Y-%m-%dT%H:%M:%S}Z",  # a replay, days after Cloud Scheduler gave up
        f"{now + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}Z",  # Cloud Scheduler never pushes a slot early
    ]:
        response = send(with_header(push, "X-CloudScheduler-ScheduleTime", spelling))
        assert response.status_code == 400, (spelling, response.content)
    assert nothing_fired()
    # Who sent the push is checked first: without the job's push MAC, a far slot is a 401 like any.
    far = with_header(push, "X-CloudScheduler-ScheduleTime", "1970-01-01T00:00:00Z")
    assert send(with_header(far, push_mac.HEADER, None)).status_code == 401

    # A slot retried a day late (Cloud Scheduler backs off for hours at most) still fires.
    late = push_for(google_fake, scheduled, SLOT - timedelta(days=1))
    assert send(late).status_code == 204
    assert TaskExecution.objects.count() == 1


def test_a_disabled_task_is_acknowledged_but_not_enqueued(scheduled: ScheduledTask, google_fake: Any) -> None:
    push = push_for(google_fake, scheduled)  # fired just before the pause landed
    scheduled.state = ScheduledTask.State.DISABLED
    save_scheduled_task(scheduled)

    assert send(push).status_code == 204
    assert nothing_fired()


def test_concurrent_duplicate_pushes_enqueue_once(scheduled: ScheduledTask, google_fake: Any) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("concurrent writers: PostgreSQL")
    push = push_for(google_fake, scheduled)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def deliver() -> None:
        try:
            barrier.wait()
            statuses.append(send(push).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [204] * 4
    assert TaskExecution.objects.count() == 1
    assert ScheduledTaskFiring.objects.count() == 1


def test_a_failed_hand_over_releases_the_slot_for_the_retry(
    scheduled: ScheduledTask, google_fake: Any
) -> None:
    push = push_for(google_fake, scheduled)
    google_fake.fail_next("CreateTask", grpc.StatusCode.PERMISSION_DENIED)

    response = send(push)
    assert response.status_code == 503
    assert not ScheduledTaskFiring.objects.exists()
    assert TaskExecution.objects.get().status == "FAILED"  # the undelivered execution stays on record

    assert send(push).status_code == 204  # Cloud Scheduler retries the push
    assert ScheduledTaskFiring.objects.count() == 1
    assert TaskExecution.objects.filter(status="READY").count() == 1


# --- authentication comes first ---------------------------------------------------------------------


def with_header(push: Push, name: str, value: str | None) -> Push:
    headers = {key: item for key, item in push.headers.items() if key.lower() != name.lower()}
    if value is not None:
        headers[name] = value
    return Push(push.method, push.url, push.body, headers)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic c2VjcmV0", 401),
        ("token:other-audience", 401),
        ("token:other-account", 403),
        ("token:unverified-email", 403),
    ],
)
def test_unauthenticated_pushes_are_refused_and_change_nothing(
    scheduled: ScheduledTask, google_fake: Any, oidc_issuer: Any, authorization: str | None, status: int
) -> None:
    tokens = {
        "token:other-audience": lambda: oidc_issuer.mint(
            "https://another-service.example.com", SERVICE_ACCOUNT
        ),
        "token:other-account": lambda: oidc_issuer.mint(
            ORIGIN, "intruder@evil-project.iam.gserviceaccount.com"
        ),
        "token:unverified-email": lambda: oidc_issuer.mint(ORIGIN, SERVICE_ACCOUNT, email_verified=False),
    }
    if authorization in tokens:
        authorization = f"Bearer {tokens[authorization]()}"
    push = with_header(push_for(google_fake, scheduled), "Authorization", authorization)

    response = send(push)

    assert response.status_code == status
    assert nothing_fired()


def test_authentication_is_checked_before_the_body(scheduled: ScheduledTask, google_fake: Any) -> None:
    push = push_for(google_fake, scheduled)
    unauthenticated = Push(push.method, push.url, b"task_id=nonsense", {"X-CloudScheduler-JobName": "x"})

    assert send(unauthenticated).status_code == 401


# --- bad input: 4xx, never 500 ----------------------------------------------------------------------


def test_bad_pushes_get_a_4xx(scheduled: ScheduledTask, google_fake: Any, oidc_issuer: Any) -> None:
    push = push_for(google_fake, scheduled)
    pk = scheduled.pk

    job = push.headers["X-CloudScheduler-JobName"]

    def body(text: str) -> Push:
        return Push(push.method, push.url, text.encode(), push.headers)

    def signed(request: Push, task_id: int, job_name: str) -> Push:
        mac = push_mac.for_job(task_backends["cloud"], task_id, job_name)
        return with_header(request, push_mac.HEADER, mac)

    cases = {
        "no job header": (with_header(push, "X-CloudScheduler-JobName", None), 400),
        "no schedule time": (with_header(push, "X-CloudScheduler-ScheduleTime", None), 400),
        "malformed schedule time": (with_header(push, "X-CloudScheduler-ScheduleTime", "yesterday"), 400),
        "naive schedule time": (
            with_header(push, "X-CloudScheduler-ScheduleTime", f"{SLOT:%Y-%m-%dT%H:%M:%S}"),
            400,
        ),
        "no task id": (body("backend=cloud"), 400),
        "task id not a number": (body("task_id=1%3B+DROP&backend=cloud"), 400),
        "unknown backend": (body(f"task_id={pk}&backend=nope"), 400),
        "local backend": (body(f"task_id={pk}&backend=test-tasks"), 400),
        # The next two carry a valid MAC (as if the secret's holder made them), so the check
        # behind it answers; without one they are 401 (test_push_security.py).
        "unknown task": (signed(body(f"task_id={pk + 1000}&backend=cloud"), pk + 1000, job), 404),
        "another job": (
            signed(with_header(push, "X-CloudScheduler-JobName", "svc-someone-else"), pk, "svc-someone-else"),
            409,
        ),
    }
    for case, (request, status) in cases.items():
        response = send(request)
        assert response.status_code == status, f"{case}: {response.status_code} {response.content!r}"
    assert Client().get("/tasks/schedule/").status_code == 405
    assert nothing_fired()


def test_the_old_job_of_a_renamed_task_cannot_fire_it(scheduled: ScheduledTask, google_fake: Any) -> None:
    old_push = push_for(google_fake, scheduled)  # built while the old job existed
    scheduled.name = "adder-renamed"
    save_scheduled_task(scheduled)
    new_push = push_for(google_fake, scheduled)

    assert send(old_push).status_code == 409
    assert send(new_push).status_code == 204
    assert TaskExecution.objects.count() == 1


def test_a_task_moved_to_another_backend_is_not_fired_for_the_old_one(
    settings: Any, scheduled: ScheduledTask, google_fake: Any, oidc_issuer: Any
) -> None:
    configure_cloud(settings, google_fake, oidc_issuer, elsewhere={"location": "us-central1"})
    push = push_for(google_fake, scheduled)
    ScheduledTask.objects.filter(pk=scheduled.pk).update(backend_alias="elsewhere")

    assert send(push).status_code == 404
    assert nothing_fired()


def test_a_definition_broken_by_a_settings_change_gets_422(
    scheduled: ScheduledTask, google_fake: Any, settings: Any
) -> None:
    push = push_for(google_fake, scheduled)
    ScheduledTask.objects.filter(pk=scheduled.pk).update(queue_name="removed-queue")

    response = send(push)
    assert response.status_code == 422
    assert b"removed-queue" in response.content
    assert nothing_fired()
