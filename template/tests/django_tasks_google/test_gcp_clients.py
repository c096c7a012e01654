"""The real Google client libraries, built by django_tasks_google.gcp, against the gRPC fake.

These pin both sides the app relies on: that ``gcp`` wires the real clients to an endpoint without
credentials, and that the fake answers like Google does (names, views, LRO metadata, error
codes as google.api_core exceptions, and the pushes Google sends back).
"""

import datetime
import re
import threading

import grpc
import pytest
from django.test import RequestFactory
from google.api_core import exceptions
from google.cloud import run_v2, scheduler_v1, tasks_v2
from google.protobuf import field_mask_pb2

from django_tasks_google import auth, gcp
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer

PROJECT = "projects/test-project/locations/europe-west1"
QUEUE = f"{PROJECT}/queues/service-default"
RUN_JOB = f"{PROJECT}/jobs/service-tasks"
SERVICE_ACCOUNT = "service-invoker@test-project.iam.gserviceaccount.com"
AUDIENCE = "https://service-abc123-ew.a.run.app"
EXECUTE_URL = f"{AUDIENCE}/tasks/execute/"
TIMEOUT = gcp.DEFAULT_TIMEOUT


def http_task(**fields: object) -> tasks_v2.Task:
    return tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            url=EXECUTE_URL,
            body=b'{"execution_id": "42"}',
            headers={"Content-Type": "application/json"},
            oidc_token=tasks_v2.OidcToken(service_account_email=SERVICE_ACCOUNT, audience=AUDIENCE),
        ),
        **fields,
    )


def verify(push_headers: dict[str, str], issuer: OidcIssuer, audience: str = AUDIENCE) -> dict:
    token = push_headers["Authorization"].removeprefix("Bearer ")
    return auth.verify_id_token(
        token, audience=audience, service_account=SERVICE_ACCOUNT, certs_url=issuer.certs_url
    )


# --- gcp: client construction and caching ----------------------------------------------------


def test_clients_are_cached_per_endpoint_and_share_one_channel(google_api_endpoint: str) -> None:
    tasks = gcp.cloud_tasks_client(google_api_endpoint)
    assert gcp.cloud_tasks_client(google_api_endpoint) is tasks
    assert gcp.cloud_tasks_client("127.0.0.1:9") is not tasks
    clients = [
        tasks,
        gcp.run_jobs_client(google_api_endpoint),
        gcp.run_executions_client(google_api_endpoint),
        gcp.cloud_scheduler_client(google_api_endpoint),
    ]
    assert len({type(client) for client in clients}) == 4
    assert all(client._transport.grpc_channel is gcp._channels[google_api_endpoint] for client in clients)


def test_concurrent_first_use_builds_one_client() -> None:
    endpoint = "127.0.0.1:19"  # never dialled: building a client does not connect
    barrier = threading.Barrier(8)
    built: list[object] = []

    def first_use() -> None:
        barrier.wait()
        built.append(gcp.run_jobs_client(endpoint))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 8
    assert len({id(client) for client in built}) == 1


def test_lro_polling_is_bounded_and_fast() -> None:
    polling = gcp.lro_polling(7, initial_delay=0.01, max_delay=0.1)
    assert (polling.timeout, polling._initial, polling._maximum) == (7, 0.01, 0.1)


# --- Cloud Tasks ------------------------------------------------------------------------------


