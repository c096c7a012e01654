"""Google behaves badly: the service under gunicorn, on production settings, over the emulator.

Each scenario enqueues through the real backend (CreateTask / RunJob on the fake), lets the
emulator deliver as Google would (retries, deadlines, duplicates, containers), does something
hostile (a duplicate, a deadline overrun, ``kill -9``, a database restart, an API outage), runs
recovery passes, then asserts the invariants (tests/django_tasks_google/chaos.py). Every
scenario adds a row to the table printed at the end of the session.

Scenarios that fail because of a defect of the current app (issue 11) are marked
``xfail(strict=True)``: they turn the suite red (XPASS) once the fix lands, and the marker goes.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.django_tasks_google import chaos_tasks
from tests.django_tasks_google.chaos import (
    DEPLOYMENT,
    Scenario,
    container_launcher,
    prepare,
    terminate_service_connections,
)
from tests.fakes.emulator.google import GoogleEmulator
from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer
from tests.processes import WAIT_LIMIT, Gunicorn, cloud_run_service, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the service reads and writes committed rows
    pytest.mark.google_e2e,
]

LOCATION = f"projects/{DEPLOYMENT.project}/locations/{DEPLOYMENT.region}"
QUEUE = f"{LOCATION}/queues/{DEPLOYMENT.service}-default"
JOB = f"{LOCATION}/jobs/{DEPLOYMENT.service}-tasks"


def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")


@pytest.fixture(scope="module")
def env(django_db_setup: None, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer) -> dict[str, str]:
    return DEPLOYMENT.env(google_fake, oidc_issuer)


@pytest.fixture(scope="module")
def gunicorn(
    django_db_setup: None, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    log = tmp_path_factory.mktemp("chaos-gunicorn") / "gunicorn.log"
    with cloud_run_service(env, log, threads=4) as server:
        yield server


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest,
    settings: Any,
    env: dict[str, str],
    gunicorn: Gunicorn,
    google_emulator: GoogleEmulator,
    tmp_path: Path,
) -> Scenario:
    """A scenario on the "default" alias (Cloud Tasks)."""
    tasks = prepare(settings, env)
    if tasks["default"]["BACKEND"] != "django_tasks_google.backends.CloudTasksBackend":
        pytest.skip("this project's default alias runs on Cloud Run Jobs")
    return named_scenario(request, google_emulator, gunicorn, env, tmp_path)


def named_scenario(
    request: pytest.FixtureRequest,
    google_emulator: GoogleEmulator,
    gunicorn: Gunicorn,
    env: dict[str, str],
    tmp_path: Path,
) -> Scenario:
    """Pushes reach this test's service; the scenario is named after the test, minus "test_"."""
    google_emulator.front_end.route(DEPLOYMENT.url, gunicorn.url)
    return Scenario(request.node.name.removeprefix("test_"), google_emulator, env, tmp_path)


def queue(fake: GoogleServicesFake, max_attempts: int = 3, **retry: Any) -> int:
    fake.add_queue(QUEUE, max_attempts=max_attempts, **retry)
    return max_attempts


def first_run(scenario: Scenario, key: str) -> list[str]:
    # A job container starts Django first: slow on a loaded machine.
    return wait_for(lambda: scenario.runs(key)[:1], timeout=3 * WAIT_LIMIT, message=f"{key}'s first run")[0]


# --- Cloud Tasks ----------------------------------------------------------------------------------


