"""Self-tests of the behavioural emulator (tests/fakes/emulator/): Google's rules, on the wire.

The app is not involved: the real client libraries create tasks, jobs and schedules on the fake,
and a small scripted HTTP server (or a tiny container script) plays the service, recording what
Google's emulated pushes carried. Tokens are verified with google-auth against the test issuer.
"""

from __future__ import annotations

import datetime
import http.server
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.api_core.future import polling
from google.auth.transport import requests as auth_requests
from google.cloud import run_v2, scheduler_v1, tasks_v2
from google.oauth2 import id_token

from tests.fakes.emulator.backoff import backoff
from tests.fakes.emulator.google import GoogleEmulator
from tests.fakes.google_services import GoogleServicesFake, JobContainer
from tests.fakes.oidc_issuer import OidcIssuer
from tests.processes import wait_for

pytestmark = pytest.mark.google_e2e

QUEUE = "projects/p/locations/europe-west1/queues/q"
ORIGIN = "https://service-xyz.a.run.app"
ACCOUNT = "invoker@p.iam.gserviceaccount.com"
FAST_POLLING = polling.DEFAULT_POLLING.with_delay(initial=0.02, maximum=0.1)


class Service:
    """A local HTTP server answering each POST from a script of (status, seconds to wait, headers)."""

    def __init__(self, script: list[tuple[int, float, dict[str, str]]]) -> None:
        self.script = list(script)
        self.received: list[dict[str, str]] = []
        self.arrivals: list[datetime.datetime] = []
        self.running = 0
        self.most_running = 0
        lock = threading.Lock()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    service.received.append(dict(self.headers))
                    service.arrivals.append(datetime.datetime.now(datetime.UTC))
                    status, wait, headers = service.script.pop(0) if service.script else (204, 0.0, {})
                    service.running += 1
                    service.most_running = max(service.most_running, service.running)
                time.sleep(wait)
                with lock:
                    service.running -= 1
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the emulator stopped waiting (deadline): nobody reads the answer
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def channel(google_fake: GoogleServicesFake) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(google_fake.endpoint) as channel:
        yield channel


@pytest.fixture
def tasks_client(channel: grpc.Channel) -> tasks_v2.CloudTasksClient:
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def serve(emulator: GoogleEmulator, script: list[tuple[int, float, dict[str, str]]]) -> Service:
    service = Service(script)
    emulator.front_end.route(ORIGIN, service.url)
    return service


def create_task(client: tasks_v2.CloudTasksClient, **fields: Any) -> tasks_v2.Task:
    http_request = tasks_v2.HttpRequest(
        url=f"{ORIGIN}/tasks/execute/",
        body=b"execution=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "mine"},
        oidc_token=tasks_v2.OidcToken(service_account_email=ACCOUNT, audience=ORIGIN),
    )
    return client.create_task(parent=QUEUE, task=tasks_v2.Task(http_request=http_request, **fields))


def test_backoff_doubles_then_grows_linearly_up_to_the_maximum() -> None:
    waits = [
        backoff(datetime.timedelta(seconds=10), datetime.timedelta(seconds=300), 3, retry).total_seconds()
        for retry in range(1, 9)
    ]
    assert waits == [10, 20, 40, 80, 160, 240, 300, 300]


def test_retries_carry_the_headers_of_the_golden_recording(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient, oidc_issuer: OidcIssuer
) -> None:
    google_emulator.fake.add_queue(QUEUE)
    service = serve(google_emulator, [(503, 0, {}), (404, 0, {}), (200, 0, {})])
    try:
        task = create_task(tasks_client)
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
    finally:
        service.close()

    seen = [
        (
            h["X-CloudTasks-TaskRetryCount"],
            h["X-CloudTasks-TaskExecutionCount"],
            h.get("X-CloudTasks-TaskPreviousResponse"),
            h.get("X-CloudTasks-TaskRetryReason"),
        )
        for h in service.received
    ]
    assert seen == [("0", "0", None, None), ("1", "0", "503", ""), ("2", "1", "404", "")]
    first = service.received[0]
    assert first["User-Agent"] == "Google-Cloud-Tasks"
    assert first["X-CloudTasks-QueueName"] == "q"
    assert first["X-CloudTasks-TaskName"] == task.name.rsplit("/", 1)[-1]
    assert (first["Host"], first["X-Forwarded-Proto"]) == ("service-xyz.a.run.app", "https")
    assert first["Content-Type"] == "application/x-www-form-urlencoded"
    claims = id_token.verify_token(
        first["Authorization"].removeprefix("Bearer "),
        auth_requests.Request(),
        audience=ORIGIN,
        certs_url=oidc_issuer.certs_url,
    )
    assert claims["email"] == ACCOUNT
    assert google_emulator.tasks.outcome(task.name) == "succeeded"
    assert task.name not in google_emulator.fake.tasks