def test_create_task_sends_the_task_and_answers_the_basic_view(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_queue(QUEUE)
    client = gcp.cloud_tasks_client(google_api_endpoint)
    name = f"{QUEUE}/tasks/exec-42-a1b2"

    created = client.create_task(parent=QUEUE, task=http_task(name=name), timeout=TIMEOUT)

    assert created.name == name
    assert created.view == tasks_v2.Task.View.BASIC
    assert created.http_request.body == b""  # BASIC view leaves the body out
    assert created.dispatch_deadline == datetime.timedelta(minutes=10)
    [call] = google_fake.calls_to("CreateTask")
    assert call.metadata["x-goog-request-params"] == f"parent={QUEUE}"
    assert "authorization" not in call.metadata  # an insecure channel never looks credentials up
    sent = call.request.task.http_request
    assert (sent.url, sent.body, dict(sent.headers)) == (
        EXECUTE_URL,
        b'{"execution_id": "42"}',
        {"Content-Type": "application/json"},
    )
    assert (sent.oidc_token.service_account_email, sent.oidc_token.audience) == (SERVICE_ACCOUNT, AUDIENCE)
    full = client.get_task(
        request=tasks_v2.GetTaskRequest(name=name, response_view=tasks_v2.Task.View.FULL), timeout=TIMEOUT
    )
    assert full.http_request.body == b'{"execution_id": "42"}'


def test_task_names_are_assigned_and_never_reused(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_queue(QUEUE)
    client = gcp.cloud_tasks_client(google_api_endpoint)

    assigned = client.create_task(parent=QUEUE, task=http_task(), timeout=TIMEOUT)
    assert re.fullmatch(rf"{QUEUE}/tasks/\d+", assigned.name)

    named = f"{QUEUE}/tasks/dedup-key"
    client.create_task(parent=QUEUE, task=http_task(name=named), timeout=TIMEOUT)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=QUEUE, task=http_task(name=named), timeout=TIMEOUT)
    client.delete_task(name=named, timeout=TIMEOUT)
    with pytest.raises(exceptions.NotFound):
        client.get_task(name=named, timeout=TIMEOUT)
    with pytest.raises(exceptions.AlreadyExists):  # Google keeps deleted names for hours
        client.create_task(parent=QUEUE, task=http_task(name=named), timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("parent", "task", "error"),
    [
        (f"{PROJECT}/queues/missing", http_task(), exceptions.NotFound),
        (QUEUE, http_task(name=f"{PROJECT}/queues/other/tasks/x"), exceptions.InvalidArgument),
        (QUEUE, http_task(dispatch_deadline=datetime.timedelta(seconds=5)), exceptions.InvalidArgument),
        (QUEUE, tasks_v2.Task(http_request=tasks_v2.HttpRequest(url="ftp://x/")), exceptions.InvalidArgument),
        (
            QUEUE,
            http_task(schedule_time=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=31)),
            exceptions.InvalidArgument,
        ),
    ],
    ids=["unknown-queue", "name-outside-queue", "short-deadline", "bad-url", "too-far-ahead"],
)
def test_create_task_rejects_what_google_rejects(
    google_fake: GoogleServicesFake, google_api_endpoint: str, parent: str, task: tasks_v2.Task, error: type
) -> None:
    google_fake.add_queue(QUEUE)
    with pytest.raises(error):
        gcp.cloud_tasks_client(google_api_endpoint).create_task(parent=parent, task=task, timeout=TIMEOUT)
    assert google_fake.tasks == {}


def test_get_queue_reports_max_attempts_including_unlimited(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_queue(QUEUE, max_attempts=-1)
    google_fake.add_queue(f"{PROJECT}/queues/bounded", max_attempts=5)
    client = gcp.cloud_tasks_client(google_api_endpoint)

    assert client.get_queue(name=QUEUE, timeout=TIMEOUT).retry_config.max_attempts == -1
    assert client.get_queue(name=f"{PROJECT}/queues/bounded", timeout=TIMEOUT).retry_config.max_attempts == 5
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=f"{PROJECT}/queues/missing", timeout=TIMEOUT)
    with pytest.raises(exceptions.NotFound):
        client.delete_task(name=f"{QUEUE}/tasks/missing", timeout=TIMEOUT)