def test_every_task_runs_once(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    for n in range(3):
        scenario.enqueue(f"task-{n}")
    scenario.finish(attempts_allowed=allowed)


def test_failed_attempts_are_retried_until_one_succeeds(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    scenario.enqueue("fails-twice", fail_runs=2)
    scenario.finish(attempts_allowed=allowed)


def test_a_task_that_always_fails_stops_at_max_attempts(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    scenario.expect_failure = True
    scenario.enqueue("always-fails", fail_runs=99)
    scenario.finish(attempts_allowed=allowed)


def test_a_duplicate_delivery_while_the_task_runs(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    scenario.enqueue("duplicated", seconds=3)
    first_run(scenario, "duplicated")
    [task] = scenario.emulator.fake.created_tasks
    scenario.emulator.tasks.duplicate(task.name)
    scenario.finish(attempts_allowed=allowed)
    duplicates = [a for a in scenario.emulator.tasks.attempts() if a.duplicate]
    assert len(duplicates) == 1


def test_a_task_that_outlives_its_dispatch_deadline(scenario: Scenario) -> None:
    scenario.emulator.clock.factor = 600  # the longest deadline, 30 min, lasts 3 s
    allowed = queue(scenario.emulator.fake, max_attempts=100)
    scenario.enqueue("slow", seconds=5)
    scenario.settle()
    overrun = any(a.error == "DEADLINE_EXCEEDED" for a in scenario.emulator.tasks.attempts())
    scenario.expect(overrun, "no attempt outlived its dispatch deadline")
    scenario.finish(attempts_allowed=allowed)


def test_kill_9_of_the_gunicorn_worker_mid_task(scenario: Scenario) -> None:
    # The retry comes after the dead attempt's lease lapsed (5 s): a backoff of 160 s lasts 8 s.
    allowed = queue(scenario.emulator.fake, min_backoff=datetime.timedelta(seconds=160), max_doublings=0)
    scenario.killed = True
    scenario.enqueue("killed", seconds=60)
    pid = int(first_run(scenario, "killed")[0])
    os.kill(pid, signal.SIGKILL)
    scenario.finish(attempts_allowed=allowed)


def test_kill_9_on_the_last_attempt_is_failed_by_recovery(scenario: Scenario) -> None:
    # Cloud Tasks gives up after the one attempt the queue allows; only recovery can end the row.
    allowed = queue(scenario.emulator.fake, max_attempts=1)
    scenario.killed = True
    scenario.expect_failure = True
    scenario.enqueue("last-attempt-killed", seconds=60)
    os.kill(int(first_run(scenario, "last-attempt-killed")[0]), signal.SIGKILL)
    scenario.finish(attempts_allowed=allowed)


def test_an_early_delivery_before_run_after(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    run_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    scenario.enqueue("early", run_after=run_after)
    [task] = scenario.emulator.fake.created_tasks
    scenario.emulator.tasks.duplicate(task.name)  # at-least-once: a copy ahead of its ETA
    scenario.settle()
    starts = [float(run[3]) for run in scenario.runs("early")]
    scenario.expect(all(start >= run_after.timestamp() for start in starts), "the body ran before run_after")
    scenario.finish(attempts_allowed=allowed)


def test_a_database_restart_mid_task(scenario: Scenario) -> None:
    postgresql_only()
    allowed = queue(scenario.emulator.fake)
    scenario.enqueue("restarted", seconds=3)
    first_run(scenario, "restarted")
    assert terminate_service_connections() > 0
    scenario.finish(attempts_allowed=allowed)


def test_a_create_task_unavailable_burst(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    scenario.emulator.fake.fail_next("CreateTask", times=3)
    scenario.enqueue("outage")
    scenario.finish(attempts_allowed=allowed)


def test_a_slow_get_queue_is_not_on_the_enqueue_path(scenario: Scenario) -> None:
    allowed = queue(scenario.emulator.fake)
    scenario.emulator.fake.fail_next("GetQueue", times=3)  # retried by the client library for up to 20 s
    scenario.enqueue("no-lookup")
    calls = [call.name for call in scenario.emulator.fake.calls]
    scenario.expect("GetQueue" not in calls[: calls.index("CreateTask")], "GetQueue before CreateTask")
    scenario.finish(attempts_allowed=allowed)


def test_a_purged_task_is_redispatched_by_recovery_without_new_attempts(scenario: Scenario) -> None:
    scenario.emulator.clock.factor = 60  # a 120 s backoff lasts 2 s: time to purge after two attempts
    allowed = queue(scenario.emulator.fake, min_backoff=datetime.timedelta(seconds=120), max_doublings=0)
    scenario.expect_failure = True
    scenario.enqueue("purged", fail_runs=99)
    [task] = scenario.emulator.fake.created_tasks
    wait_for(
        lambda: [a.status for a in scenario.emulator.tasks.attempts(task.name)] == [500, 500],
        message="two failed attempts",
    )
    scenario.emulator.fake.drop_task(task.name)  # a queue purge: Cloud Tasks forgets it
    scenario.finish(attempts_allowed=allowed)


def test_a_return_value_postgresql_cannot_store(scenario: Scenario) -> None:
    postgresql_only()
    allowed = queue(scenario.emulator.fake)
    scenario.expect_failure = True
    scenario.enqueue("nul", nul=True)
    scenario.finish(attempts_allowed=allowed)


def test_one_scheduler_slot_spelled_three_ways(scenario: Scenario) -> None:
    from django_tasks_google.scheduler import schedule_task

    allowed = queue(scenario.emulator.fake)
    kwargs = {"directory": str(scenario.directory), "key": "slot"}
    schedule_task(chaos_tasks.record, "*/15 * * * *", name="chaos-slot", kwargs=kwargs)
    scenario.keys["slot"] = 0
    [job] = scenario.emulator.fake.scheduler_jobs
    slot = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    slot -= datetime.timedelta(minutes=slot.minute % 15)
    # The same instant, as Cloud Scheduler may spell it on a retry, and with an explicit offset.
    for spelling in (
        f"{slot:%Y-%m-%dT%H:%M:%S}Z",
        f"{slot:%Y-%m-%dT%H:%M:%S}.000Z",
        f"{slot:%Y-%m-%dT%H:%M:%S}+00:00",
    ):
        scenario.emulator.scheduler.fire(job, spelling).join()
    scenario.finish(attempts_allowed=allowed)


# --- Cloud Run Jobs -------------------------------------------------------------------------------


@pytest.fixture
def job_scenario(
    request: pytest.FixtureRequest,
    settings: Any,
    env: dict[str, str],
    gunicorn: Gunicorn,
    google_emulator: GoogleEmulator,
    tmp_path: Path,
) -> Scenario:
    """A scenario on the "jobs" alias (Cloud Run Jobs); the emulator starts real job containers."""
    tasks = prepare(settings, env)
    if tasks.get("jobs", {}).get("BACKEND") != "django_tasks_google.backends.CloudRunJobsBackend":
        pytest.skip("this project has no Cloud Run Jobs alias")
    google_emulator.run_jobs(container_launcher(env), grace_seconds=2)
    return named_scenario(request, google_emulator, gunicorn, env, tmp_path)


def test_job_every_execution_runs_once(job_scenario: Scenario) -> None:
    job_scenario.emulator.fake.add_run_job(JOB, max_retries=2)
    job_scenario.enqueue("job-task", jobs=True)
    job_scenario.finish(attempts_allowed=3)


def test_job_kill_9_of_the_container_mid_task(job_scenario: Scenario) -> None:
    job_scenario.emulator.fake.add_run_job(JOB, max_retries=2)
    job_scenario.killed = True
    job_scenario.enqueue("job-killed", seconds=60, jobs=True)
    first_run(job_scenario, "job-killed")
    [container] = job_scenario.emulator.jobs.running()  # type: ignore[union-attr]
    container.process.kill()
    job_scenario.finish(attempts_allowed=3)


def test_job_task_timeout_sigterm_then_retry(job_scenario: Scenario) -> None:
    job_scenario.emulator.fake.add_run_job(JOB, max_retries=2)
    job_scenario.killed = True
    job_scenario.enqueue("job-timeout", seconds=600, jobs=True)
    first_run(job_scenario, "job-timeout")
    [execution] = job_scenario.emulator.fake.executions
    runner = job_scenario.emulator.jobs
    assert runner is not None
    runner.time_out(execution)  # the body runs past its task timeout: SIGTERM, then a retry
    job_scenario.settle()
    timed_out = any(a.reason == "timeout" for a in runner.attempts())
    job_scenario.expect(timed_out, "no container reached its task timeout")
    job_scenario.finish(attempts_allowed=3)


def test_job_force_cancel_mid_task(job_scenario: Scenario) -> None:
    from django_tasks_google.base import cancel_task

    job_scenario.emulator.fake.add_run_job(JOB, max_retries=2)
    job_scenario.expect_failure = True  # a cancelled task ends FAILED
    result = job_scenario.enqueue("job-cancelled", seconds=60, jobs=True)
    first_run(job_scenario, "job-cancelled")
    cancel_task(result, force=True)  # CancelExecution: Cloud Run SIGTERMs the running container
    job_scenario.settle()
    reasons = [a.reason for a in job_scenario.emulator.jobs.attempts()]  # type: ignore[union-attr]
    job_scenario.expect(reasons == ["cancelled"], f"container attempts ended {reasons}, not once cancelled")
    job_scenario.finish(attempts_allowed=3)
