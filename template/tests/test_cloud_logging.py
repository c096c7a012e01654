"""Logs on Cloud Run: one JSON object per record, with severity, trace, labels and the whole traceback.

The end-to-end test starts real gunicorn with the environment Cloud Run gives a service
(K_SERVICE) and delivers a push of a failing task with the trace headers Cloud Run's front end
adds; then every line gunicorn wrote must parse as one JSON object, and the task's error record
must be a single entry carrying its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from config.cloud_logging import (
    LABELS_FIELD,
    SAMPLED_FIELD,
    SPAN_FIELD,
    TRACE_FIELD,
    CloudLoggingFormatter,
    Trace,
    _request_trace,
    parse_trace,
)
from django_tasks_google.log_context import attempt_labels, task_attempt
from tests import logging_tasks
from tests.django_tasks_google.cloud_tasks_setup import enqueue
from tests.fakes.google_services import GoogleServicesFake, Push
from tests.fakes.oidc_issuer import OidcIssuer
from tests.processes import Deployment, Gunicorn, cloud_run_service, deployed_tasks

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


# --- trace headers ---------------------------------------------------------------------------------


def test_traceparent_gives_trace_span_and_sampling() -> None:
    trace = parse_trace("p", f"00-{TRACE_ID}-{SPAN_ID}-01", "")
    assert trace == Trace(f"projects/p/traces/{TRACE_ID}", SPAN_ID, True)


def test_traceparent_wins_over_the_legacy_header() -> None:
    trace = parse_trace("p", f"00-{TRACE_ID}-{SPAN_ID}-00", f"{'1' * 32}/5;o=1")
    assert trace == Trace(f"projects/p/traces/{TRACE_ID}", SPAN_ID, False)


def test_legacy_header_span_id_is_decimal() -> None:
    # 74 decimal is 0x4a; Cloud Logging wants 16 hexadecimal digits.
    trace = parse_trace("p", "", f"{TRACE_ID}/74;o=1")
    assert trace == Trace(f"projects/p/traces/{TRACE_ID}", "000000000000004a", True)


@pytest.mark.parametrize(
    ("traceparent", "cloud_trace_context"),
    [
        ("", ""),
        (f"01-{TRACE_ID}-{SPAN_ID}-01", ""),  # unknown version
        (f"00-{'0' * 32}-{SPAN_ID}-01", ""),  # all-zero trace id
        (f"00-{TRACE_ID}-{'0' * 16}-01", ""),  # all-zero span id
        (f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01", ""),  # short trace id
        ("", f"{TRACE_ID}/{2**64};o=1"),  # span id beyond 64 bits
        ("", f"{TRACE_ID}/abc;o=1"),
        ("", "not-a-trace"),
    ],
)
def test_invalid_headers_give_no_trace(traceparent: str, cloud_trace_context: str) -> None:
    assert parse_trace("p", traceparent, cloud_trace_context) is None


# --- the formatter -----------------------------------------------------------------------------------


def format_record(record: logging.LogRecord) -> dict[str, Any]:
    line = CloudLoggingFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def error_record() -> logging.LogRecord:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    return logging.LogRecord("app", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info)


def test_record_fields_without_request_or_task() -> None:
    entry = format_record(error_record())
    assert entry["severity"] == "ERROR"
    assert entry["message"] == "failed x"
    assert entry["logger"] == "app"
    assert entry["stack_trace"].startswith("Traceback (most recent call last):")
    assert entry["stack_trace"].endswith("ValueError: boom")
    assert not {TRACE_FIELD, SPAN_FIELD, SAMPLED_FIELD, LABELS_FIELD} & entry.keys()


def test_record_inside_a_request_and_an_attempt() -> None:
    token = _request_trace.set(Trace(f"projects/p/traces/{TRACE_ID}", SPAN_ID, True))
    try:
        with task_attempt(17, "my_service.tasks.send", 2):
            entry = format_record(error_record())
        assert attempt_labels() == {}
    finally:
        _request_trace.reset(token)
    assert entry[TRACE_FIELD] == f"projects/p/traces/{TRACE_ID}"
    assert (entry[SPAN_FIELD], entry[SAMPLED_FIELD]) == (SPAN_ID, True)
    assert entry[LABELS_FIELD] == {
        "task_execution_id": "17",
        "task_path": "my_service.tasks.send",
        "task_attempt": "2",
    }


# --- end to end: gunicorn on "Cloud Run" ------------------------------------------------------------


DEPLOYMENT = Deployment(project="logging-project", region="europe-west1", service="logging-service")


@pytest.fixture(scope="module")
def cloud_run_env(
    django_db_setup: None, google_fake: GoogleServicesFake, oidc_issuer: OidcIssuer
) -> dict[str, str]:
    # After the test database is set up: the environment names it.
    return DEPLOYMENT.env(google_fake, oidc_issuer)


@pytest.fixture(scope="module")
def cloud_run_gunicorn(
    django_db_setup: None, cloud_run_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    # Cloud Run's K_SERVICE is what makes the service log JSON.
    with cloud_run_service(cloud_run_env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log") as server:
        yield server


def deliver_failing_task(
    settings: Any,
    google_fake: GoogleServicesFake,
    env: dict[str, str],
    server: Gunicorn,
) -> list[dict[str, Any]]:
    """Push `logs_and_fails` once, with Cloud Run's trace headers; the entries gunicorn wrote."""
    tasks = deployed_tasks(env)
    if tasks["default"]["BACKEND"] != "django_tasks_google.backends.CloudTasksBackend":
        pytest.skip("this project's default alias runs on Cloud Run Jobs")
    queue_id = tasks["default"]["OPTIONS"]["queue_aliases"]["default"]
    google_fake.add_queue(
        f"projects/{DEPLOYMENT.project}/locations/{DEPLOYMENT.region}/queues/{queue_id}", max_attempts=3
    )
    settings.TASKS = tasks
    _, execution = enqueue(logging_tasks.logs_and_fails, "twelve")
    push = google_fake.task_push(execution.cloud_task_name)
    traced = Push(
        push.method,
        push.url,
        push.body,
        {**push.headers, "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "X-Cloud-Trace-Context": "ignored"},
    )
    already_written = len(server.output())
    response = server.deliver(traced)
    assert response.status_code == 500, server.output()  # a retryable failure
    return json_entries(server.output()[already_written:])


def json_entries(output: str) -> list[dict[str, Any]]:
    """Each line as the JSON object Cloud Logging would parse it into; fails on any other line."""
    entries = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise AssertionError(f"not a JSON object: {line!r}\n--- output ---\n{output}")
        entries.append(entry)
    return entries


@pytest.mark.django_db(transaction=True)
def test_a_failing_task_logs_one_json_entry_per_record(
    settings: Any,
    google_fake: GoogleServicesFake,
    cloud_run_env: dict[str, str],
    cloud_run_gunicorn: Gunicorn,
) -> None:
    boot = json_entries(cloud_run_gunicorn.output())
    entries = deliver_failing_task(settings, google_fake, cloud_run_env, cloud_run_gunicorn)

    assert any(entry["logger"] == "gunicorn.error" for entry in boot)  # gunicorn's own records too
    assert entries, "the request logged nothing"
    assert all(isinstance(entry.get("severity"), str) and "message" in entry for entry in entries)
    [error] = [entry for entry in entries if entry["message"] == "Order 'twelve' could not be parsed"]
    assert error["severity"] == "ERROR"
    assert error[TRACE_FIELD] == f"projects/{DEPLOYMENT.project}/traces/{TRACE_ID}"
    assert (error[SPAN_FIELD], error[SAMPLED_FIELD]) == (SPAN_ID, True)
    stack = error["stack_trace"]
    assert stack.startswith("Traceback (most recent call last):")
    assert "in parse_order\n    return int(raw)" in stack
    assert stack.endswith("ValueError: invalid literal for int() with base 10: 'twelve'")
    # Everything logged while the push was handled carries its trace, not only the task's records.
    loggers = {entry["logger"] for entry in entries}
    assert "tests.logging_tasks" in loggers
    assert any(name.startswith("django_tasks_google.") for name in loggers), loggers
    assert all(entry[TRACE_FIELD] == error[TRACE_FIELD] for entry in entries)


@pytest.mark.django_db(transaction=True)
def test_a_task_attempt_labels_its_records(
    settings: Any,
    google_fake: GoogleServicesFake,
    cloud_run_env: dict[str, str],
    cloud_run_gunicorn: Gunicorn,
) -> None:
    entries = deliver_failing_task(settings, google_fake, cloud_run_env, cloud_run_gunicorn)
    [error] = [entry for entry in entries if entry["message"] == "Order 'twelve' could not be parsed"]
    assert error[LABELS_FIELD]["task_path"] == "tests.logging_tasks.logs_and_fails"
    assert error[LABELS_FIELD]["task_attempt"] == "1"