def test_injected_errors_surface_as_api_core_exceptions(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_queue(QUEUE)
    client = gcp.cloud_tasks_client(google_api_endpoint)

    google_fake.fail_next("CreateTask", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(exceptions.ServiceUnavailable):  # CreateTask has no default retry
        client.create_task(parent=QUEUE, task=http_task(), timeout=TIMEOUT)
    google_fake.fail_next("CreateTask", grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(exceptions.PermissionDenied):
        client.create_task(parent=QUEUE, task=http_task(), timeout=TIMEOUT)
    assert len(google_fake.calls_to("CreateTask")) == 2
    assert google_fake.tasks == {}

    google_fake.fail_next("GetQueue", grpc.StatusCode.UNAVAILABLE)
    assert client.get_queue(name=QUEUE, timeout=TIMEOUT).name == QUEUE  # GetQueue retries UNAVAILABLE
    assert len(google_fake.calls_to("GetQueue")) == 2


def test_task_push_is_what_cloud_tasks_sends(
    google_fake: GoogleServicesFake, google_api_endpoint: str, oidc_issuer: OidcIssuer
) -> None:
    google_fake.add_queue(QUEUE)
    task = http_task(schedule_time=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5))
    task.http_request.headers["User-Agent"] = "not-forwarded"
    task.http_request.headers["X-CloudTasks-TaskName"] = "spoofed"
    created = gcp.cloud_tasks_client(google_api_endpoint).create_task(
        parent=QUEUE, task=task, timeout=TIMEOUT
    )

    first = google_fake.task_push()
    # By the task CreateTask returned (BASIC view: no body) or by name.
    retry = google_fake.task_push(created, retry_count=2, execution_count=1, previous_response=404)

    assert (first.method, first.url, first.path) == ("POST", EXECUTE_URL, "/tasks/execute/")
    assert first.body == b'{"execution_id": "42"}'
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert first.headers["X-CloudTasks-QueueName"] == "service-default"
    assert first.headers["X-CloudTasks-TaskName"] == created.name.rsplit("/", 1)[1]
    assert (
        first.headers["X-CloudTasks-TaskRetryCount"],
        first.headers["X-CloudTasks-TaskExecutionCount"],
    ) == (
        "0",
        "0",
    )
    assert float(first.headers["X-CloudTasks-TaskETA"]) == pytest.approx(created.schedule_time.timestamp())
    assert "X-CloudTasks-TaskPreviousResponse" not in first.headers
    assert verify(first.headers, oidc_issuer)["email"] == SERVICE_ACCOUNT
    assert retry.body == first.body
    assert (
        google_fake.task_push(created.name).headers["X-CloudTasks-TaskName"] == created.name.rsplit("/", 1)[1]
    )
    assert retry.headers["X-CloudTasks-TaskRetryCount"] == "2"
    assert retry.headers["X-CloudTasks-TaskExecutionCount"] == "1"
    assert retry.headers["X-CloudTasks-TaskPreviousResponse"] == "404"
    assert retry.headers["X-CloudTasks-TaskRetryReason"] == ""


def test_a_push_is_delivered_as_sent(google_fake: GoogleServicesFake, google_api_endpoint: str) -> None:
    google_fake.add_queue(QUEUE)
    gcp.cloud_tasks_client(google_api_endpoint).create_task(parent=QUEUE, task=http_task(), timeout=TIMEOUT)
    push = google_fake.task_push()

    request = push.send(RequestFactory())  # a test Client delivers the same request to the app

    assert (request.method, request.path, request.is_secure()) == ("POST", "/tasks/execute/", True)
    assert request.body == push.body
    assert request.content_type == "application/json"
    assert request.headers["X-CloudTasks-QueueName"] == "service-default"
    assert request.headers["Authorization"] == push.headers["Authorization"]


def test_task_push_without_audience_uses_the_url(
    google_fake: GoogleServicesFake, google_api_endpoint: str, oidc_issuer: OidcIssuer
) -> None:
    google_fake.add_queue(QUEUE)
    task = http_task()
    task.http_request.oidc_token.audience = ""
    gcp.cloud_tasks_client(google_api_endpoint).create_task(parent=QUEUE, task=task, timeout=TIMEOUT)

    push = google_fake.task_push()

    with pytest.raises(auth.PushAuthError):
        verify(push.headers, oidc_issuer)
    assert verify(push.headers, oidc_issuer, audience=EXECUTE_URL)["aud"] == EXECUTE_URL


# --- Cloud Run v2 -----------------------------------------------------------------------------


def run_job_request(**overrides: object) -> run_v2.RunJobRequest:
    return run_v2.RunJobRequest(
        name=RUN_JOB,
        overrides=run_v2.RunJobRequest.Overrides(
            container_overrides=[
                run_v2.RunJobRequest.Overrides.ContainerOverride(
                    args=["execute_task", "42"], env=[run_v2.EnvVar(name="TASK_ALIAS", value="jobs")]
                )
            ],
            **overrides,
        ),
    )


def test_run_job_names_the_execution_without_polling(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_run_job(RUN_JOB)

    operation = gcp.run_jobs_client(google_api_endpoint).run_job(request=run_job_request(), timeout=TIMEOUT)

    assert re.fullmatch(rf"{RUN_JOB}/executions/service-tasks-[a-z0-9]{{5}}", operation.metadata.name)
    assert [call.name for call in google_fake.calls] == ["RunJob"]  # the name came without a poll
    [call] = google_fake.calls_to("Jobs/RunJob")
    assert call.metadata["x-goog-request-params"] == "location=europe-west1"
    [override] = call.request.overrides.container_overrides
    assert (list(override.args), override.env[0].name) == (["execute_task", "42"], "TASK_ALIAS")


def test_run_job_operation_resolves_when_the_execution_completes(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_run_job(RUN_JOB)
    jobs = gcp.run_jobs_client(google_api_endpoint)
    polling = gcp.lro_polling(5, initial_delay=0.01, max_delay=0.05)

    succeeding = jobs.run_job(request=run_job_request(), timeout=TIMEOUT)
    assert not succeeding.done()
    google_fake.complete_execution(succeeding.metadata.name)
    assert succeeding.result(polling=polling).succeeded_count == 1

    failing = jobs.run_job(request=run_job_request(), timeout=TIMEOUT)
    google_fake.complete_execution(failing.metadata.name, succeeded=False)
    with pytest.raises(exceptions.GoogleAPICallError):
        failing.result(polling=polling)
    assert len(google_fake.calls_to("GetOperation")) >= 2


def test_run_job_applies_overrides_to_the_container(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_run_job(
        RUN_JOB,
        command=["python", "manage.py"],
        args=["check"],
        env={"DJANGO_DEBUG": "false", "TASK_ALIAS": "x"},
    )
    operation = gcp.run_jobs_client(google_api_endpoint).run_job(
        request=run_job_request(task_count=2), timeout=TIMEOUT
    )
    execution_id = operation.metadata.name.rsplit("/", 1)[1]

    container = google_fake.job_container(task_index=1, attempt=2)

    assert operation.metadata.task_count == 2
    assert container.command == ["python", "manage.py"]
    assert container.args == ["execute_task", "42"]
    assert container.env == {
        "DJANGO_DEBUG": "false",
        "TASK_ALIAS": "jobs",
        "CLOUD_RUN_JOB": "service-tasks",
        "CLOUD_RUN_EXECUTION": execution_id,
        "CLOUD_RUN_TASK_INDEX": "1",
        "CLOUD_RUN_TASK_ATTEMPT": "2",
        "CLOUD_RUN_TASK_COUNT": "2",
    }


def test_get_job_reports_max_retries_and_its_absence(
    google_fake: GoogleServicesFake, google_api_endpoint: str
) -> None:
    google_fake.add_run_job(RUN_JOB, max_retries=0)
    google_fake.add_run_job(f"{PROJECT}/jobs/defaulted", max_retries=None)
    jobs = gcp.run_jobs_client(google_api_endpoint)

    configured = jobs.get_job(name=RUN_JOB, timeout=TIMEOUT).template.template
    defaulted = jobs.get_job(name=f"{PROJECT}/jobs/defaulted", timeout=TIMEOUT).template.template

    assert ("max_retries" in configured, configured.max_retries) == (True, 0)
    assert "max_retries" not in defaulted  # reads 0, but Google's default is 3
    with pytest.raises(exceptions.NotFound):
        jobs.get_job(name=f"{PROJECT}/jobs/missing", timeout=TIMEOUT)


def test_cancel_execution(google_fake: GoogleServicesFake, google_api_endpoint: str) -> None:
    google_fake.add_run_job(RUN_JOB)
    operation = gcp.run_jobs_client(google_api_endpoint).run_job(request=run_job_request(), timeout=TIMEOUT)
    executions = gcp.run_executions_client(google_api_endpoint)
    name = operation.metadata.name

    cancelled = executions.cancel_execution(name=name, timeout=TIMEOUT).result(timeout=TIMEOUT)

    assert cancelled.cancelled_count == 1
    assert executions.get_execution(name=name, timeout=TIMEOUT).cancelled_count == 1
    assert operation.done()  # the RunJob operation ends with the execution
    with pytest.raises(exceptions.FailedPrecondition):
        executions.cancel_execution(name=name, timeout=TIMEOUT)
    with pytest.raises(exceptions.NotFound):
        executions.cancel_execution(name=f"{RUN_JOB}/executions/service-tasks-zzzzz", timeout=TIMEOUT)


def test_run_job_errors(google_fake: GoogleServicesFake, google_api_endpoint: str) -> None:
    job = google_fake.add_run_job(RUN_JOB)
    jobs = gcp.run_jobs_client(google_api_endpoint)

    with pytest.raises(exceptions.NotFound):
        jobs.run_job(name=f"{PROJECT}/jobs/missing", timeout=TIMEOUT)
    with pytest.raises(exceptions.Aborted):
        jobs.run_job(request=run_v2.RunJobRequest(name=RUN_JOB, etag=f"not-{job.etag}"), timeout=TIMEOUT)
    google_fake.fail_next("Jobs/RunJob", grpc.StatusCode.PERMISSION_DENIED, "run.jobs.runWithOverrides")
    with pytest.raises(exceptions.PermissionDenied, match="runWithOverrides"):
        jobs.run_job(request=run_job_request(), timeout=TIMEOUT)
    assert google_fake.executions == {}


# --- Cloud Scheduler --------------------------------------------------------------------------


def scheduler_job(name: str = f"{PROJECT}/jobs/nightly-report", **fields: object) -> scheduler_v1.Job:
    values: dict[str, object] = {
        "schedule": "0 3 * * *",
        "time_zone": "Europe/Amsterdam",
        "http_target": scheduler_v1.HttpTarget(
            uri=f"{AUDIENCE}/tasks/schedule/",
            body=b'{"scheduled_task": "nightly-report"}',
            headers={"Content-Type": "application/json"},
            oidc_token=scheduler_v1.OidcToken(service_account_email=SERVICE_ACCOUNT, audience=AUDIENCE),
        ),
    }
    return scheduler_v1.Job(name=name, **{**values, **fields})


def test_scheduler_job_lifecycle(google_fake: GoogleServicesFake, google_api_endpoint: str) -> None:
    client = gcp.cloud_scheduler_client(google_api_endpoint)
    job = scheduler_job()

    created = client.create_job(parent=PROJECT, job=job, timeout=TIMEOUT)
    assert created.state == scheduler_v1.Job.State.ENABLED
    assert created.attempt_deadline == datetime.timedelta(minutes=3)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_job(parent=PROJECT, job=job, timeout=TIMEOUT)

    masked = client.update_job(
        job=scheduler_v1.Job(name=job.name, schedule="30 4 * * *", description="not in the mask"),
        update_mask=field_mask_pb2.FieldMask(paths=["schedule"]),
        timeout=TIMEOUT,
    )
    assert (masked.schedule, masked.description, masked.time_zone) == ("30 4 * * *", "", "Europe/Amsterdam")
    unmasked = client.update_job(job=scheduler_v1.Job(name=job.name, description="set"), timeout=TIMEOUT)
    assert (unmasked.schedule, unmasked.description) == ("30 4 * * *", "set")
    [call] = google_fake.calls_to("UpdateJob")[:1]
    assert call.metadata["x-goog-request-params"] == f"job.name={job.name}"

    assert client.pause_job(name=job.name, timeout=TIMEOUT).state == scheduler_v1.Job.State.PAUSED
    with pytest.raises(exceptions.FailedPrecondition):
        client.pause_job(name=job.name, timeout=TIMEOUT)
    assert client.resume_job(name=job.name, timeout=TIMEOUT).state == scheduler_v1.Job.State.ENABLED
    with pytest.raises(exceptions.FailedPrecondition):
        client.resume_job(name=job.name, timeout=TIMEOUT)
    assert client.run_job(name=job.name, timeout=TIMEOUT).name == job.name
    assert client.get_job(name=job.name, timeout=TIMEOUT).schedule == "30 4 * * *"

    client.delete_job(name=job.name, timeout=TIMEOUT)
    for call_missing in (client.get_job, client.delete_job, client.pause_job, client.run_job):
        with pytest.raises(exceptions.NotFound):
            call_missing(name=job.name, timeout=TIMEOUT)


def test_scheduler_rejects_invalid_jobs(google_api_endpoint: str) -> None:
    client = gcp.cloud_scheduler_client(google_api_endpoint)
    invalid = [
        scheduler_job(schedule=""),
        scheduler_job(retry_config=scheduler_v1.RetryConfig(retry_count=6)),
        scheduler_job(name="projects/other/locations/europe-west1/jobs/x"),
    ]
    for job in invalid:
        with pytest.raises(exceptions.InvalidArgument):
            client.create_job(parent=PROJECT, job=job, timeout=TIMEOUT)
    client.create_job(parent=PROJECT, job=scheduler_job(), timeout=TIMEOUT)
    with pytest.raises(exceptions.InvalidArgument):
        client.update_job(
            job=scheduler_job(),
            update_mask=field_mask_pb2.FieldMask(paths=["no_such_field"]),
            timeout=TIMEOUT,
        )


def test_scheduler_push_is_what_cloud_scheduler_sends(
    google_fake: GoogleServicesFake, google_api_endpoint: str, oidc_issuer: OidcIssuer
) -> None:
    gcp.cloud_scheduler_client(google_api_endpoint).create_job(
        parent=PROJECT, job=scheduler_job(), timeout=TIMEOUT
    )
    slot = datetime.datetime(2025, 3, 30, 1, 0, tzinfo=datetime.UTC)

    push = google_fake.scheduler_push(schedule_time=slot)

    assert (push.method, push.path, push.body) == (
        "POST",
        "/tasks/schedule/",
        b'{"scheduled_task": "nightly-report"}',
    )
    assert push.headers["User-Agent"] == "Google-Cloud-Scheduler"
    assert push.headers["X-CloudScheduler"] == "true"
    assert push.headers["X-CloudScheduler-JobName"] == "nightly-report"
    assert push.headers["X-CloudScheduler-ScheduleTime"] == "2025-03-30T01:00:00Z"
    assert push.headers["Content-Type"] == "application/json"
    assert verify(push.headers, oidc_issuer)["email"] == SERVICE_ACCOUNT


# --- the fake's own controls ------------------------------------------------------------------


def test_method_names_must_be_unambiguous(google_fake: GoogleServicesFake) -> None:
    with pytest.raises(ValueError, match="RunJob"):
        google_fake.fail_next("RunJob")
    with pytest.raises(ValueError, match="NoSuchMethod"):
        google_fake.requests("NoSuchMethod")
    assert google_fake.requests("CloudScheduler/RunJob") == []
    assert google_fake.requests("/google.cloud.run.v2.Jobs/RunJob") == []


def test_reset_forgets_everything(google_fake: GoogleServicesFake, google_api_endpoint: str) -> None:
    google_fake.add_queue(QUEUE)
    gcp.cloud_tasks_client(google_api_endpoint).create_task(parent=QUEUE, task=http_task(), timeout=TIMEOUT)
    google_fake.fail_next("GetQueue", grpc.StatusCode.INTERNAL)

    google_fake.reset()

    assert (google_fake.calls, google_fake.queues, google_fake.tasks, google_fake.created_tasks) == (
        [],
        {},
        {},
        [],
    )
    google_fake.add_queue(QUEUE)
    assert gcp.cloud_tasks_client(google_api_endpoint).get_queue(name=QUEUE, timeout=TIMEOUT).name == QUEUE