def test_a_task_stops_after_max_attempts(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.fake.add_queue(QUEUE, max_attempts=3)
    service = serve(google_emulator, [(500, 0, {})] * 10)
    try:
        task = create_task(tasks_client)
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
    finally:
        service.close()

    assert len(service.received) == 3
    assert google_emulator.tasks.outcome(task.name) == "exhausted"


def test_max_retry_duration_keeps_retrying_after_max_attempts_until_it_passes(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.clock.factor = 10
    google_emulator.fake.add_queue(
        QUEUE,
        max_attempts=1,
        max_retry_duration=datetime.timedelta(seconds=3),
        min_backoff=datetime.timedelta(seconds=1),
        max_doublings=0,
    )
    service = serve(google_emulator, [(500, 0, {})] * 50)
    try:
        task = create_task(tasks_client)
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
    finally:
        service.close()

    assert len(service.received) > 1  # max_attempts alone would have stopped after one
    assert google_emulator.tasks.outcome(task.name) == "exhausted"


def test_unlimited_attempts_go_on(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.fake.add_queue(QUEUE, max_attempts=-1, max_backoff=datetime.timedelta(seconds=0.1))
    service = serve(google_emulator, [(500, 0, {})] * 120)
    try:
        task = create_task(tasks_client)
        wait_for(lambda: len(service.received) > 101, message="more attempts than the default 100")
        assert google_emulator.tasks.outcome(task.name) is None
    finally:
        google_emulator.fake.drop_task(task.name)
        service.close()


def test_no_answer_before_the_dispatch_deadline_is_a_failed_attempt_and_the_task_is_sent_again(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.clock.factor = 15  # the 15 s deadline lasts 1 s
    google_emulator.fake.add_queue(QUEUE)
    service = serve(google_emulator, [(204, 3.0, {})])
    try:
        task = create_task(tasks_client, dispatch_deadline=datetime.timedelta(seconds=15))
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
        attempts = google_emulator.tasks.attempts(task.name)
        # The next attempt was answered while the first request still ran in the service.
        assert service.most_running == 2
    finally:
        service.close()

    assert (attempts[0].status, attempts[0].error) == (None, "DEADLINE_EXCEEDED")
    assert (attempts[-1].status, attempts[-1].error) == (204, "")
    assert attempts[1].headers["X-CloudTasks-TaskRetryCount"] == "1"
    assert "X-CloudTasks-TaskPreviousResponse" not in attempts[1].headers


def test_a_503_with_retry_after_throttles_the_queue(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.fake.add_queue(QUEUE)
    service = serve(google_emulator, [(503, 0, {"Retry-After": "2"}), (204, 0, {})])
    try:
        task = create_task(tasks_client)
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
    finally:
        service.close()

    [throttle] = google_emulator.tasks.throttles
    assert (throttle.queue, throttle.status) == (QUEUE, 503)
    assert throttle.seconds == pytest.approx(2 / google_emulator.clock.factor)


def test_a_task_is_sent_at_its_schedule_time_not_before(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.fake.add_queue(QUEUE)
    service = serve(google_emulator, [])
    eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    try:
        task = create_task(tasks_client, schedule_time=eta)
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
    finally:
        service.close()

    [headers] = service.received
    assert float(headers["X-CloudTasks-TaskETA"]) == pytest.approx(eta.timestamp(), abs=1e-6)
    assert service.arrivals[0] >= eta


def test_a_task_deleted_before_it_is_due_is_never_sent(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.fake.add_queue(QUEUE)
    service = serve(google_emulator, [])
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    try:
        task = create_task(tasks_client, schedule_time=later)
        tasks_client.delete_task(name=task.name)
        wait_for(lambda: google_emulator.tasks.settled([task.name]), message="the task to settle")
    finally:
        service.close()

    assert (google_emulator.tasks.outcome(task.name), service.received) == ("deleted", [])


def test_a_duplicate_delivery_repeats_the_running_attempt(
    google_emulator: GoogleEmulator, tasks_client: tasks_v2.CloudTasksClient
) -> None:
    google_emulator.fake.add_queue(QUEUE)
    service = serve(google_emulator, [(204, 0.5, {}), (204, 0, {})])
    try:
        task = create_task(tasks_client)
        wait_for(lambda: service.received, message="the first delivery")
        google_emulator.tasks.duplicate(task.name)
        wait_for(lambda: len(service.received) == 2 and google_emulator.tasks.settled([task.name]))
    finally:
        service.close()

    assert [h["X-CloudTasks-TaskRetryCount"] for h in service.received] == ["0", "0"]
    assert [a.duplicate for a in google_emulator.tasks.attempts(task.name)] == [False, True]


# --- Cloud Run Jobs -------------------------------------------------------------------------------

JOB = "projects/p/locations/europe-west1/jobs/report"
# A container: fails on attempt 0 if asked, sleeps if asked (optionally deaf to SIGTERM), prints its env.
CONTAINER = """
import os, signal, sys, time
if os.environ.get("IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(" ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("CLOUD_RUN_")), flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(1 if os.environ.get("FAIL_FIRST") and os.environ["CLOUD_RUN_TASK_ATTEMPT"] == "0" else 0)
"""


def launch(container: JobContainer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONTAINER],
        env=container.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def jobs_client(channel: grpc.Channel) -> run_v2.JobsClient:
    from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport

    return run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel))


def run(client: run_v2.JobsClient, **env: str) -> Any:
    overrides = run_v2.RunJobRequest.Overrides(
        container_overrides=[
            run_v2.RunJobRequest.Overrides.ContainerOverride(
                env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()]
            )
        ]
    )
    return client.run_job(request=run_v2.RunJobRequest(name=JOB, overrides=overrides), timeout=10)


def test_a_failed_container_is_retried_with_the_next_attempt_number(
    google_emulator: GoogleEmulator, jobs_client: run_v2.JobsClient
) -> None:
    runner = google_emulator.run_jobs(launch)
    google_emulator.fake.add_run_job(JOB, max_retries=2, task_count=2)

    operation = run(jobs_client, FAIL_FIRST="1")
    execution = operation.result(timeout=30, polling=FAST_POLLING)

    assert (execution.succeeded_count, execution.failed_count) == (2, 0)
    attempts = sorted((a.task_index, a.attempt, a.returncode) for a in runner.attempts())
    assert attempts == [(0, 0, 1), (0, 1, 0), (1, 0, 1), (1, 1, 0)]
    output = runner.attempts()[0].output
    execution_id = execution.name.rsplit("/", 1)[-1]
    assert f"CLOUD_RUN_EXECUTION={execution_id}" in output
    assert "CLOUD_RUN_JOB=report" in output
    assert "CLOUD_RUN_TASK_COUNT=2" in output


def test_retries_stop_at_max_retries_and_the_execution_fails(
    google_emulator: GoogleEmulator, jobs_client: run_v2.JobsClient
) -> None:
    runner = google_emulator.run_jobs(launch)
    google_emulator.fake.add_run_job(JOB, max_retries=0)

    operation = run(jobs_client, FAIL_FIRST="1")

    with pytest.raises(Exception, match="failed to complete"):
        operation.result(timeout=30, polling=FAST_POLLING)
    assert [a.returncode for a in runner.attempts()] == [1]


def test_at_the_task_timeout_sigterm_then_sigkill_after_the_grace_period(
    google_emulator: GoogleEmulator, jobs_client: run_v2.JobsClient
) -> None:
    google_emulator.clock.factor = 5  # the 15 s timeout lasts 3 s: time for Python to start
    runner = google_emulator.run_jobs(launch, grace_seconds=0.3)
    google_emulator.fake.add_run_job(JOB, max_retries=1, timeout=datetime.timedelta(seconds=15))

    polite = run(jobs_client, SLEEP="30")
    with pytest.raises(Exception, match="failed to complete"):
        polite.result(timeout=30, polling=FAST_POLLING)
    deaf = run(jobs_client, SLEEP="30", IGNORE_SIGTERM="1")
    with pytest.raises(Exception, match="failed to complete"):
        deaf.result(timeout=30, polling=FAST_POLLING)

    outcomes = [(a.reason, a.returncode) for a in runner.attempts()]
    assert outcomes == [("timeout", -15)] * 2 + [("timeout", -9)] * 2


def test_cancel_execution_sigterms_the_running_attempt(
    google_emulator: GoogleEmulator, jobs_client: run_v2.JobsClient, channel: grpc.Channel
) -> None:
    from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport

    runner = google_emulator.run_jobs(launch, grace_seconds=5)
    google_emulator.fake.add_run_job(JOB, max_retries=3)
    operation = run(jobs_client, SLEEP="30")
    wait_for(lambda: runner.running(), message="the container to start")

    executions = run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel))
    executions.cancel_execution(name=operation.metadata.name, timeout=10).result(timeout=10)
    wait_for(lambda: runner.finished(operation.metadata.name), message="the execution to end")

    assert [(a.reason, a.returncode) for a in runner.attempts()] == [("cancelled", -15)]
    assert operation.result(timeout=10, polling=FAST_POLLING).cancelled_count == 1


# --- Cloud Scheduler ------------------------------------------------------------------------------


def test_a_forced_run_fires_with_the_scheduler_headers_and_retries_the_same_slot(
    google_emulator: GoogleEmulator, channel: grpc.Channel, oidc_issuer: OidcIssuer
) -> None:
    from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport

    client = scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
    service = serve(google_emulator, [(500, 0, {}), (503, 0, {}), (204, 0, {})])
    job = scheduler_v1.Job(
        name="projects/p/locations/europe-west1/jobs/nightly",
        schedule="0 3 * * *",
        http_target=scheduler_v1.HttpTarget(
            uri=f"{ORIGIN}/tasks/schedule/",
            body=b"scheduled_task=1",
            oidc_token=scheduler_v1.OidcToken(service_account_email=ACCOUNT, audience=ORIGIN),
        ),
        retry_config=scheduler_v1.RetryConfig(
            retry_count=2, min_backoff_duration=datetime.timedelta(seconds=1)
        ),
    )
    try:
        client.create_job(parent="projects/p/locations/europe-west1", job=job)
        client.run_job(name=job.name)
        wait_for(lambda: len(google_emulator.scheduler.firings()) == 3, message="three attempts")
        google_emulator.scheduler.stop()
    finally:
        service.close()

    assert [f.status for f in google_emulator.scheduler.firings()] == [500, 503, 204]
    headers = service.received
    assert {h["X-CloudScheduler-ScheduleTime"] for h in headers} == {
        headers[0]["X-CloudScheduler-ScheduleTime"]
    }
    assert headers[0]["X-CloudScheduler-ScheduleTime"].endswith("Z")
    assert (headers[0]["User-Agent"], headers[0]["X-CloudScheduler"]) == ("Google-Cloud-Scheduler", "true")
    assert headers[0]["X-CloudScheduler-JobName"] == "nightly"
    assert headers[0]["Content-Type"] == "application/octet-stream"
    claims = id_token.verify_token(
        headers[0]["Authorization"].removeprefix("Bearer "),
        auth_requests.Request(),
        audience=ORIGIN,
        certs_url=oidc_issuer.certs_url,
    )
    assert claims["email"] == ACCOUNT


def test_cron_ticking_fires_each_slot_of_the_schedule_in_order(
    google_emulator: GoogleEmulator, channel: grpc.Channel
) -> None:
    from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport

    google_emulator.clock.factor = 600  # a minute lasts 0.1 s
    client = scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
    service = serve(google_emulator, [])
    job = scheduler_v1.Job(
        name="projects/p/locations/europe-west1/jobs/minutely",
        schedule="* * * * *",
        time_zone="Europe/Amsterdam",
        http_target=scheduler_v1.HttpTarget(uri=f"{ORIGIN}/tasks/schedule/"),
    )
    try:
        client.create_job(parent="projects/p/locations/europe-west1", job=job)
        google_emulator.scheduler.tick()
        wait_for(lambda: len(service.received) >= 3, message="three slots")
        google_emulator.scheduler.stop()
    finally:
        service.close()

    slots = [
        datetime.datetime.fromisoformat(f.schedule_time.replace("Z", "+00:00"))
        for f in google_emulator.scheduler.firings()
    ]
    assert all(slot.second == 0 and slot.microsecond == 0 for slot in slots)
    assert [later - earlier for earlier, later in itertools.pairwise(slots)] == [
        datetime.timedelta(minutes=1)
    ] * (len(slots) - 1)
